"""The text form of a sealed secret: a PEM-like block whose label says which provider sealed it.

::

    -----BEGIN ENTRA KEYS SEALED TPM DATA-----
    <base64 of fields, each a 4-byte big-endian length and its bytes>
    -----END ENTRA KEYS SEALED TPM DATA-----

What the fields are is the provider's business (a TPM sealed object, or scrypt salt and AES-GCM
ciphertext); this module frames them and refuses anything else with ``KeyFileCorrupt``. The
first field of every blob is its version: ``NAMED`` blobs carry the name they were sealed as,
covered by the AES-GCM tag (its associated data), so a blob copied under another name is
refused; ``UNBOUND`` blobs (sealed before names were bound) are refused unless the caller
vouches for them (``allow_unbound``).
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Sequence

from ..errors import InvalidData, KeyFileCorrupt

__all__ = [
    "MAX_BLOB",
    "MAX_NAME",
    "MAX_SECRET",
    "NAMED",
    "UNBOUND",
    "check_name",
    "check_secret",
    "frame",
    "label",
    "name_field",
    "refuse_unbound",
    "unframe",
]

#: The largest secret entra_keys seals (a PRT and its refresh tokens are a few KB): the blob
#: stays under the key store's file size limit.
MAX_SECRET = 32 * 1024
#: The version of a blob sealed before blobs were bound to their names.
UNBOUND = b"\x01"
#: The version of a blob bound to the name it was sealed as.
NAMED = b"\x02"
#: The longest name a blob is bound to, in UTF-8 bytes (a store name is at most 64 ASCII).
MAX_NAME = 255
#: The largest blob read (the key store's file limit): a larger one is refused before parsing.
MAX_BLOB = 64 * 1024
_BEGIN = b"-----BEGIN ENTRA KEYS SEALED "
_LABEL = re.compile(rb"([A-Z]{1,16}) DATA-----\r?\n")


def label(kind: str) -> str:
    """The PEM label of a blob sealed by the provider of that kind ('tpm', 'software')."""
    return f"ENTRA KEYS SEALED {kind.upper()} DATA"


def check_secret(data: bytes) -> None:
    """Refuse what is not a sealable secret: not bytes, empty, or larger than ``MAX_SECRET``."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidData(f"a secret to seal is bytes, not {type(data).__name__}")
    if not 0 < len(data) <= MAX_SECRET:
        raise InvalidData(f"a sealed secret is 1 to {MAX_SECRET} bytes, not {len(data)}")


def name_field(name: str) -> bytes:
    """The field that binds a blob to ``name`` (its UTF-8 bytes); InvalidData for a name that
    is not a string, or too long."""
    if not isinstance(name, str):
        raise InvalidData(f"a sealed secret's name is a str, not {type(name).__name__}")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise InvalidData(
            f"a sealed secret's name is not encodable as UTF-8 ({exc.reason})"
        ) from None
    if len(encoded) > MAX_NAME:
        raise InvalidData(f"a sealed secret's name is at most {MAX_NAME} bytes")
    return encoded


def check_name(field: bytes, name: str) -> None:
    """Refuse a blob sealed as another name (copied or renamed in the store) before anything
    is decrypted: KeyFileCorrupt naming both. The AES-GCM tag, whose associated data holds the
    field, refuses a blob whose field was edited to match."""
    wanted = name_field(name)
    if bytes(field) != wanted:
        sealed_as = bytes(field).decode("utf-8", "replace")
        raise KeyFileCorrupt(
            f"the sealed secret was sealed as {sealed_as!r}, not {name!r}: a blob copied or "
            "renamed in the store unseals only under its own name"
        )


def refuse_unbound(allow_unbound: bool) -> None:
    """Refuse a blob sealed before blobs were bound to names, unless the caller vouches for it."""
    if not allow_unbound:
        raise KeyFileCorrupt(
            "the secret was sealed by an earlier entra_keys, without its name bound (it could "
            "be another name's blob copied here): unseal it once with allow_unbound=True "
            "(entra-keys unseal --allow-unbound) and seal it again"
        )


def frame(kind: str, fields: Sequence[bytes]) -> bytes:
    """The blob text of these fields, labelled with the provider's kind."""
    body = b"".join(struct.pack(">I", len(f)) + bytes(f) for f in fields)
    text = base64.encodebytes(body).decode("ascii")
    return f"-----BEGIN {label(kind)}-----\n{text}-----END {label(kind)}-----\n".encode("ascii")


def unframe(blob: bytes, kind: str) -> list[bytes]:
    """The fields of a blob sealed by the ``kind`` provider; KeyFileCorrupt for a blob of the
    other provider, one over ``MAX_BLOB``, and anything truncated or altered in its framing.
    Linear in the blob's size: one BEGIN line, its END line found once."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise KeyFileCorrupt(f"a sealed blob is bytes, not {type(blob).__name__}")
    data = bytes(blob)
    if len(data) > MAX_BLOB:
        raise KeyFileCorrupt(f"a sealed blob is at most {MAX_BLOB} bytes, not {len(data)}")
    begin = data.find(_BEGIN)
    found = _LABEL.match(data, begin + len(_BEGIN)) if begin >= 0 else None
    if found is None:
        raise KeyFileCorrupt("not a sealed secret (no ENTRA KEYS SEALED ... DATA block)")
    end = data.find(b"-----END ENTRA KEYS SEALED " + found.group(1) + b" DATA-----", found.end())
    if end < 0:
        raise KeyFileCorrupt("not a sealed secret (its ENTRA KEYS SEALED block has no end)")
    sealed_by = found.group(1).decode("ascii").lower()
    if sealed_by != kind:
        raise KeyFileCorrupt(
            f"the secret was sealed by the {sealed_by} provider; unseal it with that provider"
        )
    try:
        body = base64.b64decode(b"".join(data[found.end() : end].split()), validate=True)
    except binascii.Error as exc:
        raise KeyFileCorrupt(f"the sealed blob is not base64 ({exc})") from exc
    fields: list[bytes] = []
    offset = 0
    while offset < len(body):
        if offset + 4 > len(body):
            raise KeyFileCorrupt("the sealed blob is truncated")
        (size,) = struct.unpack_from(">I", body, offset)
        offset += 4
        if offset + size > len(body):
            raise KeyFileCorrupt("the sealed blob is truncated")
        fields.append(body[offset : offset + size])
        offset += size
    return fields
