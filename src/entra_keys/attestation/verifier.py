"""Verifying TPM attestations: quotes, key certifications, EK and platform certificates.

Every check of REFERENCE.md section 3 is made, in this order, and each failure is its own
``AttestationCheckFailed`` subclass (``.check`` names it):

quote:   trust (AK) > hash > signature scheme > signature > software > magic > type > nonce
         > PCR selection > PCR digest
certify: trust (AK) > hash > signature scheme > signature > software > magic > type > name
         > nonce > key attributes > key strength > expected key

The AK is checked from its TPMT_PUBLIC (a restricted signing key made in a TPM, a scheme that
fits the signature, a SHA-2 nameAlg, RSA-2048+ or P-256+); a result says ``hardware_backed`` only
when the policy also has evidence that a TPM holds the AK (``AKEvidence``): it was enrolled by
credential activation against a verified EK, or an AK certificate chains to a trusted CA. A bare
public key as the AK is refused unless the policy opts in, and is then always UNVERIFIED.

Nothing in the attestation is believed before its signature verifies over the exact bytes given;
the bytes then must parse completely (no trailing bytes). Trust is one hook, ``TrustPolicy``.
Pure Python: neither tpm2-pytss nor libtss2 is needed.
"""

from __future__ import annotations

import enum
import functools
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..errors import (
    AttestTypeCheckFailed,
    CertificateCheckFailed,
    HashAlgorithmRefused,
    InvalidData,
    KeyAttributesCheckFailed,
    KeyMismatch,
    KeyStrengthCheckFailed,
    MagicCheckFailed,
    MalformedAttestation,
    NameCheckFailed,
    NonceCheckFailed,
    PCRDigestCheckFailed,
    PCRSelectionCheckFailed,
    SignatureCheckFailed,
    SoftwareAttestationRefused,
    UnsupportedAlgorithm,
    UntrustedKey,
)
from ..provider import MIN_NONCE  # one minimum for the providers and the verifier
from .software import is_software_marked
from .structures import (
    HASH_ALGORITHMS,
    TPM_ALG_ECC,
    TPM_ALG_NULL,
    TPM_ALG_RSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_SHA1,
    TPM_ECC_NIST_P256,
    TPM_ECC_NIST_P384,
    TPM_ECC_NIST_P521,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMA_OBJECT,
    HashInfo,
    RawAttest,
    TPMSAttest,
    TPMSECCParms,
    TPMSRSAParms,
    TPMTPublic,
    TPMTSignature,
    hash_info_by_name,
    scan_attest,
)

if TYPE_CHECKING:  # cryptography.x509 is costly to import: only certificate checks need it
    from cryptography import x509

__all__ = [
    "MIN_NONCE",
    "AKEvidence",
    "AKPublic",
    "CertifyResult",
    "EKCertificateInfo",
    "ExpectedPCRs",
    "PlatformCertificateInfo",
    "QuoteResult",
    "TrustPolicy",
    "check_ak_public",
    "parse_platform_certificate",
    "verify_ak_certificate",
    "verify_certify",
    "verify_ek_certificate",
    "verify_quote",
]

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
#: An attestation key as a verifier may give it: a ``cryptography`` key or its TPMT_PUBLIC.
AKPublic = PublicKey | TPMTPublic | bytes
#: Expected PCR values by bank, the bank named ("sha256") or a TPM_ALG id: {bank: {PCR: value}}.
ExpectedPCRs = Mapping[str, Mapping[int, bytes]] | Mapping[int, Mapping[int, bytes]]

_AK_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.RESTRICTED
    | TPMA_OBJECT.SIGN_ENCRYPT
)
_CERTIFIED_ATTRIBUTES = (
    TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
)
_STRONG_CURVES = {
    TPM_ECC_NIST_P256: "P-256",
    TPM_ECC_NIST_P384: "P-384",
    TPM_ECC_NIST_P521: "P-521",
}
_PKCS1 = padding.PKCS1v15()
_PYCA_HASHES: dict[int, hashes.HashAlgorithm] = {a: i.new() for a, i in HASH_ALGORITHMS.items()}
_ECDSA = {a: ec.ECDSA(h) for a, h in _PYCA_HASHES.items()}
_PSS = {
    a: padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
    for a, h in _PYCA_HASHES.items()
}


class AKEvidence(enum.Enum):
    """What the verifier knows of where an attestation key lives."""

    #: Enrolled by credential activation against an EK whose certificate the verifier checked.
    ENROLLED = "enrolled"
    #: An AK certificate that chains to a CA the policy trusts.
    CERTIFICATE = "certificate"
    #: No evidence that a TPM holds the AK: its attestations prove nothing about hardware.
    UNVERIFIED = "unverified"


class TrustPolicy:
    """What a verifier trusts; override ``ak_evidence`` (or pass arguments) to decide.

    An AK counts as hardware only with evidence: it is in ``enrolled_aks`` (an ``EnrolledAK``
    from ``AKEnrollment``, or the TPMT_PUBLIC of an AK the caller enrolled itself), or an AK
    certificate chains to ``ak_ca_certificates``. Other AKs given as TPMT_PUBLIC verify as
    UNVERIFIED (``hardware_backed=False``) unless ``require_hardware`` refuses them; a bare public
    key is refused unless ``allow_unverified_ak``. ``trusted_aks``, when given, is an allow-list:
    no other AK is accepted at all. Software attestations and SHA-1 are refused unless allowed.
    """

    #: Accept attestations the software provider made (their results say hardware_backed=False).
    allow_software: bool = False
    #: Accept SHA-1 signatures, PCR banks and names.
    allow_sha1: bool = False
    #: Accept a bare public key as the AK (no TPMT_PUBLIC: no attribute can be checked).
    allow_unverified_ak: bool = False
    #: Refuse every attestation that would not be hardware_backed (unverified AK, software).
    require_hardware: bool = False

    def __init__(
        self,
        *,
        allow_software: bool | None = None,
        allow_sha1: bool | None = None,
        allow_unverified_ak: bool | None = None,
        require_hardware: bool | None = None,
        enrolled_aks: Iterable[Any] = (),
        ak_ca_certificates: Iterable[x509.Certificate | bytes] = (),
        trusted_aks: Iterable[AKPublic] | None = None,
        ek_ca_certificates: Iterable[x509.Certificate | bytes] = (),
    ) -> None:
        if allow_software is not None:
            self.allow_software = allow_software
        if allow_sha1 is not None:
            self.allow_sha1 = allow_sha1
        if allow_unverified_ak is not None:
            self.allow_unverified_ak = allow_unverified_ak
        if require_hardware is not None:
            self.require_hardware = require_hardware
        self._trusted = (
            None if trusted_aks is None else {_spki(_resolve_ak(a).key) for a in trusted_aks}
        )
        self._enrolled = frozenset(_enrolled_name(a) for a in enrolled_aks)
        self._ak_cas = tuple(_load_certificate(c) for c in ak_ca_certificates)
        self._ek_cas = tuple(_load_certificate(c) for c in ek_ca_certificates)

    def trust_ak(self, ak_public: PublicKey) -> bool:
        """True when attestations signed by this AK may be accepted at all (the allow-list)."""
        return self._trusted is None or _spki(ak_public) in self._trusted

    def ak_evidence(
        self, ak_name: bytes | None, ak_public: PublicKey, ak_certificate: Any = None
    ) -> AKEvidence:
        """The evidence that a TPM holds the AK of this name (None: a bare key, never more than
        UNVERIFIED); an AK certificate that is given must verify (CertificateCheckFailed)."""
        if ak_name is None:
            return AKEvidence.UNVERIFIED
        if ak_name in self._enrolled:
            return AKEvidence.ENROLLED
        if ak_certificate is not None:
            verify_ak_certificate(ak_certificate, ak_public, self._ak_cas)
            return AKEvidence.CERTIFICATE
        return AKEvidence.UNVERIFIED

    def ek_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA certificates EK certificates must chain to (the TPM makers' roots)."""
        return self._ek_cas


_DEFAULT_POLICY = TrustPolicy()


def _enrolled_name(ak: Any) -> bytes:
    """The name of an enrolled AK: an EnrolledAK made by hardware, or a TPMT_PUBLIC."""
    hardware = getattr(ak, "hardware_backed", None)
    if hardware is not None:  # an EnrolledAK: only a hardware enrollment is evidence
        if not hardware:
            raise UntrustedKey("a software enrollment is no evidence of a TPM; leave it out")
        return bytes(ak.ak_name)
    if isinstance(ak, TPMTPublic):
        return ak.name()
    if isinstance(ak, bytes | bytearray):
        name = _ak_from_bytes(bytes(ak)).name
        assert name is not None  # a TPMT_PUBLIC always has one
        return name
    raise UntrustedKey(f"an enrolled AK is an EnrolledAK or a TPMT_PUBLIC, not {type(ak).__name__}")


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- the attestation key -------------------------------------------------------------------


@dataclass(frozen=True)
class _AK:
    """An AK ready to verify with: its key, whether RSA, the scheme its TPMT_PUBLIC fixes, and
    its name (None for a bare public key, which has no TPMT_PUBLIC)."""

    key: PublicKey
    is_rsa: bool
    scheme: tuple[int, int] | None
    name: bytes | None
    name_alg: int = 0

    @functools.cached_property
    def coordinate_size(self) -> int:
        """The byte size of an ECDSA r or s for this key's curve (0 for RSA)."""
        return 0 if self.is_rsa else (self.key.key_size + 7) // 8


def check_ak_public(public: TPMTPublic) -> None:
    """Refuses (UntrustedKey) a TPMT_PUBLIC that is no AK: it must be a restricted signing key
    made in a TPM (sign, restricted, fixedTPM, fixedParent, sensitiveDataOrigin; not decrypt),
    with a signing scheme, a SHA-2 nameAlg, and RSA-2048+ or P-256/384/521."""
    attrs = public.object_attributes
    if attrs & _AK_ATTRIBUTES != _AK_ATTRIBUTES or attrs & TPMA_OBJECT.DECRYPT:
        raise UntrustedKey(
            f"the AK ({TPMA_OBJECT(attrs)!r}) is not a restricted signing key made in a TPM "
            "(sign, restricted, fixedTPM, fixedParent, sensitiveDataOrigin; not decrypt)"
        )
    if public.name_alg not in HASH_ALGORITHMS:
        raise UntrustedKey(f"the AK's nameAlg 0x{public.name_alg:04x} is not a known hash")
    params = public.parameters
    if not isinstance(params, TPMSRSAParms | TPMSECCParms):
        raise UntrustedKey(f"the AK's type 0x{public.type:04x} is not an RSA or ECC key")
    if params.scheme.scheme == TPM_ALG_NULL:
        raise UntrustedKey("the AK has no signing scheme: a TPM's AK is bound to one")
    try:
        _strong_key(public)
    except KeyStrengthCheckFailed as exc:
        raise UntrustedKey(f"the AK is too weak: {exc}") from exc


@functools.lru_cache(maxsize=256)
def _ak_from_tpmt(public: TPMTPublic) -> _AK:
    """An AK from its TPMT_PUBLIC: a restricted signing key made in a TPM, or UntrustedKey."""
    check_ak_public(public)
    try:
        key = public.public_key()
    except InvalidData as exc:
        raise MalformedAttestation(f"the AK's TPMT_PUBLIC: {exc}") from exc
    params = public.parameters
    assert isinstance(params, TPMSRSAParms | TPMSECCParms)  # check_ak_public made sure
    scheme = (params.scheme.scheme, params.scheme.hash_alg)
    return _AK(key, isinstance(key, rsa.RSAPublicKey), scheme, public.name(), public.name_alg)


def _tpmt_bytes(data: bytes) -> bytes:
    """A TPMT_PUBLIC from itself or from a TPM2B_PUBLIC (the ``-u`` file of tpm2-tools)."""
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        return data[2:]
    return data


@functools.lru_cache(maxsize=256)
def _ak_from_bytes(data: bytes) -> _AK:
    try:
        public = TPMTPublic.parse(_tpmt_bytes(data))
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
    raise UntrustedKey(f"an AK is a TPMT_PUBLIC or a public key, not {type(ak).__name__}")


def _check_ak(
    ak_public: AKPublic, policy: TrustPolicy, ak_certificate: Any
) -> tuple[_AK, AKEvidence]:
    """The AK and the evidence for it, or UntrustedKey: a bare key needs the policy's opt-in."""
    ak = _resolve_ak(ak_public)
    if ak.name is None and not policy.allow_unverified_ak:
        raise UntrustedKey(
            "the AK is a bare public key: its attributes cannot be checked and nothing shows a "
            "TPM holds it; give its TPMT_PUBLIC (or opt in with allow_unverified_ak)"
        )
    if ak.name_alg == TPM_ALG_SHA1 and not policy.allow_sha1:
        raise HashAlgorithmRefused("the AK's nameAlg SHA-1 is refused: allow_sha1 is off")
    if not policy.trust_ak(ak.key):
        raise UntrustedKey("the trust policy does not trust this attestation key")
    evidence = policy.ak_evidence(ak.name, ak.key, ak_certificate)
    if evidence is AKEvidence.UNVERIFIED and policy.require_hardware:
        raise UntrustedKey(
            "the policy requires hardware and nothing shows a TPM holds this AK "
            "(not enrolled, no AK certificate)"
        )
    return ak, evidence


def _check_nonce_size(nonce: object) -> bytes:
    """The nonce as bytes, if it is at least MIN_NONCE long (NonceCheckFailed if not)."""
    if not isinstance(nonce, bytes | bytearray | memoryview):
        raise NonceCheckFailed(f"the nonce is bytes, not {type(nonce).__name__}")
    nonce = bytes(nonce)
    if len(nonce) < MIN_NONCE:
        raise NonceCheckFailed(
            f"the nonce is {len(nonce)} bytes; a verifier's nonce is at least {MIN_NONCE} "
            "random bytes (an empty or short one lets old attestations be replayed)"
        )
    return nonce


# --- the checks every attestation gets -----------------------------------------------------

# Indices into RawAttest (structures.scan_attest).
_MAGIC: Final = 0
_TYPE: Final = 1
_SIGNER: Final = 2
_EXTRA: Final = 3
_FIRMWARE: Final = 8
_FIRST: Final = 9
_LAST: Final = 10


def _signed_attest(
    attest: bytes, signature: bytes, ak_public: AKPublic, policy: TrustPolicy, ak_certificate: Any
) -> tuple[RawAttest, bytes, TPMTSignature, HashInfo, bool, AKEvidence]:
    """Trust, hash, scheme and signature checks, then the strict parse and the software and
    magic checks; returns the attestation's fields and bytes, its signature, the signing hash,
    whether the software provider made it and the evidence for the AK."""
    ak, evidence = _check_ak(ak_public, policy, ak_certificate)
    try:
        sig = TPMTSignature.parse(signature)
    except InvalidData as exc:
        raise MalformedAttestation(str(exc)) from exc
    info = HASH_ALGORITHMS.get(sig.hash)
    if info is None or (info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        name = info.name if info else f"0x{sig.hash:04x}"
        raise HashAlgorithmRefused(f"the signature's hash {name} is refused: SHA-256/384/512 only")
    if ak.is_rsa != sig.is_rsa:
        kind = "an RSA" if ak.is_rsa else "an elliptic-curve"
        raise SignatureCheckFailed(
            f"the signature scheme 0x{sig.sig_alg:04x} does not fit {kind} attestation key"
        )
    if ak.scheme is not None and ak.scheme != (sig.sig_alg, sig.hash):
        raise SignatureCheckFailed(
            f"the AK signs with scheme 0x{ak.scheme[0]:04x}/hash 0x{ak.scheme[1]:04x}, "
            f"the signature says 0x{sig.sig_alg:04x}/0x{sig.hash:04x}"
        )
    if type(attest) is not bytes:
        if not isinstance(attest, bytes | bytearray | memoryview):
            raise MalformedAttestation(f"TPMS_ATTEST: bytes expected, not {type(attest).__name__}")
        attest = bytes(attest)
    try:
        if isinstance(ak.key, rsa.RSAPublicKey):  # ak.is_rsa, spelled for the type checker
            pad = _PSS[sig.hash] if sig.sig_alg == TPM_ALG_RSAPSS else _PKCS1
            ak.key.verify(sig.signature, attest, pad, _PYCA_HASHES[sig.hash])
        else:
            size = ak.coordinate_size
            if len(sig.signature_r) > size or len(sig.signature_s) > size:
                raise SignatureCheckFailed(f"an ECDSA r or s is longer than {size} bytes")
            ak.key.verify(sig.to_der(), attest, _ECDSA[sig.hash])
    except (_PycaInvalidSignature, ValueError) as exc:
        raise SignatureCheckFailed(
            "the signature does not verify over the attestation with this AK"
        ) from exc
    raw = scan_attest(attest)
    if raw is None:  # the checked parse says what is wrong
        try:
            TPMSAttest.parse(attest)
        except InvalidData as exc:
            raise MalformedAttestation(str(exc)) from exc
        raise MalformedAttestation("TPMS_ATTEST: not well formed")  # pragma: no cover
    software = is_software_marked(raw[_SIGNER], raw[_FIRMWARE])
    if software and not policy.allow_software:
        raise SoftwareAttestationRefused(
            "the software provider made this attestation (no TPM); the policy does not allow "
            "software"
        )
    if software and policy.require_hardware:
        raise SoftwareAttestationRefused("the policy requires hardware; software made this")
    if raw[_MAGIC] != TPM_GENERATED_VALUE:
        raise MagicCheckFailed(
            f"magic is 0x{raw[_MAGIC]:08x}, not TPM_GENERATED_VALUE 0x{TPM_GENERATED_VALUE:08x}"
        )
    return raw, attest, sig, info, software, evidence


def _check_type(raw: RawAttest, wanted: int, what: str) -> None:
    if raw[_TYPE] != wanted:
        raise AttestTypeCheckFailed(
            f"the attestation's type is 0x{raw[_TYPE]:04x}, not {what} (0x{wanted:04x})"
        )


def _check_nonce(raw: RawAttest, nonce: bytes) -> None:
    _check_nonce_size(nonce)
    if not hmac.compare_digest(raw[_EXTRA], bytes(nonce)):
        raise NonceCheckFailed("extraData is not the nonce: a replayed or another attestation")


# --- quotes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteResult:
    """A verified quote: the PCR values the TPM vouches for (by bank name) and what it signed."""

    raw_attest: bytes
    signature: TPMTSignature
    nonce: bytes
    pcr_values: Mapping[str, Mapping[int, bytes]]
    pcr_digest: bytes
    #: True only for a TPM's quote by an AK with evidence (enrolled or certified): never for
    #: the software provider's quotes (allow_software) or an unverified AK.
    hardware_backed: bool
    checks: tuple[str, ...]
    #: What the verifier knows of the AK: enrolled, an AK certificate, or unverified.
    ak_evidence: AKEvidence = AKEvidence.UNVERIFIED

    @functools.cached_property
    def attest(self) -> TPMSAttest:
        """The verified TPMS_ATTEST (clock, firmware version, signer), parsed when asked for."""
        return TPMSAttest.parse(self.raw_attest)


_QUOTE_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "nonce",
    "pcr-selection", "pcr-digest",
)  # fmt: skip
_CERTIFY_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "name",
    "nonce", "key-attributes", "key-strength",
)  # fmt: skip


class _Bank(NamedTuple):
    """An expected PCR bank: its hash, PCR bitmap, values and their concatenation."""

    info: HashInfo
    bitmap: int
    values: dict[int, bytes]
    concatenated: bytes


def _expected_pcrs(pcrs: ExpectedPCRs, policy: TrustPolicy) -> dict[int, _Bank]:
    """{hash alg: bank} from the caller's expected values, checked for size."""
    out: dict[int, _Bank] = {}
    items: Iterable[tuple[str | int, Mapping[int, bytes]]] = pcrs.items()
    for bank, values in items:
        try:
            info = HASH_ALGORITHMS[bank] if isinstance(bank, int) else hash_info_by_name(bank)
        except (KeyError, UnsupportedAlgorithm) as exc:
            raise HashAlgorithmRefused(f"PCR bank {bank!r} is not SHA-1/256/384/512") from exc
        if info.alg == TPM_ALG_SHA1 and not policy.allow_sha1:
            raise HashAlgorithmRefused("the sha1 PCR bank is refused: allow_sha1 is off")
        bitmap = 0
        for index, value in values.items():
            if not (type(index) is int and 0 <= index < 32):
                raise InvalidData(f"expected PCR index {index!r} is not 0..31")
            if len(value) != info.digest_size:
                raise InvalidData(
                    f"expected PCR {info.name}:{index} is {len(value)} bytes, "
                    f"not {info.digest_size}"
                )
            bitmap |= 1 << index
        if bitmap:
            ordered = dict(sorted(values.items()))
            out[info.alg] = _Bank(info, bitmap, ordered, b"".join(ordered.values()))
    if not out:
        raise InvalidData("no expected PCR values: a quote is checked against some")
    return out


def verify_quote(
    attest: bytes,
    signature: bytes,
    ak_public: AKPublic,
    nonce: bytes,
    pcrs: ExpectedPCRs,
    *,
    policy: TrustPolicy | None = None,
    ak_certificate: x509.Certificate | bytes | None = None,
) -> QuoteResult:
    """Verifies a TPM2_Quote against the AK (its TPMT_PUBLIC), the nonce (at least 8 bytes) and
    the expected PCR values ({bank: {PCR: value}}, e.g. {"sha256": {0: ..., 7: ...}}); raises
    the failed check's error. ``ak_certificate`` is checked against the policy's AK CAs."""
    policy = policy or _DEFAULT_POLICY
    expected = _expected_pcrs(pcrs, policy)
    raw, attest, sig, info, software, evidence = _signed_attest(
        attest, signature, ak_public, policy, ak_certificate
    )
    _check_type(raw, TPM_ST_ATTEST_QUOTE, "a quote")
    _check_nonce(raw, nonce)
    selections = raw[_FIRST]
    assert isinstance(selections, tuple)  # a quote's, as the type says
    quoted: dict[int, int] = {}
    for alg, _, select in selections:
        bitmap = int.from_bytes(select, "little")
        if bitmap and (alg in quoted or alg not in expected):
            raise _selection_failed(selections, expected)
        if bitmap:
            quoted[alg] = bitmap
    if len(quoted) != len(expected) or any(quoted[a] != b.bitmap for a, b in expected.items()):
        raise _selection_failed(selections, expected)
    digest = info.digest(b"".join(expected[alg].concatenated for alg in quoted))
    if not hmac.compare_digest(digest, raw[_LAST]):
        raise PCRDigestCheckFailed(
            f"the quoted PCR digest is not the {info.name} of the expected PCR values"
        )
    return QuoteResult(
        raw_attest=attest,
        signature=sig,
        nonce=bytes(nonce),
        pcr_values={b.info.name: b.values for b in expected.values()},
        pcr_digest=digest,
        hardware_backed=not software and evidence is not AKEvidence.UNVERIFIED,
        checks=_QUOTE_CHECKS,
        ak_evidence=evidence,
    )


def _selection_failed(
    selections: Sequence[tuple[int, int, bytes]], expected: Mapping[int, _Bank]
) -> PCRSelectionCheckFailed:
    def bank(alg: int) -> str:
        return HASH_ALGORITHMS[alg].name if alg in HASH_ALGORITHMS else f"0x{alg:04x}"

    def pcrs(bitmap: int) -> list[int]:
        return [i for i in range(bitmap.bit_length()) if bitmap >> i & 1]

    got = ", ".join(f"{bank(a)}:{pcrs(int.from_bytes(s, 'little'))}" for a, _, s in selections)
    want = ", ".join(f"{bank(a)}:{pcrs(b.bitmap)}" for a, b in expected.items())
    return PCRSelectionCheckFailed(f"the quote covers PCRs {got or 'none'}, not {want}")


# --- key certification ---------------------------------------------------------------------


@dataclass(frozen=True)
class CertifyResult:
    """A verified TPM2_Certify: the key it vouches for and that key's properties."""

    attest: TPMSAttest
    signature: TPMTSignature
    nonce: bytes
    key_public: TPMTPublic
    key_name: bytes
    public_key: PublicKey
    #: True only for a TPM's certification by an AK with evidence (enrolled or certified):
    #: never for the software provider's (allow_software) or an unverified AK.
    hardware_backed: bool
    checks: tuple[str, ...]
    #: What the verifier knows of the AK: enrolled, an AK certificate, or unverified.
    ak_evidence: AKEvidence = AKEvidence.UNVERIFIED


def verify_certify(
    attest: bytes,
    signature: bytes,
    ak_public: AKPublic,
    key_public_tpmt: bytes,
    nonce: bytes,
    *,
    policy: TrustPolicy | None = None,
    expected_key: PublicKey | None = None,
    ak_certificate: x509.Certificate | bytes | None = None,
) -> CertifyResult:
    """Verifies a TPM2_Certify of the key whose TPMT_PUBLIC is given: signed by the AK (its
    TPMT_PUBLIC), over the nonce (at least 8 bytes), naming exactly that key, which must be a
    TPM-made, non-migratable, unrestricted RSA-2048+ or P-256/384/521 key (and
    ``expected_key`` when given)."""
    policy = policy or _DEFAULT_POLICY
    raw, attest, sig, _, software, evidence = _signed_attest(
        attest, signature, ak_public, policy, ak_certificate
    )
    _check_type(raw, TPM_ST_ATTEST_CERTIFY, "a certification")
    try:
        key = TPMTPublic.parse(key_public_tpmt)
    except InvalidData as exc:
        raise MalformedAttestation(f"the certified key's {exc}") from exc
    name_info = HASH_ALGORITHMS.get(key.name_alg)
    if name_info is None or (name_info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        raise HashAlgorithmRefused(f"the certified key's nameAlg 0x{key.name_alg:04x} is refused")
    name = key.name_alg.to_bytes(2, "big") + name_info.digest(bytes(key_public_tpmt))
    certified = raw[_FIRST]
    assert isinstance(certified, bytes)  # a certification's name, as the type says
    if not hmac.compare_digest(name, certified):
        raise NameCheckFailed("the certified name is not the name of the TPMT_PUBLIC given")
    _check_nonce(raw, nonce)
    attrs = key.object_attributes
    if attrs & _CERTIFIED_ATTRIBUTES != _CERTIFIED_ATTRIBUTES or attrs & TPMA_OBJECT.RESTRICTED:
        raise KeyAttributesCheckFailed(
            f"the key's attributes ({TPMA_OBJECT(attrs)!r}) are not fixedTPM, fixedParent, "
            "sensitiveDataOrigin and unrestricted"
        )
    public_key = _strong_key(key)
    if expected_key is not None and _spki(expected_key) != _spki(public_key):
        raise KeyMismatch("the certified key is not the expected key")
    return CertifyResult(
        attest=TPMSAttest.parse(attest),
        signature=sig,
        nonce=bytes(nonce),
        key_public=key,
        key_name=name,
        public_key=public_key,
        hardware_backed=not software and evidence is not AKEvidence.UNVERIFIED,
        checks=(*_CERTIFY_CHECKS, "expected-key") if expected_key is not None else _CERTIFY_CHECKS,
        ak_evidence=evidence,
    )


def _strong_key(key: TPMTPublic) -> PublicKey:
    params = key.parameters
    if key.type == TPM_ALG_RSA and isinstance(params, TPMSRSAParms):
        if params.key_bits < 2048:
            raise KeyStrengthCheckFailed(f"RSA-{params.key_bits} is weaker than RSA-2048")
    elif key.type == TPM_ALG_ECC and isinstance(params, TPMSECCParms):
        if params.curve_id not in _STRONG_CURVES:
            raise KeyStrengthCheckFailed(
                f"curve 0x{params.curve_id:04x} is not P-256, P-384 or P-521"
            )
    else:
        raise KeyStrengthCheckFailed(f"object type 0x{key.type:04x} is not an RSA or ECC key")
    try:
        return key.public_key()
    except InvalidData as exc:
        raise MalformedAttestation(f"the certified key's {exc}") from exc


# --- EK certificates -----------------------------------------------------------------------

_TCG_KP_EK_CERTIFICATE = "2.23.133.8.1"
_TPM_MANUFACTURER, _TPM_MODEL, _TPM_VERSION = "2.23.133.2.1", "2.23.133.2.2", "2.23.133.2.3"
# platformManufacturerStr, platformModel, platformVersion, platformSerial
_PLATFORM_OIDS = frozenset({"2.23.133.5.1.1", "2.23.133.5.1.4", "2.23.133.5.1.5", "2.23.133.5.1.6"})
_MAX_CHAIN = 8
# Extensions this check understands, so they may be critical (RFC 5280 4.2): the EK profile
# makes subjectAltName critical when the subject is empty.
_KNOWN_CRITICAL = frozenset(
    {
        "2.5.29.15",  # keyUsage
        "2.5.29.17",  # subjectAltName
        "2.5.29.19",  # basicConstraints
        "2.5.29.32",  # certificatePolicies
        "2.5.29.37",  # extKeyUsage
        "2.5.29.9",  # subjectDirectoryAttributes
        "2.5.29.14",  # subjectKeyIdentifier
        "2.5.29.35",  # authorityKeyIdentifier
    }
)


@dataclass(frozen=True)
class EKCertificateInfo:
    """A checked EK certificate: its key, its chain (leaf first, a trusted CA last) and the TPM
    it names (manufacturer, model, version from subjectAltName; TPM specification)."""

    certificate: x509.Certificate
    public_key: PublicKey
    chain: tuple[x509.Certificate, ...]
    manufacturer: str | None
    model: str | None
    version: str | None
    #: The TCG vendor id when the manufacturer is written "id:XXXXXXXX" (swtpm: 0x00001014).
    manufacturer_id: int | None
    #: TPMSpecification (family, level, revision) from subjectDirectoryAttributes, if present.
    tpm_specification: tuple[str, int, int] | None


def _load_certificate(data: x509.Certificate | bytes) -> x509.Certificate:
    from cryptography import x509

    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except (ValueError, TypeError) as exc:
        raise CertificateCheckFailed(f"not an X.509 certificate ({exc})") from exc


def verify_ek_certificate(
    certificate: bytes | x509.Certificate,
    ca_certs: Iterable[x509.Certificate | bytes] | None = None,
    *,
    intermediates: Iterable[x509.Certificate | bytes] = (),
    ek_public: AKPublic | None = None,
    at: datetime | None = None,
    policy: TrustPolicy | None = None,
) -> EKCertificateInfo:
    """Checks that an EK certificate chains to one of the CA certificates (or the policy's),
    is in date, is for the EK (when ``ek_public`` is given), and reads the TPM it names. Every
    certificate in ``ca_certs`` is a trust anchor; ``intermediates`` only help build the chain.

    The chain is checked step by step (signature, validity, CA and keyCertSign bits, path
    length, critical extensions) rather than by a WebPKI verifier, which refuses what the TCG
    EK profile allows: an empty subject with a critical subjectAltName, TCG key purposes.
    """
    from cryptography import x509

    try:
        return _verify_ek_certificate(certificate, ca_certs, intermediates, ek_public, at, policy)
    except (
        ValueError,
        TypeError,
        _PycaUnsupported,
        x509.UnsupportedGeneralNameType,
        x509.DuplicateExtension,
        x509.InvalidVersion,
    ) as exc:
        # cryptography parses certificates lazily: a damaged part shows when it is read.
        raise CertificateCheckFailed(f"a certificate does not parse ({exc})") from exc


def _verify_ek_certificate(
    certificate: bytes | x509.Certificate,
    ca_certs: Iterable[x509.Certificate | bytes] | None,
    intermediates: Iterable[x509.Certificate | bytes],
    ek_public: AKPublic | None,
    at: datetime | None,
    policy: TrustPolicy | None,
) -> EKCertificateInfo:
    leaf = _load_certificate(certificate)
    anchors = tuple(
        _load_certificate(c)
        for c in (
            ca_certs if ca_certs is not None else (policy or _DEFAULT_POLICY).ek_ca_certificates()
        )
    )
    if not anchors:
        raise CertificateCheckFailed("no CA certificates to check the EK certificate against")
    pool = (*anchors, *(_load_certificate(c) for c in intermediates))
    when = at or datetime.now(UTC)
    _check_certificate(leaf, when, "the EK certificate")
    _check_end_entity(leaf, "the EK certificate")
    purposes = _extension(leaf, "2.5.29.37")
    if purposes is not None and _TCG_KP_EK_CERTIFICATE not in {p.dotted_string for p in purposes}:
        raise CertificateCheckFailed(
            "the certificate's key purposes do not include EK (2.23.133.8.1)"
        )
    chain = [leaf]
    while chain[-1] not in anchors or len(chain) == 1:
        if len(chain) > _MAX_CHAIN:
            raise CertificateCheckFailed(f"no trusted CA within {_MAX_CHAIN} certificates")
        chain.append(_issuer_of(chain[-1], pool, when, len(chain) - 1))
    public_key = _strong_certified_key(leaf, "the EK certificate")
    if ek_public is not None and _spki(_resolve_ek(ek_public)) != _spki(public_key):
        raise CertificateCheckFailed("the certificate is for another key than this EK")
    manufacturer, model, version, spec = _tpm_identity(leaf)
    manufacturer_id = None
    if manufacturer is not None and manufacturer.lower().startswith("id:"):
        try:
            manufacturer_id = int(manufacturer[3:], 16)
        except ValueError:
            manufacturer_id = None
    return EKCertificateInfo(
        certificate=leaf,
        public_key=public_key,
        chain=tuple(chain),
        manufacturer=manufacturer,
        model=model,
        version=version,
        manufacturer_id=manufacturer_id,
        tpm_specification=spec,
    )


def _check_end_entity(cert: x509.Certificate, what: str) -> None:
    """Refuses a CA certificate in a leaf's place: basicConstraints CA, keyCertSign or cRLSign."""
    from cryptography import x509

    constraints = _extension(cert, "2.5.29.19")
    if isinstance(constraints, x509.BasicConstraints) and constraints.ca:
        raise CertificateCheckFailed(f"{what} is a CA certificate, not an end-entity certificate")
    usage = _extension(cert, "2.5.29.15")
    if isinstance(usage, x509.KeyUsage) and (usage.key_cert_sign or usage.crl_sign):
        raise CertificateCheckFailed(f"{what} may sign certificates: it is no end-entity's")


def _strong_certified_key(cert: x509.Certificate, what: str) -> PublicKey:
    """The certificate's key, if RSA-2048 or larger or on P-256, P-384 or P-521."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise CertificateCheckFailed(f"{what}'s key is RSA-{key.key_size}, below RSA-2048")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise CertificateCheckFailed(
                f"{what}'s key is on {key.curve.name}, not P-256, P-384 or P-521"
            )
        return key
    raise CertificateCheckFailed(f"{what}'s key is neither RSA nor elliptic-curve")


def verify_ak_certificate(
    certificate: x509.Certificate | bytes,
    ak_public: PublicKey,
    ca_certs: Iterable[x509.Certificate | bytes],
    *,
    intermediates: Iterable[x509.Certificate | bytes] = (),
    at: datetime | None = None,
) -> tuple[x509.Certificate, ...]:
    """Checks an AK certificate: an end-entity certificate for exactly this AK's key, in date,
    chaining to one of the CA certificates; returns the chain (leaf first) or raises
    CertificateCheckFailed."""
    from cryptography import x509

    try:
        leaf = _load_certificate(certificate)
        anchors = tuple(_load_certificate(c) for c in ca_certs)
        if not anchors:
            raise CertificateCheckFailed("no CA certificates to check the AK certificate against")
        pool = (*anchors, *(_load_certificate(c) for c in intermediates))
        when = at or datetime.now(UTC)
        _check_certificate(leaf, when, "the AK certificate")
        _check_end_entity(leaf, "the AK certificate")
        if _spki(_strong_certified_key(leaf, "the AK certificate")) != _spki(ak_public):
            raise CertificateCheckFailed("the AK certificate is for another key than this AK")
        chain = [leaf]
        while chain[-1] not in anchors or len(chain) == 1:
            if len(chain) > _MAX_CHAIN:
                raise CertificateCheckFailed(f"no trusted CA within {_MAX_CHAIN} certificates")
            chain.append(_issuer_of(chain[-1], pool, when, len(chain) - 1))
    except (ValueError, TypeError, _PycaUnsupported, x509.DuplicateExtension) as exc:
        raise CertificateCheckFailed(f"a certificate does not parse ({exc})") from exc
    return tuple(chain)


def _resolve_ek(ek: AKPublic) -> PublicKey:
    if isinstance(ek, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return ek
    try:
        public = (
            TPMTPublic.parse(_tpmt_bytes(bytes(ek))) if isinstance(ek, bytes | bytearray) else ek
        )
        return public.public_key()
    except InvalidData as exc:
        raise CertificateCheckFailed(f"the EK's {exc}") from exc


def _extension(cert: x509.Certificate, oid: str) -> Any:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise CertificateCheckFailed(f"a certificate extension does not parse ({exc})") from exc


def _check_certificate(cert: x509.Certificate, when: datetime, what: str) -> None:
    """In date at ``when``, and every critical extension one this check understands."""
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise CertificateCheckFailed(
            f"{what} is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, not at {when:%Y-%m-%d %H:%M:%S}"
        )
    try:
        extensions = list(cert.extensions)
    except ValueError as exc:
        raise CertificateCheckFailed(f"{what}'s extensions do not parse ({exc})") from exc
    for ext in extensions:
        if ext.critical and ext.oid.dotted_string not in _KNOWN_CRITICAL:
            raise CertificateCheckFailed(
                f"{what} has a critical extension {ext.oid.dotted_string} this check does not know"
            )


def _issuer_of(
    cert: x509.Certificate, pool: Sequence[x509.Certificate], when: datetime, below: int
) -> x509.Certificate:
    """The CA in the pool that signed ``cert`` and may issue (CA, keyCertSign, path length)."""
    from cryptography import x509

    for candidate in pool:
        if candidate.subject != cert.issuer or candidate == cert:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, _PycaInvalidSignature):
            continue
        what = f"the CA certificate {candidate.subject.rfc4514_string()!r}"
        _check_certificate(candidate, when, what)
        constraints = _extension(candidate, "2.5.29.19")
        if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
            raise CertificateCheckFailed(f"{what} signed the chain but is not a CA")
        if constraints.path_length is not None and below > constraints.path_length:
            raise CertificateCheckFailed(f"{what} allows a path of {constraints.path_length}")
        usage = _extension(candidate, "2.5.29.15")
        if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
            raise CertificateCheckFailed(f"{what} may not sign certificates (keyCertSign)")
        return candidate
    raise CertificateCheckFailed(
        f"no trusted CA signed {cert.subject.rfc4514_string() or 'the certificate'!r} "
        f"(issuer {cert.issuer.rfc4514_string()!r})"
    )


_ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)


def _directory_names(general_names: Any) -> dict[str, str]:
    """{OID: text} of every attribute in the directoryName entries of a GeneralNames."""
    found: dict[str, str] = {}
    for general_name in general_names or ():
        if general_name.name != "directory_name":
            continue
        for rdn in general_name.chosen.chosen:
            for attribute in rdn:
                value = attribute["value"].native
                if isinstance(value, str):
                    found[attribute["type"].dotted] = value
    return found


def _tpm_identity(
    cert: x509.Certificate,
) -> tuple[str | None, str | None, str | None, tuple[str, int, int] | None]:
    """The TPM manufacturer, model and version (subjectAltName) and TPMSpecification."""
    from asn1crypto import x509 as asn1_x509
    from cryptography.hazmat.primitives.serialization import Encoding

    try:
        parsed = asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))
        names = _directory_names(parsed.subject_alt_name_value)
        spec = None
        for ext in parsed["tbs_certificate"]["extensions"] or ():
            if ext["extn_id"].dotted != "2.5.29.9":
                continue
            for attribute in ext["extn_value"].parsed:
                if attribute["type"].dotted == "2.23.133.2.16" and len(attribute["values"]):
                    v = attribute["values"][0].native
                    spec = (str(v["family"]), int(v["level"]), int(v["revision"]))
    except _ASN1_ERRORS as exc:
        raise CertificateCheckFailed(
            f"the EK certificate's TPM names do not parse ({exc})"
        ) from exc
    return names.get(_TPM_MANUFACTURER), names.get(_TPM_MODEL), names.get(_TPM_VERSION), spec


# --- platform certificates -----------------------------------------------------------------


@dataclass(frozen=True)
class PlatformCertificateInfo:
    """What a TCG platform certificate says about the platform (IWG Platform Certificate
    Profile): maker, model, version and serial, and the certificate's own identity."""

    #: "attribute" for an RFC 5755 attribute certificate (the profile's form), "x509" for the
    #: public-key certificate form older swtpm_localca writes.
    form: str
    manufacturer: str | None
    model: str | None
    version: str | None
    serial: str | None
    issuer: str
    serial_number: int
    #: The serial number of the EK certificate an attribute certificate's holder names.
    holder_serial_number: int | None


def parse_platform_certificate(data: bytes) -> PlatformCertificateInfo:
    """Reads a TCG platform certificate (DER): an attribute certificate, or the X.509 form of
    swtpm's local CA; InvalidData when it is neither. The signature is not checked here."""
    from asn1crypto import cms, parser
    from asn1crypto import x509 as asn1_x509

    try:
        _, _, _, _, outer, _ = parser.parse(bytes(data), strict=True)
        _, _, _, _, tbs, _ = parser.parse(outer, strict=False)
        first_class, _, first_tag, _, _, _ = parser.parse(tbs, strict=False)
        if (first_class, first_tag) == (2, 0):  # [0] version: an X.509 certificate
            cert = asn1_x509.Certificate.load(bytes(data), strict=True)
            subject_names = _directory_names(cert.subject_alt_name_value)
            issuer = cert.issuer.human_friendly
            return _platform_info("x509", subject_names, issuer, cert.serial_number)
        acert = cms.AttributeCertificateV2.load(bytes(data), strict=True)
        info = acert["ac_info"]
        names: dict[str, str] = {}
        for ext in info["extensions"] or ():
            if ext["extn_id"].dotted == "2.5.29.17":
                names.update(_directory_names(ext["extn_value"].parsed))
        for attribute in info["attributes"]:
            oid = attribute["type"].dotted
            if oid in _PLATFORM_OIDS and oid not in names and len(attribute["values"]):
                value = attribute["values"][0].native
                if isinstance(value, str | bytes):
                    names[oid] = value.decode() if isinstance(value, bytes) else value
        holder = info["holder"]["base_certificate_id"]
        issuer = info["issuer"]
        issuer_names = issuer.chosen["issuer_name"] if issuer.name == "v2_form" else issuer.chosen
        issuer_text = ", ".join(
            n.chosen.human_friendly for n in issuer_names if n.name == "directory_name"
        )
        holder_serial = None if holder.native is None else int(holder["serial"].native)
        serial = int(info["serial_number"].native)
        return _platform_info("attribute", names, issuer_text, serial, holder_serial)
    except _ASN1_ERRORS as exc:
        raise InvalidData(f"not a TCG platform certificate ({exc})") from exc


def _platform_info(
    form: str, names: Mapping[str, str], issuer: str, serial: int, holder: int | None = None
) -> PlatformCertificateInfo:
    return PlatformCertificateInfo(
        form=form,
        manufacturer=names.get("2.23.133.5.1.1"),
        model=names.get("2.23.133.5.1.4"),
        version=names.get("2.23.133.5.1.5"),
        serial=names.get("2.23.133.5.1.6"),
        issuer=issuer,
        serial_number=int(serial),
        holder_serial_number=holder,
    )
