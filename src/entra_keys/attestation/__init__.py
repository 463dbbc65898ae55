"""Verifying TPM attestations in pure Python: quotes, key certifications, creation
attestations, AK enrollment, WebAuthn "tpm" attestations.

``verify_quote``, ``verify_certify`` and ``verify_creation`` check attestations from a TPM (or,
when the policy allows it, from the software provider), a quote with its TCG event log
(``parse_event_log``) and a ``BootPolicy`` over what booted; ``AKEnrollment`` enrolls an AK
against a verified EK, and only an enrolled or certified AK makes a result ``hardware_backed``;
``verify_ek_certificate`` and ``verify_ak_certificate`` check EK and AK certificates;
``load_ca_bundle`` reads CA bundles and ``tpm_vendor_cas`` gives the TPM makers' CAs shipped
with entra_keys (``TrustPolicy.with_tpm_vendor_cas``); ``fetch_ek_certificate`` gets an EK
certificate its maker serves by URL; ``verify_tpm_attestation`` checks Windows Hello's WebAuthn
attestations; ``VerifierPool`` verifies in several processes. The structures the verifier reads
are defined in ``entra_keys.tcg``. Nothing here needs tpm2-pytss.

The modules: ``ak`` (the attestation key as the verifier takes it), ``policy`` (what a verifier
trusts), ``ekcert`` and ``platformcert`` (EK, AK and platform certificates), ``cabundle`` (CA
bundles), ``ekurl`` (EK certificates by URL), ``verifier`` (the checks), ``measured`` (the event
log tied to a quote, the boot policy), ``enrollment`` (AK enrollment), ``webauthn`` and ``cbor``
(WebAuthn "tpm" attestations) and ``pool`` (verification in worker processes).

The package imports nothing until a name is asked for (PEP 562): ``from entra_keys.attestation
import verify_quote`` loads only what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cabundle import load_ca_bundle, tpm_vendor_cas
    from .ekcert import AKCertificateInfo
    from .ekurl import ek_certificate_url, fetch_ek_certificate
    from .enrollment import AKEnrollment, EnrolledAK, check_enrollment_ak
    from .measured import BootPolicy, MeasuredBoot, parse_event_log
    from .policy import AKEvidence, NoncePolicy, TrustPolicy
    from .pool import VerifierPool
    from .verifier import (
        MIN_NONCE,
        CertifyResult,
        CreationResult,
        EKCertificateInfo,
        PlatformCertificateInfo,
        QuoteResult,
        check_ak_public,
        parse_platform_certificate,
        verify_ak_certificate,
        verify_certify,
        verify_creation,
        verify_ek_certificate,
        verify_quote,
    )
    from .webauthn import WebAuthnResult, verify_attestation_object, verify_tpm_attestation

#: The submodule that defines each exported name.
_EXPORTS = {
    "load_ca_bundle": "cabundle",
    "tpm_vendor_cas": "cabundle",
    "AKCertificateInfo": "ekcert",
    "ek_certificate_url": "ekurl",
    "fetch_ek_certificate": "ekurl",
    "AKEnrollment": "enrollment",
    "EnrolledAK": "enrollment",
    "check_enrollment_ak": "enrollment",
    "BootPolicy": "measured",
    "MeasuredBoot": "measured",
    "parse_event_log": "measured",
    "AKEvidence": "policy",
    "NoncePolicy": "policy",
    "TrustPolicy": "policy",
    "VerifierPool": "pool",
    "MIN_NONCE": "verifier",
    "CertifyResult": "verifier",
    "CreationResult": "verifier",
    "EKCertificateInfo": "verifier",
    "PlatformCertificateInfo": "verifier",
    "QuoteResult": "verifier",
    "check_ak_public": "verifier",
    "parse_platform_certificate": "verifier",
    "verify_ak_certificate": "verifier",
    "verify_certify": "verifier",
    "verify_creation": "verifier",
    "verify_ek_certificate": "verifier",
    "verify_quote": "verifier",
    "WebAuthnResult": "webauthn",
    "verify_attestation_object": "webauthn",
    "verify_tpm_attestation": "webauthn",
}

__all__ = [
    "MIN_NONCE",
    "AKCertificateInfo",
    "AKEnrollment",
    "AKEvidence",
    "BootPolicy",
    "CertifyResult",
    "CreationResult",
    "EKCertificateInfo",
    "EnrolledAK",
    "MeasuredBoot",
    "NoncePolicy",
    "PlatformCertificateInfo",
    "QuoteResult",
    "TrustPolicy",
    "VerifierPool",
    "WebAuthnResult",
    "check_ak_public",
    "check_enrollment_ak",
    "ek_certificate_url",
    "fetch_ek_certificate",
    "load_ca_bundle",
    "parse_event_log",
    "parse_platform_certificate",
    "tpm_vendor_cas",
    "verify_ak_certificate",
    "verify_attestation_object",
    "verify_certify",
    "verify_creation",
    "verify_ek_certificate",
    "verify_quote",
    "verify_tpm_attestation",
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
