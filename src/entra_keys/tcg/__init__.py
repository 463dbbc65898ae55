"""What the TCG specifications define, in pure Python: no keys, no tpm2-pytss.

``wire`` (constants, TPMA_OBJECT, hash algorithms, the big-endian reader), ``public``
(TPMT_PUBLIC), ``structures`` (TPMS_ATTEST, TPMT_SIGNATURE, TPML_PCR_SELECTION), ``model``
(what a TPM key looks like: attributes per use, EK templates, handles, PCR banks, key file
labels), ``records`` (quotes, certifications, EKs and their JSON forms), ``credential``
(MakeCredential), ``nvcert`` (EK certificates as chips store them in NV) and ``tpm2_tools``
(the files tpm2-tools reads). The providers build on these; the verifier checks against them.

Names load on first use (PEP 562): ``import entra_keys.tcg`` loads no submodule.
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
    from .records import (
        SOFTWARE_FIRMWARE_VERSION,
        SOFTWARE_SIGNER_PREFIX,
        Certification,
        EndorsementKey,
        Quote,
        certification_from_json,
        certification_to_json,
        endorsement_key_from_json,
        endorsement_key_to_json,
        is_software_attestation,
        quote_from_json,
        quote_to_json,
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
    "Certification": "records",
    "EndorsementKey": "records",
    "Quote": "records",
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
    # tpm2_tools
    "CheckquoteFiles": "tpm2_tools",
    "parse_tpm2_pcrs_file": "tpm2_tools",
    "tpm2_pcrs_file": "tpm2_tools",
    "write_checkquote_files": "tpm2_tools",
}

__all__ = [
    "SOFTWARE_FIRMWARE_VERSION",
    "SOFTWARE_SIGNER_PREFIX",
    "TPMA_OBJECT",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_CERTIFY",
    "TPM_ST_ATTEST_QUOTE",
    "Certification",
    "CheckquoteFiles",
    "EndorsementKey",
    "Quote",
    "TPMLPCRSelection",
    "TPMSAttest",
    "TPMSCertifyInfo",
    "TPMSClockInfo",
    "TPMSPCRSelection",
    "TPMSQuoteInfo",
    "TPMTPublic",
    "TPMTSignature",
    "activate_credential_with_key",
    "certification_from_json",
    "certification_to_json",
    "credential_file",
    "endorsement_key_from_json",
    "endorsement_key_to_json",
    "is_software_attestation",
    "make_credential",
    "parse_credential_file",
    "parse_tpm2_pcrs_file",
    "quote_from_json",
    "quote_to_json",
    "tpm2_pcrs_file",
    "write_checkquote_files",
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
