"""A small strict CBOR reader (RFC 8949) for what WebAuthn sends: attestation objects, their
attestation statements and COSE keys. Nothing here writes CBOR.

It reads unsigned and negative integers, byte and text strings, arrays, maps, false, true and
null, each of definite length; it refuses indefinite lengths, tags, floats, undefined and the
other simple values, reserved encodings, text that is not UTF-8, map keys that are not
integers, text or bytes, a key given twice, and bytes after the item. Integers and lengths may
be written longer than needed (well-formed CBOR; WebAuthn only says SHOULD for the shortest
form). Limits: ``MAX_CBOR_SIZE`` bytes, ``MAX_CBOR_DEPTH`` levels, ``MAX_CBOR_ITEMS`` items;
every length is checked against the bytes that are left before anything is read. Every refusal
is an ``InvalidData`` that says what and where.

python-fido2 reads CBOR too, but it is not a dependency of entra_keys, and a relying party needs
only this much of it.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidData
from ..tcg.wire import readable_bytes

__all__ = ["MAX_CBOR_DEPTH", "MAX_CBOR_ITEMS", "MAX_CBOR_SIZE", "decode", "decode_prefix"]

#: The largest document read (bytes); a WebAuthn attestation object is a few KiB.
MAX_CBOR_SIZE = 1 << 20
#: The deepest nesting of arrays and maps.
MAX_CBOR_DEPTH = 16
#: The most items (of every level) in one document.
MAX_CBOR_ITEMS = 4096

_SIMPLE = {20: False, 21: True, 22: None}


class _Reader:
    __slots__ = ("data", "items", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.items = MAX_CBOR_ITEMS

    def fail(self, at: int, why: str) -> InvalidData:
        return InvalidData(f"{self.what}: {why} (CBOR, offset {at})")

    def head(self, at: int) -> tuple[int, int, int]:
        """The major type, the argument (an integer or a length) and where the content starts."""
        data = self.data
        if at >= len(data):
            raise self.fail(at, "truncated: an item is missing")
        first = data[at]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info, at + 1
        if info > 27:
            why = "an indefinite length" if info == 31 else f"the reserved encoding {info}"
            raise self.fail(at, f"{why} is not taken")
        size = 1 << (info - 24)
        if at + 1 + size > len(data):
            raise self.fail(at, "truncated: an argument runs past the end")
        return major, int.from_bytes(data[at + 1 : at + 1 + size], "big"), at + 1 + size

    def item(self, at: int, depth: int) -> tuple[Any, int]:
        self.items -= 1
        if self.items < 0:
            raise self.fail(at, f"more than {MAX_CBOR_ITEMS} items")
        if depth > MAX_CBOR_DEPTH:
            raise self.fail(at, f"nested deeper than {MAX_CBOR_DEPTH}")
        major, argument, pos = self.head(at)
        if major == 0:
            return argument, pos
        if major == 1:
            return -1 - argument, pos
        if major in (2, 3):
            end = pos + argument
            if end > len(self.data):
                raise self.fail(at, f"truncated: a string of {argument} bytes runs past the end")
            raw = self.data[pos:end]
            if major == 2:
                return raw, end
            try:
                return raw.decode("utf-8"), end
            except UnicodeDecodeError as exc:
                raise self.fail(at, "a text string is not UTF-8") from exc
        if major == 4:
            if argument > len(self.data) - pos:  # each item takes a byte at least
                raise self.fail(at, f"truncated: an array of {argument} items runs past the end")
            out = []
            for _ in range(argument):
                value, pos = self.item(pos, depth + 1)
                out.append(value)
            return out, pos
        if major == 5:
            if argument > (len(self.data) - pos) // 2:
                raise self.fail(at, f"truncated: a map of {argument} pairs runs past the end")
            found: dict[Any, Any] = {}
            for _ in range(argument):
                key_at = pos
                key, pos = self.item(pos, depth + 1)
                if isinstance(key, bool) or not isinstance(key, int | str | bytes):
                    raise self.fail(key_at, "a map key is not an integer, text or bytes")
                if key in found:
                    raise self.fail(key_at, f"the map key {key!r} is given twice")
                found[key], pos = self.item(pos, depth + 1)
            return found, pos
        if major == 6:
            raise self.fail(at, "tags are not taken")
        if argument in _SIMPLE and self.data[at] & 0x1F < 24:
            return _SIMPLE[argument], pos
        raise self.fail(at, f"the simple value or float {argument} is not taken")


def decode_prefix(data: bytes, at: int = 0, what: str = "CBOR") -> tuple[Any, int]:
    """The CBOR item that starts at ``at`` and where it ends (bytes may follow it, as the
    extensions follow a credential's public key in authenticator data)."""
    data = readable_bytes(data, what)
    if len(data) > MAX_CBOR_SIZE:
        raise InvalidData(f"{what} is {len(data)} bytes, over the limit of {MAX_CBOR_SIZE}")
    return _Reader(data, what).item(at, 0)


def decode(data: bytes, what: str = "CBOR") -> Any:
    """The one CBOR item that is exactly ``data`` (see the module for what is taken)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidData(f"{what} is bytes, not {type(data).__name__}")
    value, end = decode_prefix(data, 0, what)
    if end != len(data):
        raise InvalidData(f"{what}: {len(data) - end} bytes after the CBOR item")
    return value
