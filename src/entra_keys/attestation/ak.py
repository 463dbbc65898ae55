"""The attestation key as the verifier takes it: its TPMT_PUBLIC checked (a restricted signing
key made in a TPM, a scheme, a SHA-2 nameAlg, a strong key), or a bare public key; and the keys
a TPM certifies, checked for strength and loaded.

Split from ``verifier`` so that both stay small; ``verifier`` re-exports ``check_ak_public``.
Loading a key costs about as much as a verification, so keys are loaded once per distinct
TPMT_PUBLIC bytes (bounded caches keyed by immutable bytes, never by a caller's object).
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import AttestationCheckFailed, Check, InvalidData, MalformedAttestation
from ..formats import public_der
from ..tcg.model import KeyUsage, origin_attributes
from ..tcg.public import PublicKey, tpmt_bytes
from ..tcg.structures import (
    HASH_ALGORITHMS,
    TPM_ALG_ECC,
    TPM_ALG_NULL,
    TPM_ALG_RSA,
    TPM_ECC_NIST_P256,
    TPM_ECC_NIST_P384,
    TPM_ECC_NIST_P521,
    TPMA_OBJECT,
    TPMSECCParms,
    TPMSRSAParms,
    TPMTPublic,
)

__all__ = [
    "AKPublic",
    "CertifiedKey",
    "ResolvedAK",
    "certified_key",
    "certified_public",
    "check_ak_public",
    "owned_bytes",
    "resolve_ak",
]

#: An attestation key as a verifier may give it: a ``cryptography`` key or its TPMT_PUBLIC
#: (a ``TPMTPublic``, or its bytes or TPM2B_PUBLIC as bytes, a bytearray or a memoryview).
AKPublic = PublicKey | TPMTPublic | bytes | bytearray | memoryview

#: An AK is made in a TPM (tcg.model's origin attributes) and a restricted signing key.
_AK_ATTRIBUTES = (
    origin_attributes(KeyUsage.ATTEST) | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT
)
_STRONG_CURVES = {
    TPM_ECC_NIST_P256: "P-256",
    TPM_ECC_NIST_P384: "P-384",
    TPM_ECC_NIST_P521: "P-521",
}


def owned_bytes(data: object, what: str, check: Check | None = Check.STRUCTURE) -> bytes:
    """A copy of a bytes-like input (bytes, bytearray, memoryview) that the verifier owns, so
    that nothing the caller changes later reaches a check or a result. Anything else is refused:
    an ``AttestationCheckFailed`` naming ``check`` (``MalformedAttestation`` for STRUCTURE), or
    an ``InvalidData`` when ``check`` is None."""
    if type(data) is bytes:  # its own copy: it cannot change
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            return bytes(data)
        except ValueError:  # a released memoryview
            message = f"{what} is a released memoryview: nothing to read"
    else:
        message = f"{what} is bytes, a bytearray or a memoryview, not {type(data).__name__}"
    if check is None:
        raise InvalidData(message)
    if check is Check.STRUCTURE:
        raise MalformedAttestation(message)
    raise AttestationCheckFailed(message, check)


@dataclass(frozen=True)
class ResolvedAK:
    """An AK ready to verify with: its key, whether RSA, the scheme its TPMT_PUBLIC fixes, and
    its name and nameAlg (None and 0 for a bare public key, which has no TPMT_PUBLIC)."""

    key: PublicKey
    is_rsa: bool
    scheme: tuple[int, int] | None
    name: bytes | None
    name_alg: int = 0

    @property
    def spki(self) -> bytes:
        """The key's DER SubjectPublicKeyInfo."""
        return public_der(self.key)


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
def _ak_from_bytes(data: bytes) -> ResolvedAK:
    """An AK from its TPMT_PUBLIC (or TPM2B_PUBLIC) bytes, once per distinct bytes: a
    restricted signing key made in a TPM, or a TRUST failure (failures are not kept)."""
    try:
        public = TPMTPublic.parse(tpmt_bytes(data))
    except InvalidData as exc:
        raise MalformedAttestation(f"the AK's TPMT_PUBLIC: {exc}") from exc
    check_ak_public(public)
    key = _strong_key(public)
    params = public.parameters
    assert isinstance(params, TPMSRSAParms | TPMSECCParms)  # check_ak_public made sure
    scheme = (params.scheme.scheme, params.scheme.hash_alg)
    return ResolvedAK(
        key, isinstance(key, rsa.RSAPublicKey), scheme, public.name(), public.name_alg
    )


def resolve_ak(ak: object) -> ResolvedAK:
    """The AK a caller gave (``AKPublic``): a TPMT_PUBLIC is checked as an AK's; a bare public
    key is taken as it is (the policy decides whether it may be used)."""
    if isinstance(ak, bytes | bytearray | memoryview):
        return _ak_from_bytes(owned_bytes(ak, "the AK"))
    if isinstance(ak, TPMTPublic):
        try:
            data = ak.to_bytes()
        except (
            InvalidData,
            ValueError,
            TypeError,
            AttributeError,
            struct.error,
            OverflowError,
        ) as exc:
            raise MalformedAttestation(f"the AK's TPMT_PUBLIC does not marshal: {exc}") from exc
        return _ak_from_bytes(data)
    if isinstance(ak, rsa.RSAPublicKey):
        return ResolvedAK(ak, True, None, None)
    if isinstance(ak, ec.EllipticCurvePublicKey):
        return ResolvedAK(ak, False, None, None)
    raise AttestationCheckFailed(
        f"an AK is a TPMT_PUBLIC or a public key, not {type(ak).__name__}", Check.TRUST
    )


def _strong_key(key: TPMTPublic) -> PublicKey:
    """The key of an RSA-2048+ or P-256/384/521 TPMT_PUBLIC (a KEY_STRENGTH failure if not)."""
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


@dataclass(frozen=True)
class CertifiedKey:
    """A certified key that passed the strength check: its TPMT_PUBLIC as parsed, the key as
    ``cryptography`` loads it, and its DER SubjectPublicKeyInfo."""

    public: TPMTPublic
    key: PublicKey
    spki: bytes


@functools.lru_cache(maxsize=256)
def certified_public(data: bytes) -> TPMTPublic:
    """A certified key's TPMT_PUBLIC, parsed once per distinct bytes (a device's keys are
    certified again and again); InvalidData, not kept, when it does not parse."""
    return TPMTPublic.parse(data)


@functools.lru_cache(maxsize=256)
def certified_key(data: bytes) -> CertifiedKey:
    """The key of a certified key's TPMT_PUBLIC bytes after the strength check (KEY_STRENGTH),
    once per distinct bytes: loading a P-256 point costs about a verification."""
    public = certified_public(data)
    key = _strong_key(public)
    return CertifiedKey(public, key, public_der(key))
