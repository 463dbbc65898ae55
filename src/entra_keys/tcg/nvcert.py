"""Certificates as TPMs and TPM makers store them, made into certificates a verifier can read.

Real chips do not always store clean DER (go-attestation ``ParseEKCertificate``, keylime
``cert_utils``, tpm2-tools issue 3474): ST33 chips pad the index with 0xFF (or 0x00) to its
size, some put the TCG PC Client header ``10 01 00 <len16>`` (TCG_PCCLIENT_STORED_CERT, at times
followed by the full-certificate tag ``10 02``) in front. Here the DER length in the outer
SEQUENCE's header decides where a certificate ends; header and padding are removed and said so
in ``repairs``.

Nor are their makers' certificates always DER (X.690): Nuvoton's roots and EK certificates put
the members of a SET OF out of order, Intel's OnDie root gives its ECDSA signature algorithm a
NULL parameter (RFC 5758 §3.2 says none), and cryptography refuses both. ``strict_der`` makes a
reading copy: ``read_tlv`` reads the BER tree with limits, ``der_encode`` writes it again as DER
(SET OF members sorted by their encodings, X.690 §11.6; definite, minimal lengths; primitive
strings; canonical BOOLEAN and INTEGER) keeping every value opaque, so that no schema's idea
of which string type a field should be is imposed (Nuvoton writes the TPM's names as
PrintableString). What DER alone cannot fix is fixed only where nothing a verifier checks is
lost, each said in the repairs: a DEFAULT FALSE written out (an Extension's critical, a
basicConstraints' cA) is left out, as DER leaves it; an ECDSA algorithm's NULL parameter is
left out; a non-critical extension cryptography cannot read and no check reads (key
identifiers, CRL and CA locations) is left out; policy qualifiers cryptography cannot read
(informational text, RFC 5280 §4.2.1.4) are left out of certificatePolicies, its policy OIDs
kept. Anything else is an InvalidData.

A certificate stays the bytes its CA signed: ``verify_signed_by`` checks its issuer's signature
over the tbsCertificate as stored, never over the reading copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import InvalidData
from .wire import readable_bytes

if TYPE_CHECKING:
    from cryptography import x509

    from .records import EndorsementKey

__all__ = [
    "ASN1_ERRORS",
    "MAX_CERTIFICATE_SIZE",
    "MAX_DER_DEPTH",
    "MAX_DER_ELEMENTS",
    "TLV",
    "StoredCertificate",
    "certificate_lines",
    "der_encode",
    "der_sequence_length",
    "nv_certificates",
    "oid_text",
    "read_tlv",
    "strict_der",
    "verify_signed_by",
]

_TCG_STORED_CERT = b"\x10\x01\x00"  # TCG_PCCLIENT_STORED_CERT tag 0x1001, certType 0 (full)
_TCG_FULL_CERT = b"\x10\x02"  # TCG_PCCLIENT_FULL_CERT tag
#: What asn1crypto raises on malformed input (it parses lazily, so any field access may raise).
ASN1_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError)

#: The largest certificate (or DER document) read, in bytes: real EK, AK and CA certificates
#: are under 4 KiB, so this leaves room and bounds the work.
MAX_CERTIFICATE_SIZE = 64 * 1024
#: The deepest nesting of elements read: a certificate nests about ten deep.
MAX_DER_DEPTH = 32
#: The most elements read in one document.
MAX_DER_ELEMENTS = 8192


@dataclass(frozen=True)
class StoredCertificate:
    """A certificate read from NV: the DER as its CA signed it, and what was removed around it."""

    der: bytes
    repairs: tuple[str, ...]


def _length_at(data: bytes, at: int, end: int, what: str) -> tuple[int | None, int]:
    """The length in the header at ``at`` (None: the indefinite form) and where it ends."""
    if at >= end:
        raise InvalidData(f"{what}: truncated: no length at offset {at}")
    first = data[at]
    if first < 0x80:
        return first, at + 1
    octets = first & 0x7F
    if octets == 0:
        return None, at + 1
    if octets > 4 or at + 1 + octets > end:
        raise InvalidData(f"{what}: the length at offset {at} is not readable")
    return int.from_bytes(data[at + 1 : at + 1 + octets], "big"), at + 1 + octets


def der_sequence_length(data: bytes, at: int = 0) -> int:
    """The length of the DER SEQUENCE starting at ``at`` (header included), from its header
    (short form, or long form of 1 to 4 octets); InvalidData when there is none."""
    if len(data) < at + 2 or data[at] != 0x30:
        raise InvalidData("no DER SEQUENCE where the certificate should begin")
    length, content = _length_at(data, at + 1, len(data), "the certificate's DER length")
    if length is None:
        raise InvalidData("the certificate's DER length is not readable (indefinite)")
    return content - at + length


def nv_certificates(data: bytes, *, many: bool = False) -> list[StoredCertificate]:
    """The certificate in an EK certificate index's contents (``many``: the certificates, one
    after the other, of a chain index), with the TCG header and the padding removed; an
    InvalidData saying why when the contents are no certificate."""
    data = readable_bytes(data, "an EK certificate index")
    repairs: list[str] = []
    start, end = 0, len(data)
    if data.startswith(_TCG_STORED_CERT) and len(data) >= 5:
        size = int.from_bytes(data[3:5], "big")
        start, end = 5, 5 + size
        if end > len(data):
            raise InvalidData(f"the TCG header says {size} bytes, the index holds {len(data) - 5}")
        if data[5:7] == _TCG_FULL_CERT:
            start += 2
        repairs.append("TCG stored-certificate header removed")
    found: list[StoredCertificate] = []
    at = start
    while True:
        length = der_sequence_length(data, at)
        if at + length > end:
            raise InvalidData(
                f"the certificate's DER length ({length} bytes) runs past the data "
                f"({end - at} bytes): truncated"
            )
        found.append(StoredCertificate(data[at : at + length], ()))
        at += length
        rest = data[at:end]
        if not rest or not many or rest[0] != 0x30:
            break
    if rest:
        if rest.strip(rest[:1]) or rest[0] not in (0x00, 0xFF):
            raise InvalidData(f"{len(rest)} bytes after the certificate are not padding")
        repairs.append(f"{len(rest)} bytes of 0x{rest[0]:02X} padding removed")
    if end < len(data):
        repairs.append(f"{len(data) - end} bytes after the TCG header's length ignored")
    first = StoredCertificate(found[0].der, tuple(repairs))
    return [first, *found[1:]]


# --- BER in, DER out: a generic TLV reader and encoder ---------------------------------------


@dataclass(frozen=True, slots=True)
class TLV:
    """One BER element: its identifier octets, its value (primitive) or its elements
    (constructed), and the bytes it was read from (header and all)."""

    identifier: bytes
    content: bytes = b""
    children: tuple[TLV, ...] = ()
    raw: bytes = b""

    @property
    def constructed(self) -> bool:
        """True for a constructed element (a SEQUENCE, a SET, an explicit tag)."""
        return bool(self.identifier[0] & 0x20)

    @property
    def tag(self) -> int:
        """The first identifier octet (class, constructed bit and a low tag number)."""
        return self.identifier[0]


class _Budget:
    """How many more elements a read may make, of the most it may (``MAX_DER_ELEMENTS``)."""

    __slots__ = ("left", "most")

    def __init__(self, most: int) -> None:
        self.left = self.most = most


def read_tlv(
    data: bytes,
    what: str = "DER",
    *,
    max_size: int = MAX_CERTIFICATE_SIZE,
    max_depth: int = MAX_DER_DEPTH,
    max_elements: int = MAX_DER_ELEMENTS,
) -> TLV:
    """The one BER element that is exactly ``data``: definite lengths in any form, indefinite
    lengths of constructed elements, any tag; every value kept as read. InvalidData (naming
    ``what``) for trailing bytes, truncation, or a document over the limits."""
    data = readable_bytes(data, what)
    if len(data) > max_size:
        raise InvalidData(f"{what} is {len(data)} bytes, over the limit of {max_size}")
    element, end = _read(data, 0, len(data), 0, max_depth, _Budget(max_elements), what)
    if end != len(data):
        raise InvalidData(f"{what}: {len(data) - end} trailing bytes after the element")
    return element


def _read(
    data: bytes, at: int, end: int, depth: int, max_depth: int, budget: _Budget, what: str
) -> tuple[TLV, int]:
    if depth > max_depth:
        raise InvalidData(f"{what} nests deeper than {max_depth}")
    budget.left -= 1
    if budget.left < 0:
        raise InvalidData(f"{what} has more than {budget.most} elements")
    start = at
    if at >= end:
        raise InvalidData(f"{what}: truncated: no element at offset {at}")
    pos = at + 1
    if data[at] & 0x1F == 0x1F:  # a high tag number: base-128 octets, the last below 0x80
        while True:
            if pos >= end or pos - at > 5:
                raise InvalidData(f"{what}: the tag at offset {at} is not readable")
            pos += 1
            if data[pos - 1] < 0x80:
                break
    identifier = data[at:pos]
    constructed = bool(identifier[0] & 0x20)
    length, pos = _length_at(data, pos, end, what)
    if length is None:
        if not constructed:
            raise InvalidData(f"{what}: a primitive element at offset {at} has no length")
        children: list[TLV] = []
        while True:
            if data[pos : pos + 2] == b"\x00\x00":
                pos += 2
                break
            child, pos = _read(data, pos, end, depth + 1, max_depth, budget, what)
            children.append(child)
        return TLV(identifier, b"", tuple(children), data[start:pos]), pos
    stop = pos + length
    if stop > end:
        raise InvalidData(
            f"{what}: truncated: the element at offset {at} needs {length} bytes, {end - pos} left"
        )
    if not constructed:
        return TLV(identifier, data[pos:stop], (), data[start:stop]), stop
    children = []
    while pos < stop:
        child, pos = _read(data, pos, stop, depth + 1, max_depth, budget, what)
        children.append(child)
    return TLV(identifier, b"", tuple(children), data[start:stop]), stop


def _header(identifier: bytes, length: int) -> bytes:
    if length < 0x80:
        return identifier + bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return identifier + bytes([0x80 | len(raw)]) + raw


#: Universal string types (and BIT STRING, OCTET STRING), which BER lets be constructed.
_STRING_TAGS = frozenset({3, 4, 12, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 30})


def _sort_key(encoding: bytes, size: int) -> bytes:
    return encoding.ljust(size, b"\x00")


def der_encode(element: TLV, fixes: set[str] | None = None) -> bytes:
    """The element as DER: definite minimal lengths, a SET's members in the order of their
    encodings (X.690 §11.6), constructed strings made primitive, BOOLEAN TRUE as 0xFF and
    INTEGERs minimal. Identifiers and values are kept as they are. ``fixes`` collects what
    differed from DER."""
    fixes = set() if fixes is None else fixes
    if element.raw and not _header_was_der(element):
        fixes.add("lengths in minimal definite form")
    first = element.tag
    if first & 0xC0 == 0 and first & 0x20 and first & 0x1F in _STRING_TAGS:
        content = _string_content(element)  # a constructed universal string
        fixes.add("constructed strings made primitive")
        return _header(bytes([first & ~0x20]), len(content)) + content
    if not element.constructed:
        content = element.content
        if first == 0x01 and len(content) == 1 and content not in (b"\x00", b"\xff"):
            content = b"\xff"
            fixes.add("BOOLEAN TRUE written 0xFF")
        elif first in (0x02, 0x0A) and len(content) > 1:
            trimmed = _minimal_integer(content)
            if trimmed != content:
                content = trimmed
                fixes.add("INTEGERs in minimal form")
        return _header(element.identifier, len(content)) + content
    parts = [der_encode(child, fixes) for child in element.children]
    if first == 0x31 and len(parts) > 1:  # a universal SET (OF)
        size = max(len(p) for p in parts)
        ordered = sorted(parts, key=lambda p: _sort_key(p, size))
        if ordered != parts:
            fixes.add("SET OF members put in DER order")
            parts = ordered
    body = b"".join(parts)
    return _header(element.identifier, len(body)) + body


def _header_was_der(element: TLV) -> bool:
    """Whether the element as read had a definite, minimal length."""
    if element.constructed:
        body = sum(len(child.raw) for child in element.children)
    else:
        body = len(element.content)
    expected = _header(element.identifier, body)
    return len(element.raw) == len(expected) + body and element.raw.startswith(expected)


def _minimal_integer(content: bytes) -> bytes:
    """An INTEGER's two's-complement octets without redundant leading 0x00 or 0xFF."""
    while len(content) > 1 and (
        (content[0] == 0x00 and content[1] < 0x80) or (content[0] == 0xFF and content[1] >= 0x80)
    ):
        content = content[1:]
    return content


def _string_content(element: TLV) -> bytes:
    """The value of a constructed string: its segments' values joined (a BIT STRING's unused
    bits allowed in its last segment only)."""
    segments: list[bytes] = []

    def walk(node: TLV) -> None:
        for child in node.children:
            if child.constructed:
                walk(child)
            else:
                segments.append(child.content)

    walk(element)
    if element.tag & 0x1F != 3:
        return b"".join(segments)
    out = bytearray()
    for n, segment in enumerate(segments):
        if not segment or (segment[0] and n != len(segments) - 1) or segment[0] > 7:
            raise InvalidData("a constructed BIT STRING's segments are not readable")
        out += segment[1:]
    return bytes([segments[-1][0] if segments else 0]) + bytes(out)


def oid_text(content: bytes) -> str:
    """The dotted text of an OBJECT IDENTIFIER's content octets (InvalidData if malformed)."""
    if not content or content[-1] & 0x80:
        raise InvalidData("an OBJECT IDENTIFIER is empty or truncated")
    arcs: list[int] = []
    value = 0
    for n, octet in enumerate(content):
        if value == 0 and octet == 0x80 and (n == 0 or content[n - 1] < 0x80):
            raise InvalidData("an OBJECT IDENTIFIER's arc has a leading 0x80")
        value = value << 7 | octet & 0x7F
        if not octet & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in (*head, *arcs[1:]))


# --- certificates: the reading copy -----------------------------------------------------------

#: Extensions no check of entra_keys reads: a reading copy may leave out a non-critical one
#: that cryptography cannot read (authority and subject key identifiers, CA and CRL locations).
_UNREAD_EXTENSIONS = {
    "2.5.29.35": "authorityKeyIdentifier",
    "2.5.29.14": "subjectKeyIdentifier",
    "1.3.6.1.5.5.7.1.1": "authorityInfoAccess",
    "1.3.6.1.5.5.7.1.11": "subjectInfoAccess",
    "2.5.29.31": "cRLDistributionPoints",
    "2.5.29.46": "freshestCRL",
    "2.5.29.18": "issuerAltName",
    "2.5.29.16": "privateKeyUsagePeriod",
}
_CERTIFICATE_POLICIES = "2.5.29.32"
_BASIC_CONSTRAINTS = "2.5.29.19"
_ECDSA_SIGNATURES = frozenset(
    {"1.2.840.10045.4.1", "1.2.840.10045.4.3.1", "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3",
     "1.2.840.10045.4.3.4"}
)  # fmt: skip
_NULL = TLV(b"\x05", b"", (), b"\x05\x00")


def _pyca_refusal(der: bytes) -> Exception | None:
    """Why cryptography cannot read the certificate in full (what a verifier reads: names,
    extensions, the key), or None when it can."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        cert = x509.load_der_x509_certificate(der)
        cert.subject  # noqa: B018 - cryptography parses lazily: read what a verifier reads
        cert.issuer  # noqa: B018
        list(cert.extensions)
        cert.public_key()
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ) as exc:
        return exc
    return None


def strict_der(der: bytes) -> tuple[bytes, tuple[str, ...]]:
    """The certificate as cryptography reads it: ``der`` itself when cryptography reads it in
    full, else a reading copy (see the module) and the repairs made, the first saying it was
    re-encoded and why; InvalidData when neither is readable, or the key's algorithm is not one
    cryptography offers. A reading copy's signature holds only over the original TBS."""
    from cryptography.exceptions import UnsupportedAlgorithm

    der = readable_bytes(der, "a certificate")
    refused = _pyca_refusal(der)
    if refused is None:
        return der, ()
    if isinstance(refused, UnsupportedAlgorithm):
        raise InvalidData(f"the certificate's key is of an algorithm not offered ({refused})")
    tree = read_tlv(der, "the certificate")
    fixes: set[str] = set()
    tree = _certificate_fixes(tree, fixes)
    reading = der_encode(tree, fixes)
    problem = _pyca_refusal(reading)
    if problem is not None and not isinstance(problem, UnsupportedAlgorithm):
        tree, dropped = _without_unreadable_extensions(tree)
        fixes.update(dropped)
        reading = der_encode(tree)
        problem = _pyca_refusal(reading)
    if isinstance(problem, UnsupportedAlgorithm):
        raise InvalidData(f"the certificate's key is of an algorithm not offered ({problem})")
    if problem is not None:
        raise InvalidData(f"not an X.509 certificate ({refused}; re-encoded: {problem})")
    return reading, (f"re-encoded as strict DER ({refused})", *sorted(fixes))


def _rebuilt(node: TLV, children: Iterable[TLV]) -> TLV:
    """A constructed element with other elements in it (its bytes as read forgotten)."""
    return TLV(node.identifier, b"", tuple(children))


def _certificate_parts(tree: TLV) -> tuple[TLV, int, int | None]:
    """The tbsCertificate, the index in it of its signature algorithm and of its extensions
    ([3]; None without); InvalidData when the tree is no certificate's shape."""
    if tree.tag != 0x30 or len(tree.children) != 3 or tree.children[0].tag != 0x30:
        raise InvalidData("not an X.509 certificate: no SEQUENCE of TBS, algorithm, signature")
    tbs = tree.children[0]
    first = 1 if tbs.children and tbs.children[0].tag == 0xA0 else 0  # [0] version
    if len(tbs.children) < first + 6:
        raise InvalidData("not an X.509 certificate: the TBS has too few fields")
    extensions = next((n for n, child in enumerate(tbs.children) if child.tag == 0xA3), None)
    return tbs, first + 1, extensions


def _certificate_fixes(tree: TLV, fixes: set[str]) -> TLV:
    """The certificate with what DER cannot fix fixed: an ECDSA algorithm's NULL parameter left
    out (RFC 5758 §3.2), and each extension's value re-encoded as DER where it is BER."""
    tbs, algorithm_at, extensions_at = _certificate_parts(tree)
    fields = list(tbs.children)
    fields[algorithm_at] = _without_null(fields[algorithm_at], fixes)
    if extensions_at is not None:
        fields[extensions_at] = _with_der_values(fields[extensions_at], fixes)
    outer = list(tree.children)
    outer[0] = _rebuilt(tbs, tuple(fields))
    outer[1] = _without_null(outer[1], fixes)
    return _rebuilt(tree, tuple(outer))


def _without_null(algorithm: TLV, fixes: set[str]) -> TLV:
    """An AlgorithmIdentifier without the NULL parameter an ECDSA algorithm must not have."""
    kids = algorithm.children
    if (
        algorithm.tag == 0x30 and len(kids) == 2 and kids[0].tag == 0x06
        and kids[1].tag == 0x05 and not kids[1].content
        and oid_text(kids[0].content) in _ECDSA_SIGNATURES
    ):  # fmt: skip
        fixes.add("the ECDSA signature algorithm's NULL parameter left out (RFC 5758)")
        return _rebuilt(algorithm, kids[:1])
    return algorithm


def _extension_list(explicit: TLV) -> list[TLV]:
    if len(explicit.children) != 1 or explicit.children[0].tag != 0x30:
        raise InvalidData("not an X.509 certificate: its extensions are not a SEQUENCE")
    return list(explicit.children[0].children)


def _with_extensions(explicit: TLV, extensions: Iterable[TLV]) -> TLV:
    inner = _rebuilt(explicit.children[0], tuple(extensions))
    return _rebuilt(explicit, (inner,))


def _extension_fields(extension: TLV) -> tuple[str, bool, TLV]:
    """An Extension's OID, criticality and extnValue (OCTET STRING)."""
    kids = extension.children
    if extension.tag != 0x30 or len(kids) not in (2, 3) or kids[0].tag != 0x06:
        raise InvalidData("not an X.509 certificate: an extension is malformed")
    critical = len(kids) == 3 and kids[1].tag == 0x01 and kids[1].content not in (b"", b"\x00")
    value = kids[-1]
    if value.tag not in (0x04, 0x24):
        raise InvalidData("not an X.509 certificate: an extension's value is no OCTET STRING")
    return oid_text(kids[0].content), critical, value


def _with_der_values(explicit: TLV, fixes: set[str]) -> TLV:
    """The extensions, each value that is one BER element written as DER (its OCTET STRING
    holds the extension's own DER, which cryptography reads), and the DEFAULT FALSE that DER
    leaves out (X.690 §11.5) left out: an Extension's critical, a basicConstraints' cA."""
    out = []
    for extension in _extension_list(explicit):
        oid, _, value = _extension_fields(extension)
        if len(extension.children) == 3 and extension.children[1].raw == b"\x01\x01\x00":
            fixes.add("DEFAULT FALSE values left out (X.690 11.5)")
            extension = _rebuilt(extension, (extension.children[0], value))
        if value.tag == 0x04:
            try:
                inner = read_tlv(value.content, f"extension {oid}")
            except InvalidData:
                inner = None  # opaque bytes: kept as they are
            if inner is not None:
                first = inner.children[0] if inner.children else None
                if oid == _BASIC_CONSTRAINTS and first is not None and first.raw == b"\x01\x01\x00":
                    fixes.add("DEFAULT FALSE values left out (X.690 11.5)")
                    inner = _rebuilt(inner, inner.children[1:])
                encoded = der_encode(inner, fixes)
                if encoded != value.content:
                    value = TLV(b"\x04", encoded, (), b"")
                    extension = _rebuilt(extension, (*extension.children[:-1], value))
        out.append(extension)
    return _with_extensions(explicit, out)


def _without_unreadable_extensions(tree: TLV) -> tuple[TLV, set[str]]:
    """The certificate without the extensions cryptography cannot read that no check reads
    (non-critical ones of ``_UNREAD_EXTENSIONS``) and with certificatePolicies' unreadable
    qualifiers left out; the repairs made. Each extension is tried on its own."""
    tbs, _, extensions_at = _certificate_parts(tree)
    if extensions_at is None:
        return tree, set()
    explicit = tbs.children[extensions_at]
    dropped: set[str] = set()

    def readable(extension: TLV) -> bool:
        fields = list(tbs.children)
        fields[extensions_at] = _with_extensions(explicit, [extension])
        probe = _rebuilt(tree, (_rebuilt(tbs, fields), *tree.children[1:]))
        return _pyca_refusal(der_encode(probe)) is None

    kept = []
    for extension in _extension_list(explicit):
        oid, critical, _ = _extension_fields(extension)
        if readable(extension):
            kept.append(extension)
        elif oid in _UNREAD_EXTENSIONS and not critical:
            dropped.add(f"unreadable {_UNREAD_EXTENSIONS[oid]} ({oid}) left out")
        elif oid == _CERTIFICATE_POLICIES:
            bare = _policies_without_qualifiers(extension)
            kept.append(bare)
            dropped.add("certificatePolicies' unreadable qualifiers left out")
        else:
            kept.append(extension)  # cryptography refuses it again: the certificate is refused
    fields = list(tbs.children)
    fields[extensions_at] = _with_extensions(explicit, kept)
    outer = (_rebuilt(tbs, tuple(fields)), *tree.children[1:])
    return _rebuilt(tree, outer), dropped


def _policies_without_qualifiers(extension: TLV) -> TLV:
    """certificatePolicies with each PolicyInformation cut to its policyIdentifier."""
    _, _, value = _extension_fields(extension)
    policies = read_tlv(value.content, "certificatePolicies")
    bare = []
    for info in policies.children:
        if info.tag != 0x30 or not info.children or info.children[0].tag != 0x06:
            raise InvalidData("not an X.509 certificate: certificatePolicies is malformed")
        bare.append(_rebuilt(info, info.children[:1]))
    encoded = der_encode(_rebuilt(policies, tuple(bare)))
    return _rebuilt(extension, (*extension.children[:-1], TLV(b"\x04", encoded)))


# --- signatures over the bytes as signed ----------------------------------------------------

_RSA_PKCS1 = {
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
}
_ECDSA = {
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_HASH_OIDS = {
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}


def verify_signed_by(der: bytes, issuer: x509.Certificate) -> None:
    """Checks the certificate's signature by ``issuer`` over its tbsCertificate as stored (not
    as re-encoded); cryptography's InvalidSignature when it does not hold, ValueError when the
    algorithm is not RSA PKCS#1 v1.5 / PSS or ECDSA with SHA-256/384/512 (InvalidData, also a
    refusal, when the certificate is not readable)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    tree = read_tlv(der, "the certificate")
    tbs_tlv, _, _ = _certificate_parts(tree)
    algorithm, value = tree.children[1], tree.children[2]
    if algorithm.tag != 0x30 or not algorithm.children or algorithm.children[0].tag != 0x06:
        raise ValueError("the certificate's signature algorithm is not readable")
    if value.tag != 0x03 or not value.content or value.content[0] != 0:
        raise ValueError("the certificate's signature is not a whole-octet BIT STRING")
    oid = oid_text(algorithm.children[0].content)
    signature = value.content[1:]
    digests: dict[str, Any] = {"sha256": hashes.SHA256, "sha384": hashes.SHA384}
    digests["sha512"] = hashes.SHA512
    key = issuer.public_key()
    tbs = tbs_tlv.raw  # the bytes as signed, not re-encoded
    if isinstance(key, rsa.RSAPublicKey) and oid in _RSA_PKCS1:
        key.verify(signature, tbs, padding.PKCS1v15(), digests[_RSA_PKCS1[oid]]())
    elif isinstance(key, rsa.RSAPublicKey) and oid == _RSA_PSS:
        name, salt = _pss_parameters(algorithm.children[1:])
        digest = digests[name]()
        key.verify(signature, tbs, padding.PSS(padding.MGF1(digest), salt), digest)
    elif isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA:
        key.verify(signature, tbs, ec.ECDSA(digests[_ECDSA[oid]]()))
    else:
        raise ValueError(f"a signature of algorithm {oid} by this CA's {type(key).__name__}")


def _pss_parameters(parameters: tuple[TLV, ...]) -> tuple[str, int]:
    """The hash (SHA-256/384/512, also for MGF1) and salt length of RSASSA-PSS-params."""
    if len(parameters) != 1 or parameters[0].tag != 0x30:
        raise ValueError("RSASSA-PSS without parameters (SHA-1) is not offered")
    name, salt = None, 20
    for field in parameters[0].children:
        if field.tag == 0xA0 and field.children and field.children[0].children:
            name = _HASH_OIDS.get(oid_text(field.children[0].children[0].content))
        elif field.tag == 0xA2 and field.children and field.children[0].tag == 0x02:
            salt = int.from_bytes(field.children[0].content, "big")
    if name is None:
        raise ValueError("RSASSA-PSS with a hash other than SHA-256/384/512")
    return name, salt


def certificate_lines(ek: EndorsementKey) -> list[str]:
    """What an EK's NV certificates are, one line each: where it was read, what was repaired,
    and every index that could not be read with the reason (``attest ek``, the demo)."""
    lines: list[str] = []
    if ek.certificate_error is not None:
        lines.append(f"certificate unreadable: {ek.certificate_error}")
    elif ek.certificate is None:
        lines.append("no certificate in NV")
    else:
        done = "; ".join(ek.certificate_repairs) or "clean DER"
        lines.append(f"certificate at NV 0x{ek.nv_index or 0:08x} ({done})")
    lines += [f"chain certificate {n} from NV ({len(c)} bytes)" for n, c in enumerate(ek.chain, 1)]
    lines += [f"chain index unreadable: {reason}" for reason in ek.chain_errors]
    return lines
