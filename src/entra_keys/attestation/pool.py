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
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_der_public_key

from ..errors import EntraKeysError
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

__all__ = ["VerifierPool"]

_policy: TrustPolicy | None = None  # the worker's policy, set once by _start


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
        attest, signature, ak, nonce, pcrs, certificate, intermediates = args
        return verify_quote(
            attest, signature, ak, nonce, pcrs, policy=_policy, ak_certificate=certificate,
            ak_intermediates=intermediates,
        )  # fmt: skip
    attest, signature, ak, key_public, nonce, expected, certificate, intermediates = args
    return verify_certify(
        attest, signature, ak, key_public, nonce,
        policy=_policy, expected_key=expected, ak_certificate=certificate,
        ak_intermediates=intermediates,
    )  # fmt: skip


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
    wait for one; ``map`` verifies many in batches, in order, raising the first refusal.
    ``set_policy`` replaces the policy (to revoke an AK, say). A context manager: ``close()``
    stops the workers.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        policy: TrustPolicy | None = None,
        mp_context: Any = None,
    ) -> None:
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
    ) -> Future[QuoteResult]:
        """``verify_quote(attest, signature, ak_public, nonce, pcrs, ...)`` in a worker."""
        args = (attest, signature, ak_public, nonce, pcrs, ak_certificate, ak_intermediates)
        return self._submit("quote", args)

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

    def _submit(self, kind: str, args: tuple[Any, ...]) -> Future[Any]:
        try:
            portable = _portable(_INPUTS[kind](*args))
        except EntraKeysError as exc:  # refused as the function refuses it, in the caller
            refused: Future[Any] = Future()
            refused.set_exception(exc)
            return refused
        with self._lock:
            return self._executor.submit(_verify, kind, portable)

    def verify_quote(self, *args: Any, **kwargs: Any) -> QuoteResult:
        """As ``verifier.verify_quote`` with the pool's policy; raises what it raises."""
        return self.submit_quote(*args, **kwargs).result()

    def verify_certify(self, *args: Any, **kwargs: Any) -> CertifyResult:
        """As ``verifier.verify_certify`` with the pool's policy; raises what it raises."""
        return self.submit_certify(*args, **kwargs).result()

    def map(
        self, items: Iterable[tuple[Any, ...]], *, kind: str = "quote", batch: int = 64
    ) -> Iterator[Any]:
        """Verifies each tuple of positional arguments (``kind`` "quote": attest, signature,
        ak_public, nonce, pcrs; "certify": attest, signature, ak_public, key_public, nonce), in
        order, ``batch`` per worker call; yields the results, raises the first refusal. Every
        item is copied and submitted before this returns."""
        if kind not in _INPUTS:
            raise ValueError(f"kind is 'quote' or 'certify', not {kind!r}")
        prepared: list[tuple[Any, ...] | EntraKeysError] = []
        for args in items:
            try:
                prepared.append(_portable(_INPUTS[kind](*args)))
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
            future.result()

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
    results: Iterator[Any] = (result for future in futures for result in future.result())
    for item in prepared:
        result = item if isinstance(item, EntraKeysError) else next(results)
        if isinstance(result, BaseException):
            raise result
        yield result
