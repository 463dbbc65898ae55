"""Verifying attestations in N processes: ``VerifierPool``, for a service that checks many.

Verification is CPU work under the GIL (the signature check in OpenSSL, the parsing in Python),
so threads do not add throughput; processes do. The pool takes exactly what ``verify_quote`` and
``verify_certify`` take: it copies the inputs in the caller's process with the verifier's own
``quote_inputs`` / ``certify_inputs`` (so a refused input is refused alike, and nothing the
caller changes later is sent), then sends the bytes (keys and certificates as DER). Results
(``QuoteResult``, ``CertifyResult``) and refusals (``AttestationCheckFailed`` with its
``check``, ``MalformedAttestation``, ``InvalidData``) come back as the in-process call gives them.

The trust policy is pickled when the pool is made or ``set_policy`` is called, and each worker
loads it once when it starts; ``set_policy`` starts new workers with the new policy, so that no
verification submitted after it returns runs under the old one. A policy subclass must be
importable by the workers (defined at module level).

Workers are spawned: each starts a new interpreter and imports the caller's main module, so the
script that makes a pool must do it under ``if __name__ == "__main__":``. Without the guard
every worker would run the script again; the pool refuses to be made there (an
``EntraKeysError`` naming the guard, which the worker prints), and the caller's next result
raises an ``EntraKeysError`` that says why the workers ended, at once rather than hanging.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key

from ..errors import EntraKeysError, InvalidData
from ..formats import public_der
from .ekcert import ReadCertificate
from .verifier import (
    CertifyInputs,
    CertifyResult,
    QuoteInputs,
    QuoteResult,
    TrustPolicy,
    certify_inputs,
    quote_inputs,
    verify_certify,
    verify_quote,
)

__all__ = ["GUARD_MESSAGE", "VerifierPool"]

_policy: TrustPolicy | None = None  # the worker's policy, set once by _start
T = TypeVar("T")

#: What a pool made in a spawned worker's import of the main module says.
GUARD_MESSAGE = (
    "a VerifierPool is being made while a spawned worker process imports the main module: the "
    'script that makes the pool has no `if __name__ == "__main__":` guard, so every worker runs '
    "it again. Make and use the pool under that guard"
)


def _importing_main_in_a_worker() -> bool:
    """True while this process is a spawned child importing its parent's main module: the
    state in which multiprocessing itself refuses to start a process (``_inheriting``, which
    its spawn sets while it prepares the child, before ``parent_process()`` is known)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _result(future: Future[T]) -> T:
    """A future's result; workers that ended while starting (a broken pool) as an
    EntraKeysError that says the likely reason (a script's bug: no subclass to catch)."""
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise EntraKeysError(
            "the pool's worker processes ended while starting (their error is above); if the "
            'script that makes the pool has no `if __name__ == "__main__":` guard, every '
            "worker ran it again: make and use the pool under that guard"
        ) from exc


@dataclass(frozen=True)
class _Key:
    """A ``cryptography`` public key (AK or expected key) on its way to a worker, as its DER
    SubjectPublicKeyInfo: key objects do not pickle."""

    der: bytes


def _portable(inputs: QuoteInputs | CertifyInputs) -> tuple[Any, ...]:
    """The copied inputs as they pickle: keys as ``_Key``, certificates as the DER signed."""
    out: list[Any] = []
    for value in inputs:
        if isinstance(value, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            out.append(_Key(public_der(value)))
        elif value is inputs.ak_certificate:
            out.append(_certificate_der(value))
        elif value is inputs.ak_intermediates:
            out.append(tuple(_certificate_der(c) for c in value))
        else:
            out.append(value)
    return tuple(out)


def _certificate_der(certificate: Any) -> Any:
    """A certificate the inputs hold, as the DER its issuer signed (None stays None)."""
    if certificate is None or isinstance(certificate, bytes):
        return certificate
    if isinstance(certificate, ReadCertificate):
        return certificate.der
    return certificate.public_bytes(Encoding.DER)  # an x509.Certificate


def _local(value: Any) -> Any:
    return load_der_public_key(value.der) if isinstance(value, _Key) else value


def _start(policy: bytes) -> None:
    """A worker's initializer: load the policy it runs every call under."""
    global _policy
    _policy = pickle.loads(policy)  # noqa: S301 - the pool's own pickle of its policy


def _verify(kind: str, portable: tuple[Any, ...]) -> Any:
    """One verification in a worker, with its policy."""
    args = [_local(a) for a in portable]
    if kind == "quote":
        attest, signature, ak, nonce, pcrs, certificate, intermediates, log, boot = args
        return verify_quote(
            attest, signature, ak, nonce, pcrs, policy=_policy, ak_certificate=certificate,
            ak_intermediates=intermediates, event_log=log, boot_policy=boot,
        )  # fmt: skip
    attest, signature, ak, key_public, nonce, expected, certificate, intermediates = args
    return verify_certify(
        attest, signature, ak, key_public, nonce,
        policy=_policy, expected_key=expected, ak_certificate=certificate,
        ak_intermediates=intermediates,
    )  # fmt: skip


def _measured(event_log: object, boot_policy: object) -> tuple[Any, ...]:
    """A quote's event log (copied, as ``verify_quote`` copies it) and boot policy, checked in
    the caller as ``verify_quote`` checks them: both pickle to the worker."""
    if event_log is None and boot_policy is None:
        return None, None
    from .measured import BootPolicy, owned_event_log  # loaded where a log is given

    if boot_policy is not None and not isinstance(boot_policy, BootPolicy):
        raise InvalidData(f"boot_policy is a BootPolicy, not {type(boot_policy).__name__}")
    return owned_event_log(event_log), boot_policy


def _batch(kind: str, batch: list[tuple[Any, ...]]) -> list[Any]:
    """A batch of verifications, each its result or its refusal (one round trip for many)."""
    out: list[Any] = []
    for portable in batch:
        try:
            out.append(_verify(kind, portable))
        except Exception as exc:  # returned, and raised again in the caller for this item
            out.append(exc)
    return out


_INPUTS: dict[str, Callable[..., QuoteInputs | CertifyInputs]] = {
    "quote": quote_inputs,
    "certify": certify_inputs,
}


class VerifierPool:
    """``verify_quote`` / ``verify_certify`` in ``processes`` worker processes, under one policy.

    ``submit_quote`` / ``submit_certify`` return futures; ``verify_quote`` / ``verify_certify``
    wait for one; ``map`` submits many at once, as ``Executor.map`` does, and yields their
    results in order, raising a refusal when its item is reached. ``set_policy`` replaces the
    policy (to revoke an AK, say). A context manager: ``close()`` stops the workers after what
    was submitted.

    The workers are spawned and import the caller's main module: make the pool under
    ``if __name__ == "__main__":`` (without it each worker would run the script again; the
    pool refuses to be made in a worker's import, an ``EntraKeysError`` naming the guard)::

        if __name__ == "__main__":
            with VerifierPool(4, policy=policy) as pool:
                results = list(pool.map(quotes))
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        policy: TrustPolicy | None = None,
        mp_context: Any = None,
    ) -> None:
        if _importing_main_in_a_worker():
            raise EntraKeysError(GUARD_MESSAGE)
        self.processes = processes or os.cpu_count() or 1
        # spawn: no inherited locks or TPM connections of the parent
        self._context = mp_context or multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._retired: list[ProcessPoolExecutor] = []
        self._executor = self._workers(policy or TrustPolicy())

    def _workers(self, policy: TrustPolicy) -> ProcessPoolExecutor:
        """Workers that start with the policy as it is now (pickled here, once)."""
        if not isinstance(policy, TrustPolicy):
            raise TypeError(f"a VerifierPool's policy is a TrustPolicy, not {type(policy)}")
        state = pickle.dumps(policy)
        return ProcessPoolExecutor(
            self.processes, mp_context=self._context, initializer=_start, initargs=(state,)
        )

    def set_policy(self, policy: TrustPolicy) -> None:
        """Replaces the pool's policy with ``policy`` as it is now: every verification submitted
        after this returns runs under it (in new workers); those submitted before may finish
        under the old one. Changing a policy object after giving it changes nothing here."""
        workers = self._workers(policy)
        with self._lock:
            old, self._executor = self._executor, workers
        self._retired.append(old)
        old.shutdown(wait=False)  # its calls already submitted run to the end

    def submit_quote(
        self,
        attest: Any,
        signature: Any,
        ak_public: Any,
        nonce: Any,
        pcrs: Any,
        *,
        ak_certificate: Any = None,
        ak_intermediates: Any = (),
        event_log: Any = None,
        boot_policy: Any = None,
    ) -> Future[QuoteResult]:
        """``verify_quote(attest, signature, ak_public, nonce, pcrs, ...)`` in a worker, its
        event log and boot policy too (the result carries the parsed log back)."""
        args = (attest, signature, ak_public, nonce, pcrs, ak_certificate, ak_intermediates)
        return self._submit("quote", args, (event_log, boot_policy))

    def submit_certify(
        self,
        attest: Any,
        signature: Any,
        ak_public: Any,
        key_public_tpmt: Any,
        nonce: Any,
        *,
        expected_key: Any = None,
        ak_certificate: Any = None,
        ak_intermediates: Any = (),
    ) -> Future[CertifyResult]:
        """``verify_certify(attest, signature, ak_public, key_public, nonce, ...)`` in a worker."""
        args = (
            attest, signature, ak_public, key_public_tpmt, nonce, expected_key, ak_certificate,
            ak_intermediates,
        )  # fmt: skip
        return self._submit("certify", args)

    def _submit(
        self, kind: str, args: tuple[Any, ...], measured: tuple[Any, Any] = (None, None)
    ) -> Future[Any]:
        try:
            portable = _portable(_INPUTS[kind](*args))
            if kind == "quote":
                portable += _measured(*measured)
        except EntraKeysError as exc:  # refused as the function refuses it, in the caller
            refused: Future[Any] = Future()
            refused.set_exception(exc)
            return refused
        with self._lock:
            return self._executor.submit(_verify, kind, portable)

    def verify_quote(self, *args: Any, **kwargs: Any) -> QuoteResult:
        """As ``verifier.verify_quote`` with the pool's policy; raises what it raises."""
        return _result(self.submit_quote(*args, **kwargs))

    def verify_certify(self, *args: Any, **kwargs: Any) -> CertifyResult:
        """As ``verifier.verify_certify`` with the pool's policy; raises what it raises."""
        return _result(self.submit_certify(*args, **kwargs))

    def map(
        self, items: Iterable[tuple[Any, ...]], *, kind: str = "quote", batch: int = 64
    ) -> Iterator[Any]:
        """Verifies each tuple of positional arguments (``kind`` "quote": attest, signature,
        ak_public, nonce, pcrs; "certify": attest, signature, ak_public, key_public, nonce),
        ``batch`` per worker call, as ``Executor.map`` does: every item is copied and submitted
        before this returns (so the results of a ``map`` called inside a ``with`` block can be
        read after it; one called after ``close()`` raises RuntimeError, as the executor's
        does), and the iterator yields the results in the items' order, raising a refusal when
        its item is reached."""
        if kind not in _INPUTS:
            raise ValueError(f"kind is 'quote' or 'certify', not {kind!r}")
        prepared: list[tuple[Any, ...] | EntraKeysError] = []
        for args in items:
            try:
                portable = _portable(_INPUTS[kind](*args))
                prepared.append((*portable, None, None) if kind == "quote" else portable)
            except EntraKeysError as exc:
                prepared.append(exc)
        good = [p for p in prepared if not isinstance(p, EntraKeysError)]
        with self._lock:
            futures = [
                self._executor.submit(_batch, kind, good[i : i + batch])
                for i in range(0, len(good), batch)
            ]
        return _in_order(prepared, futures)

    def warm_up(self) -> None:
        """Starts every worker now (a spawned worker takes ~0.1 s to import), not on first use."""
        with self._lock:
            futures = [self._executor.submit(os.getpid) for _ in range(self.processes * 2)]
        for future in futures:
            _result(future)

    def close(self) -> None:
        """Stops the workers, after the calls already submitted."""
        for executor in (*self._retired, self._executor):
            executor.shutdown(wait=True)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_order(prepared: list[Any], futures: list[Future[list[Any]]]) -> Iterator[Any]:
    """The results of ``map`` in the items' order: a refusal in the caller where it was."""
    results: Iterator[Any] = (result for future in futures for result in _result(future))
    for item in prepared:
        result = item if isinstance(item, EntraKeysError) else next(results)
        if isinstance(result, BaseException):
            raise result
        yield result
