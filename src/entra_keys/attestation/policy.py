"""The verifier's trust policy: which attestation keys it accepts, and the evidence that a TPM
holds one (enrolled against a verified EK, or an AK certificate that chains to a trusted CA).

``TrustPolicy`` is the one hook a service overrides to decide what it trusts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import AttestationCheckFailed, Check
from ..formats import public_der
from ..tcg.public import PublicKey
from ..tcg.structures import TPM_ALG_SHA1, TPMTPublic
from .ak import AKPublic, ResolvedAK, owned_bytes, resolve_ak
from .ekcert import load_certificate, verify_ak_certificate

if TYPE_CHECKING:  # cryptography.x509 is costly to import: only certificate checks need it
    from cryptography import x509

__all__ = ["AKEvidence", "TrustPolicy", "ak_with_evidence"]


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
    EK certificates must name the EK key purpose unless ``allow_ek_without_eku``.

    To revoke an AK, make a new policy without it (a ``VerifierPool`` takes it with
    ``set_policy``). Every input is copied when the policy is made.
    """

    #: Accept attestations the software provider made (their results say hardware_backed=False).
    allow_software: bool = False
    #: Accept SHA-1 signatures, PCR banks and names.
    allow_sha1: bool = False
    #: Accept a bare public key as the AK (no TPMT_PUBLIC: no attribute can be checked).
    allow_unverified_ak: bool = False
    #: Refuse every attestation that would not be hardware_backed (unverified AK, software).
    require_hardware: bool = False
    #: Accept legacy EK certificates without extendedKeyUsage (the result says
    #: ``ek_key_purpose=False``); by default an EK certificate must name tcg-kp-EKCertificate.
    allow_ek_without_eku: bool = False

    def __init__(
        self,
        *,
        allow_software: bool | None = None,
        allow_sha1: bool | None = None,
        allow_unverified_ak: bool | None = None,
        require_hardware: bool | None = None,
        allow_ek_without_eku: bool | None = None,
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
        if allow_ek_without_eku is not None:
            self.allow_ek_without_eku = allow_ek_without_eku
        self._trusted = None if trusted_aks is None else {resolve_ak(a).spki for a in trusted_aks}
        self._enrolled = frozenset(_enrolled_name(a) for a in enrolled_aks)
        self._ak_cas = tuple(load_certificate(c) for c in ak_ca_certificates)
        self._ek_cas = tuple(load_certificate(c) for c in ek_ca_certificates)

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
                state[field] = tuple(load_certificate(c) for c in state[field])
        self.__dict__.update(state)

    def trust_ak(self, ak_public: PublicKey) -> bool:
        """True when attestations signed by this AK may be accepted at all (the allow-list)."""
        return self._trusted is None or public_der(ak_public) in self._trusted

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


def ak_with_evidence(
    ak_public: AKPublic, policy: TrustPolicy, ak_certificate: Any
) -> tuple[ResolvedAK, AKEvidence]:
    """The AK and the evidence for it, or a TRUST failure: a bare key needs the policy's opt-in."""
    ak = resolve_ak(ak_public)
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
