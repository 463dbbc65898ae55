"""The UEFI and Windows structures that event-log events carry, decoded for reading.

UEFI_VARIABLE_DATA, EFI_SIGNATURE_LIST, UEFI_IMAGE_LOAD_EVENT, EFI_LOAD_OPTION, device paths,
UEFI_GPT_DATA and UEFI_PLATFORM_FIRMWARE_BLOB(2) (PC Client Platform Firmware Profile, PFP 1.05
r23 §10.2, and the UEFI specification 2.10, cited per structure), and Windows' SIPA records (the
TCG_PCClientTaggedEvent contents of EV_EVENT_TAG in PCRs 12-14; names as in Windows' wbcl.h).

Every decoder here takes bytes an attacker wrote and returns ``None`` for what it does not
understand: decoding is for reading a log, never a reason to refuse one. Sizes are checked
against the bytes at hand before anything is sliced; recursion and node counts are bounded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

__all__ = [
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "SHIM_LOCK",
    "SIGNATURE_TYPES",
    "SIPA_AGGREGATION",
    "SIPA_NAMES",
    "EfiVariable",
    "FirmwareBlob",
    "GptData",
    "GptPartition",
    "ImageLoad",
    "LoadOption",
    "SignatureEntry",
    "SignatureList",
    "SipaRecord",
    "decode_firmware_blob",
    "decode_firmware_blob2",
    "decode_gpt",
    "decode_image_load",
    "decode_variable",
    "device_path_text",
    "guid_text",
    "is_der_sequence",
    "parse_signature_lists",
    "parse_sipa",
    "sipa_name",
    "text_of",
]

_T = TypeVar("_T")

#: The variable GUIDs a verifier meets: EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, Boot####),
#: EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx, dbt, dbr; UEFI 2.10 §32.6.1), shim's SHIM_LOCK_GUID
#: (MokList, MokListX, MokListTrusted, SbatLevel, and the "Shim" authority).
EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"

#: EFI_SIGNATURE_LIST.SignatureType GUIDs (UEFI 2.10 §32.4.1) -> (name, hash size or None).
#: A hash type's SignatureData is the hash; an X509_SHA* type's is the hash of a certificate's
#: TBSCertificate followed by an EFI_TIME; EFI_CERT_X509_GUID's is a DER certificate.
SIGNATURE_TYPES: dict[str, tuple[str, int | None]] = {
    "c1c41626-504c-4092-aca9-41f936934328": ("EFI_CERT_SHA256_GUID", 32),
    "826ca512-cf10-4ac9-b187-be01496631bd": ("EFI_CERT_SHA1_GUID", 20),
    "0b6e5233-a65c-44c9-9407-d9ab83bfc8bd": ("EFI_CERT_SHA224_GUID", 28),
    "ff3e5307-9fd0-48c9-85f1-8ad56c701e01": ("EFI_CERT_SHA384_GUID", 48),
    "093e0fae-a6c4-4f50-9f1b-d41e2b89c19a": ("EFI_CERT_SHA512_GUID", 64),
    "3c5766e8-269c-4e34-aa14-ed776e85b3b6": ("EFI_CERT_RSA2048_GUID", None),
    "e2b36190-879b-4a3d-ad8d-f2e7bba32784": ("EFI_CERT_RSA2048_SHA256_GUID", None),
    "67f8444f-8743-48f1-a328-1eaab8736080": ("EFI_CERT_RSA2048_SHA1_GUID", None),
    "a5c059a1-94e4-4aa7-87b5-ab155c2bf072": ("EFI_CERT_X509_GUID", None),
    "3bd2a492-96c0-4079-b420-fcf98ef103ed": ("EFI_CERT_X509_SHA256_GUID", 32),
    "7076876e-80c2-4ee6-aad2-28b349a6865b": ("EFI_CERT_X509_SHA384_GUID", 48),
    "446dbf63-2502-4cda-bcfa-2465d2b0fe9d": ("EFI_CERT_X509_SHA512_GUID", 64),
    "4aafd29d-68df-49ee-8aa9-347d375665a7": ("EFI_CERT_TYPE_PKCS7_GUID", None),
}
_X509_TYPE = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"

#: The most device-path nodes and SIPA nesting levels a decoder follows.
_MAX_NODES = 256
_MAX_SIPA_DEPTH = 8


def guid_text(raw: bytes) -> str:
    """An EFI_GUID (UEFI 2.10 Appendix A: Data1-3 little-endian, Data4 as bytes) as text."""
    return str(uuid.UUID(bytes_le=bytes(raw)))


def _safe(decoder: Callable[[], _T]) -> _T | None:
    """The decoder's result, or None where the bytes are not what it reads (never an error)."""
    try:
        return decoder()
    except (struct.error, ValueError, IndexError, OverflowError):
        return None


def text_of(data: bytes) -> tuple[str, str] | None:
    """Printable text and its encoding ("ascii", "utf-8" or "utf-16le") of event data that is a
    string, trailing NULs dropped; None for anything else. UTF-16 is taken when every other byte
    is zero (systemd, Windows, UEFI CHAR16; an odd trailing NUL byte, as old systemd-boot logs,
    is dropped first); otherwise ASCII or UTF-8 (GRUB, EV_ACTION)."""
    wide = data[:-1] if len(data) % 2 and data[-1:] == b"\0" else data
    if wide and len(wide) % 2 == 0 and not any(wide[1::2]):
        text = wide[0::2].decode("latin-1").rstrip("\0")
        encoding = "utf-16le"
    else:
        try:
            text = data.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError:
            return None
        encoding = "ascii" if text.isascii() else "utf-8"
    if not text or not _printable(text):
        return None
    return text, encoding


_WHITESPACE = str.maketrans("\t\r\n", "   ")


def _printable(text: str) -> bool:
    return text.isprintable() or text.translate(_WHITESPACE).isprintable()


def _utf16z(data: bytes) -> str:
    """A UTF-16LE string up to its NUL (UEFI CHAR16 strings); ValueError if undecodable."""
    for end in range(0, len(data) - 1, 2):
        if data[end] == 0 and data[end + 1] == 0:
            return data[:end].decode("utf-16-le")
    return data.decode("utf-16-le")


def is_der_sequence(data: bytes) -> bool:
    """Whether ``data`` is exactly one DER SEQUENCE by its outer length (a certificate's shape);
    a cheap test before a certificate is parsed, not a DER check."""
    if len(data) < 2 or data[0] != 0x30:
        return False
    first = data[1]
    if first < 0x80:
        return 2 + first == len(data)
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return False
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big") == len(data)


# --- EFI_SIGNATURE_LIST ----------------------------------------------------------------------


@dataclass(frozen=True)
class SignatureEntry:
    """One EFI_SIGNATURE_DATA (UEFI 2.10 §32.4.1): who added it (``owner``) and what it holds:
    a DER certificate (``certificate``), a hash (``hash_hex``) or other data of its type."""

    signature_type: str
    type_name: str
    owner: str | None
    data: bytes

    @property
    def certificate(self) -> bytes | None:
        """The DER certificate, for EFI_CERT_X509_GUID entries (and authorities that hold one)."""
        if self.signature_type == _X509_TYPE or (
            self.signature_type == "" and is_der_sequence(self.data)
        ):
            return self.data
        return None

    @property
    def hash_hex(self) -> str | None:
        """The hash in hex for the hash types (of a certificate's TBS for EFI_CERT_X509_SHA*)."""
        size = SIGNATURE_TYPES.get(self.signature_type, ("", None))[1]
        if size is None or len(self.data) < size:
            return None
        return self.data[:size].hex()

    @property
    def image_hash_hex(self) -> str | None:
        """The hash in hex where the entry is one firmware matches against an image's digest
        (UEFI 2.10 §32.5.3.3): an EFI_CERT_SHA* entry exactly that hash's size (EDK2 skips a
        list of another SignatureSize); None for a certificate's TBS hash (EFI_CERT_X509_SHA*)."""
        name, size = SIGNATURE_TYPES.get(self.signature_type, ("", None))
        if size is None or name.startswith("EFI_CERT_X509_") or len(self.data) != size:
            return None
        return self.data.hex()

    @cached_property
    def subject(self) -> str | None:
        """The certificate's subject as RFC 4514 text, where pyca parses the certificate."""
        parsed = self._parsed
        return None if parsed is None else parsed[0]

    @cached_property
    def spki_sha256(self) -> str | None:
        """The SHA-256 of the certificate's DER SubjectPublicKeyInfo (hex), where pyca parses
        the certificate and its key: what names the key that verifies, whatever the subject."""
        parsed = self._parsed
        return None if parsed is None else parsed[1]

    @cached_property
    def _parsed(self) -> tuple[str, str | None] | None:
        der = self.certificate
        if der is None:
            return None
        from cryptography import x509  # only when asked: reading a log needs no x509
        from cryptography.hazmat.primitives import serialization

        try:  # any refusal of pyca's (ValueError, InvalidVersion, UnsupportedAlgorithm...)
            with warnings.catch_warnings():  # firmware certificates pyca frowns at (serials)
                warnings.simplefilter("ignore")
                certificate = x509.load_der_x509_certificate(der)
                subject = certificate.subject.rfc4514_string()
        except Exception:
            return None
        try:
            spki = certificate.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        except Exception:  # a key pyca does not read: named by fingerprint only
            return subject, None
        return subject, hashlib.sha256(spki).hexdigest()

    @property
    def kind(self) -> str:
        """ "certificate", "hash" or "other"."""
        if self.certificate is not None:
            return "certificate"
        if self.hash_hex is not None:
            return "hash"
        return "other"


@dataclass(frozen=True)
class SignatureList:
    """One EFI_SIGNATURE_LIST (UEFI 2.10 §32.4.1): a signature type, an opaque header and the
    entries, all of one size."""

    signature_type: str
    type_name: str
    header: bytes
    entries: tuple[SignatureEntry, ...]


def _type_name(guid: str) -> str:
    return SIGNATURE_TYPES.get(guid, (f"unknown signature type {guid}", None))[0]


def parse_signature_lists(data: bytes) -> tuple[SignatureList, ...] | None:
    """The EFI_SIGNATURE_LISTs of a signature database variable (PK, KEK, db, dbx, MokList),
    checked so that the lists and entries tile ``data`` exactly; None where they do not."""
    lists: list[SignatureList] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 28:
            return None
        sig_type = guid_text(data[offset : offset + 16])
        list_size, header_size, sig_size = struct.unpack_from("<III", data, offset + 16)
        body = list_size - 28 - header_size
        if body < 0 or list_size > len(data) - offset or sig_size < 16 or body % sig_size:
            return None
        header = data[offset + 28 : offset + 28 + header_size]
        name = _type_name(sig_type)
        entries = []
        for start in range(offset + 28 + header_size, offset + list_size, sig_size):
            entries.append(
                SignatureEntry(
                    sig_type,
                    name,
                    guid_text(data[start : start + 16]),
                    data[start + 16 : start + sig_size],
                )
            )
        lists.append(SignatureList(sig_type, name, header, tuple(entries)))
        offset += list_size
    return tuple(lists)


#: The hash signature types by digest size: an authority that is an owner GUID and a hash
#: names its type by its size alone (one type per size).
_HASH_TYPES = {
    size: guid
    for guid, (name, size) in SIGNATURE_TYPES.items()
    if size is not None and not name.startswith("EFI_CERT_X509_")
}


def _authority_entry(data: bytes) -> SignatureEntry | None:
    """The EFI_SIGNATURE_DATA of an EV_EFI_VARIABLE_AUTHORITY event (PFP 1.05 §3.3.4.8, PCR[7]:
    the db entry that verified an image): an owner GUID and a certificate (some firmware and
    shim log the certificate alone, without the owner), or an owner GUID and a hash (an image
    allowed by its hash in db, or by shim's MokList); None for anything else."""
    if is_der_sequence(data):
        return SignatureEntry("", "certificate", None, data)
    if len(data) > 16 and is_der_sequence(data[16:]):
        return SignatureEntry(_X509_TYPE, "EFI_CERT_X509_GUID", guid_text(data[:16]), data[16:])
    hash_type = _HASH_TYPES.get(len(data) - 16)
    if hash_type is not None:
        return SignatureEntry(hash_type, _type_name(hash_type), guid_text(data[:16]), data[16:])
    return None


# --- UEFI_VARIABLE_DATA ----------------------------------------------------------------------


@dataclass(frozen=True)
class LoadOption:
    """An EFI_LOAD_OPTION (UEFI 2.10 §3.1.3), the contents of a Boot#### variable."""

    attributes: int
    description: str
    device_path: bytes
    device_path_text: str | None
    optional_data: bytes


@dataclass(frozen=True)
class EfiVariable:
    """UEFI_VARIABLE_DATA (PFP 1.05 §10.2.6 "Measuring UEFI Variables"): a variable's GUID,
    name and data as measured, with the data read where its variable defines it: signature
    lists (PK, KEK, db, dbx, dbt, dbr, MokList...), the verifying db entry (an authority event),
    a load option (Boot####) or the boot order (BootOrder)."""

    guid: str
    name: str
    data: bytes
    signature_lists: tuple[SignatureList, ...] | None = None
    authority: SignatureEntry | None = None
    load_option: LoadOption | None = None
    boot_order: tuple[int, ...] | None = None
    trailing: bytes = b""


_SIGNATURE_DATABASES = frozenset(
    {
        (EFI_GLOBAL_VARIABLE, "PK"),
        (EFI_GLOBAL_VARIABLE, "KEK"),
        (EFI_GLOBAL_VARIABLE, "PKDefault"),
        (EFI_GLOBAL_VARIABLE, "KEKDefault"),
        (EFI_GLOBAL_VARIABLE, "dbDefault"),
        (EFI_GLOBAL_VARIABLE, "dbxDefault"),
        (EFI_IMAGE_SECURITY_DATABASE, "db"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbx"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbt"),
        (EFI_IMAGE_SECURITY_DATABASE, "dbr"),
        (SHIM_LOCK, "MokList"),
        (SHIM_LOCK, "MokListX"),
    }
)


def decode_variable(data: bytes, *, authority: bool = False) -> EfiVariable | None:
    """UEFI_VARIABLE_DATA: VariableName GUID, UnicodeNameLength and VariableDataLength (UINT64;
    UINTN on old 32-bit firmware, tried second), the CHAR16 name, the data; the sizes must add up
    to the event's. Where no reading adds up, the UINT64 one is taken if it leaves bytes over
    (``trailing``: shim and some OVMF builds log 6 bytes too many). ``authority`` reads the data
    as one EFI_SIGNATURE_DATA."""
    for width, exact in ((8, True), (4, True), (8, False)):
        found = _variable_at(data, width, exact, authority)
        if found is not None:
            return found
    return None


def _variable_at(data: bytes, width: int, exact: bool, authority: bool) -> EfiVariable | None:
    if len(data) < 16 + 2 * width:
        return None
    name_chars, data_len = struct.unpack_from("<QQ" if width == 8 else "<II", data, 16)
    name_end = 16 + 2 * width + 2 * name_chars
    end = name_end + data_len
    if end > len(data) or (exact and end != len(data)):
        return None
    try:
        name = data[16 + 2 * width : name_end].decode("utf-16-le").rstrip("\0")
    except UnicodeDecodeError:
        return None
    found = _variable(guid_text(data[:16]), name, data[name_end:end], authority)
    return dataclasses.replace(found, trailing=data[end:]) if end < len(data) else found


def _variable(guid: str, name: str, value: bytes, authority: bool) -> EfiVariable:
    if authority:
        return EfiVariable(guid, name, value, authority=_authority_entry(value))
    if (guid, name) in _SIGNATURE_DATABASES:
        return EfiVariable(guid, name, value, signature_lists=parse_signature_lists(value))
    if guid == EFI_GLOBAL_VARIABLE and name == "BootOrder" and len(value) % 2 == 0:
        order = tuple(struct.unpack(f"<{len(value) // 2}H", value))
        return EfiVariable(guid, name, value, boot_order=order)
    if guid == EFI_GLOBAL_VARIABLE and _is_load_option_name(name):
        return EfiVariable(guid, name, value, load_option=_safe(lambda: _load_option(value)))
    return EfiVariable(guid, name, value)


def _is_load_option_name(name: str) -> bool:
    return (
        len(name) == 8
        and name[:4] in ("Boot", "Driv", "SysP")
        and all(c in "0123456789ABCDEFabcdef" for c in name[4:])
    ) or (len(name) == 10 and name.startswith("Driver"))


def _load_option(value: bytes) -> LoadOption | None:
    attributes, path_len = struct.unpack_from("<IH", value, 0)
    description = _utf16z(value[6:])
    path_start = 6 + 2 * (len(description) + 1)
    if path_start + path_len > len(value):
        return None
    path = value[path_start : path_start + path_len]
    return LoadOption(
        attributes, description, path, device_path_text(path), value[path_start + path_len :]
    )


# --- UEFI_IMAGE_LOAD_EVENT, firmware blobs, GPT ----------------------------------------------


@dataclass(frozen=True)
class ImageLoad:
    """UEFI_IMAGE_LOAD_EVENT (PFP 1.05 §10.2.3) of EV_EFI_BOOT_SERVICES_APPLICATION, _DRIVER and
    EV_EFI_RUNTIME_SERVICES_DRIVER: where the PE image was loaded and its device path (the
    event's digest is the image's Authenticode digest)."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes
    device_path_text: str | None
    trailing: bytes = b""


def decode_image_load(data: bytes, uintn_size: int | None = None) -> ImageLoad | None:
    """UEFI_IMAGE_LOAD_EVENT: ImageLocationInMemory (UINT64), ImageLengthInMemory,
    ImageLinkTimeAddress, LengthOfDevicePath (UINTN: 8 bytes, or 4 where the Spec ID event says
    uintnSize 1), then the device path; the lengths must add up to the event's. Where they do
    not, bytes left over are kept as ``trailing`` (shim logs LengthOfDevicePath 0 followed by 9
    stray bytes for the images it loads)."""
    widths = (8, 4) if uintn_size is None else (uintn_size,)
    for exact in (True, False):
        for width in widths if exact else widths[:1]:
            fixed = 8 + 3 * width
            if len(data) < fixed:
                continue
            fmt = "<QQQQ" if width == 8 else "<QIII"
            location, length, link, path_len = struct.unpack_from(fmt, data, 0)
            end = fixed + path_len
            if end > len(data) or (exact and end != len(data)):
                continue
            path = data[fixed:end]
            return ImageLoad(location, length, link, path, device_path_text(path), data[end:])
    return None


@dataclass(frozen=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2) (PFP 1.05 §10.2.5): a measured firmware region."""

    base: int
    length: int
    description: str | None = None


def decode_firmware_blob(data: bytes) -> FirmwareBlob | None:
    """UEFI_PLATFORM_FIRMWARE_BLOB: BlobBase and BlobLength, two UINT64 (EV_EFI_PLATFORM_
    FIRMWARE_BLOB, and the non-string form of EV_POST_CODE)."""
    if len(data) != 16:
        return None
    base, length = struct.unpack("<QQ", data)
    return FirmwareBlob(base, length)


def decode_firmware_blob2(data: bytes) -> FirmwareBlob | None:
    """UEFI_PLATFORM_FIRMWARE_BLOB2: a UINT8-sized description, then BlobBase and BlobLength."""
    if not data or len(data) != 1 + data[0] + 16:
        return None
    found = text_of(data[1 : 1 + data[0]])
    base, length = struct.unpack_from("<QQ", data, 1 + data[0])
    return FirmwareBlob(base, length, found[0] if found else None)


@dataclass(frozen=True)
class GptPartition:
    """One UEFI_PARTITION_ENTRY (UEFI 2.10 §5.3.3)."""

    type_guid: str
    unique_guid: str
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True)
class GptData:
    """UEFI_GPT_DATA (PFP 1.05 §10.2, Table 10): the GPT header's disk GUID and the partition
    entries that EV_EFI_GPT_EVENT measured."""

    disk_guid: str
    partitions: tuple[GptPartition, ...]


def decode_gpt(data: bytes) -> GptData | None:
    """UEFI_GPT_DATA: the 92-byte UEFI_PARTITION_TABLE_HEADER (signature "EFI PART"), a UINT64
    partition count and that many entries of the header's SizeOfPartitionEntry."""
    return _safe(lambda: _gpt(data))


def _gpt(data: bytes) -> GptData | None:
    if len(data) < 100 or data[:8] != b"EFI PART":
        return None
    header_size = struct.unpack_from("<I", data, 12)[0]
    entry_size = struct.unpack_from("<I", data, 84)[0]
    if header_size != 92 or entry_size < 128:
        return None
    count = struct.unpack_from("<Q", data, 92)[0]
    if 100 + count * entry_size != len(data):
        return None
    partitions = []
    for start in range(100, len(data), entry_size):
        first, last, attributes = struct.unpack_from("<QQQ", data, start + 32)
        name = _utf16z(data[start + 56 : start + 128])
        partitions.append(
            GptPartition(
                guid_text(data[start : start + 16]),
                guid_text(data[start + 16 : start + 32]),
                first,
                last,
                attributes,
                name,
            )
        )
    return GptData(guid_text(data[56:72]), tuple(partitions))


# --- Device paths ----------------------------------------------------------------------------


def device_path_text(data: bytes) -> str | None:
    """An EFI_DEVICE_PATH_PROTOCOL as text in the UEFI's own notation (UEFI 2.10 §10.6, "Device
    Path to Text"), e.g. ``PciRoot(0x0)/Pci(0x3,0x0)/HD(1,GPT,...)/\\EFI\\BOOT\\BOOTX64.EFI``;
    nodes it does not name are ``Path(type,subtype,hex)``. None where the nodes' lengths do not
    tile the bytes up to the end node."""
    return _safe(lambda: _device_path_text(data))


def _device_path_text(data: bytes) -> str | None:
    instances: list[str] = []
    nodes: list[str] = []
    offset = 0
    for _ in range(_MAX_NODES):
        if offset == len(data):
            break
        node_type, subtype, length = struct.unpack_from("<BBH", data, offset)
        if length < 4 or offset + length > len(data):
            return None
        body = data[offset + 4 : offset + length]
        offset += length
        if node_type == 0x7F:
            instances.append("/".join(nodes))
            nodes = []
            if subtype == 0xFF:
                return ",".join(instances)
            continue
        nodes.append(_node_text(node_type, subtype, body))
    else:
        return None
    if nodes:
        instances.append("/".join(nodes))
    return ",".join(instances) if instances else None


def _node_text(node_type: int, subtype: int, body: bytes) -> str:
    known = _NODES.get((node_type, subtype))
    if known is not None:
        text = _safe(lambda: known(body))
        if text is not None:
            return text
    return f"Path({node_type},{subtype},{body.hex()})"


def _acpi(body: bytes) -> str:
    hid, uid = struct.unpack_from("<II", body)
    if hid == 0x0A0341D0:
        return f"PciRoot(0x{uid:x})"
    if hid == 0x0A0841D0:
        return f"PcieRoot(0x{uid:x})"
    if hid & 0xFFFF == 0x41D0:
        return f"Acpi(PNP{hid >> 16:04X},0x{uid:x})"
    return f"Acpi(0x{hid:08x},0x{uid:x})"


def _hard_drive(body: bytes) -> str:
    number, start, size = struct.unpack_from("<IQQ", body)
    signature = body[20:36]
    mbr_type, sig_type = body[36], body[37]
    if sig_type == 2:
        return f"HD({number},GPT,{guid_text(signature)},0x{start:x},0x{size:x})"
    if sig_type == 1:
        mbr = struct.unpack_from("<I", signature)[0]
        return f"HD({number},MBR,0x{mbr:08x},0x{start:x},0x{size:x})"
    return f"HD({number},{mbr_type},0,0x{start:x},0x{size:x})"


def _vendor(prefix: str) -> Callable[[bytes], str]:
    def text(body: bytes) -> str:
        extra = f",{body[16:].hex()}" if len(body) > 16 else ""
        return f"{prefix}({guid_text(body[:16])}{extra})"

    return text


def _exact(size: int, render: Callable[[bytes], str]) -> Callable[[bytes], str]:
    def text(body: bytes) -> str:
        if len(body) != size:
            raise ValueError("node size")
        return render(body)

    return text


def _bbs(body: bytes) -> str:
    device_type, status = struct.unpack_from("<HH", body)
    description = body[4:].split(b"\0", 1)[0].decode("ascii")
    return f"BBS(0x{device_type:x},{description},0x{status:x})"


def _acpi_adr(body: bytes) -> str:
    addresses = struct.unpack(f"<{len(body) // 4}I", body[: len(body) // 4 * 4])
    return "AcpiAdr(" + ",".join(f"0x{a:x}" for a in addresses) + ")"


def _ata(body: bytes) -> str:
    channel = "Secondary" if body[0] else "Primary"
    drive = "Slave" if body[1] else "Master"
    return f"Ata({channel},{drive},0x{struct.unpack_from('<H', body, 2)[0]:x})"


def _mac(body: bytes) -> str:
    address = body[:6] if body[32] in (0, 1) else body[:32]
    return f"MAC({address.hex()},0x{body[32]:x})"


def _nvme(body: bytes) -> str:
    namespace = struct.unpack_from("<I", body)[0]
    return f"NVMe(0x{namespace:x},{'-'.join(f'{x:02X}' for x in body[4:12])})"


def _u(fmt: str, template: str) -> Callable[[bytes], str]:
    size = struct.calcsize(fmt)
    return _exact(size, lambda body: template.format(*struct.unpack(fmt, body)))


_NODES: dict[tuple[int, int], Callable[[bytes], str]] = {
    (1, 1): _exact(2, lambda b: f"Pci(0x{b[1]:x},0x{b[0]:x})"),
    (1, 4): _vendor("VenHw"),
    (1, 5): _u("<I", "Ctrl(0x{0:x})"),
    (2, 1): _exact(8, _acpi),
    (2, 3): _acpi_adr,
    (3, 1): _exact(4, _ata),
    (3, 2): _u("<HH", "Scsi(0x{0:x},0x{1:x})"),
    (3, 5): _u("<BB", "USB(0x{0:x},0x{1:x})"),
    (3, 10): _vendor("VenMsg"),
    (3, 11): _exact(33, _mac),
    (3, 18): _u("<HHH", "Sata(0x{0:x},0x{1:x},0x{2:x})"),
    (3, 23): _exact(12, _nvme),
    (3, 24): lambda b: f"Uri({b.decode('ascii')})",
    (3, 26): _u("<B", "SD(0x{0:x})"),
    (3, 29): _u("<B", "eMMC(0x{0:x})"),
    (4, 1): _exact(38, _hard_drive),
    (4, 2): _u("<IQQ", "CDROM(0x{0:x},0x{1:x},0x{2:x})"),
    (4, 3): _vendor("VenMedia"),
    (4, 4): _utf16z,
    (4, 5): _exact(16, lambda b: f"Media({guid_text(b)})"),
    (4, 6): _exact(16, lambda b: f"FvFile({guid_text(b)})"),
    (4, 7): _exact(16, lambda b: f"Fv({guid_text(b)})"),
    (4, 8): _exact(20, lambda b: "Offset(0x{1:x},0x{2:x})".format(*struct.unpack("<IQQ", b))),
    (5, 1): _bbs,
}


# --- Windows SIPA records (EV_EVENT_TAG in PCRs 12-14) -----------------------------------------

#: SIPAEVENTTYPE_AGGREGATION: a record whose data is itself a sequence of records.
SIPA_AGGREGATION = 0x40000000

#: SIPA event types by id, named as Windows' wbcl.h names them (SIPAEVENT_*). A container
#: (trust boundary, aggregations) holds records; the others hold one value each.
SIPA_NAMES: dict[int, str] = {
    0x40010001: "TRUSTBOUNDARY",
    0x40010002: "ELAM_AGGREGATION",
    0x40010003: "LOADEDMODULE_AGGREGATION",
    0xC0010004: "TRUSTPOINT_AGGREGATION",
    0x40010005: "KSR_AGGREGATION",
    0x40010006: "KSR_SIGNED_MEASUREMENT_AGGREGATION",
    0x00020001: "INFORMATION",
    0x00020002: "BOOTCOUNTER",
    0x00020003: "TRANSFER_CONTROL",
    0x00020004: "APPLICATION_RETURN",
    0x00020005: "BITLOCKER_UNLOCK",
    0x00020006: "EVENTCOUNTER",
    0x00020007: "COUNTERID",
    0x00020008: "MORBIT_NOT_CANCELABLE",
    0x00020009: "APPLICATION_SVN",
    0x0002000A: "SVN_CHAIN_STATUS",
    0x0002000B: "MORBIT_API_STATUS",
    0x00040001: "BOOTDEBUGGING",
    0x00040002: "BOOT_REVOCATION_LIST",
    0x00050001: "OSKERNELDEBUG",
    0x00050002: "CODEINTEGRITY",
    0x00050003: "TESTSIGNING",
    0x00050004: "DATAEXECUTIONPREVENTION",
    0x00050005: "SAFEMODE",
    0x00050006: "WINPE",
    0x00050007: "PHYSICALADDRESSEXTENSION",
    0x00050008: "OSDEVICE",
    0x00050009: "SYSTEMROOT",
    0x0005000A: "HYPERVISOR_LAUNCH_TYPE",
    0x0005000B: "HYPERVISOR_PATH",
    0x0005000C: "HYPERVISOR_IOMMU_POLICY",
    0x0005000D: "HYPERVISOR_DEBUG",
    0x0005000E: "DRIVER_LOAD_POLICY",
    0x0005000F: "SI_POLICY",
    0x00050010: "HYPERVISOR_MMIO_NX_POLICY",
    0x00050011: "HYPERVISOR_MSR_FILTER_POLICY",
    0x00050012: "VSM_LAUNCH_TYPE",
    0x00050013: "OS_REVOCATION_LIST",
    0x00050020: "VSM_IDK_INFO",
    0x00050021: "FLIGHTSIGNING",
    0x00050022: "PAGEFILE_ENCRYPTION_ENABLED",
    0x00050023: "VSM_IDKS_INFO",
    0x00050024: "HIBERNATION_DISABLED",
    0x00050025: "DUMPS_DISABLED",
    0x00050026: "DUMP_ENCRYPTION_ENABLED",
    0x00050027: "DUMP_ENCRYPTION_KEY_DIGEST",
    0x00050028: "LSAISO_CONFIG",
    0x00060001: "NOAUTHORITY",
    0x00060002: "AUTHORITYPUBKEY",
    0x00070001: "FILEPATH",
    0x00070002: "IMAGESIZE",
    0x00070003: "HASHALGORITHMID",
    0x00070004: "AUTHENTICODEHASH",
    0x00070005: "AUTHORITYISSUER",
    0x00070006: "AUTHORITYSERIAL",
    0x00070007: "IMAGEBASE",
    0x00070008: "AUTHORITYPUBLISHER",
    0x00070009: "AUTHORITYSHA1THUMBPRINT",
    0x0007000A: "IMAGEVALIDATED",
    0x0007000B: "MODULE_SVN",
    0x80080001: "QUOTE",
    0x80080002: "QUOTESIGNATURE",
    0x80080003: "AIKID",
    0x80080004: "AIKPUBDIGEST",
    0x00090001: "ELAM_KEYNAME",
    0x00090002: "ELAM_CONFIGURATION",
    0x00090003: "ELAM_POLICY",
    0x00090004: "ELAM_MEASURED",
    0x000A0001: "VBS_VSM_REQUIRED",
    0x000A0002: "VBS_SECUREBOOT_REQUIRED",
    0x000A0003: "VBS_IOMMU_REQUIRED",
    0x000A0004: "VBS_NX_REQUIRED",
    0x000A0005: "VBS_MSR_FILTERING_REQUIRED",
    0x000A0006: "VBS_MANDATORY_ENFORCEMENT",
    0x000A0007: "VBS_HVCI_POLICY",
    0x000A0008: "VBS_MICROSOFT_BOOT_CHAIN_REQUIRED",
    0x000B0001: "KSR_SIGNATURE",
}


def sipa_name(event_type: int) -> str:
    """The SIPAEVENT_* name of a SIPA event type, or SIPAEVENT_UNKNOWN_0x... ."""
    name = SIPA_NAMES.get(event_type)
    return f"SIPAEVENT_{name}" if name else f"SIPAEVENT_UNKNOWN_0x{event_type:08X}"


@dataclass(frozen=True)
class SipaRecord:
    """One SIPA event record {UINT32 type, UINT32 size, data}; an aggregation's ``children``
    are the records its data holds."""

    event_type: int
    name: str
    data: bytes
    children: tuple[SipaRecord, ...] = ()

    @property
    def text(self) -> str | None:
        """The value as text, for the string-valued records (file paths, issuers, ELAM keys)."""
        found = text_of(self.data)
        return found[0] if found else None

    @property
    def number(self) -> int | None:
        """The value as a little-endian integer, for the 1-, 2-, 4- and 8-byte records."""
        if len(self.data) in (1, 2, 4, 8):
            return int.from_bytes(self.data, "little")
        return None

    def walk(self) -> tuple[SipaRecord, ...]:
        """This record and every record nested in it, depth first."""
        found: list[SipaRecord] = [self]
        for child in self.children:
            found.extend(child.walk())
        return tuple(found)


def parse_sipa(data: bytes, _depth: int = 0) -> tuple[SipaRecord, ...] | None:
    """A sequence of SIPA records that tiles ``data`` exactly, aggregations read recursively (at
    most 8 deep); None where the sizes do not add up."""
    records: list[SipaRecord] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 8:
            return None
        event_type, size = struct.unpack_from("<II", data, offset)
        offset += 8
        if size > len(data) - offset:
            return None
        body = data[offset : offset + size]
        offset += size
        children: tuple[SipaRecord, ...] = ()
        if event_type & SIPA_AGGREGATION:
            if _depth >= _MAX_SIPA_DEPTH:
                return None
            nested = parse_sipa(body, _depth + 1)
            if nested is None:
                return None
            children = nested
        records.append(SipaRecord(event_type, sipa_name(event_type), body, children))
    return tuple(records)
