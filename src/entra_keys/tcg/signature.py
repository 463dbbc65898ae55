"""TPMT_SIGNATURE (TPM 2.0 Library Part 2, 11.3.4): the one reader of a TPM's signatures.

Its own module, light to import, because the TPM keys read every signature they make with it
(the sign path) and the verifier reads attestations' signatures with it; ``structures``
re-exports it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from cryptography.hazmat.primitives.asymmetric import ec, utils

from ..errors import InvalidData, UnsupportedAlgorithm
from .wire import MAX_ECC, MAX_RSA, TPM_ALG_ECDSA, TPM_ALG_RSAPSS, TPM_ALG_RSASSA, Reader, tpm2b

if TYPE_CHECKING:
    from .public import PublicKey

__all__ = ["TPMTSignature"]

_RSA_SIG = frozenset({TPM_ALG_RSASSA, TPM_ALG_RSAPSS})
_ECC_SIG = frozenset({TPM_ALG_ECDSA})


def _unknown_signature(alg: int) -> InvalidData:
    return InvalidData(f"TPMT_SIGNATURE: sigAlg 0x{alg:04x} is not RSASSA, RSAPSS or ECDSA")


@dataclass(frozen=True, slots=True)
class TPMTSignature:
    """TPMT_SIGNATURE: RSASSA or RSAPSS (``signature``) or ECDSA (``signature_r``/``_s``)."""

    sig_alg: int
    hash: int
    signature: bytes = b""
    signature_r: bytes = b""
    signature_s: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> TPMTSignature:
        """A TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA) that is exactly the input."""
        r = Reader(data, "TPMT_SIGNATURE")
        alg = r.u16("sigAlg")
        if alg in _RSA_SIG:
            signature = cls(alg, r.u16("hash"), r.tpm2b("signature.sig", MAX_RSA))
        elif alg in _ECC_SIG:
            hash_alg = r.u16("hash")
            sig_r = r.tpm2b("signature.signatureR", MAX_ECC)
            signature = cls(alg, hash_alg, b"", sig_r, r.tpm2b("signature.signatureS", MAX_ECC))
        else:
            raise _unknown_signature(alg)
        r.done()
        return signature

    def to_bytes(self) -> bytes:
        """The marshaled TPMT_SIGNATURE."""
        head = struct.pack(">HH", self.sig_alg, self.hash)
        if self.sig_alg in _RSA_SIG:
            return head + tpm2b(self.signature)
        if self.sig_alg in _ECC_SIG:
            return head + tpm2b(self.signature_r) + tpm2b(self.signature_s)
        raise InvalidData(f"TPMT_SIGNATURE: sigAlg 0x{self.sig_alg:04x} is not offered")

    @property
    def is_rsa(self) -> bool:
        """True for RSASSA and RSAPSS."""
        return self.sig_alg in _RSA_SIG

    def to_der(self) -> bytes:
        """An ECDSA signature as DER (ECDSA-Sig-Value), what ``cryptography`` verifies."""
        if self.sig_alg not in _ECC_SIG:
            raise InvalidData("TPMT_SIGNATURE: only an ECDSA signature has a DER form")
        r = int.from_bytes(self.signature_r, "big")
        return utils.encode_dss_signature(r, int.from_bytes(self.signature_s, "big"))

    def signature_bytes(self) -> bytes:
        """The signature as ``cryptography``'s verify takes it: RSA bytes, or DER for ECDSA."""
        return self.signature if self.sig_alg in _RSA_SIG else self.to_der()

    @classmethod
    def from_signature(
        cls, sig_alg: int, hash_alg: int, signature: bytes, key: PublicKey | None = None
    ) -> Self:
        """From ``cryptography``'s output (RSA bytes, or DER ECDSA with r and s padded to the
        key's curve size as a TPM does)."""
        if sig_alg in _RSA_SIG:
            return cls(sig_alg, hash_alg, signature)
        if sig_alg not in _ECC_SIG:
            raise UnsupportedAlgorithm(f"signature algorithm 0x{sig_alg:04x}")
        try:
            r, s = utils.decode_dss_signature(signature)
        except ValueError as exc:
            raise InvalidData("not a DER ECDSA signature") from exc
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
        else:
            size = max((r.bit_length() + 7) // 8, (s.bit_length() + 7) // 8)
        return cls(sig_alg, hash_alg, b"", r.to_bytes(size, "big"), s.to_bytes(size, "big"))
