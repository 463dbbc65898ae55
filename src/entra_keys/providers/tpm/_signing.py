"""TPM2_Sign for the key classes, and the one place that uses tpm2-pytss private internals.

The signing hot path calls libtss2's ``Esys_Sign`` through tpm2-pytss's cffi ``lib`` on the
ESAPI context (``_ctx``), with C structs built once (``_cdata``: one TPM2B_DIGEST refilled with
``ffi.memmove``, the scheme and the null ticket) and one reused output pointer; it copies the
signature out with ``ffi.buffer`` and frees it at once. ``ESAPI.sign``'s argument checks and the
TPMT_SIGNATURE wrapper it builds cost 20-40 µs of CPU per call (tpm2-pytss 3.0.0), 2-4 %
of a swtpm ECDSA signature. ``Signer`` checks at start that these internals are there and behave
as the public API does (checked on tpm2-pytss 3.0.0: tests/test_tpm_internals.py); where not,
it uses the public API, with the same results.
"""

from __future__ import annotations

import types
from typing import Any

from cryptography.hazmat.primitives import hashes

from ...provider import SignatureScheme

__all__ = ["Signer"]


class Signer:
    """TPM2_Sign of a digest and the signature's bytes, fast (C structs) or public (wrappers).

    One digest buffer and one output pointer are reused per call: callers hold the connection's
    lock. A digest is not secret, so the buffer is not wiped.
    """

    def __init__(self, tss: Any, *, fast: bool | None = None, esys: Any = None) -> None:
        """Use the fast path where ``fast`` is True, or None and the internals pass a probe
        (``esys``, where given, is the ESAPI context it will sign on: its C context is checked)."""
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
            self._digest_max = len(self._digest.buffer)
            self._ticket = ticket._cdata
            self._esys_sign = tss.lib.Esys_Sign
            self._esys_free = tss.lib.Esys_Free
            self._out = tss.ffi.new("TPMT_SIGNATURE **")
            self._null = tss.ffi.NULL
            self._password = int(tss.ESYS_TR.PASSWORD)
            self._none = int(tss.ESYS_TR.NONE)
            self._exception = tss.TSS2_Exception
            self.fast = True
            self._check_fast_path(esys)
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
        buffer = self._fill(digest) if self.fast else self._tss.TPM2B_DIGEST(digest)
        if session is None:
            return esys.sign(handle, buffer, scheme, self._ticket)
        return esys.sign(handle, buffer, scheme, self._ticket, session1=session)

    def sign_parts(
        self, esys: Any, handle: Any, digest: bytes, scheme: Any, session: Any = None
    ) -> tuple[bytes, bytes]:
        """TPM2_Sign of the digest, as ``parts(sign(...))``: one ``Esys_Sign`` on the fast path,
        its output copied out and freed before this returns (a TSS2_Exception where it fails)."""
        if not self.fast:
            return self.parts(self.sign(esys, handle, digest, scheme, session))
        buffer = self._fill(digest)
        out = self._out
        none = self._none
        rc = self._esys_sign(
            esys._ctx,
            handle,
            self._password if session is None else session,
            none,
            none,
            buffer,
            scheme,
            self._ticket,
            out,
        )
        if rc:
            raise self._exception(rc)
        signature, out[0] = out[0], self._null
        try:
            return self._cparts(signature)
        finally:
            self._esys_free(signature)

    def _fill(self, digest: bytes) -> Any:
        """The one TPM2B_DIGEST C struct, refilled with the digest (fast path)."""
        size = len(digest)
        if size > self._digest_max:  # memmove does not check bounds
            raise ValueError(f"a {size}-byte digest does not fit a TPM2B_DIGEST")
        buffer = self._digest
        buffer.size = size
        self._memmove(buffer.buffer, digest, size)
        return buffer

    def parts(self, signature: Any) -> tuple[bytes, bytes]:
        """The RSA signature (and b"") or the ECDSA (r, s) of a TPMT_SIGNATURE."""
        if self.fast:
            return self._cparts(signature._cdata)
        alg = int(signature.sigAlg)
        if alg in self._rsa:
            return bytes(signature.signature.rsassa.sig), b""
        if alg == self._ecdsa:
            ecc = signature.signature.ecdsa
            return bytes(ecc.signatureR), bytes(ecc.signatureS)
        return self._wire_parts(signature)

    def _cparts(self, cdata: Any) -> tuple[bytes, bytes]:
        """``parts`` of a TPMT_SIGNATURE C struct (fast path)."""
        alg = cdata.sigAlg
        if alg == self._ecdsa:
            ecc = cdata.signature.ecdsa
            r, s = ecc.signatureR, ecc.signatureS
            return self._buffer(r.buffer, r.size)[:], self._buffer(s.buffer, s.size)[:]
        if alg in self._rsa:
            part = cdata.signature.rsassa.sig
            return self._buffer(part.buffer, part.size)[:], b""
        return self._wire_parts(self._tss.TPMT_SIGNATURE(_cdata=cdata))

    @staticmethod
    def _wire_parts(signature: Any) -> tuple[bytes, bytes]:
        """The parts of another scheme's TPMT_SIGNATURE, read from its wire form (sigAlg u16,
        hashAlg u16, then TPM2B field(s))."""
        wire = bytes(signature.marshal())
        first = int.from_bytes(wire[4:6], "big")
        part1 = wire[6 : 6 + first]
        rest = wire[6 + first :]
        if not rest:
            return part1, b""
        second = int.from_bytes(rest[:2], "big")
        return part1, rest[2 : 2 + second]

    def _check_fast_path(self, esys: Any) -> None:
        """Check the fast path against the public API on fixed inputs; raise where they differ."""
        tss = self._tss
        if esys is not None and tss.ffi.typeof(esys._ctx) is not tss.ffi.typeof("ESYS_CONTEXT *"):
            raise ValueError("the ESAPI context is not an ESYS_CONTEXT")
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
