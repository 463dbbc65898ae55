"""TPM2_Sign for the key classes, and the one place that uses tpm2-pytss private internals.

The signing hot path hands ESAPI the C structs behind tpm2-pytss's wrappers (``_cdata``), refills
one TPM2B_DIGEST with ``ffi.memmove`` and copies signatures out with ``ffi.buffer``: the wrappers
cost 50-100 µs more per signature (tpm2-pytss 3.0.0), a tenth of a swtpm ECDSA signature.
``Signer`` checks at start that these internals are there and behave as the public API does
(checked on tpm2-pytss 3.0.0: tests/test_tpm_internals.py); where not, it uses the public API,
with the same results.
"""

from __future__ import annotations

import types
from typing import Any

from cryptography.hazmat.primitives import hashes

from ...provider import SignatureScheme

__all__ = ["Signer"]


class Signer:
    """TPM2_Sign of a digest and the signature's bytes, fast (C structs) or public (wrappers).

    One digest buffer is refilled per call: callers hold the connection's lock. A digest is not
    secret, so the buffer is not wiped.
    """

    def __init__(self, tss: Any, *, fast: bool | None = None) -> None:
        """Use the fast path where ``fast`` is True, or None and the internals pass a probe."""
        self._tss = tss
        self._schemes: dict[tuple[SignatureScheme, str], Any] = {}
        self._algs = {
            SignatureScheme.RSASSA: tss.TPM2_ALG.RSASSA,
            SignatureScheme.RSAPSS: tss.TPM2_ALG.RSAPSS,
            SignatureScheme.ECDSA: tss.TPM2_ALG.ECDSA,
        }
        self._rsa = (int(tss.TPM2_ALG.RSASSA), int(tss.TPM2_ALG.RSAPSS))
        self._ecdsa = int(tss.TPM2_ALG.ECDSA)
        ticket = tss.TPMT_TK_HASHCHECK(tag=tss.TPM2_ST.HASHCHECK, hierarchy=tss.TPM2_RH.NULL)
        self._ticket = ticket
        self.fast = False
        if fast is False:
            return
        try:
            self._memmove = tss.ffi.memmove
            self._buffer = tss.ffi.buffer
            self._digest = tss.TPM2B_DIGEST()._cdata
            self._ticket = ticket._cdata
            self.fast = True
            self._check_fast_path()
        except Exception:
            if fast:
                raise
            self.fast = False
            self._ticket = ticket

    def scheme(self, scheme: SignatureScheme, hash_alg: hashes.HashAlgorithm) -> Any:
        """The TPMT_SIG_SCHEME for a scheme and hash, built once (signing is the hot path)."""
        cached = self._schemes.get((scheme, hash_alg.name))
        if cached is None:
            built = self._tss.TPMT_SIG_SCHEME(scheme=self._algs[scheme])
            built.details.any.hashAlg = getattr(self._tss.TPM2_ALG, hash_alg.name.upper())
            cached = built._cdata if self.fast else built
            self._schemes[(scheme, hash_alg.name)] = cached
        return cached

    def sign(self, esys: Any, handle: Any, digest: bytes, scheme: Any, session: Any = None) -> Any:
        """TPM2_Sign of the digest with a scheme from ``scheme()``; the TPMT_SIGNATURE."""
        if self.fast:
            buffer = self._digest
            buffer.size = len(digest)
            self._memmove(buffer.buffer, digest, len(digest))
        else:
            buffer = self._tss.TPM2B_DIGEST(digest)
        if session is None:
            return esys.sign(handle, buffer, scheme, self._ticket)
        return esys.sign(handle, buffer, scheme, self._ticket, session1=session)

    def parts(self, signature: Any) -> tuple[bytes, bytes]:
        """The RSA signature (and b"") or the ECDSA (r, s) of a TPMT_SIGNATURE."""
        if self.fast:
            cdata = signature._cdata
            alg = cdata.sigAlg
            if alg in self._rsa:
                part = cdata.signature.rsassa.sig
                return self._buffer(part.buffer, part.size)[:], b""
            if alg == self._ecdsa:
                ecc = cdata.signature.ecdsa
                r, s = ecc.signatureR, ecc.signatureS
                return self._buffer(r.buffer, r.size)[:], self._buffer(s.buffer, s.size)[:]
        else:
            alg = int(signature.sigAlg)
            if alg in self._rsa:
                return bytes(signature.signature.rsassa.sig), b""
            if alg == self._ecdsa:
                ecc = signature.signature.ecdsa
                return bytes(ecc.signatureR), bytes(ecc.signatureS)
        # Another scheme: its wire form (sigAlg u16, hashAlg u16, then TPM2B field(s)).
        wire = bytes(signature.marshal())
        first = int.from_bytes(wire[4:6], "big")
        part1 = wire[6 : 6 + first]
        rest = wire[6 + first :]
        if not rest:
            return part1, b""
        second = int.from_bytes(rest[:2], "big")
        return part1, rest[2 : 2 + second]

    def _check_fast_path(self) -> None:
        """Check the fast path against the public API on fixed inputs; raise where they differ."""
        tss = self._tss
        public = Signer(tss, fast=False)
        r, s, sig = bytes(range(1, 33)), bytes(range(33, 65)), bytes(range(256))
        wires = (
            b"\x00\x18\x00\x0b\x00\x20" + r + b"\x00\x20" + s,  # ECDSA-SHA256 (r, s)
            b"\x00\x14\x00\x0b\x01\x00" + sig,  # RSASSA-SHA256
            b"\x00\x16\x00\x0b\x01\x00" + sig,  # RSAPSS-SHA256
        )
        for wire in wires:
            signature, _ = tss.TPMT_SIGNATURE.unmarshal(wire)
            if self.parts(signature) != public.parts(signature):
                raise ValueError("the fast path reads signatures differently")
        digest = bytes(range(32))
        esys = types.SimpleNamespace(sign=lambda handle, digest, *args, **kwargs: digest)
        filled = self.sign(esys, None, digest, None)
        if self._buffer(filled.buffer, filled.size)[:] != bytes(tss.TPM2B_DIGEST(digest)):
            raise ValueError("the fast path fills digests differently")
        scheme = self.scheme(SignatureScheme.ECDSA, hashes.SHA256())
        if (scheme.scheme, scheme.details.any.hashAlg) != (tss.TPM2_ALG.ECDSA, tss.TPM2_ALG.SHA256):
            raise ValueError("the fast path builds schemes differently")
