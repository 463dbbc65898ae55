"""Strict JSON objects and their members, and strict base64 and base64url: the one reader of the
JSON and base64 entra_keys is sent, so that every document is refused the same way.

``load_object`` (or ``Members.load``) reads a document of at most ``max_size`` bytes (checked
before anything is decoded): UTF-8, one object at the top, no member named twice, no NaN or
Infinity, no number that overflows a float or has over ``MAX_NUMBER_DIGITS`` digits, no nesting
past the parser's recursion limit. ``Members`` reads its members by type (text, booleans,
integers in a range, lists, base64, base64url, objects). Every refusal is an ``InvalidData``
naming the document and the member. ``dump_object`` writes what is to be signed or sent and
refuses what the reader would not read back member for member (a name that is no str, a name
twice, a number out of range). ``as_bytes`` takes every bytes-like input the readers take (a
memoryview of any shape; a released one is InvalidData).

The decoders take only canonical text (RFC 4648 §3.5): standard base64 (§4) padded, as DRS, the
records and JOSE ``ctx`` write it; base64url (§5) unpadded, as JWS and JWE do (RFC 7515 §2);
neither alphabet passes for the other, the peers' bugs (padding of ``len % 4``, base64url read
with the standard alphabet) among the tests. binascii's strict mode checks and decodes in one
linear pass, with no more memory than the output (base64url: the output's pieces until joined).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Collection, Mapping
from typing import Any

from .errors import InvalidData

__all__ = [
    "MAX_JSON_SIZE",
    "MAX_NUMBER_DIGITS",
    "Members",
    "as_bytes",
    "b64_decode",
    "b64_encode",
    "b64url_decode",
    "b64url_encode",
    "dump_object",
    "is_json_object",
    "load_object",
]

#: The largest JSON document read unless a caller sets another limit: bytes (characters for a
#: str), checked before anything is decoded. Every document entra_keys reads is far smaller.
MAX_JSON_SIZE = 1 << 20
#: The most digits an integer may have, in a JSON number or a string of digits: a longer one is
#: out of range for every member (2**64 has 20), and refused before Python converts it.
MAX_NUMBER_DIGITS = 64

_STD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URL_ALPHABET = _STD_ALPHABET[:62] + "-_"
_SEXTET = {c: i for i, c in enumerate(_STD_ALPHABET)} | {"-": 62, "_": 63}
_URL_TO_STD = str.maketrans("-_", "+/")
# Decoded and checked a chunk at a time (a multiple of 4 characters), so that the extra memory
# of a decode is one chunk whatever the size of the text.
_CHUNK = 1 << 16
_SHOWN_NAME = 40  # a member name longer than this is cut in messages
_SHOWN_NAMES = 8  # and a list of names after this many


# --- bytes-like inputs ---------------------------------------------------------------------


def as_bytes(source: object, what: str, *, max_size: int | None = None) -> bytes:
    """The bytes of a bytes-like input (bytes, bytearray, a memoryview of any shape or format),
    copied once; anything else, and a released memoryview, is InvalidData naming ``what``. With
    ``max_size``, a longer input is refused before it is copied."""
    if type(source) is bytes and max_size is None:  # the common case first: no copy
        return source
    if not isinstance(source, bytes | bytearray | memoryview):
        raise InvalidData(f"{what} is bytes, not {type(source).__name__}")
    try:
        size = source.nbytes if isinstance(source, memoryview) else len(source)
        if max_size is not None and size > max_size:
            raise InvalidData(f"{what} is {size} bytes, over the limit of {max_size}")
        return bytes(source)  # any memoryview shape: bytes() copies it in C order
    except ValueError:  # a released memoryview (InvalidData is no ValueError)
        raise InvalidData(f"{what} is a released memoryview") from None


# --- base64 and base64url ------------------------------------------------------------------


class _Malformed(Exception):
    """Why a text is not canonical base64 (or base64url); made an InvalidData by the caller."""


def b64_encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4) of a bytes-like (``as_bytes``)."""
    return binascii.b2a_base64(as_bytes(data, "base64 input"), newline=False).decode("ascii")


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 4648 §5, RFC 7515 §2), as JWS, JWE and JWK carry bytes."""
    return base64.urlsafe_b64encode(as_bytes(data, "base64url input")).rstrip(b"=").decode("ascii")


def b64_decode(text: str) -> bytes:
    """Strict standard base64 with its padding: base64url, whitespace, stray or missing '=' and
    non-canonical text are InvalidData."""
    if not isinstance(text, str):
        raise InvalidData(f"base64 input must be a str, not {type(text).__name__}")
    try:
        return _standard(text)
    except _Malformed as exc:
        raise InvalidData(f"base64: {exc}") from None


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding: only the URL-safe alphabet, canonical; else
    InvalidData."""
    if not isinstance(text, str):
        raise InvalidData(f"base64url input must be a str, not {type(text).__name__}")
    try:
        return _url(text)
    except _Malformed as exc:
        raise InvalidData(f"base64url: {exc}") from None


def _standard(text: str) -> bytes:
    size = len(text)
    if size % 4:
        raise _Malformed(f"{size} characters is not a padded base64 length")
    try:
        # strict_mode refuses every character outside the alphabet, misplaced or excess '='.
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: a character outside ASCII
        raise _Malformed(_why_standard(text)) from None
    if text.endswith("==="):  # strict_mode takes a whole quad followed by '='
        raise _Malformed("too much padding")
    padding = 2 if text.endswith("==") else 1 if text.endswith("=") else 0
    if padding:
        _check_canonical(text[size - padding - 1], padding)
    return data


def _why_standard(text: str) -> str:
    bad = _first_outside(text, _STD_ALPHABET + "=")
    if bad in ("-", "_"):
        return "'-' and '_' belong to base64url, not standard base64"
    if bad is not None:
        return f"{bad!r} is not a base64 character"
    return "not standard base64 (misplaced padding)"


def _url(text: str) -> bytes:
    size = len(text)
    if size % 4 == 1:  # said before anything is decoded
        raise _Malformed(_why_url(text))
    pieces = []
    for start in range(0, size, _CHUNK):
        chunk = text[start : start + _CHUNK]
        # The translation below would let '+' and '/' through, and base64url has no padding.
        if "=" in chunk or "+" in chunk or "/" in chunk:
            raise _Malformed(_why_url(text))
        piece = chunk.translate(_URL_TO_STD)
        if start + _CHUNK >= size:
            piece += "=" * (-len(piece) % 4)
        try:
            pieces.append(binascii.a2b_base64(piece, strict_mode=True))
        except (binascii.Error, ValueError):
            raise _Malformed(_why_url(text)) from None
    if size % 4:
        _check_canonical(text[-1], 4 - size % 4)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _why_url(text: str) -> str:
    bad = _first_outside(text, _URL_ALPHABET)
    if bad == "=":
        return "'=' padding is not allowed"
    if bad in ("+", "/"):
        return f"{bad!r} belongs to standard base64, not base64url"
    if bad is not None:
        return f"{bad!r} is not a base64url character"
    return f"{len(text)} characters cannot encode whole bytes"


def _check_canonical(last: str, padding: int) -> None:
    """The last character before the padding may not set bits that encode no byte."""
    if _SEXTET[last] & (0x0F if padding == 2 else 0x03):
        raise _Malformed("not canonical (the unused low bits are not zero)")


def _first_outside(text: str, alphabet: str) -> str | None:
    """The first character of the text outside the alphabet (ASCII), or None; one chunk at a
    time, so a long text costs no more memory than a chunk."""
    allowed = alphabet.encode("ascii")
    for start in range(0, len(text), _CHUNK):
        chunk = text[start : start + _CHUNK]
        try:
            raw, beyond = chunk.encode("ascii"), None
        except UnicodeEncodeError as exc:
            raw, beyond = chunk[: exc.start].encode("ascii"), chunk[exc.start]
        rest = raw.translate(None, allowed)
        if rest:
            return chr(rest[0])
        if beyond is not None:
            return beyond
    return None


# --- JSON documents ------------------------------------------------------------------------


class _OutOfRange:
    """Stands in for a number too large to take, until the reader says where it was."""

    __slots__ = ("shown",)

    def __init__(self, shown: str) -> None:
        self.shown = shown


def load_object(
    source: bytes | bytearray | memoryview | str, what: str, *, max_size: int = MAX_JSON_SIZE
) -> dict[str, Any]:
    """A JSON document that must be one object, read strictly (see the module); ``what`` names
    it in every InvalidData, and ``max_size`` bounds it (bytes, or characters for a str)."""
    if isinstance(source, str):
        if len(source) > max_size:
            raise InvalidData(f"{what} is {len(source)} characters, over the limit of {max_size}")
        text = source
    elif isinstance(source, bytes | bytearray | memoryview):
        data = as_bytes(source, what, max_size=max_size)
        error: str | None = None
        try:
            text = str(data, "utf-8")
        except UnicodeDecodeError as exc:
            error = f"{what} is not UTF-8 JSON (byte {exc.start}: {exc.reason})"
        if error is not None:  # raised here, so that no chained exception holds the input
            raise InvalidData(error)
    else:
        raise InvalidData(f"{what} is bytes or str, not {type(source).__name__}")
    return _parse(text, what)


def dump_object(value: Mapping[str, Any], what: str, *, ascii_only: bool = False) -> bytes:
    """Compact UTF-8 JSON of a mapping that is to be signed or sent, InvalidData unless
    ``load_object`` reads it back member for member: every member name a str at every depth
    (``json.dumps`` writes 1 and "1", or None and "null", as one name twice), nothing
    ``json`` cannot write (NaN, a lone surrogate, another type, nesting past the recursion
    limit), no number the reader refuses, at most ``MAX_JSON_SIZE`` bytes."""
    if not isinstance(value, Mapping):
        raise InvalidData(f"{what} is a mapping, not {type(value).__name__}")
    error: str | None = None
    try:
        text = json.dumps(
            dict(value), separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False
        )
        data = text.encode("utf-8")  # a lone surrogate: UnicodeEncodeError, a ValueError
    except (TypeError, ValueError, RecursionError) as exc:
        error = f"{what} cannot be serialized as JSON ({type(exc).__name__}: {exc})"
    if error is not None:  # raised here, so that no chained exception holds the value
        raise InvalidData(error)
    _check_names(value, what)
    load_object(data, what)
    return data


def _check_names(value: Mapping[str, Any], what: str) -> None:
    """Every member name at every depth is a str (iteratively: ``json.dumps`` has already
    bounded the depth)."""
    stack: list[object] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            for name, item in node.items():
                if not isinstance(name, str):
                    raise InvalidData(
                        f"{what}: a member name is a str, not {type(name).__name__} (JSON "
                        "would write it as a string, perhaps one that is already there)"
                    )
                stack.append(item)
        elif isinstance(node, list | tuple):
            stack.extend(node)


def is_json_object(source: bytes | bytearray | memoryview | str, *, max_size: int) -> bool:
    """True when ``load_object`` would take the source; never raises."""
    try:
        load_object(source, "", max_size=max_size)
    except InvalidData:
        return False
    return True


def _parse(text: str, what: str) -> dict[str, Any]:
    too_large: list[_OutOfRange] = []

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen = set()
            for name, _ in pairs:
                if name in seen:
                    raise InvalidData(f"{what}: the member {_shown(name)} appears twice")
                seen.add(name)
        return obj

    def constant(name: str) -> Any:
        raise InvalidData(f"{what}: {name} is not JSON")

    def integer(digits: str) -> int | _OutOfRange:
        if len(digits) <= MAX_NUMBER_DIGITS:
            return int(digits)
        too_large.append(_OutOfRange(f"a number of {len(digits.lstrip('-'))} digits"))
        return too_large[-1]

    def real(digits: str) -> float | _OutOfRange:
        value = float(digits)
        if math.isfinite(value):
            return value
        shown = digits if len(digits) <= 24 else digits[:24] + "..."
        too_large.append(_OutOfRange(f"a number beyond a float ({shown})"))
        return too_large[-1]

    error: str | None = None
    try:
        value = json.loads(
            text,
            object_pairs_hook=members,
            parse_constant=constant,
            parse_int=integer,
            parse_float=real,
        )
    except RecursionError:
        error = f"{what} is nested too deeply"
    except ValueError as exc:  # json.JSONDecodeError; its message does not quote the text
        error = f"{what} is not JSON ({exc})"
    if error is not None:  # raised here, so that no chained exception holds the text
        raise InvalidData(error)
    if not isinstance(value, dict):
        raise InvalidData(f"{what} is not a JSON object but {_kind(value)}")
    if too_large:
        place = _path_to(value, too_large[0])
        raise InvalidData(f"{what}: {place} is {too_large[0].shown}, out of range")
    return value


def _path_to(root: dict[str, Any], target: object) -> str:
    """Where in the document the target is, as ``'a'['b'][0]`` (an iterative search: the
    document may be as deep as the parser allowed)."""
    stack: list[tuple[object, Any]] = [(root, None)]  # a node and its trail: (step, trail)
    while stack:
        node, trail = stack.pop()
        if node is target:
            steps: list[str | int] = []
            while trail is not None:
                step, trail = trail
                steps.append(step)
            first, *rest = reversed(steps)
            return _shown(str(first)) + "".join(f"[{_shown(s)}]" for s in rest)
        if isinstance(node, dict):
            stack.extend((v, (k, trail)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (i, trail)) for i, v in enumerate(node))
    return "a member"  # pragma: no cover - every marker made is in the document


def _shown(name: object) -> str:
    """A member name (or index) for a message, cut when it is long: names come from outside."""
    if isinstance(name, str) and len(name) > _SHOWN_NAME:
        return repr(name[:_SHOWN_NAME]) + "..."
    return repr(name)


def _shown_names(names: list[str]) -> str:
    shown = ", ".join(_shown(n) for n in names[:_SHOWN_NAMES])
    return f"[{shown}{', ...' if len(names) > _SHOWN_NAMES else ''}]"


def _kind(value: object) -> str:
    """What a JSON value is, in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    names = {str: "a string", list: "an array", dict: "an object"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return type(value).__name__


class Members:
    """The members of one JSON object, read by type: a member that is missing, of another type
    or out of range is an InvalidData naming the document (``what``) and the member."""

    __slots__ = ("value", "what")

    def __init__(self, value: object, what: str) -> None:
        if not isinstance(value, Mapping):
            raise InvalidData(f"{what} is not a JSON object but {_kind(value)}")
        self.value: Mapping[str, Any] = value
        self.what = what

    @classmethod
    def load(
        cls,
        source: bytes | bytearray | memoryview | str | Mapping[str, Any],
        what: str,
        *,
        max_size: int = MAX_JSON_SIZE,
    ) -> Members:
        """The members of a document given as its text (read by ``load_object``) or already
        parsed (a mapping, taken as it is)."""
        if isinstance(source, Mapping):
            return cls(source, what)
        if isinstance(source, str | bytes | bytearray | memoryview):
            return cls(load_object(source, what, max_size=max_size), what)
        raise InvalidData(f"{what} is bytes, str or a mapping, not {type(source).__name__}")

    def __contains__(self, name: object) -> bool:
        return name in self.value

    def only(self, required: Collection[str], optional: Collection[str] = ()) -> None:
        """Refuse members other than these, and any of ``required`` missing."""
        unknown = sorted(
            (n for n in self.value if n not in required and n not in optional), key=str
        )
        missing = sorted(n for n in required if n not in self.value)
        if unknown or missing:
            raise InvalidData(
                f"{self.what}: unknown members {_shown_names(unknown)}, missing members {missing}"
            )

    def required(self, name: str) -> Any:
        """A member of any type that must be there (null included)."""
        if name not in self.value:
            raise InvalidData(f"{self.what} has no {name!r}")
        return self.value[name]

    def optional(self, name: str) -> Any:
        """A member of any type, None when it is missing or null."""
        return self.value.get(name)

    def text(self, name: str) -> str:
        """A non-empty string."""
        return self._text(name, self.required(name))

    def optional_text(self, name: str) -> str | None:
        """A non-empty string, or None when the member is missing or null."""
        value = self.value.get(name)
        return None if value is None else self._text(name, value)

    def boolean(self, name: str) -> bool:
        """true or false."""
        value = self.required(name)
        if not isinstance(value, bool):
            raise InvalidData(f"{self.what}: {name!r} is a boolean, not {_kind(value)}")
        return value

    def integer(self, name: str, minimum: int, maximum: int, *, digit_strings: bool = False) -> int:
        """An integer from ``minimum`` to ``maximum`` (JSON true is no integer); with
        ``digit_strings`` also a string of ASCII digits, as Entra writes some counts."""
        return self._integer(name, self.required(name), minimum, maximum, digit_strings)

    def optional_integer(
        self, name: str, minimum: int, maximum: int, *, digit_strings: bool = False
    ) -> int | None:
        """As ``integer``, or None when the member is missing or null."""
        value = self.value.get(name)
        if value is None:
            return None
        return self._integer(name, value, minimum, maximum, digit_strings)

    def texts(self, name: str) -> tuple[str, ...]:
        """An array of strings (empty ones too)."""
        items = self._array(name, "strings")
        for index, item in enumerate(items):
            if not isinstance(item, str):
                raise InvalidData(
                    f"{self.what}: {name!r} is not a list of strings (item {index} is "
                    f"{_kind(item)})"
                )
        return tuple(self._text(f"{name}[{i}]", item, empty=True) for i, item in enumerate(items))

    def base64(self, name: str) -> bytes:
        """Bytes in standard base64 with padding (``b64_decode``)."""
        return self._bytes(name, self.required(name), url=False)

    def optional_base64(self, name: str) -> bytes | None:
        """As ``base64``, or None when the member is missing or null."""
        value = self.value.get(name)
        return None if value is None else self._bytes(name, value, url=False)

    def base64_list(self, name: str) -> tuple[bytes, ...]:
        """An array of standard base64 strings, decoded."""
        items = self._array(name, "base64 strings")
        return tuple(self._bytes(f"{name}[{i}]", item, url=False) for i, item in enumerate(items))

    def base64url(self, name: str) -> bytes:
        """Bytes in base64url without padding (``b64url_decode``)."""
        return self._bytes(name, self.required(name), url=True)

    def member(self, name: str) -> Members:
        """A member that is a JSON object, as Members named ``"<what>'s <name>"``."""
        return Members(self.value.get(name), f"{self.what}'s {name}")

    def optional_member(self, name: str) -> Members | None:
        """As ``member``, or None when the member is missing or null."""
        value = self.value.get(name)
        return None if value is None else Members(value, f"{self.what}'s {name}")

    def _text(self, name: str, value: object, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            raise InvalidData(f"{self.what}: {name!r} is a string, not {_kind(value)}")
        if not value and not empty:
            raise InvalidData(f"{self.what}: {name!r} is empty")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidData(f"{self.what}: {name!r} holds a lone surrogate") from None
        return value

    def _integer(
        self, name: str, value: object, minimum: int, maximum: int, digit_strings: bool
    ) -> int:
        if digit_strings and isinstance(value, str) and value.isascii() and value.isdigit():
            digits = value.lstrip("0") or "0"
            if len(digits) > MAX_NUMBER_DIGITS:  # refused before Python converts it
                shown = f"a number of {len(digits)} digits"
                raise self._out_of_range(name, "too large", shown, minimum, maximum)
            value = int(digits)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise InvalidData(f"{self.what}: {name!r} is an integer, not {_kind(value)}")
        if minimum <= value <= maximum:
            return value
        if value < minimum:
            problem = "negative" if value < 0 <= minimum else "too small"
        else:
            problem = "too large"
        shown = str(value) if abs(value) < 10**24 else "a number of more than 24 digits"
        raise self._out_of_range(name, problem, shown, minimum, maximum)

    def _out_of_range(
        self, name: str, problem: str, shown: str, minimum: int, maximum: int
    ) -> InvalidData:
        return InvalidData(
            f"{self.what}: {name!r} is {problem} ({shown}; it is {minimum} to {maximum})"
        )

    def _array(self, name: str, items: str) -> list[Any]:
        value = self.required(name)
        if not isinstance(value, list):
            raise InvalidData(f"{self.what}: {name!r} is not a list of {items} but {_kind(value)}")
        return value

    def _bytes(self, name: str, value: object, *, url: bool) -> bytes:
        kind = "base64url" if url else "base64"
        if not isinstance(value, str):
            raise InvalidData(f"{self.what}: {name!r} is a string, not {_kind(value)}")
        try:
            return _url(value) if url else _standard(value)
        except _Malformed as exc:
            raise InvalidData(f"{self.what}: {name!r} is not valid {kind} ({exc})") from None
