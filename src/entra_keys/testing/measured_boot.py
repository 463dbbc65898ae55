"""A synthetic but realistic measured boot, for tests: the events a UEFI machine with Secure
Boot, shim, GRUB and Linux measures, extended into a (software) TPM's PCRs in every active bank,
and the crypto-agile TCG event log that records them.

``synthetic_boot()`` builds the events (PC Client Platform Firmware Profile 1.05, PFP, §3.3.4
per PCR, §10 for the structures): the S-CRTM version and a firmware blob (PCR 0), the boot
variables (PCR 1), SecureBoot, PK, KEK, db and dbx with certificates and revocation hashes
(PCR 7), the separators (PCRs 0-7), shim, GRUB and the kernel as boot applications with their
Authenticode digests and device paths (PCR 4), the authorities that verified them, shim's SBAT
level (PCR 7) and MOK lists (PCR 14), GRUB's commands and the kernel command line (PCR 8), the
files GRUB read (PCR 9) and Exit Boot Services (PCR 5). ``SyntheticBoot.log(banks)`` writes the
log; ``SyntheticBoot.extend(tcti)`` extends the events into a TPM (TPM2_PCR_Extend with a digest
for each active bank, through the TPM provider's connection, as ``testing.tpm`` reads it) and
returns the log of those banks. Extend only a TPM of the test's own: PCRs are reset only by a
restart, and other tests seal to them.

The structures are written here from the specifications, apart from ``tcg.eventlog``'s readers,
so that a test of one against the other means something. The images are synthetic bytes: an
image's "Authenticode" digest is the hash of its body (what Authenticode covers), its file
digest (what GRUB measures into PCR 9) the hash of the whole file, signature included.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import struct
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BANKS",
    "BootEvent",
    "SyntheticBoot",
    "active_banks",
    "synthetic_boot",
]

#: The banks a log is written for when none are named (swtpm's default PCR banks).
BANKS = ("sha1", "sha256")

_ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D}
_SIZES = {"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_S_CRTM_VERSION = 0x00000008
EV_IPL = 0x0000000D
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0

EFI_GLOBAL_VARIABLE = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
EFI_IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
SHIM_LOCK = "605dab50-e046-4300-abb6-3dd810dd8b23"
EFI_CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
EFI_CERT_SHA256 = "c1c41626-504c-4092-aca9-41f936934328"
#: The owner GUID firmware vendors put on their own db entries (here: this helper's).
OWNER = "77fa9abd-0359-4d32-bd60-28f4e78f784b"
_DISK = "4e5f3a1c-5b7e-4d0a-9c3e-2f6d1b8a7c90"
_ESP = "a3c8e1f2-6b4d-4e9a-8f7c-1d2e3f4a5b6c"


def _guid(text: str) -> bytes:
    return uuid.UUID(text).bytes_le


def _hash(bank: str, data: bytes) -> bytes:
    return hashlib.new(bank, data).digest()


@dataclass(frozen=True)
class BootEvent:
    """One measured event: the PCR, the event type, the data the log holds and the bytes the
    digests are hashes of (the data itself, a string within it, or an image it names)."""

    pcr: int
    event_type: int
    data: bytes
    measured: bytes

    def digest(self, bank: str) -> bytes:
        """The event's digest in a bank: the hash of what it measured."""
        return _hash(bank, self.measured)


@dataclass(frozen=True)
class SyntheticBoot:
    """A boot's events and what a test needs to write a policy for it: the certificates (DER) by
    role ("PK", "KEK", "db", "shim"), the images by name ("shim", "grub", "kernel"), the dbx
    hashes, the kernel command line and the firmware version."""

    events: tuple[BootEvent, ...]
    certificates: Mapping[str, bytes]
    images: Mapping[str, bytes]
    dbx: tuple[bytes, ...]
    kernel_cmdline: str
    firmware_version: str
    secure_boot: bool
    subjects: Mapping[str, str] = field(default_factory=dict)

    def authenticode(self, image: str, bank: str = "sha256") -> str:
        """The hex "Authenticode" digest of an image (the hash of its body), as PCR 4 holds it."""
        return _hash(bank, _body(self.images[image])).hex()

    def file_digest(self, image: str, bank: str = "sha256") -> str:
        """The hex digest of an image's whole file, as GRUB measures it into PCR 9."""
        return _hash(bank, self.images[image]).hex()

    def log(self, banks: Sequence[str] = BANKS) -> bytes:
        """The crypto-agile event log of these events with a digest in each bank (a Spec ID
        event first, PFP 1.05 §10.4.5.1; then TCG_PCR_EVENT2, §10.2.2)."""
        return spec_id_event(banks) + b"".join(
            event2(e.pcr, e.event_type, [(b, e.digest(b)) for b in banks], e.data)
            for e in self.events
        )

    def replay(self, banks: Sequence[str] = BANKS) -> dict[str, dict[int, bytes]]:
        """The PCR values these events give from TPM2_Startup (locality 0), by bank."""
        values = {bank: {pcr: bytes(_SIZES[bank]) for pcr in range(24)} for bank in banks}
        for bank in banks:
            for pcr in range(17, 23):
                values[bank][pcr] = b"\xff" * _SIZES[bank]
        for event in self.events:
            for bank in banks:
                old = values[bank][event.pcr]
                values[bank][event.pcr] = _hash(bank, old + event.digest(bank))
        return values

    def extend(self, tcti: str, log_path: Path | None = None) -> bytes:
        """Extend every event into the TPM at ``tcti`` (TPM2_PCR_Extend, a digest for each of its
        active SHA banks, through a TPM provider's connection) and return the log of those
        banks, also written to ``log_path``."""
        from ..providers.tpm import TPMProvider

        provider = TPMProvider(tcti=tcti)
        try:
            conn = provider.connection
            t = conn.tss
            with conn.command("extend the PCRs") as esys:
                banks = active_banks(esys, t)
                for event in self.events:
                    digests = t.TPML_DIGEST_VALUES(
                        [
                            t.TPMT_HA(
                                hashAlg=t.TPM2_ALG(_ALG_IDS[bank]),
                                digest=t.TPMU_HA(**{bank: event.digest(bank)}),
                            )
                            for bank in banks
                        ]
                    )
                    esys.pcr_extend(getattr(t.ESYS_TR, f"PCR{event.pcr}"), digests)
        finally:
            provider.close()
        data = self.log(banks)
        if log_path is not None:
            log_path.write_bytes(data)
        return data


def active_banks(esys: Any, tss: Any) -> tuple[str, ...]:
    """The SHA banks with PCRs allocated in a TPM (TPM2_GetCapability, TPM_CAP_PCRS), in the
    TPM's order; ``tss`` is the tpm2_pytss module of the connection."""
    _, data = esys.get_capability(tss.TPM2_CAP.PCRS, 0, 1)
    names = {alg: name for name, alg in _ALG_IDS.items()}
    return tuple(
        names[int(selection.hash)]
        for selection in data.data.assignedPCR
        if int(selection.hash) in names
        and any(bytes(selection.pcrSelect)[: selection.sizeofSelect])
    )


# --- the structures (PFP 1.05 §10; UEFI 2.10) ------------------------------------------------


def spec_id_event(banks: Sequence[str]) -> bytes:
    """The Spec ID event (TCG_EfiSpecIDEvent in a TCG_PCClientPCREvent, PCR 0, EV_NO_ACTION, a
    zero SHA-1 digest): platform class 0, spec 2.0 errata 0, UINTN of 8 bytes, the banks."""
    body = b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(banks))
    body += b"".join(struct.pack("<HH", _ALG_IDS[b], _SIZES[b]) for b in banks) + b"\0"
    return struct.pack("<II20sI", 0, EV_NO_ACTION, bytes(20), len(body)) + body


def event2(pcr: int, event_type: int, digests: Sequence[tuple[str, bytes]], data: bytes) -> bytes:
    """A TCG_PCR_EVENT2: PCR index, type, TPML_DIGEST_VALUES, event size, event."""
    out = struct.pack("<III", pcr, event_type, len(digests))
    out += b"".join(struct.pack("<H", _ALG_IDS[bank]) + digest for bank, digest in digests)
    return out + struct.pack("<I", len(data)) + data


def variable_data(guid: str, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA (PFP 1.05 §10.2.6): the variable's GUID, UINT64 name length in
    characters and data length, the CHAR16 name (no NUL) and the data."""
    encoded = name.encode("utf-16-le")
    return _guid(guid) + struct.pack("<QQ", len(name), len(value)) + encoded + value


def signature_list(signature_type: str, entries: Sequence[bytes], owner: str = OWNER) -> bytes:
    """An EFI_SIGNATURE_LIST (UEFI 2.10 §32.4.1) of entries of one size, each with its owner."""
    size = 16 + len(entries[0])
    body = b"".join(_guid(owner) + entry for entry in entries)
    return _guid(signature_type) + struct.pack("<III", 28 + len(body), 0, size) + body


def device_path(*nodes: bytes) -> bytes:
    """An EFI device path: the nodes, then the end node (UEFI 2.10 §10.3.1)."""
    return b"".join(nodes) + b"\x7f\xff\x04\x00"


def hard_drive_node(number: int, start: int, size: int, partition: str) -> bytes:
    """A Hard Drive media node (type 4, subtype 1) of a GPT partition."""
    return struct.pack("<BBHIQQ", 4, 1, 42, number, start, size) + _guid(partition) + b"\x02\x02"


def file_node(path: str) -> bytes:
    """A File Path media node (type 4, subtype 4): the CHAR16 path with its NUL."""
    text = (path + "\0").encode("utf-16-le")
    return struct.pack("<BBH", 4, 4, 4 + len(text)) + text


def image_load_event(location: int, length: int, path: bytes) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT (PFP 1.05 §10.2.3): location, length, link-time address (UINT64 and
    UINTNs of 8 bytes), the device path's length, the device path."""
    return struct.pack("<QQQQ", location, length, 0, len(path)) + path


def _body(image: bytes) -> bytes:
    """What an image's Authenticode digest covers here: all but its 256-byte signature."""
    return image[:-256]


# --- certificates and images -----------------------------------------------------------------


@functools.cache
def _certificate(subject: str, issuer: str) -> bytes:
    """A self-issued RSA-2048 certificate (DER) of the shape UEFI databases hold; made once per
    process for each subject."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issued = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issued)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(hashlib.sha256(subject.encode()).digest()[:8], "big"))
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=issuer == subject, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.DER)


def _image(name: str, size: int = 4096) -> bytes:
    """Deterministic bytes standing for a signed PE image: a body and a 256-byte signature."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha512(f"{name}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def synthetic_boot(
    *,
    secure_boot: bool = True,
    kernel: str = "vmlinuz-6.1.0-18-amd64",
    kernel_cmdline: str = "root=UUID=0d5c4a3e-8f0b-4a4e-9d1b-7c2e5f6a9b3d ro quiet",
    firmware_version: str = "entra_keys synthetic firmware 1.0",
    dbx: Sequence[bytes] = (),
    images: Mapping[str, bytes] | None = None,
) -> SyntheticBoot:
    """The events of a UEFI boot through shim, GRUB and Linux (see the module's docstring).
    ``images`` replaces the synthetic images by name ("shim", "grub", "kernel"); ``dbx`` adds
    revoked SHA-256 hashes to the three this helper always revokes."""
    subjects = {
        "PK": "Entra Keys Test Platform Key",
        "KEK": "Entra Keys Test KEK CA",
        "db": "Entra Keys Test UEFI CA 2024",
        "shim": "Entra Keys Test Distribution Secure Boot CA",
    }
    certificates = {role: _certificate(subject, subject) for role, subject in subjects.items()}
    found = {name: _image(name) for name in ("shim", "grub", "kernel", "initrd", "firmware")}
    found.update(images or {})
    revoked = tuple(hashlib.sha256(f"revoked {i}".encode()).digest() for i in range(3))
    revoked += tuple(dbx)
    path = f"/boot/{kernel}"
    command_line = f"{path} {kernel_cmdline}"
    events: list[BootEvent] = []

    def add(pcr: int, kind: int, data: bytes, measured: bytes | None = None) -> None:
        events.append(BootEvent(pcr, kind, data, data if measured is None else measured))

    def variable(pcr: int, kind: int, guid: str, name: str, value: bytes) -> None:
        add(pcr, kind, variable_data(guid, name, value))

    def text(pcr: int, kind: int, value: str, measured: bytes | None = None) -> None:
        add(pcr, kind, value.encode() + (b"\0" if kind == EV_IPL else b""), measured)

    def grub(command: str, label: str = "grub_cmd: ") -> None:
        text(8, EV_IPL, label + command, command.encode())

    def x509_list(role: str) -> bytes:
        return signature_list(EFI_CERT_X509, [certificates[role]])

    def loaded(name: str, where: bytes) -> None:
        image = found[name]
        add(4, EV_EFI_BOOT_SERVICES_APPLICATION, image_load_event(0x7D000000, len(image), where),
            _body(image))  # fmt: skip

    version = (firmware_version + "\0").encode("utf-16-le")
    add(0, EV_S_CRTM_VERSION, version)
    add(0, EV_EFI_PLATFORM_FIRMWARE_BLOB, struct.pack("<QQ", 0x820000, 0xE0000), found["firmware"])
    variable(7, EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_GLOBAL_VARIABLE, "SecureBoot",
             b"\x01" if secure_boot else b"\x00")  # fmt: skip
    variable(7, EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_GLOBAL_VARIABLE, "PK", x509_list("PK"))
    variable(7, EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_GLOBAL_VARIABLE, "KEK", x509_list("KEK"))
    variable(7, EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_IMAGE_SECURITY_DATABASE, "db",
             x509_list("db"))  # fmt: skip
    variable(7, EV_EFI_VARIABLE_DRIVER_CONFIG, EFI_IMAGE_SECURITY_DATABASE, "dbx",
             signature_list(EFI_CERT_SHA256, list(revoked)))  # fmt: skip
    variable(1, EV_EFI_VARIABLE_BOOT, EFI_GLOBAL_VARIABLE, "BootOrder", struct.pack("<H", 1))
    esp = hard_drive_node(1, 2048, 1048576, _ESP)
    option = struct.pack("<IH", 1, len(device_path(esp, file_node(r"\EFI\BOOT\BOOTX64.EFI"))))
    option += "debian\0".encode("utf-16-le") + device_path(esp, file_node(r"\EFI\BOOT\BOOTX64.EFI"))
    variable(1, EV_EFI_VARIABLE_BOOT, EFI_GLOBAL_VARIABLE, "Boot0001", option)
    text(4, EV_EFI_ACTION, "Calling EFI Application from Boot Option")
    for pcr in range(8):
        add(pcr, EV_SEPARATOR, bytes(4))
    if secure_boot:  # the db entry that verified shim
        add(7, EV_EFI_VARIABLE_AUTHORITY, variable_data(
            EFI_IMAGE_SECURITY_DATABASE, "db", _guid(OWNER) + certificates["db"]))  # fmt: skip
    loaded("shim", device_path(esp, file_node(r"\EFI\BOOT\BOOTX64.EFI")))
    variable(7, EV_EFI_VARIABLE_AUTHORITY, SHIM_LOCK, "SbatLevel", b"sbat,1,2023012900\n")
    text(14, EV_IPL, "MokList", b"MokList contents")
    text(14, EV_IPL, "MokListX", b"MokListX contents")
    if secure_boot:  # shim's vendor certificate verified GRUB (and will verify the kernel)
        variable(7, EV_EFI_VARIABLE_AUTHORITY, SHIM_LOCK, "Shim", certificates["shim"])
    loaded("grub", device_path(file_node(r"\EFI\BOOT\grubx64.efi")))
    text(9, EV_IPL, "(hd0,gpt1)/EFI/BOOT/grub.cfg", b"search --fs-uuid --set=root ...")
    grub("search --no-floppy --fs-uuid --set=root 0d5c4a3e-8f0b-4a4e-9d1b-7c2e5f6a9b3d")
    grub("set prefix=($root)/boot/grub")
    text(9, EV_IPL, "(hd0,gpt2)/boot/grub/grub.cfg", b"menuentry 'Debian GNU/Linux' ...")
    grub("setparams Debian GNU/Linux")
    grub(f"linux {command_line}")
    text(9, EV_IPL, path, found["kernel"])
    grub(command_line, "kernel_cmdline: ")
    grub(f"initrd /boot/initrd.img-{kernel.removeprefix('vmlinuz-')}")
    text(9, EV_IPL, f"/boot/initrd.img-{kernel.removeprefix('vmlinuz-')}", found["initrd"])
    loaded("kernel", b"")  # through shim's LoadImage: no device path
    text(5, EV_EFI_ACTION, "Exit Boot Services Invocation")
    text(5, EV_EFI_ACTION, "Exit Boot Services Returned with Success")
    return SyntheticBoot(
        events=tuple(events),
        certificates=certificates,
        images=found,
        dbx=revoked,
        kernel_cmdline=command_line,
        firmware_version=firmware_version,
        secure_boot=secure_boot,
        subjects={role: f"CN={subject}" for role, subject in subjects.items()},
    )
