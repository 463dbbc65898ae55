"""AK enrollment, the verifier's side: the only way an AK becomes evidence of a TPM.

The verifier checks the EK certificate (it chains to the TPM maker's CA, is an end-entity
certificate for an EK-strength key) and that the EK public the credential is made for is that
certificate's key; it checks the AK's TPMT_PUBLIC (a restricted signing key made in a TPM, SHA-256
name, RSA-2048 or P-256); then it binds a secret to both with MakeCredential. Only a TPM holding
that EK and an object of exactly that name gets the secret back, so a correct answer makes the AK
an ``EnrolledAK``, which ``TrustPolicy(enrolled_aks=...)`` takes as evidence. Nothing the other
side says about itself (a ``hardware_backed`` flag) is read.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import AttestationCheckFailed, AttestationError, Check, InvalidData
from ..tcg.credential import make_credential
from ..tcg.model import EK_ATTRIBUTES_LOW
from ..tcg.public import tpmt_bytes
from ..tcg.structures import (
    TPM_ALG_ECC,
    TPM_ALG_SHA256,
    TPM_ECC_NIST_P256,
    TPMSECCParms,
    TPMSRSAParms,
    TPMTPublic,
)
from .ak import owned_bytes
from .verifier import (
    EKCertificateInfo,
    TrustPolicy,
    check_ak_public,
    verify_ek_certificate,
)

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["AKEnrollment", "EnrolledAK", "check_enrollment_ak"]


@dataclass(frozen=True)
class EnrolledAK:
    """An AK that answered a credential challenge: its TPMT_PUBLIC and name, the EK it was
    bound to, and that EK's checked certificate (None: a software EK, no evidence of a TPM)."""

    ak_public: bytes
    ak_name: bytes
    ek_public: bytes
    ek_certificate: EKCertificateInfo | None = field(repr=False)

    @property
    def hardware_backed(self) -> bool:
        """True when the EK's certificate was verified: the AK is in that TPM."""
        return self.ek_certificate is not None


def _parse_public(data: object, what: str) -> TPMTPublic:
    """A public area given as a TPMTPublic, or as bytes, a bytearray or a memoryview (copied)."""
    if isinstance(data, TPMTPublic):
        return data
    try:
        return TPMTPublic.parse(tpmt_bytes(owned_bytes(data, what, None)))
    except InvalidData as exc:
        raise InvalidData(f"{what}: {exc}") from exc


def check_enrollment_ak(ak: TPMTPublic) -> None:
    """Refuses (a TRUST failure) an AK an enrollment does not take: it must be an AK (see
    ``check_ak_public``) with a SHA-256 name, RSA-2048 or P-256."""
    check_ak_public(ak)
    if ak.name_alg != TPM_ALG_SHA256:
        raise AttestationCheckFailed(
            f"the AK's nameAlg is 0x{ak.name_alg:04x}; enrollment takes SHA-256", Check.TRUST
        )
    params = ak.parameters
    if isinstance(params, TPMSRSAParms):
        if params.key_bits != 2048:
            raise AttestationCheckFailed(
                f"the AK is RSA-{params.key_bits}; enrollment takes RSA-2048", Check.TRUST
            )
    elif not (
        ak.type == TPM_ALG_ECC
        and isinstance(params, TPMSECCParms)
        and params.curve_id == TPM_ECC_NIST_P256
    ):
        raise AttestationCheckFailed("the AK is neither RSA-2048 nor P-256", Check.TRUST)


class AKEnrollment:
    """One enrollment of an AK against an EK: checks both, makes the credential challenge
    (``credential_blob``, ``encrypted_secret``); ``finish`` takes the answer, once."""

    def __init__(
        self,
        ak_public: bytes | bytearray | memoryview | TPMTPublic,
        ek_public: bytes | bytearray | memoryview | TPMTPublic,
        ek_certificate: bytes | bytearray | memoryview | x509.Certificate | None,
        *,
        policy: TrustPolicy,
        intermediates: Iterable[bytes | x509.Certificate] = (),
        at: datetime | None = None,
    ) -> None:
        ak = _parse_public(ak_public, "the AK's public area")
        ek = _parse_public(ek_public, "the EK's public area")
        check_enrollment_ak(ak)
        # Every EK template of the EK Credential Profile sets these (the high range adds
        # userWithAuth): a restricted decryption key made in a TPM, administered by policy.
        if ek.object_attributes & EK_ATTRIBUTES_LOW != EK_ATTRIBUTES_LOW:
            raise AttestationCheckFailed(
                "the EK is not a restricted decryption key made in a TPM (fixedTPM, "
                "fixedParent, sensitiveDataOrigin, adminWithPolicy, restricted, decrypt)",
                Check.TRUST,
            )
        certificate: EKCertificateInfo | None = None
        if ek_certificate is not None:
            # The certificate must be for exactly this EK: a genuine certificate (they are
            # public) beside the attacker's own EK public is refused here.
            certificate = verify_ek_certificate(
                ek_certificate, None, intermediates=intermediates, ek_public=ek, at=at,
                policy=policy,
            )  # fmt: skip
        elif not policy.allow_software:
            raise AttestationCheckFailed(
                "the EK has no certificate: nothing shows it is a TPM's (software EKs are not "
                "allowed by the policy)",
                Check.CERTIFICATE,
            )
        self.ak = ak
        self.ak_name = ak.name()
        self.ek = ek
        self.ek_certificate = certificate
        self._secret: bytes | None = os.urandom(32)
        self.credential_blob, self.encrypted_secret = make_credential(
            ek, self.ak_name, self._secret
        )

    @property
    def hardware_backed(self) -> bool:
        """True when the EK certificate verified: a correct answer proves a TPM."""
        return self.ek_certificate is not None

    def matches(self, answer: bytes) -> bool:
        """True when the answer is the secret (constant time); the enrollment stays open."""
        secret = self._secret
        return (
            secret is not None
            and isinstance(answer, bytes | bytearray | memoryview)
            and hmac.compare_digest(secret, bytes(answer))
        )

    def finish(self, answer: bytes) -> EnrolledAK:
        """The enrolled AK when the answer is the secret; the challenge is spent either way."""
        ok = self.matches(answer)
        self._secret = None
        if not ok:
            raise AttestationError(
                "the AK enrollment answer is wrong (or the challenge was already answered)"
            )
        return EnrolledAK(
            ak_public=self.ak.to_bytes(),
            ak_name=self.ak_name,
            ek_public=self.ek.to_bytes(),
            ek_certificate=self.ek_certificate,
        )
