"""The one strict JSON reader and the base64 / base64url decoders (``entra_keys._json``).

Each refusal is an attack performed on the shared reader: duplicate members, NaN, documents over
the size limit (32 MiB, in a separate process whose memory and time are measured), integers of
thousands of digits, base64 with whitespace, padding games and the other alphabet, documents
that are no object, nesting past the recursion limit. Expected values come from the standard
library's ``base64`` and ``json``, never from the code under test.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entra_keys._json import (
    MAX_JSON_SIZE,
    MAX_NUMBER_DIGITS,
    Members,
    as_bytes,
    b64_decode,
    b64_encode,
    b64url_decode,
    b64url_encode,
    dump_object,
    is_json_object,
    load_object,
)
from entra_keys.errors import InvalidData

SRC = Path(__file__).resolve().parent.parent / "src"


def b64e(data: bytes) -> str:
    """Independent base64url encoding without padding."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


# --- base64url ------------------------------------------------------------------------------


def test_b64url_known_values() -> None:
    assert b64url_encode(b"") == ""
    assert b64url_encode(b"\xfb\xff") == "-_8"
    assert b64url_encode(b"\xfb\xff\xbf") == "-_-_"
    assert b64url_decode("-_8") == b"\xfb\xff"
    assert b64url_decode("-_-_") == b"\xfb\xff\xbf"
    assert b64url_decode("AQAB") == b"\x01\x00\x01"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+_8", "'\\+' belongs to standard base64"),
        ("/w", "'/' belongs to standard base64"),
        ("AQ==", "padding"),
        ("A=B", "padding"),
        ("A", "1 characters cannot encode whole bytes"),
        ("AAAAA", "5 characters cannot encode whole bytes"),
        ("AR", "not canonical"),
        ("AAB", "not canonical"),
        (" AA", "' ' is not a base64url character"),
        ("AA\n", "'\\\\n' is not a base64url character"),
        ("ÀA", "'À' is not a base64url character"),
        ("AA.", "'.' is not a base64url character"),
    ],
)
def test_b64url_decode_is_strict(text: str, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        b64url_decode(text)


def test_b64url_decode_refuses_bytes() -> None:
    with pytest.raises(InvalidData, match="must be a str"):
        b64url_decode(b"AA")  # type: ignore[arg-type]


@given(data=st.binary(max_size=300))
def test_b64url_round_trip(data: bytes) -> None:
    text = b64url_encode(data)
    assert text == b64e(data)
    assert not set(text) & set("=+/")
    assert b64url_decode(text) == data


@given(text=st.text(alphabet="AQgw-_+/=. \nZz09", max_size=40) | st.text(max_size=20))
def test_b64url_decode_accepts_only_canonical_text(text: str) -> None:
    try:
        data = b64url_decode(text)
    except InvalidData:
        return
    assert b64url_encode(data) == text


# --- standard base64 ------------------------------------------------------------------------


def test_strict_standard_base64() -> None:
    assert b64_decode("+/8=") == b"\xfb\xff"
    for bad in ("-_8=", "+/8", "+/9=", "+/8==", " +/8=", "+/8=\n"):
        with pytest.raises(InvalidData):
            b64_decode(bad)
    with pytest.raises(InvalidData):
        b64_decode(b"AAAA")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("AAA", "3 characters is not a padded base64 length"),  # padding of len % 4 left out
        ("AA=", "3 characters"),
        ("AA===", "5 characters"),
        ("AAAA====", "too much padding"),  # binascii's strict mode takes this one
        ("AAAAA===", "not standard base64"),
        ("AA=A", "misplaced padding"),
        ("=AAA", "misplaced padding"),
        ("AA==AA==", "misplaced padding"),
        ("AB==", "not canonical"),
        ("AAB=", "not canonical"),
        ("AA AA==", "not a padded base64 length"),
        ("AA A", "' ' is not a base64 character"),
        ("AAA\n", "'\\\\n' is not a base64 character"),
        ("AA\r\n", "'\\\\r' is not a base64 character"),
        ("AA\tA", "'\\\\t' is not a base64 character"),
        ("-_8=", "belong to base64url"),  # base64url read with the standard alphabet
        ("+/-_", "belong to base64url"),
        ("ab_=", "belong to base64url"),
        ("AAé=", "'é' is not a base64 character"),
        ("AA\x00=", "'\\\\x00' is not a base64 character"),
    ],
)
def test_b64_decode_refuses_padding_games_whitespace_and_the_url_alphabet(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidData, match=message):
        b64_decode(text)


@given(data=st.binary(max_size=300))
def test_b64_round_trip(data: bytes) -> None:
    text = b64_encode(data)
    assert text == base64.b64encode(data).decode("ascii")
    assert b64_decode(text) == data


@given(text=st.text(alphabet="AQgw-_+/=. \nZz09", max_size=40) | st.text(max_size=20))
def test_b64_decode_accepts_only_canonical_padded_text(text: str) -> None:
    try:
        data = b64_decode(text)
    except InvalidData:
        return
    assert base64.b64encode(data).decode("ascii") == text


def test_long_texts_decode_across_chunks() -> None:
    """Texts longer than a decoding chunk: the same bytes, and a bad character anywhere (the
    last chunk too) is found and named."""
    data = bytes(range(256)) * 1000  # 256,000 bytes: several 64 KiB chunks of text
    assert b64url_decode(b64e(data)) == data
    assert b64_decode(base64.b64encode(data).decode()) == data
    text = b64e(data)
    for at in (0, 70_000, len(text) - 1):
        with pytest.raises(InvalidData, match="'!' is not a base64url character"):
            b64url_decode(text[:at] + "!" + text[at + 1 :])
        with pytest.raises(InvalidData, match="'\\+' belongs to standard base64"):
            b64url_decode(text[:at] + "+" + text[at + 1 :])


# --- JSON documents -------------------------------------------------------------------------


def test_a_document_is_one_strict_object() -> None:
    assert load_object(b'{"a": [1, 2.5, "x", null, true], "b": {"c": {}}}', "doc") == {
        "a": [1, 2.5, "x", None, True],
        "b": {"c": {}},
    }
    assert load_object('{"é": "\\u00e9"}', "doc") == {"é": "é"}
    assert load_object(memoryview(b'{"a":1}'), "doc") == {"a": 1}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"alg":"none","alg":"RS256"}', "doc: the member 'alg' appears twice"),
        (b'{"a":{"b":1,"b":1}}', "doc: the member 'b' appears twice"),
        (b'{"a":[{"b":1,"b":2}]}', "doc: the member 'b' appears twice"),
        (b'{"a":NaN}', "doc: NaN is not JSON"),
        (b'{"a":Infinity}', "doc: Infinity is not JSON"),
        (b'{"a":[-Infinity]}', "doc: -Infinity is not JSON"),
        (b'{"a":1e400}', "doc: 'a' is a number beyond a float"),
        (b'{"a":[0,-1e999]}', r"doc: 'a'\[1\] is a number beyond a float"),
        (b"[1]", "doc is not a JSON object but an array"),
        (b'"text"', "doc is not a JSON object but a string"),
        (b"42", "doc is not a JSON object but a number"),
        (b"null", "doc is not a JSON object but null"),
        (b"true", "doc is not a JSON object but a boolean"),
        (b"", r"doc is not JSON \(Expecting value"),
        (b'{"a":1} {"b":2}', "doc is not JSON .Extra data"),
        (b'{"a":1,}', "doc is not JSON"),
        (b"{'a':1}", "doc is not JSON"),
        (b'{"a":"\x01"}', "doc is not JSON .Invalid control character"),
        (b"\xff{}", "doc is not UTF-8 JSON .byte 0"),
        ('{"alg":"RS256"}'.encode("utf-16"), "doc is not UTF-8 JSON"),
        (b'{"alg":"\xe9"}', "doc is not UTF-8 JSON"),
        (b'\xef\xbb\xbf{"a":1}', "doc is not JSON .Unexpected UTF-8 BOM"),
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "doc is nested too deeply"),
        (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "doc is nested too deeply"),
    ],
)
def test_documents_that_are_refused(document: bytes, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        load_object(document, "doc")
    assert not is_json_object(document, max_size=MAX_JSON_SIZE)


def test_every_bytes_like_is_read_as_its_bytes() -> None:
    """A strided memoryview passed the isinstance check, then str(view, "utf-8") raised
    TypeError out of every reader; a released one raised ValueError. Every shape is read as its
    bytes now, and anything else is InvalidData."""
    document = b'{"a":[1,2,"x"]}'
    spread = bytes(b for c in document for b in (c, 0))
    for view in (
        memoryview(spread)[::2],
        memoryview(bytearray(document)),
        memoryview(document).cast("B", (3, 5)),
        memoryview(document + b"pad")[:-3],
    ):
        assert load_object(view, "doc") == {"a": [1, 2, "x"]}
        assert Members.load(view, "doc").value == {"a": [1, 2, "x"]}
        assert is_json_object(view, max_size=100)
        assert as_bytes(view, "doc") == document
    released = memoryview(document)
    released.release()
    for bad in (released, None, 5, [1], "text"):
        with pytest.raises(InvalidData, match="doc"):
            as_bytes(bad, "doc")
    with pytest.raises(InvalidData, match="released memoryview"):
        load_object(released, "doc")
    with pytest.raises(InvalidData, match="over the limit of 4"):
        as_bytes(memoryview(spread)[::2], "doc", max_size=4)


@pytest.mark.parametrize(
    "value",
    [
        {1: "a", "1": "b"},
        {None: "a", "null": "b"},
        {True: "a", "true": "b"},
        {1.5: "a"},
        {"outer": {2: "x", "2": "y"}},
        {"list": [{"ok": 1}, {3: "z"}]},
    ],
    ids=repr,
)
def test_dump_object_refuses_names_that_are_no_str(value: dict[Any, Any]) -> None:
    """json.dumps writes 1 and "1" (or None and "null") as one name twice: bytes that the strict
    reader refuses and that two services would read differently."""
    with pytest.raises(InvalidData, match="a member name is a str, not"):
        dump_object(value, "the payload")


def test_dump_object_writes_what_load_object_reads_back() -> None:
    value = {"a": 1, "b": [True, None, "é"], "c": {"d": 2.5}}
    assert dump_object(value, "p") == '{"a":1,"b":[true,null,"é"],"c":{"d":2.5}}'.encode()
    assert load_object(dump_object(value, "p"), "p") == value
    assert dump_object({"é": 1}, "p", ascii_only=True) == b'{"\\u00e9":1}'
    for bad, message in (
        ({"a": float("nan")}, "cannot be serialized"),
        ({"a": "\ud800"}, "cannot be serialized"),
        ({"a": object()}, "cannot be serialized"),
        ({"a": 10**MAX_NUMBER_DIGITS}, "digits"),
        ({"a": "x" * MAX_JSON_SIZE}, "over the limit"),
    ):
        with pytest.raises(InvalidData, match=message):
            dump_object(bad, "p")
    with pytest.raises(InvalidData, match="a mapping, not list"):
        dump_object([1], "p")  # type: ignore[arg-type]


def test_a_document_over_the_limit_is_refused_before_it_is_read() -> None:
    limit = 1000
    document = b'{"a":"' + b"x" * (limit - 8) + b'"}'
    assert len(document) == limit
    assert load_object(document, "doc", max_size=limit)["a"] == "x" * (limit - 8)
    with pytest.raises(InvalidData, match="doc is 1001 bytes, over the limit of 1000"):
        load_object(document + b" ", "doc", max_size=limit)
    # Refused by its size alone: invalid UTF-8 over the limit is never decoded.
    with pytest.raises(InvalidData, match="over the limit"):
        load_object(b"\xff" * (limit + 1), "doc", max_size=limit)
    with pytest.raises(InvalidData, match="doc is 1001 characters, over the limit of 1000"):
        load_object("é" * (limit + 1), "doc", max_size=limit)
    with pytest.raises(InvalidData, match=f"over the limit of {MAX_JSON_SIZE}"):
        Members.load(b" " * (MAX_JSON_SIZE + 1), "doc")


@pytest.mark.parametrize(
    "number",
    [
        "9" * 5000,  # over Python's own 4,300-digit limit: its ValueError must not escape
        "-" + "9" * 5000,
        "1" + "0" * MAX_NUMBER_DIGITS,
    ],
)
def test_integers_of_thousands_of_digits_are_refused_by_name(number: str) -> None:
    document = '{"expires_in": 3600, "tgt": {"list": [1, ' + number + "]}}"
    digits = len(number.lstrip("-"))
    with pytest.raises(
        InvalidData, match=rf"doc: 'tgt'\['list'\]\[1\] is a number of {digits} digits, out of"
    ):
        load_object(document, "doc")
    with pytest.raises(InvalidData, match=f"doc: 'n' is a number of {digits} digits"):
        Members.load('{"n": ' + number + "}", "doc").integer("n", 0, 2**31 - 1)


def test_the_longest_integer_taken() -> None:
    longest = int("9" * MAX_NUMBER_DIGITS)
    assert load_object('{"n": ' + str(longest) + "}", "doc")["n"] == longest


def test_error_messages_do_not_echo_long_names() -> None:
    name = "n" * 100_000
    document = '{"' + name + '": 1, "' + name + '": 2}'
    with pytest.raises(InvalidData) as caught:
        load_object(document, "doc")
    assert len(str(caught.value)) < 200
    members = Members.load({name: 1, **{f"x{i}": i for i in range(100)}}, "doc")
    with pytest.raises(InvalidData, match="unknown members") as caught:
        members.only(())
    assert len(str(caught.value)) < 500


@given(data=st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_bytes_and_text_raise_only_invalid_data(data: bytes | str) -> None:
    try:
        value = load_object(data, "doc")
    except InvalidData:
        assert not is_json_object(data, max_size=MAX_JSON_SIZE)
        return
    assert isinstance(value, dict)
    assert is_json_object(data, max_size=MAX_JSON_SIZE)
    assert value == json.loads(data)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.just("AAAA"),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=10,
)
SOURCES = (
    st.binary(max_size=80)
    | st.text(max_size=80)
    | st.dictionaries(st.sampled_from(["a", "b"]), JSON_VALUES).map(json.dumps)
    | JSON_VALUES.map(json.dumps)
    | JSON_VALUES
)


@given(source=SOURCES, name=st.sampled_from(["a", "b"]))
def test_every_getter_raises_only_invalid_data(source: Any, name: str) -> None:
    """Arbitrary documents (and already parsed values) through the reader and each getter."""
    try:
        members = Members.load(source, "doc")
    except InvalidData:
        return
    getters: list[Callable[[str], object]] = [
        members.text,
        members.optional_text,
        members.boolean,
        lambda n: members.integer(n, 0, 2**31 - 1),
        lambda n: members.optional_integer(n, -5, 5, digit_strings=True),
        members.texts,
        members.base64,
        members.optional_base64,
        members.base64_list,
        members.base64url,
        members.member,
        members.optional_member,
        members.required,
        lambda n: members.only([n]),
    ]
    for getter in getters:
        with contextlib.suppress(InvalidData):
            getter(name)


# --- members --------------------------------------------------------------------------------


DOC = Members.load(
    json.dumps(
        {
            "text": "x",
            "empty": "",
            "null": None,
            "true": True,
            "int": 7,
            "float": 7.0,
            "digits": "0042",
            "big": "9" * 20,
            "huge": "9" * 5000,
            "thirty": 10**30,
            "negative": -1,
            "array": ["a", "b"],
            "mixed": ["a", 1],
            "b64": "+/8=",
            "b64url": "-_8",
            "b64s": ["AAAA", "+/8="],
            "object": {"inner": "y"},
            "surrogate": "\ud800",
        }
    ),
    "the document",
)


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda: DOC.text("missing"), "the document has no 'missing'"),
        (lambda: DOC.text("int"), "the document: 'int' is a string, not a number"),
        (lambda: DOC.text("empty"), "the document: 'empty' is empty"),
        (lambda: DOC.text("null"), "'null' is a string, not null"),
        (lambda: DOC.text("surrogate"), "'surrogate' holds a lone surrogate"),
        (lambda: DOC.optional_text("array"), "'array' is a string, not an array"),
        (lambda: DOC.boolean("text"), "'text' is a boolean, not a string"),
        (lambda: DOC.integer("true", 0, 9), "'true' is an integer, not a boolean"),
        (lambda: DOC.integer("float", 0, 9), "'float' is an integer, not a number with a frac"),
        (lambda: DOC.integer("digits", 0, 99), "'digits' is an integer, not a string"),
        (lambda: DOC.integer("int", 8, 9), r"'int' is too small \(7; it is 8 to 9\)"),
        (lambda: DOC.integer("int", 0, 6), r"'int' is too large \(7; it is 0 to 6\)"),
        (lambda: DOC.integer("negative", 0, 9), r"'negative' is negative \(-1; it is 0 to 9\)"),
        (
            lambda: DOC.integer("thirty", 0, 2**31 - 1),
            r"'thirty' is too large \(a number of more than 24 digits; it is 0 to 2147483647\)",
        ),
        (
            lambda: DOC.integer("big", 0, 2**31 - 1, digit_strings=True),
            r"'big' is too large \(99999999999999999999; it is 0 to 2147483647\)",
        ),
        (
            lambda: DOC.integer("huge", 0, 2**31 - 1, digit_strings=True),
            r"'huge' is too large \(a number of 5000 digits; it is 0 to 2147483647\)",
        ),
        (lambda: DOC.texts("text"), "'text' is not a list of strings but a string"),
        (lambda: DOC.texts("mixed"), r"'mixed' is not a list of strings \(item 1 is a number\)"),
        (lambda: DOC.base64_list("int"), "'int' is not a list of base64 strings but a number"),
        (lambda: DOC.base64("int"), "'int' is a string, not a number"),
        (lambda: DOC.base64("b64url"), r"'b64url' is not valid base64 \(3 characters"),
        (lambda: DOC.base64url("b64"), r"'b64' is not valid base64url \('\+' belongs"),
        (lambda: DOC.base64_list("mixed"), r"'mixed\[0\]' is not valid base64"),
        (lambda: DOC.member("text"), "the document's text is not a JSON object but a string"),
        (lambda: DOC.member("missing"), "the document's missing is not a JSON object but null"),
        (lambda: DOC.member("object").text("other"), "the document's object has no 'other'"),
        (lambda: DOC.only({"text", "other"}, DOC.value.keys() - {"b64"}), "unknown members"),
        (lambda: DOC.only({"other"}, DOC.value.keys()), r"missing members \['other'\]"),
        (lambda: Members([], "a list"), "a list is not a JSON object but an array"),
        (lambda: Members.load(42, "a number"), "a number is bytes, str or a mapping, not int"),  # type: ignore[arg-type]
    ],
)
def test_members_name_the_document_and_the_member(read: Any, message: str) -> None:
    with pytest.raises(InvalidData, match=message):
        read()


def test_members_read_what_they_should() -> None:
    assert DOC.text("text") == "x"
    assert DOC.optional_text("null") is None and DOC.optional_text("missing") is None
    assert DOC.boolean("true") is True
    assert DOC.integer("int", 7, 7) == 7
    assert DOC.integer("digits", 0, 99, digit_strings=True) == 42
    assert DOC.optional_integer("null", 0, 1) is None
    assert DOC.texts("array") == ("a", "b")
    assert DOC.base64("b64") == b"\xfb\xff"
    assert DOC.optional_base64("missing") is None
    assert DOC.base64url("b64url") == b"\xfb\xff"
    assert DOC.base64_list("b64s") == (b"\x00\x00\x00", b"\xfb\xff")
    assert DOC.member("object").text("inner") == "y"
    assert DOC.optional_member("null") is None
    assert DOC.required("null") is None
    assert "text" in DOC and "missing" not in DOC
    DOC.only(DOC.value.keys())


# --- 32 MiB: refused before decoding, in linear time and bounded memory ----------------------

_MEASURE = """
import json, sys, time, tracemalloc
from entra_keys._json import b64_decode, b64url_decode, load_object
from entra_keys.errors import InvalidData

def peak_rss_mib():  # this process's own peak (ru_maxrss would count the parent's, from fork)
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

SIZE = 32 << 20
case = sys.argv[1]
if case.startswith("document"):  # one allocation: the baseline holds no transient copy
    data = bytearray(b" ") * SIZE
    data[:6], data[-2:] = b'{"a":', b"1}"
    if case == "document-prt":
        from entra_keys.protocol import parse_nonce as call
    elif case == "document-quote":
        from entra_keys.tcg.records import quote_from_json as call
    else:
        call = lambda d: load_object(d, "doc")
else:
    call = b64_decode if case.startswith("b64-") else b64url_decode
    data = "A" * SIZE if case.endswith("-valid") else "A" * (SIZE - 4) + "AAA!"
rss_before = peak_rss_mib()
tracemalloc.start()
start = time.perf_counter()
try:
    call(data)
    outcome = "decoded"
except InvalidData as exc:
    outcome = str(exc)[:60]
seconds = time.perf_counter() - start
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"case": case, "outcome": outcome, "seconds": seconds,
                  "traced_peak_mib": traced_peak / 2**20, "rss_before_mib": rss_before,
                  "rss_peak_mib": peak_rss_mib()}))
"""

#: Each case: what it must say, and the most it may allocate while reading (MiB): nothing for
#: a document over the limit; for base64 the 24 MiB output (binascii allocates it before it
#: finds the bad character at the end), and for base64url also its chunks until they are joined.
_CASES = {
    "document": ("over the limit", 1),
    "document-prt": ("over the limit", 1),
    "document-quote": ("over the limit", 1),
    "b64-valid": ("decoded", 24 + 1),
    "b64-invalid": ("'!' is not a base64 character", 24 + 1),
    "b64url-valid": ("decoded", 2 * 24 + 1),
    "b64url-invalid": ("'!' is not a base64url character", 24 + 1),
}


@pytest.mark.parametrize("case", _CASES)
def test_32_mib_inputs_cost_time_and_memory_linear_in_their_size(case: str) -> None:
    """A 32 MiB document is refused unread; 32 MiB of base64 is decoded (or refused) in C, one
    pass, with no more memory than its output (a regex over the text took 1.1 GiB)."""
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_MEASURE), case],
        capture_output=True, text=True, env=env, check=True, timeout=120,
    )  # fmt: skip
    result = json.loads(run.stdout)
    print(json.dumps(result))  # the numbers, for the record (pytest -s)
    outcome, most_mib = _CASES[case]
    assert outcome in result["outcome"]
    assert result["traced_peak_mib"] < most_mib, result
    assert result["rss_peak_mib"] - result["rss_before_mib"] < most_mib + 16, result
    assert result["seconds"] < 2.0, result
