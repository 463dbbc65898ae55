"""Verifying TPM attestations in pure Python: quotes, key certifications, AK enrollment.

``verify_quote`` and ``verify_certify`` check attestations from a TPM (or, when the policy allows
it, from the software provider), a quote with its TCG event log (``parse_event_log``) and a
``BootPolicy`` over what booted; ``AKEnrollment`` enrolls an AK against a verified EK, and only
an enrolled or certified AK makes a result ``hardware_backed``; ``verify_ek_certificate`` checks
an EK certificate's chain; ``VerifierPool`` verifies in several processes. The structures the
verifier reads are defined in ``entra_keys.tcg``. Nothing here needs tpm2-pytss.

The modules: ``ak`` (the attestation key as the verifier takes it), ``policy`` (what a verifier
trusts), ``ekcert`` and ``platformcert`` (EK, AK and platform certificates), ``verifier`` (the
checks), ``measured`` (the event log tied to a quote, the boot policy), ``enrollment`` (AK
enrollment) and ``pool`` (verification in worker processes).

The package imports nothing until a name is asked for (PEP 562): ``from entra_keys.attestation
import verify_quote`` loads only what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .enrollment import AKEnrollment, EnrolledAK, check_enrollment_ak
    from .measured import BootPolicy, MeasuredBoot, parse_event_log
    from .policy import AKEvidence, TrustPolicy
    from .pool import VerifierPool
    from .verifier import (
        MIN_NONCE,
        CertifyResult,
        EKCertificateInfo,
        PlatformCertificateInfo,
        QuoteResult,
        check_ak_public,
        parse_platform_certificate,
        verify_ak_certificate,
        verify_certify,
        verify_ek_certificate,
        verify_quote,
    )

#: The submodule that defines each exported name.
_EXPORTS = {
    "AKEnrollment": "enrollment",
    "EnrolledAK": "enrollment",
    "check_enrollment_ak": "enrollment",
    "BootPolicy": "measured",
    "MeasuredBoot": "measured",
    "parse_event_log": "measured",
    "AKEvidence": "policy",
    "TrustPolicy": "policy",
    "VerifierPool": "pool",
    "MIN_NONCE": "verifier",
    "CertifyResult": "verifier",
    "EKCertificateInfo": "verifier",
    "PlatformCertificateInfo": "verifier",
    "QuoteResult": "verifier",
    "check_ak_public": "verifier",
    "parse_platform_certificate": "verifier",
    "verify_ak_certificate": "verifier",
    "verify_certify": "verifier",
    "verify_ek_certificate": "verifier",
    "verify_quote": "verifier",
}

__all__ = [
    "MIN_NONCE",
    "AKEnrollment",
    "AKEvidence",
    "BootPolicy",
    "CertifyResult",
    "EKCertificateInfo",
    "EnrolledAK",
    "MeasuredBoot",
    "PlatformCertificateInfo",
    "QuoteResult",
    "TrustPolicy",
    "VerifierPool",
    "check_ak_public",
    "check_enrollment_ak",
    "parse_event_log",
    "parse_platform_certificate",
    "verify_ak_certificate",
    "verify_certify",
    "verify_ek_certificate",
    "verify_quote",
]


def __getattr__(name: str) -> Any:
    """Load an exported name from its submodule on first use (and keep it here)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
