"""Verifying TPM attestations: quotes and key certifications, against a trust policy.

Every check of REFERENCE.md section 3 is made, in this order, and each failure is an
``AttestationCheckFailed`` whose ``.check`` (a ``Check``) names it:

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
EK, AK and platform certificates are checked in ``ekcert`` (re-exported here). Pure Python:
neither tpm2-pytss nor libtss2 is needed.
"""

from __future__ import annotations

import enum
import functools
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..errors import (
    AttestationCheckFailed,
    Check,
    InvalidData,
    MalformedAttestation,
    UnsupportedAlgorithm,
)
from ..tpm_model import (  # one minimum and one origin for the providers and the verifier
    MIN_NONCE,
    KeyUsage,
    origin_attributes,
)
from .akpublic import (  # the AK's own checks
    _AK,
    AKPublic,
    PublicKey,
    _ak_from_bytes,
    _certified_key,
    _certified_public,
    _resolve_ak,
    check_ak_public,
)
from .ekcert import (  # the certificate checks, re-exported: callers import them from here
    EKCertificateInfo,
    PlatformCertificateInfo,
    _load_certificate,
    _spki,
    parse_platform_certificate,
    verify_ak_certificate,
    verify_ek_certificate,
)
from .records import is_software_marked
from .structures import (
    HASH_ALGORITHMS,
    TPM_ALG_RSAPSS,
    TPM_ALG_SHA1,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    TPMA_OBJECT,
    HashInfo,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSPCRSelection,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTSignature,
    hash_info_by_name,
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

#: Expected PCR values by bank, the bank named ("sha256") or a TPM_ALG id: {bank: {PCR: value}}.
ExpectedPCRs = Mapping[str, Mapping[int, bytes]] | Mapping[int, Mapping[int, bytes]]

#: A certified key must have been made in the TPM (fixedTPM, fixedParent, sensitiveDataOrigin).
_CERTIFIED_ATTRIBUTES = int(origin_attributes(KeyUsage.SIGN))  # ints: a Flag's & costs
_RESTRICTED = int(TPMA_OBJECT.RESTRICTED)
_PKCS1 = padding.PKCS1v15()
_new = object.__new__
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

    def __getstate__(self) -> dict[str, Any]:
        """The policy's state with its CA certificates as DER, so that it pickles (to the
        processes of a ``VerifierPool``): ``cryptography`` certificates do not."""
        from cryptography.hazmat.primitives.serialization import Encoding

        state = dict(self.__dict__)
        for field in ("_ak_cas", "_ek_cas"):
            if field in state:
                state[field] = tuple(c.public_bytes(Encoding.DER) for c in state[field])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for field in ("_ak_cas", "_ek_cas"):
            if field in state:
                state[field] = tuple(_load_certificate(c) for c in state[field])
        self.__dict__.update(state)

    def trust_ak(self, ak_public: PublicKey) -> bool:
        """True when attestations signed by this AK may be accepted at all (the allow-list)."""
        return self._trusted is None or _spki(ak_public) in self._trusted

    def ak_evidence(
        self, ak_name: bytes | None, ak_public: PublicKey, ak_certificate: Any = None
    ) -> AKEvidence:
        """The evidence that a TPM holds the AK of this name (None: a bare key, never more than
        UNVERIFIED); an AK certificate that is given must verify (a CERTIFICATE failure)."""
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
            raise AttestationCheckFailed(
                "a software enrollment is no evidence of a TPM; leave it out", Check.TRUST
            )
        return bytes(ak.ak_name)
    if isinstance(ak, TPMTPublic):
        return ak.name()
    if isinstance(ak, bytes | bytearray):
        name = _ak_from_bytes(bytes(ak)).name
        assert name is not None  # a TPMT_PUBLIC always has one
        return name
    raise AttestationCheckFailed(
        f"an enrolled AK is an EnrolledAK or a TPMT_PUBLIC, not {type(ak).__name__}", Check.TRUST
    )


# --- the attestation key -------------------------------------------------------------------


def _check_ak(
    ak_public: AKPublic, policy: TrustPolicy, ak_certificate: Any
) -> tuple[_AK, AKEvidence]:
    """The AK and the evidence for it, or a TRUST failure: a bare key needs the policy's opt-in."""
    ak = _resolve_ak(ak_public)
    if ak.name is None and not policy.allow_unverified_ak:
        raise AttestationCheckFailed(
            "the AK is a bare public key: its attributes cannot be checked and nothing shows a "
            "TPM holds it; give its TPMT_PUBLIC (or opt in with allow_unverified_ak)",
            Check.TRUST,
        )
    if ak.name_alg == TPM_ALG_SHA1 and not policy.allow_sha1:
        raise AttestationCheckFailed(
            "the AK's nameAlg SHA-1 is refused: allow_sha1 is off", Check.HASH
        )
    if not policy.trust_ak(ak.key):
        raise AttestationCheckFailed(
            "the trust policy does not trust this attestation key", Check.TRUST
        )
    evidence = policy.ak_evidence(ak.name, ak.key, ak_certificate)
    if evidence is AKEvidence.UNVERIFIED and policy.require_hardware:
        raise AttestationCheckFailed(
            "the policy requires hardware and nothing shows a TPM holds this AK "
            "(not enrolled, no AK certificate)",
            Check.TRUST,
        )
    return ak, evidence


def _check_nonce_size(nonce: object) -> bytes:
    """The nonce as bytes, if it is at least MIN_NONCE long (Check.NONCE if not)."""
    if type(nonce) is not bytes:
        if not isinstance(nonce, bytes | bytearray | memoryview):
            raise AttestationCheckFailed(
                f"the nonce is bytes, not {type(nonce).__name__}", Check.NONCE
            )
        nonce = bytes(nonce)
    if len(nonce) < MIN_NONCE:
        raise AttestationCheckFailed(
            f"the nonce is {len(nonce)} bytes; a verifier's nonce is at least {MIN_NONCE} "
            "random bytes (an empty or short one lets old attestations be replayed)",
            Check.NONCE,
        )
    return nonce


# --- the checks every attestation gets -----------------------------------------------------


def _signed_attest(
    attest: bytes, signature: bytes, ak_public: AKPublic, policy: TrustPolicy, ak_certificate: Any
) -> tuple[TPMSAttest, bytes, TPMTSignature, HashInfo, bool, AKEvidence]:
    """Trust, hash, scheme and signature checks, then the strict parse and the software and
    magic checks; returns the parsed attestation and its bytes, its signature, the signing
    hash, whether the software provider made it and the evidence for the AK."""
    ak, evidence = _check_ak(ak_public, policy, ak_certificate)
    try:
        sig = TPMTSignature.parse(signature)
    except InvalidData as exc:
        raise MalformedAttestation(str(exc)) from exc
    info = HASH_ALGORITHMS.get(sig.hash)
    if info is None or (info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        name = info.name if info else f"0x{sig.hash:04x}"
        raise AttestationCheckFailed(
            f"the signature's hash {name} is refused: SHA-256/384/512 only", Check.HASH
        )
    if ak.is_rsa != sig.is_rsa:
        kind = "an RSA" if ak.is_rsa else "an elliptic-curve"
        raise AttestationCheckFailed(
            f"the signature scheme 0x{sig.sig_alg:04x} does not fit {kind} attestation key",
            Check.SIGNATURE,
        )
    if ak.scheme is not None and ak.scheme != (sig.sig_alg, sig.hash):
        raise AttestationCheckFailed(
            f"the AK signs with scheme 0x{ak.scheme[0]:04x}/hash 0x{ak.scheme[1]:04x}, "
            f"the signature says 0x{sig.sig_alg:04x}/0x{sig.hash:04x}",
            Check.SIGNATURE,
        )
    if type(attest) is not bytes:
        if not isinstance(attest, bytes | bytearray | memoryview):
            raise MalformedAttestation(f"TPMS_ATTEST: bytes expected, not {type(attest).__name__}")
        attest = bytes(attest)
    try:
        if ak.is_rsa:  # (cast, not isinstance: an ABC's isinstance costs on this path)
            pad = _PSS[sig.hash] if sig.sig_alg == TPM_ALG_RSAPSS else _PKCS1
            cast(rsa.RSAPublicKey, ak.key).verify(
                sig.signature, attest, pad, _PYCA_HASHES[sig.hash]
            )
        else:
            size = ak.coordinate_size
            if len(sig.signature_r) > size or len(sig.signature_s) > size:
                raise AttestationCheckFailed(
                    f"an ECDSA r or s is longer than {size} bytes", Check.SIGNATURE
                )
            cast(ec.EllipticCurvePublicKey, ak.key).verify(sig.to_der(), attest, _ECDSA[sig.hash])
    except (_PycaInvalidSignature, ValueError) as exc:
        raise AttestationCheckFailed(
            "the signature does not verify over the attestation with this AK", Check.SIGNATURE
        ) from exc
    try:
        parsed = TPMSAttest.parse(attest)
    except InvalidData as exc:
        raise MalformedAttestation(str(exc)) from exc
    software = is_software_marked(parsed.qualified_signer, parsed.firmware_version)
    if software and not policy.allow_software:
        raise AttestationCheckFailed(
            "the software provider made this attestation (no TPM); the policy does not allow "
            "software",
            Check.SOFTWARE,
        )
    if software and policy.require_hardware:
        raise AttestationCheckFailed(
            "the policy requires hardware; software made this", Check.SOFTWARE
        )
    if parsed.magic != TPM_GENERATED_VALUE:
        raise AttestationCheckFailed(
            f"magic is 0x{parsed.magic:08x}, not TPM_GENERATED_VALUE 0x{TPM_GENERATED_VALUE:08x}",
            Check.MAGIC,
        )
    return parsed, attest, sig, info, software, evidence


def _check_type(attest: TPMSAttest, wanted: int, what: str) -> None:
    if attest.type != wanted:
        raise AttestationCheckFailed(
            f"the attestation's type is 0x{attest.type:04x}, not {what} (0x{wanted:04x})",
            Check.TYPE,
        )


def _check_nonce(attest: TPMSAttest, nonce: bytes) -> None:
    if not hmac.compare_digest(attest.extra_data, _check_nonce_size(nonce)):
        raise AttestationCheckFailed(
            "extraData is not the nonce: a replayed or another attestation", Check.NONCE
        )


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

    def __reduce__(self) -> tuple[object, ...]:
        """Pickles as its bytes and values (a ``VerifierPool`` sends many): ``attest`` is parsed
        again from ``raw_attest`` when asked for, the signature made from its fields."""
        s = self.signature
        fields = (self.raw_attest, (s.sig_alg, s.hash, s.signature, s.signature_r, s.signature_s))
        rest = (self.pcr_values, self.pcr_digest, self.hardware_backed, self.checks)
        return _quote_result, (*fields, self.nonce, *rest, self.ak_evidence.value)

    @functools.cached_property
    def attest(self) -> TPMSAttest:
        """The verified TPMS_ATTEST (clock, firmware version, signer): the one ``verify_quote``
        parsed, or parsed from ``raw_attest`` when asked for."""
        return TPMSAttest.parse(self.raw_attest)


def _quote_result(
    raw_attest: bytes, signature: tuple[Any, ...], nonce: bytes, *rest: Any
) -> QuoteResult:
    """A QuoteResult from what its ``__reduce__`` keeps."""
    pcr_values, digest, hardware, checks, evidence = rest
    sig = TPMTSignature(*signature)
    return QuoteResult(
        raw_attest, sig, nonce, pcr_values, digest, hardware, checks, AKEvidence(evidence)
    )


_QUOTE_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "nonce",
    "pcr-selection", "pcr-digest",
)  # fmt: skip
_CERTIFY_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "name",
    "nonce", "key-attributes", "key-strength",
)  # fmt: skip


class _Bank(NamedTuple):
    """An expected PCR bank: its hash, PCR indices, values and their concatenation."""

    info: HashInfo
    pcrs: frozenset[int]
    values: dict[int, bytes]
    concatenated: bytes


# Banks as callers name them, "sha256" or TPM_ALG_SHA256 (others take the general lookup).
_BANKS: dict[str | int, HashInfo] = {
    key: info for info in HASH_ALGORITHMS.values() for key in (info.alg, info.name)
}


def _expected_pcrs(pcrs: ExpectedPCRs, policy: TrustPolicy) -> dict[int, _Bank]:
    """{hash alg: bank} from the caller's expected values, checked for size."""
    out: dict[int, _Bank] = {}
    items: Iterable[tuple[str | int, Mapping[int, bytes]]] = pcrs.items()
    for bank, values in items:
        info = _BANKS.get(bank) if type(bank) is str or type(bank) is int else None
        if info is None:
            try:
                info = HASH_ALGORITHMS[bank] if isinstance(bank, int) else hash_info_by_name(bank)
            except (KeyError, UnsupportedAlgorithm) as exc:
                raise AttestationCheckFailed(
                    f"PCR bank {bank!r} is not SHA-1/256/384/512", Check.HASH
                ) from exc
        if info.alg == TPM_ALG_SHA1 and not policy.allow_sha1:
            raise AttestationCheckFailed(
                "the sha1 PCR bank is refused: allow_sha1 is off", Check.HASH
            )
        size = info.digest_size
        for index, value in values.items():
            if not (type(index) is int and 0 <= index < 32):
                raise InvalidData(f"expected PCR index {index!r} is not 0..31")
            if len(value) != size:
                raise InvalidData(
                    f"expected PCR {info.name}:{index} is {len(value)} bytes, not {size}"
                )
        if values:
            ordered = dict(sorted(values.items()))
            out[info.alg] = _Bank(info, frozenset(ordered), ordered, b"".join(ordered.values()))
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
    parsed, attest, sig, info, software, evidence = _signed_attest(
        attest, signature, ak_public, policy, ak_certificate
    )
    _check_type(parsed, TPM_ST_ATTEST_QUOTE, "a quote")
    _check_nonce(parsed, nonce)
    body = parsed.attested
    assert isinstance(body, TPMSQuoteInfo)  # a quote's, as its type says
    selections = body.pcr_select.selections
    quoted: dict[int, frozenset[int]] = {}
    for selection in selections:
        alg, indices = selection.hash, selection.pcrs
        if indices and (alg in quoted or alg not in expected):
            raise _selection_failed(selections, expected)
        if indices:
            quoted[alg] = indices
    if len(quoted) != len(expected):
        raise _selection_failed(selections, expected)
    for alg, bank in expected.items():
        if quoted[alg] != bank.pcrs:  # the same banks: each quoted one is expected
            raise _selection_failed(selections, expected)
    digest = info.digest(b"".join([expected[alg].concatenated for alg in quoted]))
    if not hmac.compare_digest(digest, body.pcr_digest):
        raise AttestationCheckFailed(
            f"the quoted PCR digest is not the {info.name} of the expected PCR values",
            Check.PCR_DIGEST,
        )
    # Built as its frozen __init__ would (every field, checked above), without the
    # object.__setattr__ per field: the same object, equal and hashable alike.
    result = _new(QuoteResult)
    result.__dict__.update(
        raw_attest=attest,
        signature=sig,
        nonce=nonce if type(nonce) is bytes else bytes(nonce),
        pcr_values={b.info.name: b.values for b in expected.values()},
        pcr_digest=digest,
        hardware_backed=not software and evidence is not AKEvidence.UNVERIFIED,
        checks=_QUOTE_CHECKS,
        ak_evidence=evidence,
        attest=parsed,  # what the cached ``attest`` would parse again
    )
    return result


def _selection_failed(
    selections: Sequence[TPMSPCRSelection], expected: Mapping[int, _Bank]
) -> AttestationCheckFailed:
    def bank(alg: int) -> str:
        return HASH_ALGORITHMS[alg].name if alg in HASH_ALGORITHMS else f"0x{alg:04x}"

    got = ", ".join(f"{bank(s.hash)}:{sorted(s.pcrs)}" for s in selections)
    want = ", ".join(f"{bank(a)}:{sorted(b.pcrs)}" for a, b in expected.items())
    return AttestationCheckFailed(
        f"the quote covers PCRs {got or 'none'}, not {want}", Check.PCR_SELECTION
    )


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

    def __reduce__(self) -> tuple[object, ...]:
        """Pickles as bytes: the attestation and the key's TPMT_PUBLIC as the TPM marshaled
        them (parsed again on loading) and the signature's fields; ``public_key`` (a
        ``cryptography`` key, which does not pickle) is read again from ``key_public``."""
        s = self.signature
        sig = (s.sig_alg, s.hash, s.signature, s.signature_r, s.signature_s)
        rest = (self.key_name, self.hardware_backed, self.checks, self.ak_evidence.value)
        return _certify_result, (
            self.attest.to_bytes(),
            sig,
            self.nonce,
            self.key_public.to_bytes(),
            *rest,
        )


def _certify_result(
    attest: bytes, signature: tuple[Any, ...], nonce: bytes, key_public: bytes, *rest: Any
) -> CertifyResult:
    """A CertifyResult from what its ``__reduce__`` keeps, the public key read again."""
    key_name, hardware, checks, evidence = rest
    key = _certified_public(key_public)
    return CertifyResult(
        TPMSAttest.parse(attest), TPMTSignature(*signature), nonce, key, key_name,
        _certified_key(key_public)[0], hardware, checks,
        AKEvidence(evidence),
    )  # fmt: skip


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
    parsed, attest, sig, _, software, evidence = _signed_attest(
        attest, signature, ak_public, policy, ak_certificate
    )
    _check_type(parsed, TPM_ST_ATTEST_CERTIFY, "a certification")
    data = key_public_tpmt if type(key_public_tpmt) is bytes else bytes(key_public_tpmt)
    try:
        key = _certified_public(data)
    except InvalidData as exc:
        raise MalformedAttestation(f"the certified key's {exc}") from exc
    name_info = HASH_ALGORITHMS.get(key.name_alg)
    if name_info is None or (name_info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        raise AttestationCheckFailed(
            f"the certified key's nameAlg 0x{key.name_alg:04x} is refused", Check.HASH
        )
    name = key.name_alg.to_bytes(2, "big") + name_info.digest(data)
    certified = parsed.attested
    assert isinstance(certified, TPMSCertifyInfo)  # a certification's, as its type says
    if not hmac.compare_digest(name, certified.name):
        raise AttestationCheckFailed(
            "the certified name is not the name of the TPMT_PUBLIC given", Check.NAME
        )
    _check_nonce(parsed, nonce)
    attrs = key.object_attributes
    if attrs & _CERTIFIED_ATTRIBUTES != _CERTIFIED_ATTRIBUTES or attrs & _RESTRICTED:
        raise AttestationCheckFailed(
            f"the key's attributes ({TPMA_OBJECT(attrs)!r}) are not fixedTPM, fixedParent, "
            "sensitiveDataOrigin and unrestricted",
            Check.KEY_ATTRIBUTES,
        )
    public_key, spki = _certified_key(data)
    # (a cryptography key equal to it is the same key; anything else is compared by its SPKI)
    if expected_key is not None and expected_key != public_key and _spki(expected_key) != spki:
        raise AttestationCheckFailed("the certified key is not the expected key", Check.KEY)
    result = _new(CertifyResult)  # as its frozen __init__ would, as in verify_quote
    result.__dict__.update(
        attest=parsed,
        signature=sig,
        nonce=nonce if type(nonce) is bytes else bytes(nonce),
        key_public=key,
        key_name=name,
        public_key=public_key,
        hardware_backed=not software and evidence is not AKEvidence.UNVERIFIED,
        checks=(*_CERTIFY_CHECKS, "expected-key") if expected_key is not None else _CERTIFY_CHECKS,
        ak_evidence=evidence,
    )
    return result
