"""Verifying TPM attestations: quotes, key certifications and creation attestations, against a
trust policy.

Every check of a TPM attestation is made, in this order, and each failure is an
``AttestationCheckFailed`` whose ``.check`` (a ``Check``) names it:

quote:    trust (AK, AK certificate) > hash > signature scheme > signature > software > magic
          > type > nonce > PCR selection > PCR digest > event log > boot policy (the last two
          when given)
certify:  trust (AK, AK certificate) > hash > signature scheme > signature > software > magic
          > type > name > nonce > key attributes > key strength > expected key
creation: trust (AK, AK certificate) > hash > signature scheme > signature > software > magic
          > type > name > creation > nonce

The AK is checked from its TPMT_PUBLIC (a restricted signing key made in a TPM, a scheme that
fits the signature, a SHA-2 nameAlg, RSA-2048+ or P-256+), and its AK certificate, when one is
given, against the policy's AK CAs (``ekcert.verify_ak_certificate``: a CERTIFICATE failure); a
result says ``hardware_backed`` only when the policy has evidence that a TPM holds the AK
(``AKEvidence``): it was enrolled by credential activation against a verified EK, or its AK
certificate chains to a trusted CA. A bare public key as the AK needs its AK certificate, or
the policy's opt-in, and is then always UNVERIFIED. The nonce is checked under the policy's
rules (``NoncePolicy``: 8 bytes at least unless lowered, never empty unless allowed), which the
result names.

The caller's inputs are copied once, first (bytes, bytearray and memoryview are taken; anything
else is a typed refusal, and so is an event log over its size limit or a boot policy that is no
``BootPolicy``: these come before the checks above), so nothing the caller changes later
reaches a check or a result.
Nothing in the attestation is believed before its signature verifies over those bytes; the
TPMT_SIGNATURE and the TPMS_ATTEST are then each parsed once (strictly: no trailing bytes) and
checked in the order above. Results are frozen and own their data. Trust is one hook,
``TrustPolicy`` (``policy``, re-exported here); EK, AK and platform certificates are checked in
``ekcert`` (re-exported here). Pure Python: neither tpm2-pytss nor libtss2 is needed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from cryptography.exceptions import InvalidSignature as _PycaInvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..errors import (
    AttestationCheckFailed,
    Check,
    InvalidData,
    MalformedAttestation,
    UnsupportedAlgorithm,
)
from ..formats import public_der
from ..tcg.model import (  # one minimum and one origin for the providers and the verifier
    MIN_NONCE,
    KeyUsage,
    origin_attributes,
)
from ..tcg.public import PublicKey, tpmt_bytes
from ..tcg.records import is_software_marked
from ..tcg.structures import (
    HASH_ALGORITHMS,
    TPM_ALG_RSAPSS,
    TPM_ALG_SHA1,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_CREATION,
    TPM_ST_ATTEST_QUOTE,
    TPMA_OBJECT,
    HashInfo,
    TPMSAttest,
    TPMSCertifyInfo,
    TPMSCreationData,
    TPMSCreationInfo,
    TPMSQuoteInfo,
    TPMTPublic,
    TPMTSignature,
    hash_info_by_name,
)
from ..tcg.wire import FrozenMapping
from .ak import (
    AKPublic,
    ResolvedAK,
    certified_key,
    certified_public,
    check_ak_public,
    owned_bytes,
)
from .ekcert import (  # the certificate checks, re-exported: callers import them from here
    AKCertificateInfo,
    CertificateInput,
    EKCertificateInfo,
    PlatformCertificateInfo,
    ReadCertificate,
    parse_platform_certificate,
    verify_ak_certificate,
    verify_ek_certificate,
)
from .policy import (
    DEFAULT_NONCE_POLICY,
    AKEvidence,
    AKTrust,
    NoncePolicy,
    TrustPolicy,
    ak_with_evidence,
)

if TYPE_CHECKING:  # the event log's modules load only when a log or a boot policy is given
    from ..tcg.eventlog import BootFacts, EventLog
    from .measured import BootPolicy, MeasuredBoot

__all__ = [
    "MIN_NONCE",
    "AKCertificateInfo",
    "AKEvidence",
    "AKPublic",
    "CertifyInputs",
    "CertifyResult",
    "CreationInputs",
    "CreationResult",
    "EKCertificateInfo",
    "ExpectedPCRs",
    "NoncePolicy",
    "PlatformCertificateInfo",
    "QuoteInputs",
    "QuoteResult",
    "TrustPolicy",
    "certify_inputs",
    "check_ak_public",
    "expected_pcr_values",
    "parse_platform_certificate",
    "quote_inputs",
    "verify_ak_certificate",
    "verify_certify",
    "verify_creation",
    "verify_ek_certificate",
    "verify_quote",
]

#: Expected PCR values by bank, the bank named ("sha256", any case) or a TPM_ALG id:
#: {bank: {PCR: value}}. Each bank may be named once.
ExpectedPCRs = Mapping[str, Mapping[int, bytes]] | Mapping[int, Mapping[int, bytes]]

_DEFAULT_POLICY = TrustPolicy()
#: A certified key must have been made in the TPM (fixedTPM, fixedParent, sensitiveDataOrigin).
_CERTIFIED_ATTRIBUTES = origin_attributes(KeyUsage.SIGN)
_PKCS1 = padding.PKCS1v15()
# pyca's hash, PSS and ECDSA objects by signing hash (stateless, and costly to make per call)
_PYCA_HASHES = {alg: info.new() for alg, info in HASH_ALGORITHMS.items()}
_PSS = {
    alg: padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
    for alg, h in _PYCA_HASHES.items()
}
_ECDSA = {alg: ec.ECDSA(h) for alg, h in _PYCA_HASHES.items()}


# --- the inputs, copied once -----------------------------------------------------------------


class QuoteInputs(NamedTuple):
    """``verify_quote``'s inputs as the verifier owns them (``quote_inputs``)."""

    attest: bytes
    signature: bytes
    ak_public: PublicKey | TPMTPublic | bytes
    nonce: bytes
    pcrs: dict[int, dict[int, bytes]]
    ak_certificate: OwnedCertificate | None
    ak_intermediates: tuple[OwnedCertificate, ...] = ()


class CertifyInputs(NamedTuple):
    """``verify_certify``'s inputs as the verifier owns them (``certify_inputs``)."""

    attest: bytes
    signature: bytes
    ak_public: PublicKey | TPMTPublic | bytes
    key_public: bytes
    nonce: bytes
    expected_key: PublicKey | None
    ak_certificate: OwnedCertificate | None
    ak_intermediates: tuple[OwnedCertificate, ...] = ()


def quote_inputs(
    attest: object,
    signature: object,
    ak_public: object,
    nonce: object,
    pcrs: object,
    ak_certificate: object = None,
    ak_intermediates: object = (),
) -> QuoteInputs:
    """``verify_quote``'s inputs copied, the first thing it does: every bytes-like input as
    bytes, the expected PCR values as ``expected_pcr_values`` gives them; a typed refusal for an
    input of another type (a ``VerifierPool`` makes the same copy before sending them)."""
    return QuoteInputs(
        owned_bytes(attest, "TPMS_ATTEST"),
        owned_bytes(signature, "TPMT_SIGNATURE"),
        _owned_ak(ak_public),
        owned_bytes(nonce, "the nonce", Check.NONCE),
        expected_pcr_values(pcrs),
        _owned_certificate(ak_certificate),
        _owned_intermediates(ak_intermediates),
    )


def certify_inputs(
    attest: object,
    signature: object,
    ak_public: object,
    key_public: object,
    nonce: object,
    expected_key: object = None,
    ak_certificate: object = None,
    ak_intermediates: object = (),
) -> CertifyInputs:
    """``verify_certify``'s inputs copied, the first thing it does (see ``quote_inputs``)."""
    if expected_key is not None and not isinstance(
        expected_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    ):
        raise AttestationCheckFailed(
            f"the expected key is an RSA or EC public key, not {type(expected_key).__name__}",
            Check.KEY,
        )
    return CertifyInputs(
        owned_bytes(attest, "TPMS_ATTEST"),
        owned_bytes(signature, "TPMT_SIGNATURE"),
        _owned_ak(ak_public),
        owned_bytes(key_public, "the certified key's TPMT_PUBLIC"),
        owned_bytes(nonce, "the nonce", Check.NONCE),
        expected_key,
        _owned_certificate(ak_certificate),
        _owned_intermediates(ak_intermediates),
    )


def _owned_ak(ak: object) -> PublicKey | TPMTPublic | bytes:
    """The AK as given, bytes-likes copied (a TRUST failure for what is no AK)."""
    if type(ak) is bytes or isinstance(ak, TPMTPublic):
        return ak  # immutable
    if isinstance(ak, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return ak
    return owned_bytes(ak, "the AK (a TPMT_PUBLIC or a public key)", Check.TRUST)


#: A certificate the verifier holds: bytes it copied, or an immutable certificate object.
OwnedCertificate = Any


def _owned_certificate(certificate: object, what: str = "an AK certificate") -> OwnedCertificate:
    """An AK certificate as given (a ``cryptography`` certificate, or one read), bytes-likes
    copied."""
    if certificate is None:
        return None
    if isinstance(certificate, bytes | bytearray | memoryview):
        try:
            return bytes(certificate)
        except ValueError:  # a released memoryview
            raise AttestationCheckFailed(
                f"{what} is a released memoryview", Check.CERTIFICATE
            ) from None
    from cryptography import x509

    if isinstance(certificate, x509.Certificate | ReadCertificate):
        return certificate
    raise AttestationCheckFailed(
        f"{what} is DER or PEM bytes, not {type(certificate).__name__}", Check.CERTIFICATE
    )


def _owned_intermediates(certificates: object) -> tuple[OwnedCertificate, ...]:
    """The AK certificate's intermediates (a list or tuple of certificates), each copied."""
    if not isinstance(certificates, list | tuple):
        raise AttestationCheckFailed(
            f"the AK's intermediates are a list of certificates, not {type(certificates).__name__}",
            Check.CERTIFICATE,
        )
    return tuple(_owned_certificate(c, "an AK intermediate") for c in certificates)


def _bank_hash(bank: object) -> HashInfo:
    """The hash of a PCR bank as a caller names it: "sha256" (any case) or a TPM_ALG id."""
    info = None
    if isinstance(bank, str):
        try:
            info = hash_info_by_name(bank)
        except UnsupportedAlgorithm:
            info = None
    elif isinstance(bank, int) and not isinstance(bank, bool):
        info = HASH_ALGORITHMS.get(int(bank))
    if info is None:
        raise AttestationCheckFailed(f"PCR bank {bank!r} is not SHA-1/256/384/512", Check.HASH)
    return info


def expected_pcr_values(pcrs: object) -> dict[int, dict[int, bytes]]:
    """The caller's expected PCR values checked and copied: {TPM_ALG id: {PCR: value}}, each bank
    named once (``"sha256"``, ``"SHA256"`` and ``0x000B`` are one bank: InvalidData when two
    name it), known (a HASH failure for others), PCR indices ints 0..31 and values bytes-like
    of the bank's digest size (InvalidData)."""
    if type(pcrs) is not dict and not isinstance(pcrs, Mapping):
        raise InvalidData(
            f"the expected PCR values are a mapping {{bank: {{PCR: value}}}}, not "
            f"{type(pcrs).__name__}"
        )
    out: dict[int, dict[int, bytes]] = {}
    named: dict[int, object] = {}
    for bank, values in pcrs.items():
        info = _bank_hash(bank)
        if info.alg in named:
            raise InvalidData(
                f"PCR bank {info.name} is named twice in the expected values "
                f"({named[info.alg]!r} and {bank!r})"
            )
        named[info.alg] = bank
        if type(values) is not dict and not isinstance(values, Mapping):
            raise InvalidData(f"the expected values of PCR bank {info.name} are not a mapping")
        checked: dict[int, bytes] = {}
        for index, value in values.items():
            if not (type(index) is int and 0 <= index < 32):
                raise InvalidData(f"expected PCR index {index!r} is not 0..31")
            if index in checked:  # (a Mapping of the caller's may yield a key twice)
                raise InvalidData(f"expected PCR {info.name}:{index} is given twice")
            owned = value
            if type(value) is not bytes:
                owned = owned_bytes(value, f"expected PCR {info.name}:{index}", None)
            if len(owned) != info.digest_size:
                raise InvalidData(
                    f"expected PCR {info.name}:{index} is {len(owned)} bytes, "
                    f"not {info.digest_size}"
                )
            checked[index] = owned
        out[info.alg] = dict(sorted(checked.items()))
    return out


class _Expected(NamedTuple):
    """The expected banks that have values: the PCRs of each (the selection a quote of them
    has) and their values joined in index order, by hash."""

    selection: dict[int, frozenset[int]]
    concatenated: dict[int, bytes]


def _expected_banks(
    pcrs: dict[int, dict[int, bytes]], policy: TrustPolicy, log: object = None
) -> _Expected | None:
    """The expected banks with values, SHA-1 refused unless the policy allows it; None where
    there are none and an event log is given (its replay gives them)."""
    if TPM_ALG_SHA1 in pcrs and not policy.allow_sha1:
        raise AttestationCheckFailed("the sha1 PCR bank is refused: allow_sha1 is off", Check.HASH)
    banks = {alg: values for alg, values in pcrs.items() if values}
    if not banks and log is not None:
        return None
    if not banks:
        raise InvalidData("no expected PCR values: a quote is checked against some")
    return _Expected(
        {alg: frozenset(values) for alg, values in banks.items()},
        {alg: b"".join(values.values()) for alg, values in banks.items()},
    )


# --- the checks every attestation gets -----------------------------------------------------


def _verified_signature(
    attest: bytes, signature: bytes, ak: ResolvedAK, policy: TrustPolicy
) -> tuple[TPMTSignature, HashInfo]:
    """The hash, scheme and signature checks: the TPMT_SIGNATURE parsed and its hash, once the
    signature verifies over the attestation's bytes."""
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
    try:
        if ak.is_rsa:
            pad = _PSS[info.alg] if sig.sig_alg == TPM_ALG_RSAPSS else _PKCS1
            rsa_key = cast(rsa.RSAPublicKey, ak.key)
            rsa_key.verify(sig.signature, attest, pad, _PYCA_HASHES[info.alg])
        else:
            key = cast(ec.EllipticCurvePublicKey, ak.key)
            size = (key.key_size + 7) // 8
            if len(sig.signature_r) > size or len(sig.signature_s) > size:
                raise AttestationCheckFailed(
                    f"an ECDSA r or s is longer than {size} bytes", Check.SIGNATURE
                )
            key.verify(sig.to_der(), attest, _ECDSA[info.alg])
    except (_PycaInvalidSignature, ValueError) as exc:
        raise AttestationCheckFailed(
            "the signature does not verify over the attestation with this AK", Check.SIGNATURE
        ) from exc
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


def _check_type(attest: TPMSAttest, wanted: int, what: str) -> None:
    if attest.type != wanted:
        raise AttestationCheckFailed(
            f"the attestation's type is 0x{attest.type:04x}, not {what} (0x{wanted:04x})",
            Check.TYPE,
        )


def _check_nonce(attest: TPMSAttest, nonce: bytes, policy: TrustPolicy) -> NoncePolicy:
    """The nonce check under the policy's nonce rules (``NoncePolicy``), which it returns."""
    rules = policy.nonce_policy
    if not nonce and not rules.allow_empty:
        raise AttestationCheckFailed(
            f"the nonce is empty; a verifier's nonce is at least {rules.min_nonce} random bytes "
            "(an empty one lets any old attestation be replayed): the policy may allow one "
            "with allow_empty_nonce",
            Check.NONCE,
        )
    if nonce and len(nonce) < rules.min_nonce:
        raise AttestationCheckFailed(
            f"the nonce is {len(nonce)} bytes; a verifier's nonce is at least {rules.min_nonce} "
            "random bytes (a short one lets old attestations be replayed)",
            Check.NONCE,
        )
    if not hmac.compare_digest(attest.extra_data, nonce):
        raise AttestationCheckFailed(
            "extraData is not the nonce: a replayed or another attestation", Check.NONCE
        )
    return rules


# --- quotes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteResult:
    """A verified quote: the PCR values the TPM vouches for (by bank name) and what it signed."""

    raw_attest: bytes
    #: The verified TPMS_ATTEST (clock, firmware version, signer), parsed from ``raw_attest``.
    attest: TPMSAttest
    signature: TPMTSignature
    nonce: bytes
    #: {bank name: {PCR: value}}, read-only: the result's own copy of the expected values.
    pcr_values: Mapping[str, Mapping[int, bytes]]
    pcr_digest: bytes
    #: True only for a TPM's quote by an AK with evidence (enrolled or certified): never for
    #: the software provider's quotes (allow_software) or an unverified AK.
    hardware_backed: bool
    checks: tuple[str, ...]
    #: What the verifier knows of the AK: enrolled, an AK certificate, or unverified.
    ak_evidence: AKEvidence = AKEvidence.UNVERIFIED
    #: The checked AK certificate and the TPM it names (maker, model, firmware), if one was given.
    ak_certificate_info: AKCertificateInfo | None = None
    #: The nonce rules the quote was checked under (lowered or empty only where the policy said).
    nonce_policy: NoncePolicy = DEFAULT_NONCE_POLICY
    #: The event log tied to the quote (``event_log=``), and the boot facts it gives.
    measured_boot: MeasuredBoot | None = None

    @property
    def event_log(self) -> EventLog | None:
        """The event log that was checked against the quote, if one was given."""
        return None if self.measured_boot is None else self.measured_boot.log

    @property
    def boot_facts(self) -> BootFacts | None:
        """What booted, from the log's events the quote covers (None without a log)."""
        return None if self.measured_boot is None else self.measured_boot.facts

    @property
    def event_log_events_after_quote(self) -> int:
        """Events the log holds after the quoted ones (a log read later): never read."""
        return 0 if self.measured_boot is None else self.measured_boot.events_after_quote


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
    ak_certificate: CertificateInput = None,
    ak_intermediates: Sequence[CertificateInput] = (),
    event_log: bytes | EventLog | None = None,
    boot_policy: BootPolicy | None = None,
) -> QuoteResult:
    """Verifies a TPM2_Quote against the AK (its TPMT_PUBLIC, or its key with its AK
    certificate), the nonce (at least 8 bytes unless the policy says otherwise) and the expected
    PCR values ({bank: {PCR: value}}, e.g. {"sha256": {0: ..., 7: ...}}); raises the failed
    check's error. ``ak_certificate`` is checked against the policy's AK CAs, through
    ``ak_intermediates``.

    ``event_log`` (the TCG event log, bytes or parsed) is tied to the quote after the PCR
    digest check. With expected values, every quoted PCR the log extends (and every one quoted
    at its start value) must replay to its value at one point of the log (EVENT_LOG names the
    first that does not; PCRs it never extends, such as IMA's PCR 10, stay the caller's). With
    no expected values (``pcrs={}``), the log's replay of every quoted PCR gives them and must
    hash to the quote's digest (else PCR_DIGEST). A log read after the quote may hold later
    events: as go-attestation and keylime do, the quote covers the longest prefix that replays
    to the quoted values; the result says how many events came after it and never reads them.
    ``result.boot_facts`` come from that prefix, from the PCRs the log was checked against, and
    only from data their digests measured (data that is not gives no fact and is listed in
    ``boot_facts.data_mismatches``). ``boot_policy`` then checks them (BOOT_POLICY; it needs the
    log, and refuses any such mismatch)."""
    inputs = quote_inputs(
        attest, signature, ak_public, nonce, pcrs, ak_certificate, ak_intermediates
    )
    log = None if event_log is None else _owned_log(event_log)
    if boot_policy is not None:
        _check_boot_policy_type(boot_policy)
    policy = policy or _DEFAULT_POLICY
    trust = _ak_trust(inputs, policy)
    banks = _expected_banks(inputs.pcrs, policy, log)  # (a SHA-1 bank: HASH, after trust)
    sig, info = _verified_signature(inputs.attest, inputs.signature, trust.ak, policy)
    parsed, software = _parsed_attest(inputs.attest, policy)
    _check_type(parsed, TPM_ST_ATTEST_QUOTE, "a quote")
    nonce_policy = _check_nonce(parsed, inputs.nonce, policy)
    body = parsed.attested
    assert isinstance(body, TPMSQuoteInfo)  # a quote's, as its type says
    quoted = _quoted_pcrs(body, banks, info, inputs.pcrs, log, policy, boot_policy)
    return QuoteResult(
        raw_attest=inputs.attest,
        attest=parsed,
        signature=sig,
        nonce=inputs.nonce,
        pcr_values=FrozenMapping(
            {HASH_ALGORITHMS[alg].name: FrozenMapping(v) for alg, v in quoted.values.items()}
        ),
        pcr_digest=quoted.digest,
        hardware_backed=not software and trust.evidence is not AKEvidence.UNVERIFIED,
        checks=quoted.checks,
        ak_evidence=trust.evidence,
        measured_boot=quoted.measured,
        ak_certificate_info=trust.certificate,
        nonce_policy=nonce_policy,
    )


def _ak_trust(inputs: QuoteInputs | CertifyInputs, policy: TrustPolicy) -> AKTrust:
    """The AK, the evidence for it and its checked AK certificate (``ak_with_evidence``)."""
    return ak_with_evidence(
        inputs.ak_public, policy, inputs.ak_certificate, inputs.ak_intermediates
    )


class _Quoted(NamedTuple):
    """The PCR checks' outcome: the digest, the values vouched for by TPM_ALG id, the tied
    event log and the checks made."""

    digest: bytes
    values: dict[int, dict[int, bytes]]
    measured: MeasuredBoot | None
    checks: tuple[str, ...]


def _quoted_pcrs(
    body: TPMSQuoteInfo,
    banks: _Expected | None,
    info: HashInfo,
    pcrs: dict[int, dict[int, bytes]],
    log: EventLog | bytes | None,
    policy: TrustPolicy,
    boot_policy: BootPolicy | None,
) -> _Quoted:
    """The PCR selection and digest checks against the expected values, then the event log
    against them; or, without expected values, the log's replay as them (``measured``); then
    the boot policy over the log's facts. The event log's modules load only when needed."""
    if banks is not None and log is None and boot_policy is None:
        values = {alg: pcrs[alg] for alg in banks.selection}
        return _Quoted(_checked_pcr_digest(body, banks, info), values, None, _QUOTE_CHECKS)
    from .measured import log_as_expected, tie_event_log

    measured = None
    if banks is None:
        assert log is not None  # (no values and no log is refused before)
        measured, values = log_as_expected(body, info, log, policy.allow_sha1)
        digest = body.pcr_digest
    else:
        digest = _checked_pcr_digest(body, banks, info)
        values = {alg: pcrs[alg] for alg in banks.selection}
        if log is not None:
            measured = tie_event_log(body, info, log, values)
    checks = _QUOTE_CHECKS if measured is None else (*_QUOTE_CHECKS, "event-log")
    if boot_policy is not None:
        if measured is None:
            raise AttestationCheckFailed(
                "boot policy: no event log was given, so nothing says what booted",
                Check.BOOT_POLICY,
            )
        boot_policy.check(measured.facts)
        checks = (*checks, "boot-policy")
    return _Quoted(digest, values, measured, checks)


def _check_boot_policy_type(boot_policy: object) -> None:
    """A boot policy is a BootPolicy (an input's type, checked with the inputs: InvalidData)."""
    from .measured import BootPolicy

    if not isinstance(boot_policy, BootPolicy):
        raise InvalidData(f"boot_policy is a BootPolicy, not {type(boot_policy).__name__}")


def _owned_log(event_log: object) -> EventLog | bytes:
    """The event log copied (``measured.owned_event_log``), its module loaded only now."""
    from .measured import owned_event_log

    owned = owned_event_log(event_log)
    assert owned is not None  # (called for a log)
    return owned


def _checked_pcr_digest(body: TPMSQuoteInfo, expected: _Expected, info: HashInfo) -> bytes:
    """The PCR selection and PCR digest checks: the quote selects exactly the expected PCRs
    (each bank once), and its digest is that of their expected values in the quote's order."""
    try:
        quoted = body.pcr_select.as_dict()  # (in the quote's order of banks)
    except InvalidData as exc:
        raise AttestationCheckFailed(
            f"the quote's PCR selection is refused: {exc}", Check.PCR_SELECTION
        ) from exc
    if quoted != expected.selection:

        def names(selection: Mapping[int, frozenset[int]]) -> str:
            def bank(alg: int) -> str:
                return HASH_ALGORITHMS[alg].name if alg in HASH_ALGORITHMS else f"0x{alg:04x}"

            return ", ".join(f"{bank(a)}:{sorted(p)}" for a, p in selection.items()) or "none"

        raise AttestationCheckFailed(
            f"the quote covers PCRs {names(quoted)}, not {names(expected.selection)}",
            Check.PCR_SELECTION,
        )
    digest = info.digest(b"".join([expected.concatenated[alg] for alg in quoted]))
    if not hmac.compare_digest(digest, body.pcr_digest):
        raise AttestationCheckFailed(
            f"the quoted PCR digest is not the {info.name} of the expected PCR values",
            Check.PCR_DIGEST,
        )
    return digest


# --- key certification ---------------------------------------------------------------------


@dataclass(frozen=True)
class CertifyResult:
    """A verified TPM2_Certify: the key it vouches for and that key's properties."""

    raw_attest: bytes
    #: The verified TPMS_ATTEST (clock, firmware version, signer, qualified name).
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
    #: The checked AK certificate and the TPM it names (maker, model, firmware), if one was given.
    ak_certificate_info: AKCertificateInfo | None = None
    #: The nonce rules the certification was checked under.
    nonce_policy: NoncePolicy = DEFAULT_NONCE_POLICY

    def __reduce__(self) -> tuple[object, ...]:
        """Pickles without ``public_key`` (a ``cryptography`` key does not pickle): it is read
        again from ``key_public`` when loaded."""
        state = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "public_key"}
        return _loaded_certify_result, (state,)


def _loaded_certify_result(state: dict[str, Any]) -> CertifyResult:
    """A pickled CertifyResult, its public key read again from its TPMT_PUBLIC."""
    return CertifyResult(**state, public_key=state["key_public"].public_key())


def verify_certify(
    attest: bytes,
    signature: bytes,
    ak_public: AKPublic,
    key_public_tpmt: bytes,
    nonce: bytes,
    *,
    policy: TrustPolicy | None = None,
    expected_key: PublicKey | None = None,
    ak_certificate: CertificateInput = None,
    ak_intermediates: Sequence[CertificateInput] = (),
) -> CertifyResult:
    """Verifies a TPM2_Certify of the key whose TPMT_PUBLIC is given: signed by the AK (its
    TPMT_PUBLIC, or its key with its AK certificate, checked against the policy's AK CAs through
    ``ak_intermediates``), over the nonce (at least 8 bytes unless the policy says otherwise),
    naming exactly that key, which must be a TPM-made, non-migratable, unrestricted RSA-2048+
    or P-256/384/521 key (and ``expected_key`` when given)."""
    inputs = certify_inputs(
        attest, signature, ak_public, key_public_tpmt, nonce, expected_key, ak_certificate,
        ak_intermediates,
    )  # fmt: skip
    policy = policy or _DEFAULT_POLICY
    trust = _ak_trust(inputs, policy)
    sig, _ = _verified_signature(inputs.attest, inputs.signature, trust.ak, policy)
    parsed, software = _parsed_attest(inputs.attest, policy)
    _check_type(parsed, TPM_ST_ATTEST_CERTIFY, "a certification")
    data = inputs.key_public
    try:
        key = certified_public(data)
    except InvalidData as exc:
        raise MalformedAttestation(f"the certified key's {exc}") from exc
    name_info = HASH_ALGORITHMS.get(key.name_alg)
    if name_info is None or (name_info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        raise AttestationCheckFailed(
            f"the certified key's nameAlg 0x{key.name_alg:04x} is refused", Check.HASH
        )
    name = key.name_alg.to_bytes(2, "big") + name_info.digest(data)  # of the bytes given
    certified = parsed.attested
    assert isinstance(certified, TPMSCertifyInfo)  # a certification's, as its type says
    if not hmac.compare_digest(name, certified.name):
        raise AttestationCheckFailed(
            "the certified name is not the name of the TPMT_PUBLIC given", Check.NAME
        )
    nonce_policy = _check_nonce(parsed, inputs.nonce, policy)
    attrs = key.object_attributes
    if attrs & _CERTIFIED_ATTRIBUTES != _CERTIFIED_ATTRIBUTES or attrs & TPMA_OBJECT.RESTRICTED:
        raise AttestationCheckFailed(
            f"the key's attributes ({TPMA_OBJECT(attrs)!r}) are not fixedTPM, fixedParent, "
            "sensitiveDataOrigin and unrestricted",
            Check.KEY_ATTRIBUTES,
        )
    loaded = certified_key(data)  # the strength check, then the key
    checks: tuple[str, ...] = _CERTIFY_CHECKS
    if inputs.expected_key is not None:
        if public_der(inputs.expected_key) != loaded.spki:
            raise AttestationCheckFailed("the certified key is not the expected key", Check.KEY)
        checks = (*checks, "expected-key")
    return CertifyResult(
        raw_attest=inputs.attest,
        attest=parsed,
        signature=sig,
        nonce=inputs.nonce,
        key_public=key,
        key_name=name,
        public_key=loaded.key,
        hardware_backed=not software and trust.evidence is not AKEvidence.UNVERIFIED,
        checks=checks,
        ak_evidence=trust.evidence,
        ak_certificate_info=trust.certificate,
        nonce_policy=nonce_policy,
    )


# --- creation attestations -----------------------------------------------------------------


class CreationInputs(NamedTuple):
    """``verify_creation``'s inputs as the verifier owns them."""

    attest: bytes
    signature: bytes
    ak_public: PublicKey | TPMTPublic | bytes
    object_public: bytes
    creation_data: bytes
    nonce: bytes
    ak_certificate: OwnedCertificate | None
    ak_intermediates: tuple[OwnedCertificate, ...] = ()


@dataclass(frozen=True)
class CreationResult:
    """A verified TPM2_CertifyCreation: the object the TPM says it created, and with what."""

    raw_attest: bytes
    #: The verified TPMS_ATTEST (clock, firmware version, signer, the creation info).
    attest: TPMSAttest
    signature: TPMTSignature
    nonce: bytes
    #: The created object's TPMT_PUBLIC, its name, and the creation data the TPM recorded.
    object_public: TPMTPublic
    object_name: bytes
    creation_data: TPMSCreationData
    #: True when the AK certified its own creation (the object is the AK).
    self_certified: bool
    #: True only when the AK has evidence (enrolled or certified) and no software made it.
    hardware_backed: bool
    checks: tuple[str, ...]
    ak_evidence: AKEvidence = AKEvidence.UNVERIFIED
    ak_certificate_info: AKCertificateInfo | None = None
    nonce_policy: NoncePolicy = DEFAULT_NONCE_POLICY


_CREATION_CHECKS = (
    "trust", "hash", "signature-scheme", "signature", "software", "magic", "type", "name",
    "creation", "nonce",
)  # fmt: skip


def _tpms_bytes(data: bytes) -> bytes:
    """A TPMS_CREATION_DATA given bare or in its TPM2B (its size first): the bare bytes. A bare
    one begins with its PCR selection's 32-bit count, so its first two bytes are never its size."""
    if len(data) >= 2 and int.from_bytes(data[:2], "big") == len(data) - 2:
        return data[2:]
    return data


def verify_creation(
    attest: bytes,
    signature: bytes,
    ak_public: AKPublic,
    object_public: bytes,
    creation_data: bytes,
    nonce: bytes = b"",
    *,
    policy: TrustPolicy | None = None,
    ak_certificate: CertificateInput = None,
    ak_intermediates: Sequence[CertificateInput] = (),
) -> CreationResult:
    """Verifies a TPM2_CertifyCreation: the AK signed that the TPM created the object whose
    TPMT_PUBLIC is ``object_public`` (``objectName``) with the TPMS_CREATION_DATA given (bare
    or TPM2B; ``creationHash`` is its digest with the object's nameAlg), over ``nonce`` (empty
    only where the policy allows it). Checked in this order: trust, hash, signature scheme,
    signature, software, magic, type, name, creation, nonce.

    What it proves, precisely: the TPM checks its own creation ticket before it signs, and a
    restricted AK signs only what the TPM made (TPM_GENERATED_VALUE), so the result is the TPM's
    word that it created the object, under the parent and at the PCRs and locality the creation
    data names, but only if the AK is truly a restricted key of a TPM. That is known only from
    other evidence: the AK enrolled against a verified EK (credential activation) or certified
    by a trusted CA; then ``hardware_backed`` is True. Without it (``UNVERIFIED``) the result
    proves nothing about hardware: anyone can write a TPMT_PUBLIC that says restricted and
    fixedTPM around a key of their own and sign any TPMS_ATTEST with it. A self-certification
    (the AK certifies its own creation, as go-attestation has Windows AKs do) adds to that
    evidence the AK's creation data; it is not evidence of a TPM by itself.
    """
    inputs = CreationInputs(
        owned_bytes(attest, "TPMS_ATTEST"),
        owned_bytes(signature, "TPMT_SIGNATURE"),
        _owned_ak(ak_public),
        owned_bytes(object_public, "the created object's TPMT_PUBLIC"),
        owned_bytes(creation_data, "the TPMS_CREATION_DATA"),
        owned_bytes(nonce, "the nonce", Check.NONCE),
        _owned_certificate(ak_certificate),
        _owned_intermediates(ak_intermediates),
    )
    policy = policy or _DEFAULT_POLICY
    trust = ak_with_evidence(
        inputs.ak_public, policy, inputs.ak_certificate, inputs.ak_intermediates
    )
    sig, _ = _verified_signature(inputs.attest, inputs.signature, trust.ak, policy)
    parsed, software = _parsed_attest(inputs.attest, policy)
    _check_type(parsed, TPM_ST_ATTEST_CREATION, "a creation")
    try:
        created = TPMTPublic.parse(tpmt_bytes(inputs.object_public))
        data = _tpms_bytes(inputs.creation_data)
        recorded = TPMSCreationData.parse(data)
    except InvalidData as exc:
        raise MalformedAttestation(str(exc)) from exc
    name_info = HASH_ALGORITHMS.get(created.name_alg)
    if name_info is None or (name_info.alg == TPM_ALG_SHA1 and not policy.allow_sha1):
        raise AttestationCheckFailed(
            f"the created object's nameAlg 0x{created.name_alg:04x} is refused", Check.HASH
        )
    name = created.name()
    info = parsed.attested
    assert isinstance(info, TPMSCreationInfo)  # a creation's, as its type says
    if not hmac.compare_digest(name, info.object_name):
        raise AttestationCheckFailed(
            "the certified objectName is not the name of the TPMT_PUBLIC given", Check.NAME
        )
    if not hmac.compare_digest(name_info.digest(data), info.creation_hash):
        raise AttestationCheckFailed(
            f"the creationHash is not the {name_info.name} of the creation data given",
            Check.CREATION,
        )
    nonce_policy = _check_nonce(parsed, inputs.nonce, policy)
    return CreationResult(
        raw_attest=inputs.attest,
        attest=parsed,
        signature=sig,
        nonce=inputs.nonce,
        object_public=created,
        object_name=name,
        creation_data=recorded,
        self_certified=trust.ak.name is not None and hmac.compare_digest(name, trust.ak.name),
        hardware_backed=not software and trust.evidence is not AKEvidence.UNVERIFIED,
        checks=_CREATION_CHECKS,
        ak_evidence=trust.evidence,
        ak_certificate_info=trust.certificate,
        nonce_policy=nonce_policy,
    )
