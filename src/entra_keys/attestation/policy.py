"""The verifier's trust policy: which attestation keys it accepts, the evidence that a TPM holds
one (enrolled against a verified EK, or an AK certificate that chains to a trusted CA), the CAs
it trusts for EKs and for AKs, the time certificates are checked at, and the nonces it takes.

``TrustPolicy`` is the one hook a service overrides to decide what it trusts.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import AttestationCheckFailed, Check
from ..formats import public_der
from ..tcg.model import MIN_NONCE
from ..tcg.public import PublicKey
from ..tcg.structures import TPM_ALG_SHA1, TPMTPublic
from .ak import AKPublic, ResolvedAK, owned_bytes, resolve_ak
from .ekcert import (
    DEFAULT_AK_KEY_PURPOSES,
    AKCertificateInfo,
    CertificateInput,
    ReadCertificate,
    read_certificate,
    verify_ak_certificate,
)

if TYPE_CHECKING:  # cryptography.x509 is costly to import: only certificate checks need it
    from cryptography import x509

__all__ = [
    "DEFAULT_NONCE_POLICY",
    "AKEvidence",
    "AKTrust",
    "NoncePolicy",
    "TrustPolicy",
    "ak_with_evidence",
]

_log = logging.getLogger(__name__)


class AKEvidence(enum.Enum):
    """What the verifier knows of where an attestation key lives."""

    #: Enrolled by credential activation against an EK whose certificate the verifier checked.
    ENROLLED = "enrolled"
    #: An AK certificate that chains to a CA the policy trusts.
    CERTIFICATE = "certificate"
    #: No evidence that a TPM holds the AK: its attestations prove nothing about hardware.
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class NoncePolicy:
    """The nonces a verification took: at least ``min_nonce`` bytes, or none at all where
    ``allow_empty`` (an empty nonce makes an attestation replayable: it proves no freshness).
    Results carry the one they were checked under."""

    min_nonce: int = MIN_NONCE
    allow_empty: bool = False

    def __str__(self) -> str:
        text = f"nonces of at least {self.min_nonce} bytes"
        if self.min_nonce < MIN_NONCE:
            text += f" (lowered by the policy from {MIN_NONCE})"
        if self.allow_empty:
            text += ", or none at all (allowed by the policy: no freshness)"
        return text


#: The default nonce rules: at least ``MIN_NONCE`` (8) bytes, never empty.
DEFAULT_NONCE_POLICY = NoncePolicy()


class TrustPolicy:
    """What a verifier trusts; override ``ak_evidence`` (or pass arguments) to decide.

    An AK counts as hardware only with evidence: it is in ``enrolled_aks`` (an ``EnrolledAK``
    from ``AKEnrollment``, or the TPMT_PUBLIC of an AK the caller enrolled itself), or an AK
    certificate chains to ``ak_ca_certificates`` (through the certificate's own intermediates
    and ``ak_intermediate_certificates``) and names one of ``ak_key_purposes``. Other AKs given
    as TPMT_PUBLIC verify as UNVERIFIED (``hardware_backed=False``) unless ``require_hardware``
    refuses them; a bare public key is refused unless it comes with an AK certificate or
    ``allow_unverified_ak``. ``trusted_aks``, when given, is an allow-list: no other AK is
    accepted at all. Software attestations and SHA-1 are refused unless allowed. EK
    certificates chain to ``ek_ca_certificates`` (with ``ek_intermediate_certificates``) and
    must name the EK key purpose unless ``allow_ek_without_eku``. Certificates are checked at
    ``at`` (archived evidence: a time inside their validity), else at the time of the check.
    Nonces are at least ``min_nonce`` bytes (8 unless lowered: some tools send 2 or 3), and
    never empty unless ``allow_empty_nonce``.

    A CA certificate that cannot be read is left out and said in ``certificate_problems`` (and
    logged); the others stay trusted. ``TrustPolicy.with_tpm_vendor_cas()`` trusts the bundle
    of TPM makers' CAs shipped with entra_keys. To revoke an AK, make a new policy without it
    (a ``VerifierPool`` takes it with ``set_policy``). Every input is copied when the policy is
    made.
    """

    #: Accept attestations the software provider made (their results say hardware_backed=False).
    allow_software: bool = False
    #: Accept SHA-1 signatures, PCR banks and names.
    allow_sha1: bool = False
    #: Accept a bare public key as the AK without an AK certificate (no TPMT_PUBLIC: no
    #: attribute can be checked, and nothing shows a TPM holds it).
    allow_unverified_ak: bool = False
    #: Refuse every attestation that would not be hardware_backed (unverified AK, software).
    require_hardware: bool = False
    #: Accept legacy EK certificates without extendedKeyUsage (the result says
    #: ``ek_key_purpose=False``); by default an EK certificate must name tcg-kp-EKCertificate.
    allow_ek_without_eku: bool = False
    #: The time certificates are checked at; None: the time of each check.
    at: datetime | None = None
    #: The shortest nonce taken (bytes), 1 or more; an empty one needs ``allow_empty_nonce``.
    min_nonce: int = MIN_NONCE
    #: Accept an empty nonce (and so an attestation anyone could replay): some tools' quotes
    #: have none (GCE's, go-attestation's); the result's ``nonce_policy`` says it was allowed.
    allow_empty_nonce: bool = False
    #: The extendedKeyUsage purposes that make a certificate an AK certificate (any one).
    ak_key_purposes: frozenset[str] = DEFAULT_AK_KEY_PURPOSES

    def __init__(
        self,
        *,
        allow_software: bool | None = None,
        allow_sha1: bool | None = None,
        allow_unverified_ak: bool | None = None,
        require_hardware: bool | None = None,
        allow_ek_without_eku: bool | None = None,
        enrolled_aks: Iterable[Any] = (),
        ak_ca_certificates: Iterable[CertificateInput] = (),
        ak_intermediate_certificates: Iterable[CertificateInput] = (),
        trusted_aks: Iterable[AKPublic] | None = None,
        ek_ca_certificates: Iterable[CertificateInput] = (),
        ek_intermediate_certificates: Iterable[CertificateInput] = (),
        at: datetime | None = None,
        min_nonce: int | None = None,
        allow_empty_nonce: bool | None = None,
        ak_key_purposes: Iterable[str] | None = None,
    ) -> None:
        switches = {
            "allow_software": allow_software,
            "allow_sha1": allow_sha1,
            "allow_unverified_ak": allow_unverified_ak,
            "require_hardware": require_hardware,
            "allow_ek_without_eku": allow_ek_without_eku,
            "allow_empty_nonce": allow_empty_nonce,
        }
        for name, value in switches.items():  # "false" from a config file is truthy
            if value is not None and type(value) is not bool:
                raise TypeError(f"a TrustPolicy's {name} is True or False, not {value!r:.40}")
        if allow_software is not None:
            self.allow_software = allow_software
        if allow_sha1 is not None:
            self.allow_sha1 = allow_sha1
        if allow_unverified_ak is not None:
            self.allow_unverified_ak = allow_unverified_ak
        if require_hardware is not None:
            self.require_hardware = require_hardware
        if allow_ek_without_eku is not None:
            self.allow_ek_without_eku = allow_ek_without_eku
        if at is not None:
            if not isinstance(at, datetime) or at.tzinfo is None:
                raise TypeError("a TrustPolicy's time is an aware datetime (e.g. in UTC)")
            self.at = at
        if min_nonce is not None:
            if type(min_nonce) is not int or not 1 <= min_nonce <= 64:
                raise ValueError(
                    "min_nonce is an int from 1 to 64; an empty nonce needs allow_empty_nonce"
                )
            self.min_nonce = min_nonce
        if allow_empty_nonce is not None:
            self.allow_empty_nonce = allow_empty_nonce
        if ak_key_purposes is not None:
            purposes = frozenset(ak_key_purposes)
            if not purposes or not all(isinstance(p, str) for p in purposes):
                raise ValueError("ak_key_purposes is a non-empty set of dotted OIDs")
            self.ak_key_purposes = purposes
        self._trusted = None if trusted_aks is None else {resolve_ak(a).spki for a in trusted_aks}
        self._enrolled = frozenset(_enrolled_name(a) for a in enrolled_aks)
        problems: list[str] = []
        self._ak_cas = _read_cas(ak_ca_certificates, "ak_ca_certificates", problems)
        self._ak_intermediates = _read_cas(
            ak_intermediate_certificates, "ak_intermediate_certificates", problems
        )
        self._ek_cas = _read_cas(ek_ca_certificates, "ek_ca_certificates", problems)
        self._ek_intermediates = _read_cas(
            ek_intermediate_certificates, "ek_intermediate_certificates", problems
        )
        #: The CA certificates given that could not be read, each with the reason: left out.
        self.certificate_problems: tuple[str, ...] = tuple(problems)

    @classmethod
    def with_tpm_vendor_cas(
        cls,
        *,
        ak_ca_certificates: Iterable[CertificateInput] = (),
        ak_intermediate_certificates: Iterable[CertificateInput] = (),
        ek_ca_certificates: Iterable[CertificateInput] = (),
        ek_intermediate_certificates: Iterable[CertificateInput] = (),
        **options: Any,
    ) -> TrustPolicy:
        """A policy that trusts the TPM makers' CAs shipped with entra_keys (``cabundle``:
        their EK roots and intermediates for EK certificates, Microsoft's AIK root and Google's
        cloud CAs for AK certificates) besides any given; ``options`` as for the constructor."""
        from .cabundle import tpm_vendor_cas

        bundle = tpm_vendor_cas()
        return cls(
            ak_ca_certificates=(*bundle.ak_roots, *ak_ca_certificates),
            ak_intermediate_certificates=(
                *bundle.ak_intermediates, *ak_intermediate_certificates
            ),
            ek_ca_certificates=(*bundle.ek_roots, *ek_ca_certificates),
            ek_intermediate_certificates=(
                *bundle.ek_intermediates, *ek_intermediate_certificates
            ),
            **options,
        )  # fmt: skip

    @property
    def nonce_policy(self) -> NoncePolicy:
        """The nonces this policy takes."""
        return NoncePolicy(self.min_nonce, self.allow_empty_nonce)

    def trust_ak(self, ak_public: PublicKey) -> bool:
        """True when attestations signed by this AK may be accepted at all (the allow-list)."""
        return self._trusted is None or public_der(ak_public) in self._trusted

    def check_ak_certificate(
        self,
        certificate: CertificateInput,
        ak_public: PublicKey,
        intermediates: Iterable[CertificateInput] = (),
    ) -> AKCertificateInfo:
        """Checks an AK certificate for this AK against the policy's AK CAs, at its time, with
        its key purposes (``verify_ak_certificate``); a CERTIFICATE failure when it fails."""
        return verify_ak_certificate(
            certificate,
            ak_public,
            self._ak_cas,
            intermediates=(*intermediates, *self._ak_intermediates),
            at=self.at,
            key_purposes=self.ak_key_purposes,
        )

    def ak_evidence(
        self,
        ak_name: bytes | None,
        ak_public: PublicKey,
        ak_certificate: AKCertificateInfo | None = None,
    ) -> AKEvidence:
        """The evidence that a TPM holds the AK of this name (None: a bare key): enrolled, or
        the AK certificate that ``check_ak_certificate`` verified for it, or none."""
        del ak_public  # the name, or the verified certificate, decides
        if ak_name is not None and ak_name in self._enrolled:
            return AKEvidence.ENROLLED
        if ak_certificate is not None:
            return AKEvidence.CERTIFICATE
        return AKEvidence.UNVERIFIED

    def ek_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA certificates EK certificates must chain to (the TPM makers' roots)."""
        return tuple(c.certificate for c in self._ek_cas)

    def ek_intermediate_certificates(self) -> Sequence[ReadCertificate]:
        """Intermediate CA certificates that help EK certificates reach a trusted CA."""
        return self._ek_intermediates

    def ak_ca_certificates(self) -> Sequence[x509.Certificate]:
        """The CA certificates AK certificates must chain to."""
        return tuple(c.certificate for c in self._ak_cas)


def _read_cas(
    certificates: Iterable[CertificateInput], what: str, problems: list[str]
) -> tuple[ReadCertificate, ...]:
    """The certificates read; one that is not readable is left out, its reason in
    ``problems`` (and logged). One that is of no certificate's type is a CERTIFICATE failure."""
    read = []
    for n, certificate in enumerate(certificates):
        if not isinstance(certificate, bytes | bytearray | memoryview | ReadCertificate):
            read.append(read_certificate(certificate, f"{what}[{n}]"))  # a certificate, or raises
            continue
        try:
            read.append(read_certificate(certificate, f"{what}[{n}]"))
        except AttestationCheckFailed as exc:
            problems.append(str(exc))
            _log.warning("left out of the trust policy: %s", exc)
    return tuple(read)


def _enrolled_name(ak: Any) -> bytes:
    """The name of an enrolled AK: an EnrolledAK made by hardware, or a TPMT_PUBLIC."""
    hardware = getattr(ak, "hardware_backed", None)
    if hardware is not None and hasattr(ak, "ak_name"):  # an EnrolledAK: hardware is evidence
        if not hardware:
            raise AttestationCheckFailed(
                "a software enrollment is no evidence of a TPM; leave it out", Check.TRUST
            )
        return owned_bytes(ak.ak_name, "an enrolled AK's name", Check.TRUST)
    if isinstance(ak, TPMTPublic | bytes | bytearray | memoryview):
        name = resolve_ak(ak).name
        assert name is not None  # a TPMT_PUBLIC always has one
        return name
    raise AttestationCheckFailed(
        f"an enrolled AK is an EnrolledAK or a TPMT_PUBLIC, not {type(ak).__name__}", Check.TRUST
    )


class AKTrust(NamedTuple):
    """The AK ready to verify with, the evidence for it, and its checked certificate."""

    ak: ResolvedAK
    evidence: AKEvidence
    certificate: AKCertificateInfo | None


def ak_with_evidence(
    ak_public: AKPublic,
    policy: TrustPolicy,
    ak_certificate: CertificateInput = None,
    ak_intermediates: Iterable[CertificateInput] = (),
) -> AKTrust:
    """The AK and the evidence for it, or a TRUST (or CERTIFICATE) failure: a bare key needs
    an AK certificate or the policy's opt-in; an AK certificate given must verify."""
    ak = resolve_ak(ak_public)
    if ak.name is None and ak_certificate is None and not policy.allow_unverified_ak:
        raise AttestationCheckFailed(
            "the AK is a bare public key: its attributes cannot be checked and nothing shows a "
            "TPM holds it; give its TPMT_PUBLIC or its AK certificate (or opt in with "
            "allow_unverified_ak)",
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
    certificate = None
    if ak_certificate is not None:
        certificate = policy.check_ak_certificate(ak_certificate, ak.key, ak_intermediates)
    evidence = policy.ak_evidence(ak.name, ak.key, certificate)
    if evidence is AKEvidence.UNVERIFIED and policy.require_hardware:
        raise AttestationCheckFailed(
            "the policy requires hardware and nothing shows a TPM holds this AK "
            "(not enrolled, no AK certificate)",
            Check.TRUST,
        )
    return AKTrust(ak, evidence, certificate)
