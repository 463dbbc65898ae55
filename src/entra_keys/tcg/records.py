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

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import AttestationCheckFailed, Check, InvalidData
from .model import PCR_COUNT, KeyType
from .wire import TPM_ALG_NULL

if TYPE_CHECKING:
    from .structures import TPMSAttest

__all__ = [
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
    """A signed PCR quote: the exact TPMS_ATTEST and TPMT_SIGNATURE bytes, and the PCR values."""

    attest: bytes
    signature: bytes
    pcr_bank: str
    pcr_values: dict[int, bytes]
    nonce: bytes
    hardware_backed: bool


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Fields:
    """Reads the members of a JSON object strictly; every problem is an exact InvalidData."""

    def __init__(
        self,
        source: str | bytes | Mapping[str, Any],
        kind: str,
        names: set[str],
        optional: frozenset[str] = frozenset(),
    ):
        self.kind = kind
        if isinstance(source, str | bytes):
            try:
                source = json.loads(source)
            except (ValueError, RecursionError) as exc:
                raise InvalidData(f"{kind} JSON: not JSON ({exc})") from exc
        if not isinstance(source, Mapping):
            raise InvalidData(f"{kind} JSON: an object was expected")
        self.data = source
        if source.get("kind") != kind:
            raise InvalidData(f"{kind} JSON: 'kind' is {source.get('kind')!r}, not {kind!r}")
        if source.get("version") != 1:
            raise InvalidData(f"{kind} JSON: version {source.get('version')!r} is not 1")
        unknown = sorted(set(source) - names - optional - {"kind", "version"})
        missing = sorted(names - set(source))
        if unknown or missing:
            raise InvalidData(f"{kind} JSON: unknown members {unknown}, missing members {missing}")

    def raw(self, name: str, kinds: type | tuple[type, ...]) -> Any:
        value = self.data[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is int):
            raise InvalidData(f"{self.kind} JSON: {name!r} has the wrong type")
        return value

    def optional_text(self, name: str) -> str | None:
        value = self.data.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidData(f"{self.kind} JSON: {name!r} has the wrong type")
        return value

    def b64(self, name: str) -> bytes:
        return self.decode(name, self.data[name])

    def decode(self, name: str, text: object) -> bytes:
        if not isinstance(text, str):
            raise InvalidData(f"{self.kind} JSON: {name!r} is not a base64 string")
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (ValueError, binascii.Error) as exc:
            raise InvalidData(f"{self.kind} JSON: {name!r} is not valid base64") from exc


_PCR_NAMES = frozenset(str(i) for i in range(PCR_COUNT))


def quote_to_json(quote: Quote) -> str:
    """A quote as JSON: TPMS_ATTEST, TPMT_SIGNATURE, nonce and PCR values in base64."""
    return json.dumps(
        {
            "kind": "quote",
            "version": 1,
            "attest": _b64(quote.attest),
            "signature": _b64(quote.signature),
            "pcr_bank": quote.pcr_bank,
            "pcr_values": {str(i): _b64(v) for i, v in sorted(quote.pcr_values.items())},
            "nonce": _b64(quote.nonce),
            "hardware_backed": quote.hardware_backed,
        },
        indent=2,
    )


def quote_from_json(source: str | bytes | Mapping[str, Any]) -> Quote:
    """A quote from ``quote_to_json``'s form. ``hardware_backed`` is the sender's claim: only
    verification (``verify_quote``) decides what the quote proves."""
    f = _Fields(
        source,
        "quote",
        {"attest", "signature", "pcr_bank", "pcr_values", "nonce", "hardware_backed"},
    )
    raw_values = f.raw("pcr_values", dict)
    values: dict[int, bytes] = {}
    for index, value in raw_values.items():
        if not isinstance(index, str) or index not in _PCR_NAMES:
            raise InvalidData(f"quote JSON: PCR index {index!r} is not 0..23")
        values[int(index)] = f.decode(f"pcr_values[{index}]", value)
    return Quote(
        attest=f.b64("attest"),
        signature=f.b64("signature"),
        pcr_bank=f.raw("pcr_bank", str),
        pcr_values=dict(sorted(values.items())),
        nonce=f.b64("nonce"),
        hardware_backed=f.raw("hardware_backed", bool),
    )


def certification_to_json(certification: Certification) -> str:
    """A certification as JSON: TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC and nonce in base64."""
    return json.dumps(
        {
            "kind": "certification",
            "version": 1,
            "attest": _b64(certification.attest),
            "signature": _b64(certification.signature),
            "key_public": _b64(certification.key_public),
            "nonce": _b64(certification.nonce),
            "hardware_backed": certification.hardware_backed,
        },
        indent=2,
    )


def certification_from_json(source: str | bytes | Mapping[str, Any]) -> Certification:
    """A certification from ``certification_to_json``'s form (``hardware_backed`` is a claim)."""
    f = _Fields(
        source, "certification", {"attest", "signature", "key_public", "nonce", "hardware_backed"}
    )
    return Certification(
        attest=f.b64("attest"),
        signature=f.b64("signature"),
        key_public=f.b64("key_public"),
        nonce=f.b64("nonce"),
        hardware_backed=f.raw("hardware_backed", bool),
    )


def endorsement_key_to_json(ek: EndorsementKey) -> str:
    """An EK as JSON: TPMT_PUBLIC and the DER certificate (or null) in base64."""
    return json.dumps(
        {
            "kind": "endorsement_key",
            "version": 1,
            "key_type": ek.key_type.value,
            "public": _b64(ek.public),
            "certificate": None if ek.certificate is None else _b64(ek.certificate),
            "nv_index": ek.nv_index,
            "handle": ek.handle,
            "hardware_backed": ek.hardware_backed,
            "certificate_repairs": list(ek.certificate_repairs),
            "certificate_error": ek.certificate_error,
            "chain": [_b64(c) for c in ek.chain],
            "chain_errors": list(ek.chain_errors),
        },
        indent=2,
    )


def endorsement_key_from_json(source: str | bytes | Mapping[str, Any]) -> EndorsementKey:
    """An EK from ``endorsement_key_to_json``'s form (``hardware_backed`` is a claim)."""
    f = _Fields(
        source,
        "endorsement_key",
        {"key_type", "public", "certificate", "nv_index", "handle", "hardware_backed"},
        _EK_LATER,  # members added since version 1: a document without them is read as before
    )
    try:
        key_type = KeyType(f.raw("key_type", str))
    except ValueError as exc:
        raise InvalidData(f"endorsement_key JSON: unknown key_type {f.data['key_type']!r}") from exc
    cert = f.data["certificate"]
    return EndorsementKey(
        key_type=key_type,
        public=f.b64("public"),
        certificate=None if cert is None else f.b64("certificate"),
        nv_index=None if f.data["nv_index"] is None else f.raw("nv_index", int),
        handle=None if f.data["handle"] is None else f.raw("handle", int),
        hardware_backed=f.raw("hardware_backed", bool),
        certificate_repairs=_texts(f, "certificate_repairs"),
        certificate_error=f.optional_text("certificate_error"),
        chain=tuple(f.decode("chain", c) for c in f.data.get("chain") or ()),
        chain_errors=_texts(f, "chain_errors"),
    )


_EK_LATER = frozenset({"certificate_repairs", "certificate_error", "chain", "chain_errors"})


def _texts(f: _Fields, name: str) -> tuple[str, ...]:
    value = f.data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidData(f"{f.kind} JSON: {name!r} is not a list of strings")
    return tuple(value)
