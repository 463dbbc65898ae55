"""Reading key files without a provider: is a PEM body one DER key, and what a TSS2 PRIVATE KEY's
public area says (who made it, its type and usage), for listing and for other tools' key files.

The TPM checks the public area against the private blob when the key loads; these readings are
for describing a key without loading it.
"""

from __future__ import annotations

import base64
import binascii

from ..errors import InvalidData, KeyFileCorrupt
from ..provider import KeyType, KeyUsage
from ..tcg.model import origin_attributes
from ..tcg.nvcert import der_sequence_length

__all__ = [
    "counts_toward_lockout",
    "is_der_sequence",
    "kind_of_public",
    "made_in_tpm",
    "tss2_has_pin",
    "tss2_parent",
    "tss2_public",
]


def is_der_sequence(body: bytes) -> bool:
    """True when a PEM body is base64 of exactly one DER SEQUENCE (catches cut or mangled files)."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        return False
    try:
        return len(der) == der_sequence_length(der)
    except InvalidData:
        return False


def tss2_public(body: bytes) -> bytes:
    """The TPM2B_PUBLIC of a TSS2 PRIVATE KEY's PEM body, or b"" where it has none."""
    from asn1crypto import parser

    try:  # TPMKey ::= SEQUENCE { type, [0] emptyAuth OPTIONAL, parent, pubkey, privkey }
        _, _, _, _, fields, _ = parser.parse(base64.b64decode(b"".join(body.split())))
        public, offset = b"", 0
        while offset < len(fields) and not public:
            klass, _, tag, header, contents, trailer = parser.parse(fields[offset:])
            offset += len(header) + len(contents) + len(trailer)
            if (klass, tag) == (0, 4):  # the first OCTET STRING: the TPM2B_PUBLIC
                public = contents
    except (ValueError, TypeError):
        return b""
    return public


def tss2_parent(body: bytes) -> int | None:
    """The parent handle a TSS2 PRIVATE KEY's PEM body names (the storage key it was made
    under: 0x40000001 for the TCG key-file primary, a persistent handle such as 0x81000001), or
    None where the body does not parse."""
    from asn1crypto import parser

    try:  # after the type OID and the optional [0] emptyAuth: parent INTEGER
        _, _, _, _, fields, _ = parser.parse(base64.b64decode(b"".join(body.split())))
        offset = 0
        while offset < len(fields):
            klass, _, tag, header, contents, trailer = parser.parse(fields[offset:])
            offset += len(header) + len(contents) + len(trailer)
            if (klass, tag) == (0, 2):
                return int.from_bytes(contents, "big")
    except (ValueError, TypeError):
        return None
    return None


def counts_toward_lockout(body: bytes) -> bool:
    """Whether a wrong authorization of a TSS2 PRIVATE KEY's key counts toward the TPM's
    dictionary-attack lockout: its public area lacks noDA. Such a key may have an authorization
    value whatever its emptyAuth says (tpm2_encodeobject 5.4 writes it inverted), so nothing
    uses it unasked. A body without a readable public area counts, to be safe. The TPM binds
    the public area to the key at TPM2_Load, so a key whose file lies about noDA never loads."""
    public = tss2_public(body)
    if len(public) < 10:  # TPM2B size, type, nameAlg, objectAttributes
        return True
    return not int.from_bytes(public[6:10], "big") & _NO_DA


def tss2_has_pin(body: bytes) -> bool:
    """Whether a TSS2 PRIVATE KEY's PEM body says the key needs an authorization value (PIN):
    its ``[0] emptyAuth`` is absent or FALSE. A body that does not parse says False."""
    from asn1crypto import parser

    try:
        _, _, _, _, fields, _ = parser.parse(base64.b64decode(b"".join(body.split())))
        offset = 0
        while offset < len(fields):
            klass, _, tag, header, contents, trailer = parser.parse(fields[offset:])
            offset += len(header) + len(contents) + len(trailer)
            if (klass, tag) == (2, 0):  # [0] EXPLICIT BOOLEAN emptyAuth
                return bytes(parser.parse(contents)[4]) == b"\x00"
            if (klass, tag) == (0, 4):  # past emptyAuth: the public area
                break
    except (ValueError, TypeError):
        return False
    return True


def made_in_tpm(body: bytes, usage: KeyUsage) -> bool:
    """Whether a TSS2 PRIVATE KEY's public area says the TPM made it (``origin_attributes``).

    The label alone says nothing: an imported key (TPM2_Import) sits in the same kind of file.
    The TPM checks the public area against the private blob when the key loads, so a file whose
    public area lies does not load (ForeignKey); this reading is for listing without loading.
    """
    public = tss2_public(body)
    if len(public) < 10:  # TPM2B size, type, nameAlg, objectAttributes
        return False
    attributes = int.from_bytes(public[6:10], "big")
    made = origin_attributes(usage)
    return attributes & made == made


def kind_of_public(name: str, public: bytes) -> tuple[KeyType, KeyUsage]:
    """The key type and usage a TPM2B_PUBLIC says: restricted signing is an AK, signing a device
    key (also when it may decrypt, as tpm2-openssl's keys may), RSA decryption a transport key,
    a keyed-hash object a session key."""
    from ..errors import InvalidData, UnsupportedAlgorithm
    from ..tcg.public import TPMTPublic, tpmt_bytes

    try:
        area = TPMTPublic.parse(tpmt_bytes(public))
        key_type = (
            KeyType.HMAC_SHA256 if area.type == _TPM_ALG_KEYEDHASH
            else KeyType.of(area.public_key())
        )  # fmt: skip
    except (InvalidData, UnsupportedAlgorithm) as exc:
        raise KeyFileCorrupt(
            f"key {name!r}: a TPM key entra_keys does not use ({exc})", name
        ) from exc
    attrs = area.object_attributes
    if key_type is KeyType.HMAC_SHA256:
        usage = KeyUsage.DERIVE
    elif attrs & _SIGN_ENCRYPT:
        usage = KeyUsage.ATTEST if attrs & _RESTRICTED else KeyUsage.SIGN
    elif attrs & _DECRYPT and not attrs & _RESTRICTED and key_type.is_rsa:
        usage = KeyUsage.DECRYPT
    else:
        raise KeyFileCorrupt(
            f"key {name!r}: the TPM key neither signs nor decrypts as a device, transport or "
            "attestation key does",
            name,
        )
    return key_type, usage


# TPMA_OBJECT bits and TPM_ALG_KEYEDHASH (Part 2, 8.3 and 6.3), read from the public area.
_NO_DA = 0x00000400
_RESTRICTED = 0x00010000
_DECRYPT = 0x00020000
_SIGN_ENCRYPT = 0x00040000
_TPM_ALG_KEYEDHASH = 0x0008
