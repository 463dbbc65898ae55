"""CA bundles: PEM or DER files of many CA certificates, read one by one, and the bundle of TPM
makers' CA certificates shipped with entra_keys.

``load_ca_bundle`` reads every certificate of a bundle (PEM blocks between comments, one DER
certificate, DER certificates one after the other, or a PKCS#7 "certs-only" bundle, .p7b, in
DER or PEM) with ``read_certificate``, non-strict DER included; a certificate that still cannot
be read is left out and reported (which one, where, why), never making the rest unusable.

``tpm_vendor_cas`` gives the shipped bundle (package data in ``cas/``): the TPM makers' EK
roots and intermediates, and the CAs that issue AK certificates (Microsoft's AIK root, Google's
cloud vTPM CAs). ``cas/manifest.json`` lists each certificate's file, subject, issuer, SHA-256
fingerprint, uses and source (repository, path, commit, licence); ``tpm_vendor_cas`` checks the
fingerprints when it loads. ``scripts/ca_bundle.py`` rebuilds the files and the manifest from
PEM bundles and checks them (see its docstring for how to update the bundle).
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..errors import AttestationCheckFailed, InvalidData
from ..tcg.nvcert import MAX_CERTIFICATE_SIZE, der_sequence_length, oid_text, read_tlv
from ..tcg.wire import readable_bytes
from .ekcert import ReadCertificate, read_certificate

__all__ = [
    "BUNDLE_USES",
    "MAX_BUNDLE_SIZE",
    "BundleEntry",
    "BundleProblem",
    "VendorCAs",
    "load_ca_bundle",
    "tpm_vendor_cas",
]

#: The largest bundle read, in bytes (the shipped one is about 400 KiB).
MAX_BUNDLE_SIZE = 16 * 1024 * 1024
#: What a bundled certificate is trusted for: a trust anchor or an intermediate, for EK
#: certificates or for AK certificates.
BUNDLE_USES = ("ek-root", "ek-intermediate", "ak-root", "ak-intermediate")

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_END = re.compile(rb"-----END ([A-Z0-9 ]+)-----")
_LABELS = (b"# Certificate:", b"# Subject:", b"subject=", b"# ")


@dataclass(frozen=True)
class BundleProblem:
    """A certificate of a bundle that could not be read: where it is and why."""

    #: The bundle's name as the caller gave it (a file name).
    source: str
    #: Its position in the bundle, from 1.
    number: int
    #: The line of its PEM block (0 for DER).
    line: int
    #: The label in front of it (a "# Certificate:" comment), if there is one.
    label: str | None
    reason: str

    def __str__(self) -> str:
        where = f"certificate {self.number}" + (f" (line {self.line})" if self.line else "")
        named = f" {self.label!r}" if self.label else ""
        return f"{self.source}: {where}{named}: {self.reason}"


def load_ca_bundle(
    data: bytes | bytearray | memoryview, source: str = "the bundle"
) -> tuple[tuple[ReadCertificate, ...], tuple[BundleProblem, ...]]:
    """The certificates of a PEM or DER bundle, each read (non-strict DER through a reading
    copy), and the problems: every certificate that cannot be read, named (``source``, its
    number, line and label) with the reason. Only a bundle that is not bytes, over
    ``MAX_BUNDLE_SIZE``, or holds no certificate at all is an InvalidData."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidData(f"{source} is bytes, not {type(data).__name__}")
    data = readable_bytes(data, source)
    if len(data) > MAX_BUNDLE_SIZE:
        raise InvalidData(f"{source} is {len(data)} bytes, over the limit of {MAX_BUNDLE_SIZE}")
    pieces = _pem_pieces(data) if b"-----BEGIN" in data else _pkcs7_pieces(data)
    if not pieces and b"-----BEGIN" not in data:
        pieces = _der_pieces(data, source)
    if not pieces:
        raise InvalidData(f"{source} holds no certificate")
    read: list[ReadCertificate] = []
    problems: list[BundleProblem] = []
    for number, (line, label, der, error) in enumerate(pieces, 1):
        if error is None:
            try:
                read.append(read_certificate(der, f"certificate {number}"))
                continue
            except AttestationCheckFailed as exc:
                error = str(exc)
        problems.append(BundleProblem(source, number, line, label, error))
    return tuple(read), tuple(problems)


_Piece = tuple[int, str | None, bytes, str | None]  # line, label, DER, why it is unreadable


def _pem_blocks(data: bytes) -> Iterator[tuple[int, int, bytes, bytes, bytes]]:
    """Each PEM block of the text in one pass: a BEGIN line, then the first END line after it
    (start, end, its kind, its body, the END's kind). A BEGIN with no END after it ends the
    search: no later BEGIN could have one either."""
    position = 0
    while (begin := _BEGIN.search(data, position)) is not None:
        end = _END.search(data, begin.end())
        if end is None:
            return
        yield (
            begin.start(),
            end.end(),
            begin.group(1),
            data[begin.end() : end.start()],
            end.group(1),
        )
        position = end.end()


def _pem_pieces(data: bytes) -> list[_Piece]:
    """Each PEM block of the text: its line, the label in the comments just before it, its DER
    (or why it has none). Blocks of other kinds (keys, CRLs) are not certificates: reported."""
    pieces: list[_Piece] = []
    last, lines_before = 0, 0  # lines are counted once, block by block
    for start, stop, kind, body, end in _pem_blocks(data):
        lines_before += data.count(b"\n", last, start)
        line = lines_before + 1
        label = _label(data[last:start])
        lines_before += data.count(b"\n", start, stop)
        last = stop
        if kind not in _PEM_KINDS or end != kind:
            pieces.append((line, label, b"", f"a PEM {kind.decode()} block, not a certificate"))
            continue
        try:
            der = binascii.a2b_base64(b"".join(body.split()), strict_mode=True)
        except binascii.Error as exc:
            pieces.append((line, label, b"", f"its base64 is not readable ({exc})"))
            continue
        if kind == b"PKCS7":
            pieces += [(line, label, *piece[2:]) for piece in _pkcs7_pieces(der)]
            continue
        if kind == b"TRUSTED CERTIFICATE":  # OpenSSL's: the certificate, then its trust settings
            try:
                der = der[: der_sequence_length(der)]
            except InvalidData as exc:
                pieces.append((line, label, b"", str(exc)))
                continue
        if len(der) > MAX_CERTIFICATE_SIZE:
            error = f"{len(der)} bytes, over the limit of {MAX_CERTIFICATE_SIZE}"
            pieces.append((line, label, b"", error))
            continue
        pieces.append((line, label, der, None))
    return pieces


#: The PEM blocks that hold certificates (RFC 7468 and the labels older tools write).
_PEM_KINDS = frozenset({b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE", b"PKCS7"})
_SIGNED_DATA = "1.2.840.113549.1.7.2"


def _pkcs7_pieces(data: bytes) -> list[_Piece]:
    """The certificates of a PKCS#7 (RFC 2315, CMS RFC 5652) SignedData "certs-only" bundle:
    ContentInfo {signedData, [0] SignedData {..., [0] IMPLICIT certificates, ...}}; empty when
    ``data`` is no such bundle. Each certificate keeps its bytes as they are in the bundle."""
    try:
        info = read_tlv(data, "a PKCS#7 bundle", max_size=MAX_BUNDLE_SIZE,
                        max_elements=MAX_BUNDLE_SIZE // 2)  # fmt: skip
        oid, explicit = info.children
        if oid.tag != 0x06 or oid_text(oid.content) != _SIGNED_DATA or explicit.tag != 0xA0:
            return []
        signed = explicit.children[0]
        found = next(c for c in signed.children if c.tag == 0xA0)  # [0] IMPLICIT certificates
    except (InvalidData, ValueError, IndexError, StopIteration):
        return []
    return [(0, None, certificate.raw, None) for certificate in found.children]


def _label(comments: bytes) -> str | None:
    """The certificate's name in the comment lines before its block (the first that names it)."""
    for prefix in _LABELS:
        for raw in comments.splitlines():
            text = raw.strip()
            if text.startswith(prefix) and text[len(prefix) :].strip(b" #"):
                return text[len(prefix) :].strip().decode("utf-8", "replace")
    return None


def _der_pieces(data: bytes, source: str) -> list[_Piece]:
    """The DER certificates one after the other; bytes after the last that are no certificate
    are reported as one piece."""
    pieces: list[_Piece] = []
    at = 0
    while at < len(data):
        try:
            length = der_sequence_length(data, at)
        except InvalidData as exc:
            pieces.append((0, None, b"", f"{len(data) - at} bytes at offset {at}: {exc}"))
            break
        if at + length > len(data):
            pieces.append((0, None, b"", f"truncated: {length} bytes at offset {at}"))
            break
        pieces.append((0, None, data[at : at + length], None))
        at += length
    return pieces


# --- the bundle shipped with entra_keys -----------------------------------------------------


@dataclass(frozen=True)
class BundleEntry:
    """A certificate of the shipped bundle as its manifest lists it."""

    file: str
    subject: str
    issuer: str
    sha256: str
    not_after: str
    uses: tuple[str, ...]
    #: {"repository", "path", "commit", "licence"} of where it came from.
    source: Mapping[str, str]


@dataclass(frozen=True)
class VendorCAs:
    """The shipped bundle: trust anchors and intermediates for EK and AK certificates."""

    ek_roots: tuple[ReadCertificate, ...]
    ek_intermediates: tuple[ReadCertificate, ...]
    ak_roots: tuple[ReadCertificate, ...]
    ak_intermediates: tuple[ReadCertificate, ...]
    entries: tuple[BundleEntry, ...]


@functools.cache
def tpm_vendor_cas() -> VendorCAs:
    """The TPM makers' CA certificates shipped with entra_keys, checked against the manifest's
    SHA-256 fingerprints (an InvalidData if the package data does not match its manifest)."""
    folder = resources.files("entra_keys.attestation").joinpath("cas")
    manifest = json.loads(folder.joinpath("manifest.json").read_text("utf-8"))
    by_use: dict[str, list[ReadCertificate]] = {use: [] for use in BUNDLE_USES}
    entries = []
    loaded: dict[str, dict[str, ReadCertificate]] = {}
    for item in manifest["certificates"]:
        entry = _entry(item)
        if entry.file not in loaded:
            certificates, problems = load_ca_bundle(
                folder.joinpath(entry.file).read_bytes(), entry.file
            )
            if problems:
                raise InvalidData(f"the shipped CA bundle: {problems[0]}")
            loaded[entry.file] = {hashlib.sha256(c.der).hexdigest(): c for c in certificates}
        certificate = loaded[entry.file].get(entry.sha256)
        if certificate is None:
            raise InvalidData(f"the shipped CA bundle has no {entry.subject!r} ({entry.sha256})")
        for use in entry.uses:
            by_use[use].append(certificate)
        entries.append(entry)
    return VendorCAs(
        ek_roots=tuple(by_use["ek-root"]),
        ek_intermediates=tuple(by_use["ek-intermediate"]),
        ak_roots=tuple(by_use["ak-root"]),
        ak_intermediates=tuple(by_use["ak-intermediate"]),
        entries=tuple(entries),
    )


def _entry(item: Any) -> BundleEntry:
    uses = tuple(item["uses"])
    if not uses or not set(uses) <= set(BUNDLE_USES):
        raise InvalidData(f"the shipped CA bundle's manifest has uses {uses!r}")
    return BundleEntry(
        file=str(item["file"]),
        subject=str(item["subject"]),
        issuer=str(item["issuer"]),
        sha256=str(item["sha256"]).lower(),
        not_after=str(item["not_after"]),
        uses=uses,
        source={str(k): str(v) for k, v in item["source"].items()},
    )
