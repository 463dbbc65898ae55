"""TPM attestation in pure Python: wire structures, records, credentials, verification.

``verify_quote`` and ``verify_certify`` check attestations from a TPM (or, when the policy allows
it, from the software provider); ``AKEnrollment`` enrolls an AK against a verified EK (with
``make_credential``), and only an enrolled or certified AK makes a result ``hardware_backed``;
``verify_ek_certificate`` checks an EK certificate's chain. Nothing here needs tpm2-pytss.

The modules, from the bottom: ``structures`` (the TPM wire structures), ``records`` (quotes,
certifications, EKs and their JSON forms), ``credential`` (MakeCredential and its file),
``tpm2_tools`` (the files tpm2-tools reads), ``policy`` (what a verifier trusts), ``verifier``
and ``enrollment`` (the checks), and ``software`` (the software provider's attestation, the one
module above the key layer).

The package imports nothing until a name is asked for (PEP 562): ``import
entra_keys.attestation.structures`` does not load the verifier, and ``from entra_keys.attestation
import verify_quote`` loads only what that name needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .credential import (
        activate_credential_with_key,
        credential_file,
        make_credential,
        parse_credential_file,
    )
    from .enrollment import AKEnrollment, EnrolledAK, check_enrollment_ak
    from .policy import AKEvidence, TrustPolicy
    from .pool import VerifierPool
    from .records import (
        SOFTWARE_FIRMWARE_VERSION,
        SOFTWARE_SIGNER_PREFIX,
        certification_from_json,
        certification_to_json,
        endorsement_key_from_json,
        endorsement_key_to_json,
        is_software_attestation,
        quote_from_json,
        quote_to_json,
    )
    from .software import (
        software_certify,
        software_endorsement_key,
        software_quote,
        software_tpmt_public,
    )
    from .structures import (
        TPM_GENERATED_VALUE,
        TPM_ST_ATTEST_CERTIFY,
        TPM_ST_ATTEST_QUOTE,
        TPMA_OBJECT,
        TPMLPCRSelection,
        TPMSAttest,
        TPMSCertifyInfo,
        TPMSClockInfo,
        TPMSPCRSelection,
        TPMSQuoteInfo,
        TPMTPublic,
        TPMTSignature,
    )
    from .tpm2_tools import (
        CheckquoteFiles,
        parse_tpm2_pcrs_file,
        tpm2_pcrs_file,
        write_checkquote_files,
    )
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

__all__ = [
    "MIN_NONCE",
    "SOFTWARE_FIRMWARE_VERSION",
    "SOFTWARE_SIGNER_PREFIX",
    "TPMA_OBJECT",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_CERTIFY",
    "TPM_ST_ATTEST_QUOTE",
    "AKEnrollment",
    "AKEvidence",
    "CertifyResult",
    "CheckquoteFiles",
    "EKCertificateInfo",
    "EnrolledAK",
    "PlatformCertificateInfo",
    "QuoteResult",
    "TPMLPCRSelection",
    "TPMSAttest",
    "TPMSCertifyInfo",
    "TPMSClockInfo",
    "TPMSPCRSelection",
    "TPMSQuoteInfo",
    "TPMTPublic",
    "TPMTSignature",
    "TrustPolicy",
    "VerifierPool",
    "activate_credential_with_key",
    "certification_from_json",
    "certification_to_json",
    "check_ak_public",
    "check_enrollment_ak",
    "credential_file",
    "endorsement_key_from_json",
    "endorsement_key_to_json",
    "is_software_attestation",
    "make_credential",
    "parse_credential_file",
    "parse_platform_certificate",
    "parse_tpm2_pcrs_file",
    "quote_from_json",
    "quote_to_json",
    "software_certify",
    "software_endorsement_key",
    "software_quote",
    "software_tpmt_public",
    "tpm2_pcrs_file",
    "verify_ak_certificate",
    "verify_certify",
    "verify_ek_certificate",
    "verify_quote",
    "write_checkquote_files",
]

#: The submodule that defines each exported name.
_EXPORTS = {
    # structures
    "TPMA_OBJECT": "structures",
    "TPM_GENERATED_VALUE": "structures",
    "TPM_ST_ATTEST_CERTIFY": "structures",
    "TPM_ST_ATTEST_QUOTE": "structures",
    "TPMLPCRSelection": "structures",
    "TPMSAttest": "structures",
    "TPMSCertifyInfo": "structures",
    "TPMSClockInfo": "structures",
    "TPMSPCRSelection": "structures",
    "TPMSQuoteInfo": "structures",
    "TPMTPublic": "structures",
    "TPMTSignature": "structures",
    # records
    "SOFTWARE_FIRMWARE_VERSION": "records",
    "SOFTWARE_SIGNER_PREFIX": "records",
    "certification_from_json": "records",
    "certification_to_json": "records",
    "endorsement_key_from_json": "records",
    "endorsement_key_to_json": "records",
    "is_software_attestation": "records",
    "quote_from_json": "records",
    "quote_to_json": "records",
    # credential
    "activate_credential_with_key": "credential",
    "credential_file": "credential",
    "make_credential": "credential",
    "parse_credential_file": "credential",
    # enrollment
    "AKEnrollment": "enrollment",
    "EnrolledAK": "enrollment",
    "check_enrollment_ak": "enrollment",
    # tpm2_tools
    "CheckquoteFiles": "tpm2_tools",
    "parse_tpm2_pcrs_file": "tpm2_tools",
    "tpm2_pcrs_file": "tpm2_tools",
    "write_checkquote_files": "tpm2_tools",
    # software
    "software_certify": "software",
    "software_endorsement_key": "software",
    "software_quote": "software",
    "software_tpmt_public": "software",
    # pool
    "VerifierPool": "pool",
    # verifier
    "MIN_NONCE": "verifier",
    "AKEvidence": "policy",
    "CertifyResult": "verifier",
    "EKCertificateInfo": "verifier",
    "PlatformCertificateInfo": "verifier",
    "QuoteResult": "verifier",
    "TrustPolicy": "policy",
    "check_ak_public": "verifier",
    "parse_platform_certificate": "verifier",
    "verify_ak_certificate": "verifier",
    "verify_certify": "verifier",
    "verify_ek_certificate": "verifier",
    "verify_quote": "verifier",
}


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
