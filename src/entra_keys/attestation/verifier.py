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
the bytes then must parse completely (no trailing bytes). An attestation that is exactly the one
expected is accepted by comparing its bytes in place (the fused path); any other is parsed and
checked in the order above, which names what is wrong. Trust is one hook, ``TrustPolicy``
(``policy``, re-exported here); EK, AK and platform certificates are checked in ``ekcert``
(re-exported here). Pure Python: neither tpm2-pytss nor libtss2 is needed.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from ..errors import (
    AttestationCheckFailed,
    Check,
    InvalidData,
    MalformedAttestation,
)
from ..tcg.model import (  # one minimum and one origin for the providers and the verifier
    MIN_NONCE,
    KeyUsage,
    origin_attributes,
)
from ..tcg.records import is_software_marked
from ..tcg.structures import (
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
    _signature,
    tpm2b,
)
from ..tcg.wire import CLOCK, HEADER, MAX_DATA, MAX_NAME, U64
from ._expected import ExpectedPCRs, _Bank, _expected_pcrs  # (ExpectedPCRs re-exported)
from .ak import (  # the AK's own checks
    _AK,
    AKPublic,
    PublicKey,
    _certified_key,
    _certified_public,
    check_ak_public,
)
from .ekcert import (  # the certificate checks, re-exported: callers import them from here
    EKCertificateInfo,
    PlatformCertificateInfo,
    _spki,
    parse_platform_certificate,
    verify_ak_certificate,
    verify_ek_certificate,
)
from .policy import _DEFAULT_POLICY, AKEvidence, TrustPolicy, _check_ak

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


def _verified_signature(
    attest: bytes, signature: bytes, ak_public: AKPublic, policy: TrustPolicy, ak_certificate: Any
) -> tuple[bytes, TPMTSignature, HashInfo, AKEvidence]:
    """Trust, hash, scheme and signature checks: the attestation's bytes, its signature, the
    signing hash and the evidence for the AK, once the signature verifies over those bytes."""
    ak, evidence = _check_ak(ak_public, policy, ak_certificate)
    form = ak.signature_form
    if form is not None and type(signature) is bytes and form.matches(signature):
        # the form a TPM gives this AK's signatures: the hash and scheme checks hold by it
        sig = _signature(form.sig_alg, form.hash_alg, *form.parts(signature))
        info = HASH_ALGORITHMS[form.hash_alg]
    else:
        sig, info = _parsed_signature(signature, ak, policy)
    if type(attest) is not bytes:
        if not isinstance(attest, bytes | bytearray | memoryview):
            raise MalformedAttestation(f"TPMS_ATTEST: bytes expected, not {type(attest).__name__}")
        attest = bytes(attest)
    try:
        if ak.is_rsa:
            pad = _PSS[sig.hash] if sig.sig_alg == TPM_ALG_RSAPSS else _PKCS1
            ak.verify(sig.signature, attest, pad, _PYCA_HASHES[sig.hash])
        else:
            size = ak.coordinate_size
            if len(sig.signature_r) > size or len(sig.signature_s) > size:
                raise AttestationCheckFailed(
                    f"an ECDSA r or s is longer than {size} bytes", Check.SIGNATURE
                )
            ak.verify(sig.to_der(), attest, _ECDSA[sig.hash])
    except (_PycaInvalidSignature, ValueError) as exc:
        raise AttestationCheckFailed(
            "the signature does not verify over the attestation with this AK", Check.SIGNATURE
        ) from exc
    return attest, sig, info, evidence


def _parsed_signature(
    signature: bytes, ak: _AK, policy: TrustPolicy
) -> tuple[TPMTSignature, HashInfo]:
    """The TPMT_SIGNATURE parsed and its signing hash, after the hash and scheme checks."""
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
    return sig, info


def _parsed_attest(attest: bytes, policy: TrustPolicy) -> tuple[TPMSAttest, bool]:
    """The strict parse of a verified attestation, then the software and magic checks: the
    TPMS_ATTEST and whether the software provider made it."""
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
    return parsed, software


# The fused path. A verified attestation that is exactly what the verifier expects (the magic
# and type, the nonce as extraData, the expected PCR selection and digest or the certified
# name) is accepted by comparing those bytes in place, without parsing it into objects; any
# other takes the full parse and the checks in their order, which say what is wrong. The fused
# path accepts nothing the full one refuses: it only compares with what the full one requires.
_QUOTE_HEAD = HEADER.pack(TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
_CERTIFY_HEAD = HEADER.pack(TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY)
_AFTER_NONCE = CLOCK.size  # clockInfo and firmwareVersion, after extraData
_FIRMWARE = CLOCK.size - 8  # where firmwareVersion starts after extraData (after clockInfo)
_SAFE = _FIRMWARE - 1  # clockInfo.safe, the byte before it


def _fused_head(
    attest: bytes, head: bytes, nonce: object, policy: TrustPolicy
) -> tuple[int, bool] | None:
    """Where the attested part starts and whether software made it, when the attestation is
    ``head`` (magic and type), a qualifiedSigner, the nonce (bytes of a size a verifier takes),
    clockInfo (safe YES or NO) and firmwareVersion, and the policy allows who made it; None
    otherwise."""
    if type(nonce) is not bytes or len(attest) < 8 or not attest.startswith(head):
        return None
    n = len(nonce)
    pos = 8 + (attest[6] << 8 | attest[7])  # after qualifiedSigner
    at = pos + 2 + n  # after extraData
    if (
        pos > 8 + MAX_NAME
        or not MIN_NONCE <= n <= MAX_DATA
        or not attest.startswith(nonce, pos + 2)  # (so that pos + 1 is in the attestation)
        or (attest[pos] << 8 | attest[pos + 1]) != n
        or at + _AFTER_NONCE > len(attest)
        or attest[at + _SAFE] > 1
    ):
        return None
    software = is_software_marked(attest[8:pos], U64.unpack_from(attest, at + _FIRMWARE)[0])
    if software and (not policy.allow_software or policy.require_hardware):
        return None
    return at + _AFTER_NONCE, software


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


_EVIDENCE = {e.value: e for e in AKEvidence}  # (an Enum's call costs, per loaded result)
_Result = TypeVar("_Result", "QuoteResult", "CertifyResult")


def _built(cls: type[_Result], parsed: TPMSAttest | None = None, **fields: Any) -> _Result:
    """A result built as its frozen ``__init__`` would (every field given, checked by the
    caller), without an ``object.__setattr__`` per field: the same object, equal alike;
    ``parsed`` is what its cached ``attest`` would parse again."""
    result = _new(cls)
    result.__dict__.update(fields)
    if parsed is not None:
        result.__dict__["attest"] = parsed
    return result


def _quote_result(
    raw_attest: bytes, signature: tuple[Any, ...], nonce: bytes, *rest: Any
) -> QuoteResult:
    """A QuoteResult from what its ``__reduce__`` keeps (built as ``verify_quote`` builds it: a
    ``VerifierPool``'s caller loads one per attestation)."""
    pcr_values, digest, hardware, checks, evidence = rest
    return _built(
        QuoteResult,
        raw_attest=raw_attest,
        signature=_signature(*signature),
        nonce=nonce,
        pcr_values=pcr_values,
        pcr_digest=digest,
        hardware_backed=hardware,
        checks=checks,
        ak_evidence=_EVIDENCE[evidence],
    )


_QUOTE_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "nonce",
    "pcr-selection", "pcr-digest",
)  # fmt: skip
_CERTIFY_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "name",
    "nonce", "key-attributes", "key-strength",
)  # fmt: skip


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
    attest, sig, info, evidence = _verified_signature(
        attest, signature, ak_public, policy, ak_certificate
    )
    digest, tail = expected.digest(info)
    fused = _fused_head(attest, _QUOTE_HEAD, nonce, policy)
    software = None
    if fused is not None and len(attest) == fused[0] + len(tail) and attest.endswith(tail):
        software = fused[1]
    parsed: TPMSAttest | None = None
    if software is None:  # not the quote expected: the full parse and checks say why
        parsed, software, digest = _checked_quote(attest, nonce, expected.banks, info, policy)
    return _built(
        QuoteResult,
        parsed,
        raw_attest=attest,
        signature=sig,
        nonce=nonce if type(nonce) is bytes else bytes(nonce),
        pcr_values=expected.pcr_values,
        pcr_digest=digest,
        hardware_backed=not software and evidence is not AKEvidence.UNVERIFIED,
        checks=_QUOTE_CHECKS,
        ak_evidence=evidence,
    )


def _checked_quote(
    attest: bytes, nonce: bytes, expected: dict[int, _Bank], info: HashInfo, policy: TrustPolicy
) -> tuple[TPMSAttest, bool, bytes]:
    """The full path of a verified quote: parsed, then the software, magic, type, nonce, PCR
    selection and PCR digest checks in order; the attestation, whether software made it and
    its PCR digest."""
    parsed, software = _parsed_attest(attest, policy)
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
    return parsed, software, digest


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

    raw_attest: bytes
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
            self.raw_attest,
            sig,
            self.nonce,
            self.key_public.to_bytes(),
            *rest,
        )

    @functools.cached_property
    def attest(self) -> TPMSAttest:
        """The verified TPMS_ATTEST (clock, firmware version, signer, qualified name): the one
        ``verify_certify`` parsed, or parsed from ``raw_attest`` when asked for."""
        return TPMSAttest.parse(self.raw_attest)


def _certify_result(
    attest: bytes, signature: tuple[Any, ...], nonce: bytes, key_public: bytes, *rest: Any
) -> CertifyResult:
    """A CertifyResult from what its ``__reduce__`` keeps, the public key read again."""
    key_name, hardware, checks, evidence = rest
    key = _certified_public(key_public)
    return CertifyResult(
        attest, TPMTSignature(*signature), nonce, key, key_name,
        _certified_key(key_public)[0], hardware, checks,
        _EVIDENCE[evidence],
    )  # fmt: skip


class _Certified(NamedTuple):
    """A certified key that passes every check of the key itself (a SHA-2 nameAlg; made in a
    TPM and unrestricted; strong): its TPMT_PUBLIC, name, name as a TPM2B, key and SPKI."""

    public: TPMTPublic
    name: bytes
    name_field: bytes
    key: PublicKey
    spki: bytes


def _name(public: TPMTPublic, data: bytes, name_info: HashInfo) -> bytes:
    """A certified key's name: its nameAlg and the digest of the exact bytes given."""
    return public.name_alg.to_bytes(2, "big") + name_info.digest(data)


@functools.lru_cache(maxsize=256)
def _good_certified(data: bytes) -> _Certified | None:
    """The key of these TPMT_PUBLIC bytes when it passes its checks, once per distinct bytes;
    None for any other, whose checks the full path makes in order."""
    try:
        public = _certified_public(data)
        key, spki = _certified_key(data)
    except (InvalidData, AttestationCheckFailed):  # (MalformedAttestation is an InvalidData)
        return None
    info = HASH_ALGORITHMS.get(public.name_alg)
    attrs = public.object_attributes
    if info is None or info.alg == TPM_ALG_SHA1 or not _made_unrestricted(attrs):
        return None
    name = _name(public, data, info)
    return _Certified(public, name, tpm2b(name), key, spki)


def _made_unrestricted(attrs: int) -> bool:
    """fixedTPM, fixedParent and sensitiveDataOrigin set, restricted clear."""
    return attrs & _CERTIFIED_ATTRIBUTES == _CERTIFIED_ATTRIBUTES and not attrs & _RESTRICTED


def _fused_certify(
    attest: bytes, good: _Certified, nonce: object, policy: TrustPolicy
) -> bool | None:
    """Whether software made it, when the certification is that of this key over the nonce
    (its name, then a qualifiedName that ends the attestation); None otherwise."""
    fused = _fused_head(attest, _CERTIFY_HEAD, nonce, policy)
    if fused is None or not attest.startswith(good.name_field, fused[0]):
        return None
    at = fused[0] + len(good.name_field)
    if at + 2 > len(attest):
        return None
    size = attest[at] << 8 | attest[at + 1]
    return fused[1] if size <= MAX_NAME and at + 2 + size == len(attest) else None


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
    attest, sig, _, evidence = _verified_signature(
        attest, signature, ak_public, policy, ak_certificate
    )
    data = key_public_tpmt if type(key_public_tpmt) is bytes else bytes(key_public_tpmt)
    good = _good_certified(data)
    software = None if good is None else _fused_certify(attest, good, nonce, policy)
    parsed: TPMSAttest | None = None
    if software is None or good is None:  # not the certification expected: the full path
        parsed, software, good = _checked_certify(attest, data, nonce, policy)
    # (a cryptography key equal to it is the same key; anything else is compared by its SPKI)
    if expected_key is not None and expected_key != good.key and _spki(expected_key) != good.spki:
        raise AttestationCheckFailed("the certified key is not the expected key", Check.KEY)
    return _built(
        CertifyResult,
        parsed,
        raw_attest=attest,
        signature=sig,
        nonce=nonce if type(nonce) is bytes else bytes(nonce),
        key_public=good.public,
        key_name=good.name,
        public_key=good.key,
        hardware_backed=not software and evidence is not AKEvidence.UNVERIFIED,
        checks=(*_CERTIFY_CHECKS, "expected-key") if expected_key is not None else _CERTIFY_CHECKS,
        ak_evidence=evidence,
    )


def _checked_certify(
    attest: bytes, data: bytes, nonce: bytes, policy: TrustPolicy
) -> tuple[TPMSAttest, bool, _Certified]:
    """The full path of a verified certification: parsed, then the software, magic, type,
    hash, name, nonce, key attribute and key strength checks in order; the attestation,
    whether software made it and the certified key."""
    parsed, software = _parsed_attest(attest, policy)
    _check_type(parsed, TPM_ST_ATTEST_CERTIFY, "a certification")
    try:
        key = _certified_public(data)
    except InvalidData as exc:
        raise MalformedAttestation(f"the certified key's {exc}") from exc
    name_info = HASH_ALGORITHMS.get(key.name_alg)
    if name_info is None or (name_info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        raise AttestationCheckFailed(
            f"the certified key's nameAlg 0x{key.name_alg:04x} is refused", Check.HASH
        )
    name = _name(key, data, name_info)
    certified = parsed.attested
    assert isinstance(certified, TPMSCertifyInfo)  # a certification's, as its type says
    if not hmac.compare_digest(name, certified.name):
        raise AttestationCheckFailed(
            "the certified name is not the name of the TPMT_PUBLIC given", Check.NAME
        )
    _check_nonce(parsed, nonce)
    attrs = key.object_attributes
    if not _made_unrestricted(attrs):
        raise AttestationCheckFailed(
            f"the key's attributes ({TPMA_OBJECT(attrs)!r}) are not fixedTPM, fixedParent, "
            "sensitiveDataOrigin and unrestricted",
            Check.KEY_ATTRIBUTES,
        )
    public_key, spki = _certified_key(data)
    return parsed, software, _Certified(key, name, tpm2b(name), public_key, spki)
