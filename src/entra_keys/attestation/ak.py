"""The attestation key as the verifier takes it: its TPMT_PUBLIC checked (a restricted signing
key made in a TPM, a scheme, a SHA-2 nameAlg, a strong key), or a bare public key.

Split from ``verifier`` so that both stay small; ``verifier`` re-exports ``check_ak_public``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import AttestationCheckFailed, Check, InvalidData, MalformedAttestation
from ..tcg.model import KeyUsage, origin_attributes
from ..tcg.public import tpmt_bytes
from ..tcg.structures import (
    HASH_ALGORITHMS,
    TPM_ALG_ECC,
    TPM_ALG_ECDSA,
    TPM_ALG_NULL,
    TPM_ALG_RSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA1,
    TPM_ECC_NIST_P256,
    TPM_ECC_NIST_P384,
    TPM_ECC_NIST_P521,
    TPMA_OBJECT,
    TPMSECCParms,
    TPMSRSAParms,
    TPMTPublic,
    TPMTSignature,
)

__all__ = ["AKPublic", "PublicKey", "check_ak_public"]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
#: An attestation key as a verifier may give it: a ``cryptography`` key or its TPMT_PUBLIC.
AKPublic = PublicKey | TPMTPublic | bytes

#: An AK is made in a TPM (tcg.model's origin attributes) and a restricted signing key.
_AK_ATTRIBUTES = (
    origin_attributes(KeyUsage.ATTEST) | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)
_STRONG_CURVES = {
    TPM_ECC_NIST_P256: "P-256",
    TPM_ECC_NIST_P384: "P-384",
    TPM_ECC_NIST_P521: "P-521",
}


class SignatureForm(NamedTuple):
    """A TPMT_SIGNATURE of one scheme, hash and size: its first 6 bytes (sigAlg, hash, the size
    of the signature or of r), its length, and for ECDSA where s's size is (0 for RSA)."""

    head: bytes
    length: int
    sig_alg: int
    hash_alg: int
    s_at: int

    @classmethod
    def of(cls, sig_alg: int, hash_alg: int, size: int, is_rsa: bool) -> SignatureForm:
        """The form of signatures of this scheme by a key of ``size`` bytes (RSA: the modulus;
        ECDSA: a coordinate, r and s padded to it as TPMs give them)."""
        if is_rsa:
            marshaled = TPMTSignature(sig_alg, hash_alg, bytes(size)).to_bytes()
            return cls(marshaled[:6], len(marshaled), sig_alg, hash_alg, 0)
        marshaled = TPMTSignature(sig_alg, hash_alg, b"", bytes(size), bytes(size)).to_bytes()
        return cls(marshaled[:6], len(marshaled), sig_alg, hash_alg, 6 + size)

    def matches(self, signature: bytes) -> bool:
        """True when the signature has this form (then it parses, and its scheme is the AK's)."""
        return (
            len(signature) == self.length
            and signature.startswith(self.head)
            and (not self.s_at or signature.startswith(self.head[4:], self.s_at))
        )

    def parts(self, signature: bytes) -> tuple[bytes, bytes, bytes]:
        """A matching signature's RSA signature, r and s."""
        if not self.s_at:
            return signature[6:], b"", b""
        return b"", signature[6 : self.s_at], signature[self.s_at + 2 :]


#: The schemes whose signatures have one form, for ECC (False) and RSA (True) keys.
_SIGNATURE_FORMS = {False: {TPM_ALG_ECDSA}, True: {TPM_ALG_RSASSA, TPM_ALG_RSAPSS}}
_SHA2 = HASH_ALGORITHMS.keys() - {TPM_ALG_SHA1}


@dataclass(frozen=True)
class _AK:
    """An AK ready to verify with: its key, whether RSA, the scheme its TPMT_PUBLIC fixes, and
    its name (None for a bare public key, which has no TPMT_PUBLIC)."""

    key: PublicKey
    is_rsa: bool
    scheme: tuple[int, int] | None
    name: bytes | None
    name_alg: int = 0
    #: The form a TPM gives this AK's signatures, which its scheme, SHA-2 hash and key size fix
    #: (ECDSA: r and s of the curve's size), or None.
    signature_form: SignatureForm | None = None

    @functools.cached_property
    def verify(self) -> Callable[..., None]:
        """The key's ``verify`` (RSA: signature, data, padding, hash; ECDSA: DER, data, ECDSA),
        looked up once."""
        return self.key.verify

    @functools.cached_property
    def coordinate_size(self) -> int:
        """The byte size of an ECDSA r or s for this key's curve (0 for RSA)."""
        return 0 if self.is_rsa else (self.key.key_size + 7) // 8


def check_ak_public(public: TPMTPublic) -> None:
    """Refuses (a TRUST failure) a TPMT_PUBLIC that is no AK: it must be a restricted signing key
    made in a TPM (sign, restricted, fixedTPM, fixedParent, sensitiveDataOrigin; not decrypt),
    with a signing scheme, a SHA-2 nameAlg, and RSA-2048+ or P-256/384/521."""
    attrs = public.object_attributes
    if attrs & _AK_ATTRIBUTES != _AK_ATTRIBUTES or attrs & TPMA_OBJECT.DECRYPT:
        raise AttestationCheckFailed(
            f"the AK ({TPMA_OBJECT(attrs)!r}) is not a restricted signing key made in a TPM "
            "(sign, restricted, fixedTPM, fixedParent, sensitiveDataOrigin; not decrypt)",
            Check.TRUST,
        )
    if public.name_alg not in HASH_ALGORITHMS:
        raise AttestationCheckFailed(
            f"the AK's nameAlg 0x{public.name_alg:04x} is not a known hash", Check.TRUST
        )
    params = public.parameters
    if not isinstance(params, TPMSRSAParms | TPMSECCParms):
        raise AttestationCheckFailed(
            f"the AK's type 0x{public.type:04x} is not an RSA or ECC key", Check.TRUST
        )
    if params.scheme.scheme == TPM_ALG_NULL:
        raise AttestationCheckFailed(
            "the AK has no signing scheme: a TPM's AK is bound to one", Check.TRUST
        )
    try:
        _strong_key(public)
    except AttestationCheckFailed as exc:
        if exc.check is not Check.KEY_STRENGTH:
            raise
        raise AttestationCheckFailed(f"the AK is too weak: {exc}", Check.TRUST) from exc


@functools.lru_cache(maxsize=256)
def _ak_from_tpmt(public: TPMTPublic) -> _AK:
    """An AK from its TPMT_PUBLIC: a restricted signing key made in a TPM, or a TRUST failure."""
    check_ak_public(public)
    try:
        key = public.public_key()
    except InvalidData as exc:
        raise MalformedAttestation(f"the AK's TPMT_PUBLIC: {exc}") from exc
    params = public.parameters
    assert isinstance(params, TPMSRSAParms | TPMSECCParms)  # check_ak_public made sure
    scheme = (params.scheme.scheme, params.scheme.hash_alg)
    is_rsa = isinstance(key, rsa.RSAPublicKey)
    form = None
    if scheme[0] in _SIGNATURE_FORMS[is_rsa] and scheme[1] in _SHA2:
        form = SignatureForm.of(*scheme, (key.key_size + 7) // 8, is_rsa)
    return _AK(key, is_rsa, scheme, public.name(), public.name_alg, form)


@functools.lru_cache(maxsize=256)
def _ak_from_bytes(data: bytes) -> _AK:
    try:
        public = TPMTPublic.parse(tpmt_bytes(data))
    except InvalidData as exc:
        raise MalformedAttestation(f"the AK's TPMT_PUBLIC: {exc}") from exc
    return _ak_from_tpmt(public)


def _resolve_ak(ak: AKPublic) -> _AK:
    if type(ak) is bytes:  # the common cases first: isinstance on an ABC costs
        return _ak_from_bytes(ak)
    if isinstance(ak, TPMTPublic):
        return _ak_from_tpmt(ak)
    if isinstance(ak, rsa.RSAPublicKey):
        return _AK(ak, True, None, None)
    if isinstance(ak, ec.EllipticCurvePublicKey):
        return _AK(ak, False, None, None)
    if isinstance(ak, bytes | bytearray):
        return _ak_from_bytes(bytes(ak))
    raise AttestationCheckFailed(
        f"an AK is a TPMT_PUBLIC or a public key, not {type(ak).__name__}", Check.TRUST
    )


def _strong_key(key: TPMTPublic) -> PublicKey:
    params = key.parameters
    if key.type == TPM_ALG_RSA and isinstance(params, TPMSRSAParms):
        if params.key_bits < 2048:
            raise AttestationCheckFailed(
                f"RSA-{params.key_bits} is weaker than RSA-2048", Check.KEY_STRENGTH
            )
    elif key.type == TPM_ALG_ECC and isinstance(params, TPMSECCParms):
        if params.curve_id not in _STRONG_CURVES:
            raise AttestationCheckFailed(
                f"curve 0x{params.curve_id:04x} is not P-256, P-384 or P-521", Check.KEY_STRENGTH
            )
    else:
        raise AttestationCheckFailed(
            f"object type 0x{key.type:04x} is not an RSA or ECC key", Check.KEY_STRENGTH
        )
    try:
        return key.public_key()
    except InvalidData as exc:
        raise MalformedAttestation(f"the certified key's {exc}") from exc


@functools.lru_cache(maxsize=256)
def _certified_public(data: bytes) -> TPMTPublic:
    """A certified key's TPMT_PUBLIC, parsed once per distinct bytes (immutable; a failure
    is not cached and is raised again)."""
    return TPMTPublic.parse(data)


@functools.lru_cache(maxsize=256)
def _certified_key(data: bytes) -> tuple[PublicKey, bytes]:
    """The certified key as ``cryptography`` loads it (after the strength check) and its SPKI,
    once per distinct TPMT_PUBLIC bytes: loading a P-256 point costs about a verification."""
    key = _strong_key(_certified_public(data))
    return key, key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
