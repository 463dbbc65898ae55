"""Verifying attestations in N processes: ``VerifierPool``, for a service that checks many.

Verification is CPU work under the GIL (the signature check in OpenSSL, the parsing in Python),
so threads do not add throughput; processes do. The pool sends the trust policy once to each
worker (the executor's initializer), then only the attestation bytes per call; results
(``QuoteResult``, ``CertifyResult``) and refusals (``AttestationCheckFailed`` with its
``check``, ``MalformedAttestation``, ``InvalidData``) come back as the in-process call gives
them. A policy subclass must be importable by the workers (defined at module level).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from .verifier import CertifyResult, QuoteResult, TrustPolicy, verify_certify, verify_quote

__all__ = ["VerifierPool"]

_policy: TrustPolicy | None = None  # the worker's policy, set once by _start
_VERIFY: dict[str, Callable[..., Any]] = {"quote": verify_quote, "certify": verify_certify}


class _SPKI(bytes):
    """A ``cryptography`` public key (AK or expected key) on its way to a worker, as its
    SubjectPublicKeyInfo DER: the key and certificate objects do not pickle."""


#: What pickles as it is (checked by type first: an ABC's isinstance costs per argument).
_PLAIN = frozenset({bytes, bytearray, str, int, dict, tuple, type(None)})


def _portable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return _SPKI(value.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    if hasattr(value, "tbs_certificate_bytes"):  # an x509.Certificate (ak_certificate): DER
        return value.public_bytes(Encoding.DER)
    return value


def _local(value: Any) -> Any:
    return load_der_public_key(bytes(value)) if type(value) is _SPKI else value


def _start(policy: TrustPolicy) -> None:
    """A worker's initializer: keep the policy for every call it runs."""
    global _policy
    _policy = policy


def _call(kind: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """One verification in a worker, with the pool's policy."""
    args = tuple(_local(a) for a in args)
    kwargs = {k: _local(v) for k, v in kwargs.items()}
    return _VERIFY[kind](*args, policy=_policy, **kwargs)


def _batch(kind: str, batch: list[tuple[Any, ...]]) -> list[Any]:
    """A batch of verifications, each its result or its refusal (one round trip for many)."""
    out: list[Any] = []
    for args in batch:
        try:
            out.append(_call(kind, args, {}))
        except Exception as exc:  # returned, and raised again in the caller for this item
            out.append(exc)
    return out


class VerifierPool:
    """``verify_quote`` / ``verify_certify`` in ``processes`` worker processes, under one policy.

    ``submit_quote`` / ``submit_certify`` return futures; ``verify_quote`` / ``verify_certify``
    wait for one; ``map`` verifies many in batches, in order, raising the first refusal.
    A context manager: ``close()`` stops the workers.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        policy: TrustPolicy | None = None,
        mp_context: Any = None,
    ) -> None:
        self.processes = processes or os.cpu_count() or 1
        if mp_context is None:  # spawn: no inherited locks or TPM connections of the parent
            mp_context = multiprocessing.get_context("spawn")
        self._executor = ProcessPoolExecutor(
            self.processes,
            mp_context=mp_context,
            initializer=_start,
            initargs=(policy or TrustPolicy(),),
        )

    def submit_quote(self, *args: Any, **kwargs: Any) -> Future[QuoteResult]:
        """``verify_quote(attest, signature, ak_public, nonce, pcrs, ...)`` in a worker."""
        return self._submit("quote", args, kwargs)

    def submit_certify(self, *args: Any, **kwargs: Any) -> Future[CertifyResult]:
        """``verify_certify(attest, signature, ak_public, key_public, nonce, ...)`` in a worker."""
        return self._submit("certify", args, kwargs)

    def _submit(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Future[Any]:
        args = tuple(_portable(a) for a in args)
        kwargs = {k: _portable(v) for k, v in kwargs.items()}
        return self._executor.submit(_call, kind, args, kwargs)

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
        order, ``batch`` per worker call; yields the results, raises the first refusal."""
        if kind not in _VERIFY:
            raise ValueError(f"kind is 'quote' or 'certify', not {kind!r}")
        portable = ([tuple(map(_portable, args)) for args in b] for b in _batches(items, batch))
        for results in self._executor.map(functools.partial(_batch, kind), portable):
            for result in results:
                if isinstance(result, BaseException):
                    raise result
                yield result

    def warm_up(self) -> None:
        """Starts every worker now (a spawned worker takes ~0.1 s to import), not on first use."""
        futures = [self._executor.submit(os.getpid) for _ in range(self.processes * 2)]
        for future in futures:
            future.result()

    def close(self) -> None:
        """Stops the workers, after the calls already submitted."""
        self._executor.shutdown(wait=True)

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batches(items: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
