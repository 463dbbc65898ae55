"""What a key layer hands a verifier: quotes, certifications and EKs, and their JSON forms.

These records sit below both the providers (which make them) and the verifier (which checks
them): they hold the exact TPM bytes (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC) and a
``hardware_backed`` claim, and prove nothing by themselves. The JSON forms carry the bytes in
base64 and are read strictly (every problem is an exact ``InvalidData``). Here too are the two
marks every software TPMS_ATTEST carries, which the software producer writes and the verifier
looks for: ``qualifiedSigner`` begins with TPM_ALG_NULL and "entra_keys software", and
``firmwareVersion`` is "SOFTWARE" in ASCII.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._json import MAX_JSON_SIZE, Members, b64_encode
from ..errors import AttestationCheckFailed, Check, InvalidData
from .model import PCR_COUNT, KeyType
from .wire import TPM_ALG_NULL

if TYPE_CHECKING:
    from .structures import TPMSAttest

__all__ = [
    "MAX_QUOTE_JSON",
    "SOFTWARE_FIRMWARE_VERSION",
    "SOFTWARE_SIGNER_PREFIX",
    "Certification",
    "EndorsementKey",
    "Quote",
    "certification_from_json",
    "certification_to_json",
    "endorsement_key_from_json",
    "endorsement_key_to_json",
    "is_software_attestation",
    "is_software_marked",
    "quote_from_json",
    "quote_to_json",
]


@dataclass(frozen=True)
class EndorsementKey:
    """An endorsement key's public area (TPMT_PUBLIC) and its certificate from NV, if any.

    ``certificate`` is the DER as the CA signed it; ``certificate_repairs`` says what was removed
    around it (TCG header, padding) or that a verifier re-encodes it (non-strict DER);
    ``certificate_error`` why the EK's index holds no readable certificate. ``chain`` holds the
    certificates of the EK chain indices (0x01C00100-0x01C001FF), intermediates for the chain
    check; ``chain_errors`` the indices there that could not be read, with the reason.
    """

    key_type: KeyType
    public: bytes
    certificate: bytes | None
    nv_index: int | None
    handle: int | None
    hardware_backed: bool
    certificate_repairs: tuple[str, ...] = ()
    certificate_error: str | None = None
    chain: tuple[bytes, ...] = field(default=(), repr=False)
    chain_errors: tuple[str, ...] = ()

    def require_certificate(self) -> bytes:
        """The certificate, or a CERTIFICATE failure saying why there is none (unreadable at
        its index, or no certificate in NV) rather than a None found far from the cause."""
        if self.certificate is not None:
            return self.certificate
        if self.certificate_error is not None:
            raise AttestationCheckFailed(
                f"the EK certificate is unreadable: {self.certificate_error}", Check.CERTIFICATE
            )
        raise AttestationCheckFailed("the EK has no certificate in NV", Check.CERTIFICATE)


@dataclass(frozen=True)
class Quote:
    """A signed PCR quote: the exact TPMS_ATTEST and TPMT_SIGNATURE bytes, and the PCR values;
    ``event_log``: the TCG event log read after the quote, when it was asked for."""

    attest: bytes
    signature: bytes
    pcr_bank: str
    pcr_values: dict[int, bytes]
    nonce: bytes
    hardware_backed: bool
    event_log: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Certification:
    """A key certified by an AK (TPM2_Certify): TPMS_ATTEST, TPMT_SIGNATURE, its TPMT_PUBLIC."""

    attest: bytes
    signature: bytes
    key_public: bytes
    nonce: bytes
    hardware_backed: bool


# --- the software marks --------------------------------------------------------------------

#: firmwareVersion of every software TPMS_ATTEST: "SOFTWARE" in ASCII.
SOFTWARE_FIRMWARE_VERSION = int.from_bytes(b"SOFTWARE", "big")
#: The start of every software qualifiedSigner: TPM_ALG_NULL, which begins no TPM name, then a
#: label; the software AK's name follows.
SOFTWARE_SIGNER_PREFIX = struct.pack(">H", TPM_ALG_NULL) + b"entra_keys software"


def is_software_attestation(attest: TPMSAttest) -> bool:
    """True when a TPMS_ATTEST carries either software mark (signer prefix or firmware)."""
    return is_software_marked(attest.qualified_signer, attest.firmware_version)


def is_software_marked(qualified_signer: bytes, firmware_version: int) -> bool:
    """True when either field carries the software provider's mark."""
    return firmware_version == SOFTWARE_FIRMWARE_VERSION or qualified_signer.startswith(
        SOFTWARE_SIGNER_PREFIX
    )


# --- JSON ----------------------------------------------------------------------------------


def _document(
    source: str | bytes | Mapping[str, Any],
    kind: str,
    names: set[str],
    later: frozenset[str] = frozenset(),
    max_size: int = MAX_JSON_SIZE,
) -> Members:
    """A record's JSON form: an object of this ``kind`` and version 1 with exactly these
    members (and perhaps those added ``later``), read strictly by the one JSON reader."""
    doc = Members.load(source, f"the {kind} document", max_size=max_size)
    if doc.optional("kind") != kind:
        raise InvalidData(f"{doc.what}: 'kind' is {doc.optional('kind')!r:.40}, not {kind!r}")
    version = doc.optional("version")
    if type(version) is not int or version != 1:
        raise InvalidData(f"{doc.what}: version {version!r:.40} is not 1")
    doc.only({*names, "kind", "version"}, later)
    return doc


_PCR_NAMES = frozenset(str(i) for i in range(PCR_COUNT))
#: The largest quote document read: room for an event log of the parser's largest
#: (tcg.eventlog.MAX_LOG_SIZE, 16 MiB) in base64, and the rest.
MAX_QUOTE_JSON = 24 * 1024 * 1024


def quote_to_json(quote: Quote) -> str:
    """A quote as JSON: TPMS_ATTEST, TPMT_SIGNATURE, nonce and PCR values in base64, and the
    event log (base64) when the quote carries one (a member added in version 1: a document
    without it reads as before)."""
    document: dict[str, Any] = {
        "kind": "quote",
        "version": 1,
        "attest": b64_encode(quote.attest),
        "signature": b64_encode(quote.signature),
        "pcr_bank": quote.pcr_bank,
        "pcr_values": {str(i): b64_encode(v) for i, v in sorted(quote.pcr_values.items())},
        "nonce": b64_encode(quote.nonce),
        "hardware_backed": quote.hardware_backed,
    }
    if quote.event_log is not None:
        document["event_log"] = b64_encode(quote.event_log)
    return json.dumps(document, indent=2)


def quote_from_json(source: str | bytes | Mapping[str, Any]) -> Quote:
    """A quote from ``quote_to_json``'s form. ``hardware_backed`` is the sender's claim: only
    verification (``verify_quote``) decides what the quote proves."""
    doc = _document(
        source,
        "quote",
        {"attest", "signature", "pcr_bank", "pcr_values", "nonce", "hardware_backed"},
        frozenset({"event_log"}),
        MAX_QUOTE_JSON,
    )
    pcrs = doc.member("pcr_values")
    values: dict[int, bytes] = {}
    for index in pcrs.value:
        if index not in _PCR_NAMES:
            raise InvalidData(f"{doc.what}: PCR index {index!r:.40} is not 0..23")
        values[int(index)] = pcrs.base64(index)
    return Quote(
        attest=doc.base64("attest"),
        signature=doc.base64("signature"),
        pcr_bank=doc.text("pcr_bank"),
        pcr_values=dict(sorted(values.items())),
        nonce=doc.base64("nonce"),
        hardware_backed=doc.boolean("hardware_backed"),
        event_log=doc.optional_base64("event_log"),
    )


def certification_to_json(certification: Certification) -> str:
    """A certification as JSON: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC and nonce in base64."""
    return json.dumps(
        {
            "kind": "certification",
            "version": 1,
            "attest": b64_encode(certification.attest),
            "signature": b64_encode(certification.signature),
            "key_public": b64_encode(certification.key_public),
            "nonce": b64_encode(certification.nonce),
            "hardware_backed": certification.hardware_backed,
        },
        indent=2,
    )


def certification_from_json(source: str | bytes | Mapping[str, Any]) -> Certification:
    """A certification from ``certification_to_json``'s form (``hardware_backed`` is a claim)."""
    doc = _document(
        source, "certification", {"attest", "signature", "key_public", "nonce", "hardware_backed"}
    )
    return Certification(
        attest=doc.base64("attest"),
        signature=doc.base64("signature"),
        key_public=doc.base64("key_public"),
        nonce=doc.base64("nonce"),
        hardware_backed=doc.boolean("hardware_backed"),
    )


def endorsement_key_to_json(ek: EndorsementKey) -> str:
    """An EK as JSON: TPMT_PUBLIC and the DER certificate (or null) in base64."""
    return json.dumps(
        {
            "kind": "endorsement_key",
            "version": 1,
            "key_type": ek.key_type.value,
            "public": b64_encode(ek.public),
            "certificate": None if ek.certificate is None else b64_encode(ek.certificate),
            "nv_index": ek.nv_index,
            "handle": ek.handle,
            "hardware_backed": ek.hardware_backed,
            "certificate_repairs": list(ek.certificate_repairs),
            "certificate_error": ek.certificate_error,
            "chain": [b64_encode(c) for c in ek.chain],
            "chain_errors": list(ek.chain_errors),
        },
        indent=2,
    )


def endorsement_key_from_json(source: str | bytes | Mapping[str, Any]) -> EndorsementKey:
    """An EK from ``endorsement_key_to_json``'s form (``hardware_backed`` is a claim)."""
    doc = _document(
        source,
        "endorsement_key",
        {"key_type", "public", "certificate", "nv_index", "handle", "hardware_backed"},
        _EK_LATER,  # members added since version 1: a document without them is read as before
    )
    try:
        key_type = KeyType(doc.text("key_type"))
    except ValueError:
        raise InvalidData(f"{doc.what}: unknown key_type {doc.value['key_type']!r:.40}") from None
    return EndorsementKey(
        key_type=key_type,
        public=doc.base64("public"),
        certificate=doc.optional_base64("certificate"),
        nv_index=doc.optional_integer("nv_index", 0, _UINT32),
        handle=doc.optional_integer("handle", 0, _UINT32),
        hardware_backed=doc.boolean("hardware_backed"),
        certificate_repairs=doc.texts("certificate_repairs")
        if "certificate_repairs" in doc
        else (),
        certificate_error=doc.optional_text("certificate_error"),
        chain=doc.base64_list("chain") if "chain" in doc else (),
        chain_errors=doc.texts("chain_errors") if "chain_errors" in doc else (),
    )


_EK_LATER = frozenset({"certificate_repairs", "certificate_error", "chain", "chain_errors"})
_UINT32 = 0xFFFFFFFF
