"""TCG PC Client event logs: parsed (both formats), replayed by the specification's rules, and
read for what booted.

The log is the firmware's (and boot loaders') record of every PCR extend since the TPM started
(TCG PC Client Platform Firmware Profile, "PFP", 1.05 rev 23, §10 "Event Logging"; on Linux
``/sys/kernel/security/tpm0/binary_bios_measurements``). A quote proves PCR values; only the log
says what they mean, and only once its replay gives the quoted values.

- ``parse_event_log(data)`` reads the SHA-1 log (every event a TCG_PCClientPCREvent) and the
  crypto-agile log (a Spec ID event, then TCG_PCR_EVENT2 with any set of banks). The log is
  attacker input: the limits below are checked before work, and every malformed log is an
  ``InvalidData`` naming the event, its byte offset and the field.
- ``EventLog.replay()`` extends the digests by the PFP's rules (initial values, EV_NO_ACTION,
  StartupLocality, H-CRTM); ``matching_prefix()`` finds the events a quote covers when the log
  was read after the quote; ``first_difference()`` names the first PCR that differs.
- ``EventLog.facts()`` reads the events into ``BootFacts``: Secure Boot, PK/KEK/db/dbx, the
  authorities, boot applications, shim's MOK state, GRUB and systemd measurements, firmware
  version, separators, ExitBootServices, and Windows' SIPA facts; given the PCRs a quote
  covers, from their events only. Decoding never raises: what it does not understand stays raw.
- ``measured_data()`` / ``data_matches()``: a replay proves digests, not data. Where the PFP
  defines an event's digest over its data (variables, separators, action strings, GRUB's and
  systemd's strings, Windows' SIPA events), a fact is read only from data that hashes to it.

Section numbers follow PFP 1.05 rev 23 and 1.06 (§3 fundamentals, §10 event logging); earlier
editions (1.04, the 2020 drafts of 1.05) number the same sections one lower (§2, §9).

The facts are as trustworthy as the replay that ties the log to a quote, and no more: data
whose digest is of something else (an image's path, a file's name) is a label, said so where
it is kept.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from cryptography.exceptions import UnsupportedAlgorithm as _PycaUnsupported
from cryptography.hazmat.primitives import hashes

from ..errors import HardwareUnavailable, InvalidData, UnsupportedAlgorithm
from ._efi import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    SHIM_LOCK,
    SIPA_AGGREGATION,
    EfiVariable,
    FirmwareBlob,
    GptData,
    ImageLoad,
    SignatureEntry,
    SipaRecord,
    decode_firmware_blob,
    decode_firmware_blob2,
    decode_gpt,
    decode_image_load,
    decode_variable,
    guid_text,
    parse_sipa,
    sipa_name,
    text_of,
)
from .wire import HASH_ALGORITHMS as WIRE_HASHES
from .wire import TPM_ALG_SM3_256, FrozenMapping, readable_bytes

__all__ = [
    "BITLOCKER_FLAGS",
    "EVENT_TYPES",
    "GRUB_LABELS",
    "KERNEL_EVENT_LOG",
    "LOADER_COMMANDS",
    "MAX_ALGORITHMS",
    "MAX_EVENTS",
    "MAX_EVENT_DATA",
    "MAX_LOG_SIZE",
    "Authority",
    "BootFacts",
    "Decoded",
    "EfiVariable",
    "ElamDriver",
    "Event",
    "EventLog",
    "EventText",
    "FirmwareBlob",
    "GptData",
    "HcrtmComponent",
    "ImageLoad",
    "LoadedImage",
    "LoaderMeasurement",
    "Measurement",
    "MokVariable",
    "NoActionEvent",
    "PcrDifference",
    "RevocationList",
    "Separator",
    "SignatureEntry",
    "SipaRecord",
    "SpecIdAlgorithm",
    "SpecIdEvent",
    "StartupLocality",
    "TaggedEvent",
    "WindowsFacts",
    "WindowsModule",
    "command_lines_of",
    "data_matches",
    "first_difference",
    "grub_string",
    "measured_data",
    "parse_event_log",
    "read_event_log",
    "selection_digest",
    "sipa_records",
]

#: The largest log parsed: real logs are a few KB to a few hundred KB; 16 MiB bounds the work
#: an attacker can ask for.
MAX_LOG_SIZE = 16 * 1024 * 1024
#: The most events parsed (real logs: 20-2,000).
MAX_EVENTS = 100_000
#: The largest event data (the largest real events are dbx updates, tens of KB).
MAX_EVENT_DATA = 1024 * 1024
#: Where Linux exposes the firmware's event log of the first TPM (securityfs; root only).
KERNEL_EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
#: The most algorithms a Spec ID event may declare, hence digests per event.
MAX_ALGORITHMS = 16


#: TPM_ALG_ID -> (bank name, digest size) of the banks a log may carry: tcg.wire's SHA family,
#: and SM3-256, which only event logs name (TCG Algorithm Registry; the verifier takes no SM3).
_ALGORITHMS: Mapping[int, tuple[str, int]] = MappingProxyType(
    {
        **{alg: (info.name, info.digest_size) for alg, info in WIRE_HASHES.items()},
        TPM_ALG_SM3_256: ("sm3_256", 32),
    }
)

#: Event types and their names (PFP 1.05 §10.4.1, Table 9; the EV_EFI_SPDM_* and
#: EV_POST_CODE2 types of PFP 1.06).
EVENT_TYPES: Mapping[int, str] = MappingProxyType(
    {
        0x00000000: "EV_PREBOOT_CERT",
        0x00000001: "EV_POST_CODE",
        0x00000002: "EV_UNUSED",
        0x00000003: "EV_NO_ACTION",
        0x00000004: "EV_SEPARATOR",
        0x00000005: "EV_ACTION",
        0x00000006: "EV_EVENT_TAG",
        0x00000007: "EV_S_CRTM_CONTENTS",
        0x00000008: "EV_S_CRTM_VERSION",
        0x00000009: "EV_CPU_MICROCODE",
        0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
        0x0000000B: "EV_TABLE_OF_DEVICES",
        0x0000000C: "EV_COMPACT_HASH",
        0x0000000D: "EV_IPL",
        0x0000000E: "EV_IPL_PARTITION_DATA",
        0x0000000F: "EV_NONHOST_CODE",
        0x00000010: "EV_NONHOST_CONFIG",
        0x00000011: "EV_NONHOST_INFO",
        0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
        0x00000013: "EV_POST_CODE2",
        0x80000000: "EV_EFI_EVENT_BASE",
        0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
        0x80000002: "EV_EFI_VARIABLE_BOOT",
        0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
        0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
        0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
        0x80000006: "EV_EFI_GPT_EVENT",
        0x80000007: "EV_EFI_ACTION",
        0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
        0x80000009: "EV_EFI_HANDOFF_TABLES",
        0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
        0x8000000B: "EV_EFI_HANDOFF_TABLES2",
        0x8000000C: "EV_EFI_VARIABLE_BOOT2",
        0x80000010: "EV_EFI_HCRTM_EVENT",
        0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
        0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
        0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
        0x800000E3: "EV_EFI_SPDM_DEVICE_POLICY",
        0x800000E4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
    }
)

EV_POST_CODE = 0x00000001
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_ACTION = 0x00000005
EV_EVENT_TAG = 0x00000006
EV_S_CRTM_CONTENTS = 0x00000007
EV_S_CRTM_VERSION = 0x00000008
EV_COMPACT_HASH = 0x0000000C
EV_IPL = 0x0000000D
EV_OMIT_BOOT_DEVICE_EVENTS = 0x00000012
EV_POST_CODE2 = 0x00000013
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
EV_EFI_GPT_EVENT = 0x80000006
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_VARIABLE_BOOT2 = 0x8000000C
EV_EFI_HCRTM_EVENT = 0x80000010
EV_EFI_VARIABLE_AUTHORITY = 0x800000E0

_SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
_STARTUP_LOCALITY_SIGNATURE = b"StartupLocality\0"
_HCRTM_SIGNATURE = b"H-CRTM CompMeas\0"
#: The separator values (PFP 1.05 §3.3.2 "Error Conditions" and §10.4.1, EV_SEPARATOR): a
#: delimiter's data is 00000000h or FFFFFFFFh and its digest that data's hash; an error
#: separator's digest is the hash of 00000001h and its data is free (error information).
_SEPARATOR_ERROR = b"\x01\0\0\0"


# --- The Spec ID event and the decoded forms of TCG-defined events ----------------------------


@dataclass(frozen=True)
class SpecIdAlgorithm:
    """One TCG_EfiSpecIdEventAlgorithmSize: an algorithm's TPM_ALG_ID, bank name and size."""

    alg_id: int
    name: str
    digest_size: int


@dataclass(frozen=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEvent (PFP 1.05 §10.4.5.1, "Specification ID Version Event"): the first
    event of a crypto-agile log, which declares the algorithms and digest sizes of every later
    event. ``uintn_size`` 1 means UINTN fields are 4 bytes, 2 means 8."""

    platform_class: int
    spec_version_major: int
    spec_version_minor: int
    spec_errata: int
    uintn_size: int
    algorithms: tuple[SpecIdAlgorithm, ...]
    vendor_info: bytes


@dataclass(frozen=True)
class StartupLocality:
    """TCG_EfiStartupLocalityEvent (PFP 1.05 §10.4.5.3): the locality TPM2_Startup came from
    (3 on Intel TXT / Boot Guard machines, 4 after an H-CRTM), which is PCR 0's initial value."""

    locality: int


@dataclass(frozen=True)
class HcrtmComponent:
    """TCG_HCRTMComponentEvent (EV_NO_ACTION "H-CRTM CompMeas", PFP 1.05 §10.4.5): a component
    the H-CRTM measured before TPM2_Startup; informative, it extends nothing."""

    description: str
    measurement_format: int
    measurement: bytes


@dataclass(frozen=True)
class NoActionEvent:
    """Another EV_NO_ACTION event (PFP 1.05 §10.4.5: SP800-155 reference manifests, NV index
    records): its 16-byte signature and data, kept raw; Windows' records in "PCR" 0xFFFFFFFF
    (its AIK and trust points, never extended) are SIPA ``records``."""

    signature: str
    data: bytes
    records: tuple[SipaRecord, ...] | None = None


@dataclass(frozen=True)
class Separator:
    """EV_SEPARATOR (PFP 1.05 §3.3.2, §10.4.1): ``value`` is the delimiter (0 or 0xFFFFFFFF;
    Windows' "WBCL" in PCRs 12-14), or None for an error separator, whose digest is that of
    00000001h and whose data is error information (``error`` True). 0xFFFFFFFF is a delimiter
    like 0, not an error: the PFP allows either."""

    value: int | None
    error: bool

    @property
    def standard(self) -> bool:
        """Whether this is a separator value the PFP defines (0, 0xFFFFFFFF, or an error)."""
        return self.error or self.value in (0, 0xFFFFFFFF)


@dataclass(frozen=True)
class EventText:
    """An event whose data is a string: EV_ACTION / EV_EFI_ACTION (PFP 1.05 §10.4.3, §10.4.4),
    EV_S_CRTM_VERSION, EV_POST_CODE's names, EV_IPL (GRUB's "grub_cmd: ..." and
    "kernel_cmdline: ...", systemd's UTF-16 command line, shim's MOK list names); ``encoding``
    is "ascii", "utf-8", "utf-16le", or "guid" for an S-CRTM version that is an EFI_GUID."""

    text: str
    encoding: str


@dataclass(frozen=True)
class TaggedEvent:
    """TCG_PCClientTaggedEvent (EV_EVENT_TAG, PFP 1.05 §10.4.1): an id and data; Windows' are
    SIPA containers whose ``records`` are read (PCRs 12-14), others keep their data and text."""

    tag_id: int
    name: str
    data: bytes
    records: tuple[SipaRecord, ...] | None
    text: str | None


#: What ``Event.decoded`` holds: the decoded form of the event data for its type, or None.
Decoded = (
    SpecIdEvent
    | StartupLocality
    | HcrtmComponent
    | NoActionEvent
    | Separator
    | EventText
    | TaggedEvent
    | EfiVariable
    | ImageLoad
    | FirmwareBlob
    | GptData
    | None
)


# --- Events and the log ----------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One event: ``index`` its position, ``offset`` its first byte in the log, the PCR it
    extends, its type (``type_name`` the PFP name, or EV_UNKNOWN_0x... ), its digests by bank
    name and its raw data. ``decoded`` is the data read as the spec defines it for the type, or
    None; it is worked out when first asked for and never raises."""

    index: int
    offset: int
    pcr: int
    event_type: int
    type_name: str
    digests: Mapping[str, bytes]
    data: bytes
    uintn_size: int | None = field(default=None, repr=False, compare=False)

    def __hash__(self) -> int:
        return hash((self.index, self.offset, self.pcr, self.event_type, self.data))

    @cached_property
    def decoded(self) -> Decoded:
        """The event data decoded where the spec defines its form (see ``Decoded``)."""
        try:
            return _decode(self)
        except (struct.error, ValueError, IndexError, OverflowError):
            return None


def _type_name(event_type: int) -> str:
    return EVENT_TYPES.get(event_type) or f"EV_UNKNOWN_0x{event_type:08X}"


@dataclass(frozen=True)
class PcrDifference:
    """The first PCR whose replayed value is not the quoted one (``replayed`` None: not in the
    replay, e.g. a bank the log does not have)."""

    bank: str
    pcr: int
    replayed: bytes | None
    quoted: bytes


def _sm3(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def _sm3_available() -> bool:
    try:
        _sm3(b"")
    except _PycaUnsupported:
        return False
    return True


#: The banks a replay computes: the SHA family always (tcg.wire's), SM3-256 where pyca's
#: OpenSSL has SM3.
_HASHERS: dict[str, Callable[[bytes], bytes]] = {
    info.name: info.digest for info in WIRE_HASHES.values()
}
if _sm3_available():
    _HASHERS["sm3_256"] = _sm3


def _hasher(name: str) -> Callable[[bytes], bytes]:
    found = _HASHERS.get(name)
    if found is None:
        raise UnsupportedAlgorithm(
            f"event log: cannot compute {name}: {', '.join(_HASHERS)} are offered"
        )
    return found


@dataclass(frozen=True)
class EventLog:
    """A parsed TCG event log: its events in order (the Spec ID event is event 0 of a
    crypto-agile log), the banks it carries (the Spec ID event's algorithms, in its order; just
    "sha1" for a SHA-1 log), the Spec ID event and whether the log is crypto-agile."""

    events: tuple[Event, ...]
    banks: tuple[str, ...]
    spec_id: SpecIdEvent | None
    crypto_agile: bool

    @cached_property
    def _pcr0_start(self) -> tuple[int, bool]:
        """(locality, H-CRTM) that set PCR 0's initial value: a StartupLocality EV_NO_ACTION
        event in PCR 0 before PCR 0's first extend gives its locality (PFP 1.05 §10.4.5.3); an
        EV_EFI_HCRTM_EVENT as that first extend means an H-CRTM sequence ran before
        TPM2_Startup, which starts PCR 0 at locality 4 (TPM 2.0 Library Part 1 §34.3)."""
        locality = 0
        for event in self.events:
            if event.pcr != 0:
                continue
            if event.event_type == EV_NO_ACTION:
                if len(event.data) == 17 and event.data[:16] == _STARTUP_LOCALITY_SIGNATURE:
                    locality = event.data[16]
                continue
            if event.event_type == EV_EFI_HCRTM_EVENT:
                return 4, True
            break
        return locality, locality == 4

    @property
    def startup_locality(self) -> int:
        """The locality PCR 0 starts at: 0, 3 (StartupLocality 3) or 4 (H-CRTM)."""
        return self._pcr0_start[0]

    @property
    def h_crtm(self) -> bool:
        """Whether an H-CRTM sequence ran before TPM2_Startup (PCR 0 starts at 00..04)."""
        return self._pcr0_start[1]

    @property
    def replayable_banks(self) -> tuple[str, ...]:
        """The banks ``replay`` computes: the log's banks but those of unknown algorithms (kept
        raw as alg_0x....) and SM3-256 where pyca offers no SM3."""
        return tuple(bank for bank in self.banks if bank in _HASHERS)

    def initial_value(self, bank: str, pcr: int) -> bytes:
        """A PCR's value at TPM2_Startup, before any event: PCRs 17-22 all ones and the others
        zero (TPM 2.0 Library Part 1 §17.2 with the PC Client PTP's PCR attributes: 17-22 are
        the DRTM PCRs, reset only by a dynamic launch); PCR 0's last byte is its start locality
        (PFP 1.05 §10.4.5.3)."""
        size = _bank_size(bank)
        if 17 <= pcr <= 22:
            return b"\xff" * size
        if pcr == 0 and self.startup_locality:
            return bytes(size - 1) + bytes((self.startup_locality,))
        return bytes(size)

    def _initial_state(self, banks: Iterable[str]) -> dict[str, dict[int, bytes]]:
        return {bank: {pcr: self.initial_value(bank, pcr) for pcr in range(24)} for bank in banks}

    def replay(self, upto: int | None = None) -> dict[str, dict[int, bytes]]:
        """The PCR values the events give, bank name -> {PCR: value}, for PCRs 0-23 (and any
        other PCR an event extends) in each replayable bank; ``upto`` replays only the events
        with ``index < upto``. Each event extends its PCR with its digest for the bank,
        new = H(old || digest) (Part 1 §17.3); EV_NO_ACTION events extend nothing (PFP 1.05
        §10.4.5); an event without a digest for a bank leaves that bank alone, as
        TPM2_PCR_Extend does."""
        _check_upto(upto)
        banks = self.replayable_banks
        state = self._initial_state(banks)
        hashers = [(bank, _HASHERS[bank], state[bank]) for bank in banks]
        for event in self.events[:upto]:
            if event.event_type == EV_NO_ACTION:
                continue
            pcr, digests = event.pcr, event.digests
            for bank, hasher, values in hashers:
                digest = digests.get(bank)
                if digest is None:
                    continue
                old = values.get(pcr)
                if old is None:
                    old = self.initial_value(bank, pcr)
                values[pcr] = hasher(old + digest)
        return state

    def matching_prefix(
        self, pcr_selection: Mapping[str, Sequence[int]], digest_alg: str, pcr_digest: bytes
    ) -> int | None:
        """The number of events after which the replayed values of the selected PCRs hash to a
        quote's ``pcr_digest``, or None if no prefix of the log does. The digest is
        ``digest_alg`` over the values concatenated as TPM2_Quote does: banks in the order
        given, each bank's PCRs ascending (Part 3 §18.4). A log read after the quote may hold
        later events (IMA in PCR 10, a resumed boot): the prefix is the part the quote covers,
        and the longest one is returned (events after it that leave the selected PCRs alone are
        included). One pass over the log; the digest is recomputed only when a selected PCR
        changes, and the pass stops once a matching run ends."""
        hasher = _hasher(digest_alg)
        selection = [(bank, sorted(set(pcrs))) for bank, pcrs in pcr_selection.items()]
        for bank, pcrs in selection:
            if bank not in self.replayable_banks:
                raise UnsupportedAlgorithm(
                    f"event log: bank {bank} is not one this log replays "
                    f"({', '.join(self.replayable_banks) or 'none'})"
                )
            if any(pcr < 0 for pcr in pcrs):
                raise InvalidData(f"event log: PCR indices must not be negative: {pcrs}")
        state = self._initial_state(bank for bank, _ in selection)
        for bank, pcrs in selection:
            for pcr in pcrs:
                state[bank].setdefault(pcr, self.initial_value(bank, pcr))
        watched = {bank: frozenset(pcrs) for bank, pcrs in selection}
        hashers = [(bank, _HASHERS[bank], state[bank], watched[bank]) for bank, _ in selection]

        def current() -> bytes:
            return hasher(b"".join(state[bank][pcr] for bank, pcrs in selection for pcr in pcrs))

        best = 0 if current() == pcr_digest else None
        for event in self.events:
            if event.event_type != EV_NO_ACTION:
                changed = False
                for bank, bank_hasher, values, watched_pcrs in hashers:
                    digest = event.digests.get(bank)
                    if digest is not None and event.pcr in watched_pcrs:
                        values[event.pcr] = bank_hasher(values[event.pcr] + digest)
                        changed = True
                if changed:
                    if current() == pcr_digest:
                        best = event.index + 1
                        continue
                    if best is not None:
                        return best
                    continue
            if best is not None:
                best = event.index + 1
        return best

    def facts(
        self, upto: int | None = None, *, pcrs: Mapping[str, Iterable[int]] | None = None
    ) -> BootFacts:
        """What the events say about the boot (``BootFacts``), from the events with
        ``index < upto`` (a verifier passes the quote's ``matching_prefix``) that ``pcrs``
        covers: {bank: PCRs} whose replay matched a quote; an event counts only where it extends
        one of those PCRs with a digest of that bank, and only those digests are read and
        checked. Without ``pcrs`` every event counts, checked against every digest it has that
        a replay computes. Where an event's digest is defined over its data (``measured_data``)
        and does not match, the event gives no fact and is listed in ``data_mismatches``.
        Never raises on a parsed log (InvalidData for a negative ``upto`` or an unknown bank)."""
        _check_upto(upto)
        return _facts(self, self.events[:upto], self._coverage(pcrs))

    def _coverage(self, pcrs: Mapping[str, Iterable[int]] | None) -> _Coverage:
        if pcrs is None:
            return None
        coverage: dict[str, frozenset[int]] = {}
        for bank, indices in pcrs.items():
            if bank not in self.replayable_banks:
                raise InvalidData(
                    f"event log: bank {bank!r} is not one this log replays "
                    f"({', '.join(self.replayable_banks) or 'none'})"
                )
            coverage[bank] = frozenset(indices)
        return coverage


def _check_upto(upto: int | None) -> None:
    if upto is not None and upto < 0:
        raise InvalidData(f"event log: upto must not be negative, not {upto}")


def _bank_size(bank: str) -> int:
    for name, size in _ALGORITHMS.values():
        if name == bank:
            return size
    raise UnsupportedAlgorithm(f"event log: unknown bank {bank!r}")


def selection_digest(
    values: Mapping[str, Mapping[int, bytes]],
    pcr_selection: Mapping[str, Sequence[int]],
    digest_alg: str,
) -> bytes:
    """The digest a quote's pcrDigest holds for these PCR values: ``digest_alg`` over the
    selected values, banks in the order given and each bank's PCRs ascending (Part 3 §18.4)."""
    hasher = _hasher(digest_alg)
    try:
        joined = b"".join(
            values[bank][pcr] for bank, pcrs in pcr_selection.items() for pcr in sorted(set(pcrs))
        )
    except KeyError as exc:
        raise InvalidData(f"event log: no value for {exc} in the PCR values given") from None
    return hasher(joined)


def first_difference(
    replayed: Mapping[str, Mapping[int, bytes]], quoted: Mapping[str, Mapping[int, bytes]]
) -> PcrDifference | None:
    """The first PCR, in the quoted banks' order and ascending within a bank, whose replayed
    value differs from the quoted one; None when all agree."""
    for bank, values in quoted.items():
        ours = replayed.get(bank, {})
        for pcr in sorted(values):
            if ours.get(pcr) != values[pcr]:
                return PcrDifference(bank, pcr, ours.get(pcr), values[pcr])
    return None


#: The banks and PCRs whose events count for facts: {bank: PCRs}, or None for every event.
_Coverage = Mapping[str, frozenset[int]] | None

#: The labels GRUB (2.04+) puts before the strings it measures into PCR 8: the digest is of
#: the string after the label, without its NUL (grub-core/commands/tpm.c, "grub_cmd: ",
#: "kernel_cmdline: ", "module_cmdline: "). The label is in no digest: a device may give a
#: string any of them, or none.
GRUB_LABELS = ("grub_cmd: ", "kernel_cmdline: ", "module_cmdline: ")
#: GRUB's commands that start a kernel, a module or an EFI image with arguments: their
#: arguments (the path first, as GRUB's kernel_cmdline has it) are a command line, whatever
#: label the log gives the command (``command_lines``).
LOADER_COMMANDS = frozenset(
    {
        "linux",
        "linuxefi",
        "linux16",
        "chainloader",
        "multiboot",
        "multiboot2",
        "module",
        "module2",
        "xen_hypervisor",
        "xen_module",
        "kfreebsd",
        "knetbsd",
        "kopenbsd",
        "legacy_kernel",
        "xnu_kernel",
        "xnu_kernel64",
        "appleloader",
        "plan9",
    }
)


def grub_string(data: bytes) -> tuple[str, bytes] | None:
    """A GRUB string of PCR 8 split at its label: (the label, the bytes GRUB hashed: the rest,
    without the NUL); None where the data starts with no GRUB label."""
    text = data.rstrip(b"\0")
    for label in GRUB_LABELS:
        if text.startswith(label.encode()):
            return label, text[len(label) :]
    return None


def command_lines_of(label: str | None, text: str) -> tuple[str, ...]:
    """The command lines a string of PCR 8 measured, read the same whatever its label: the
    arguments of a ``LOADER_COMMANDS`` command, and any other string but a GRUB command
    (``grub_cmd: ``) as a whole: a kernel's or a module's command line, or a string with no
    label (old systemd-boot's, or a GRUB string whose label was taken off). A "command" that
    starts with a path ("/" or "(": no GRUB command is named so) is a command line labelled
    as a command: GRUB's kernel_cmdline starts with the kernel's path."""
    words = text.split(None, 1)
    if words and words[0] in LOADER_COMMANDS:
        return (words[1].strip() if len(words) > 1 else "",)
    if label == "grub_cmd: " and not text.lstrip().startswith(("/", "(")):
        return ()
    return (text.strip(),)


def measured_data(event: Event) -> tuple[bytes, ...] | None:
    """What an event's digest is a hash of, where it is defined by the event's data: the
    candidates, any of which a genuine event's digest is the hash of; None where the digest is
    of something not in the log (a PE image's Authenticode hash, a file, a firmware region, a
    MOK list), whose data is then a label no replay vouches for.

    By the PFP 1.05 (§10.4.1, Table 9; §3.3.4 per PCR) and the boot loaders that extend it:
    EV_EFI_VARIABLE_DRIVER_CONFIG and EV_EFI_VARIABLE_AUTHORITY, the UEFI_VARIABLE_DATA (shim
    and GCE's firmware log an authority with one byte past what they hashed, after the
    variable's data); EV_SEPARATOR, its 4 bytes of data (or 00000001h for an error separator,
    whose data is free); EV_EFI_ACTION, EV_ACTION and EV_OMIT_BOOT_DEVICE_EVENTS, their string
    (data that is not a string matches nothing: an event relabelled to one of these types cannot
    pass); EV_S_CRTM_VERSION, its data (a string, a GUID, or HP's binary version); Windows'
    EV_EVENT_TAG in PCRs 12-14, the tagged event; EV_IPL in PCR 8, GRUB's string after its label
    or systemd-boot's UTF-16 command line (with its NUL; old versions log one byte short), and
    in PCR 12 systemd-stub's UTF-16 command line. The event type and the data are the fields no
    digest covers; these checks are what binds them."""
    kind, data, pcr = event.event_type, event.data, event.pcr
    if kind == EV_EFI_VARIABLE_DRIVER_CONFIG:
        return (data,)
    if kind == EV_EFI_VARIABLE_AUTHORITY:
        decoded = event.decoded
        if isinstance(decoded, EfiVariable) and decoded.trailing:
            return data, data[:-1]
        return (data,)
    if kind == EV_SEPARATOR:  # a delimiter is 4 bytes; an error separator's data is free
        return (data, _SEPARATOR_ERROR) if len(data) == 4 else (_SEPARATOR_ERROR,)
    if kind == EV_S_CRTM_VERSION:  # a string, a GUID, or (HP) binary: only a string is a fact
        return (data, *_text_forms(event.decoded))
    if kind in (EV_EFI_ACTION, EV_ACTION, EV_OMIT_BOOT_DEVICE_EVENTS):
        decoded = event.decoded  # a string, or nothing matches (binary data is no action)
        return (data, *_text_forms(decoded)) if isinstance(decoded, EventText) else ()
    if kind == EV_EVENT_TAG and pcr in (12, 13, 14):
        return (data,)
    if kind == EV_IPL and pcr == 8:
        grub = grub_string(data)
        if grub is not None:
            return (grub[1],)
        return (data, *_text_forms(event.decoded))
    if kind == EV_IPL and pcr == 12:
        decoded = event.decoded
        if isinstance(decoded, EventText) and decoded.encoding == "utf-16le":
            return (data, *_text_forms(decoded))
    return None


def _text_forms(decoded: Decoded) -> tuple[bytes, ...]:
    """The encodings of a decoded string that a digest may be of: the text alone and with its
    NUL, in the encoding it was read in (the text is the fact, so these are all it can be)."""
    if not isinstance(decoded, EventText) or decoded.encoding == "guid":
        return ()
    if decoded.encoding == "utf-16le":
        wide = decoded.text.encode("utf-16-le")
        return wide, wide + b"\0\0"
    narrow = decoded.text.encode("utf-8")
    return narrow, narrow + b"\0"


def data_matches(event: Event, banks: Iterable[str]) -> bool | None:
    """Whether the event's data is what its digests in ``banks`` measured (``measured_data``):
    True when every one of those digests it has is the hash of a candidate, False when one is
    not, None when the digest is not defined over the data (or the event has none of the
    banks). A replay proves the digests; only this ties data to them."""
    candidates = measured_data(event)
    if candidates is None:
        return None
    found = False
    for bank in banks:
        digest = event.digests.get(bank)
        hasher = _HASHERS.get(bank)
        if digest is None or hasher is None:
            continue
        if not any(hasher(candidate) == digest for candidate in candidates):
            return False
        found = True
    return True if found else None


def read_event_log(path: str | os.PathLike[str] = KERNEL_EVENT_LOG) -> bytes:
    """The bytes of an event log file: by default the kernel's (``KERNEL_EVENT_LOG``, the boot
    the TPM measured), read to its end (securityfs gives no size) up to ``MAX_LOG_SIZE``.
    A log that cannot be read is ``HardwareUnavailable`` saying why: readable by root only,
    missing (no TPM, no measured boot, or securityfs not mounted), or another OS error; a
    larger one is ``InvalidData``. The bytes are not parsed here."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_LOG_SIZE + 1)
    except PermissionError as exc:
        raise HardwareUnavailable(
            f"the event log {shown} is readable by root only (or a group your distribution "
            "sets): run as root or copy it"
        ) from exc
    except FileNotFoundError as exc:
        why = (
            "no TPM, firmware that logs no measured boot, or securityfs not mounted "
            "(mount -t securityfs securityfs /sys/kernel/security)"
            if shown == KERNEL_EVENT_LOG
            else "no such file"
        )
        raise HardwareUnavailable(f"no event log at {shown}: {why}") from exc
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise HardwareUnavailable(f"the event log {shown} cannot be read: {reason}") from exc
    if len(data) > MAX_LOG_SIZE:
        raise InvalidData(f"event log {shown}: more than the {MAX_LOG_SIZE} bytes allowed")
    return data


# --- Parsing ---------------------------------------------------------------------------------

_SHA1_HEADER = struct.Struct("<II20sI")
_AGILE_HEADER = struct.Struct("<III")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


def _error(index: int, offset: int, detail: str) -> InvalidData:
    return InvalidData(f"event log: event {index} at offset {offset}: {detail}")


def _truncated(
    data: bytes, index: int, offset: int, fields: Sequence[tuple[str, int]], start: int
) -> InvalidData:
    """The error for a structure cut short: names the first field that does not fit."""
    position = start
    for name, size in fields:
        if position + size > len(data):
            left = len(data) - position
            return _error(
                index,
                offset,
                f"truncated: {name} at offset {position} needs {size} bytes, {left} left",
            )
        position += size
    return _error(index, offset, "truncated")  # pragma: no cover - callers check first


_SHA1_FIELDS = (("PCR index", 4), ("event type", 4), ("SHA-1 digest", 20), ("event size", 4))
_AGILE_FIELDS = (("PCR index", 4), ("event type", 4), ("digest count", 4))


def _event_data(data: bytes, index: int, offset: int, size_at: int, size: int) -> bytes:
    """The event data after an eventSize field at ``size_at``, within the limits."""
    if size > MAX_EVENT_DATA:
        raise _error(
            index, offset, f"event size at offset {size_at}: {size} is more than {MAX_EVENT_DATA}"
        )
    start = size_at + 4
    if size > len(data) - start:
        raise _error(
            index,
            offset,
            f"truncated: event data at offset {start} needs {size} bytes, {len(data) - start} left",
        )
    return data[start : start + size]


def parse_event_log(data: bytes) -> EventLog:
    """Parse a TCG PC Client event log of either format (PFP 1.05 §10.2.1 TCG_PCClientPCREvent,
    the SHA-1 log; §10.2.2 TCG_PCR_EVENT2 after a Spec ID event, §10.4.5.1, the crypto-agile
    log). Little-endian throughout. The log's size is checked first (``MAX_LOG_SIZE``), then
    the event count, each event's data size and digest count as they are read; digests must
    have the size the Spec ID event declares for their algorithm, and an algorithm it does not
    declare is an error. Every malformed log is ``InvalidData`` naming the event, its offset
    and the field."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidData(f"event log: bytes expected, not {type(data).__name__}")
    try:
        size = len(data)  # before any copy
    except ValueError:  # a released memoryview
        size = 0
    if size > MAX_LOG_SIZE:
        raise InvalidData(f"event log: {size} bytes is more than the {MAX_LOG_SIZE} allowed")
    data = readable_bytes(data, "event log")
    if not data:
        raise InvalidData("event log: empty (no events)")
    if len(data) < _SHA1_HEADER.size:
        raise _truncated(data, 0, 0, _SHA1_FIELDS, 0)
    pcr, event_type, digest, size = _SHA1_HEADER.unpack_from(data, 0)
    first_data = _event_data(data, 0, 0, 28, size)
    if event_type == EV_NO_ACTION and first_data[:16] == _SPEC_ID_SIGNATURE:
        spec_id = _parse_spec_id(first_data, pcr, digest)
        first = Event(
            0,
            0,
            pcr,
            event_type,
            _type_name(event_type),
            FrozenMapping({"sha1": digest}),
            first_data,
            spec_id.uintn_size,
        )
        events = _parse_agile(data, 32 + size, spec_id, first)
        banks = tuple(alg.name for alg in spec_id.algorithms)
        return EventLog(events, banks, spec_id, True)
    return EventLog(_parse_sha1(data), ("sha1",), None, False)


def _parse_sha1(data: bytes) -> tuple[Event, ...]:
    """The events of a SHA-1 log, each a TCG_PCClientPCREvent {PCRIndex, EventType, digest[20],
    EventSize, Event} (PFP 1.05 §10.2.1)."""
    events: list[Event] = []
    offset, end, index = 0, len(data), 0
    unpack = _SHA1_HEADER.unpack_from
    while offset < end:
        if index >= MAX_EVENTS:
            raise _error(index, offset, f"more than {MAX_EVENTS} events")
        if end - offset < 32:
            raise _truncated(data, index, offset, _SHA1_FIELDS, offset)
        pcr, event_type, digest, size = unpack(data, offset)
        event_data = _event_data(data, index, offset, offset + 28, size)
        events.append(
            Event(
                index,
                offset,
                pcr,
                event_type,
                _type_name(event_type),
                FrozenMapping({"sha1": digest}),
                event_data,
            )
        )
        offset += 32 + size
        index += 1
    return tuple(events)


def _parse_agile(data: bytes, offset: int, spec_id: SpecIdEvent, first: Event) -> tuple[Event, ...]:
    """The events after the Spec ID event, each a TCG_PCR_EVENT2 {PCRIndex, EventType,
    TPML_DIGEST_VALUES {count, {hashAlg, digest}...}, EventSize, Event} (PFP 1.05 §10.2.2)."""
    declared = {alg.alg_id: (alg.name, alg.digest_size) for alg in spec_id.algorithms}
    most = len(declared)
    uintn = spec_id.uintn_size
    events: list[Event] = [first]
    end, index = len(data), 1
    unpack_header, unpack_u16, unpack_u32 = (
        _AGILE_HEADER.unpack_from,
        _U16.unpack_from,
        _U32.unpack_from,
    )
    while offset < end:
        if index >= MAX_EVENTS:
            raise _error(index, offset, f"more than {MAX_EVENTS} events")
        if end - offset < 12:
            raise _truncated(data, index, offset, _AGILE_FIELDS, offset)
        pcr, event_type, count = unpack_header(data, offset)
        if count > most:
            raise _error(
                index,
                offset,
                f"digest count at offset {offset + 8}: {count} is more than the {most} "
                "algorithms the Spec ID event declares",
            )
        position = offset + 12
        digests: dict[str, bytes] = {}
        for number in range(count):
            if end - position < 2:
                raise _error(
                    index,
                    offset,
                    f"truncated: digest {number} algorithm at offset {position} needs 2 bytes, "
                    f"{end - position} left",
                )
            alg = unpack_u16(data, position)[0]
            known = declared.get(alg)
            if known is None:
                raise _error(
                    index,
                    offset,
                    f"digest {number} at offset {position}: algorithm 0x{alg:04x} is not one "
                    "the Spec ID event declares",
                )
            name, size = known
            if name in digests:
                raise _error(
                    index, offset, f"digest {number} at offset {position}: a second {name} digest"
                )
            position += 2
            if end - position < size:
                raise _error(
                    index,
                    offset,
                    f"truncated: {name} digest at offset {position} needs {size} bytes, "
                    f"{end - position} left",
                )
            digests[name] = data[position : position + size]
            position += size
        if end - position < 4:
            raise _error(
                index,
                offset,
                f"truncated: event size at offset {position} needs 4 bytes, {end - position} left",
            )
        size = unpack_u32(data, position)[0]
        event_data = _event_data(data, index, offset, position, size)
        events.append(
            Event(
                index,
                offset,
                pcr,
                event_type,
                _type_name(event_type),
                FrozenMapping(digests),
                event_data,
                uintn,
            )
        )
        offset = position + 4 + size
        index += 1
    return tuple(events)


def _parse_spec_id(data: bytes, pcr: int, digest: bytes) -> SpecIdEvent:
    """TCG_EfiSpecIDEvent (PFP 1.05 §10.4.5.1): the signature "Spec ID Event03", platformClass,
    specVersionMinor 0, specVersionMajor 2, specErrata, uintnSize (1 or 2), numberOfAlgorithms
    and that many {algorithmId, digestSize}, vendorInfoSize and vendorInfo, filling the event.
    It is logged in PCR 0 with a zero SHA-1 digest. A known algorithm must have its own digest
    size; an unknown one is kept as alg_0x.... (not replayed)."""

    def fail(detail: str) -> InvalidData:
        return _error(0, 0, f"Spec ID event: {detail}")

    if pcr != 0:
        raise fail(f"PCR index {pcr}, not 0")
    if digest != bytes(20):
        raise fail("its digest is not zero")
    if len(data) < 28:
        raise fail(f"truncated: {len(data)} bytes, the header needs 28")
    platform_class, minor, major, errata, uintn, count = struct.unpack_from("<IBBBBI", data, 16)
    if (major, minor) != (2, 0):
        raise fail(f"spec version {major}.{minor}, not 2.0")
    if uintn not in (1, 2):
        raise fail(f"uintnSize {uintn}, not 1 or 2")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise fail(f"numberOfAlgorithms {count}, not 1 to {MAX_ALGORITHMS}")
    if len(data) < 28 + 4 * count + 1:
        raise fail(f"truncated: {count} algorithms and vendorInfoSize need {4 * count + 1} bytes")
    algorithms: list[SpecIdAlgorithm] = []
    for number in range(count):
        alg, size = struct.unpack_from("<HH", data, 28 + 4 * number)
        known = _ALGORITHMS.get(alg)
        if known is not None and known[1] != size:
            raise fail(f"algorithm {known[0]} declared with digest size {size}, not {known[1]}")
        if not 1 <= size <= 256:
            raise fail(f"algorithm 0x{alg:04x} declared with digest size {size}")
        if any(found.alg_id == alg for found in algorithms):
            raise fail(f"algorithm 0x{alg:04x} declared twice")
        name = known[0] if known else f"alg_0x{alg:04x}"
        algorithms.append(SpecIdAlgorithm(alg, name, size))
    vendor_size = data[28 + 4 * count]
    vendor_start = 29 + 4 * count
    if len(data) - vendor_start != vendor_size:
        raise fail(f"vendorInfoSize {vendor_size}, but {len(data) - vendor_start} bytes follow it")
    return SpecIdEvent(
        platform_class, major, minor, errata, uintn, tuple(algorithms), data[vendor_start:]
    )


# --- Decoding event data ---------------------------------------------------------------------


def _decode(event: Event) -> Decoded:
    """The decoded form of an event's data for its type, or None (the data stays raw)."""
    event_type, data = event.event_type, event.data
    if event_type == EV_NO_ACTION:
        return _decode_no_action(event)
    if event_type == EV_SEPARATOR:
        return _decode_separator(event)
    if event_type in (EV_EFI_VARIABLE_DRIVER_CONFIG, EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_BOOT2):
        return decode_variable(data)
    if event_type == EV_EFI_VARIABLE_AUTHORITY:
        return decode_variable(data, authority=True)
    if event_type in (
        EV_EFI_BOOT_SERVICES_APPLICATION,
        EV_EFI_BOOT_SERVICES_DRIVER,
        EV_EFI_RUNTIME_SERVICES_DRIVER,
    ):
        return decode_image_load(data, _uintn_bytes(event.uintn_size))
    if event_type == EV_EFI_PLATFORM_FIRMWARE_BLOB:
        return decode_firmware_blob(data)
    if event_type == EV_EFI_PLATFORM_FIRMWARE_BLOB2:
        return decode_firmware_blob2(data)
    if event_type == EV_EFI_GPT_EVENT:
        return decode_gpt(data)
    if event_type == EV_EVENT_TAG:
        return _decode_tagged(data)
    if event_type == EV_S_CRTM_VERSION:
        if data and len(data) % 2 == 0 and not any(data):
            return EventText("", "utf-16le")  # an empty CHAR16 string, as OVMF logs
        return _decode_text(data) or (
            EventText("{" + guid_text(data) + "}", "guid") if len(data) == 16 else None
        )
    if event_type in (EV_POST_CODE, EV_S_CRTM_CONTENTS):
        return _decode_text(data) or decode_firmware_blob(data)
    if event_type == EV_POST_CODE2:
        return _decode_text(data) or decode_firmware_blob2(data)
    if event_type in (
        EV_ACTION,
        EV_EFI_ACTION,
        EV_IPL,
        EV_COMPACT_HASH,
        EV_OMIT_BOOT_DEVICE_EVENTS,
        EV_EFI_HCRTM_EVENT,
    ):
        return _decode_text(data)
    return None


def _uintn_bytes(uintn_size: int | None) -> int | None:
    """The width of a UINTN field: the Spec ID event's uintnSize (1: 4 bytes, 2: 8 bytes), or
    unknown for a SHA-1 log (then both are tried)."""
    return {1: 4, 2: 8}.get(uintn_size) if uintn_size is not None else None


def _decode_text(data: bytes) -> EventText | None:
    found = text_of(data)
    return EventText(*found) if found else None


def _decode_no_action(event: Event) -> Decoded:
    """EV_NO_ACTION (PFP 1.05 §10.4.5): the event data starts with a 16-byte signature that
    says which structure follows."""
    data = event.data
    signature = data[:16]
    if signature == _SPEC_ID_SIGNATURE:
        if event.index == 0:
            try:
                return _parse_spec_id(data, event.pcr, event.digests.get("sha1", b""))
            except InvalidData:
                pass
        return NoActionEvent("Spec ID Event03", data)
    if signature == _STARTUP_LOCALITY_SIGNATURE and len(data) == 17:
        return StartupLocality(data[16])
    if signature == _HCRTM_SIGNATURE:
        found = _decode_hcrtm(data)
        if found is not None:
            return found
    if event.pcr == 0xFFFFFFFF:
        records = parse_sipa(data)
        if records:
            return NoActionEvent("", data, records)
    name = signature.rstrip(b"\0").decode("latin-1")
    return NoActionEvent(name if name.isascii() and name.isprintable() else "", data)


def _decode_hcrtm(data: bytes) -> HcrtmComponent | None:
    """TCG_HCRTMComponentEvent: signature, UINT8-sized description, UINT8 measurement format
    (0: a TPMT_HA digest, 0x80: raw data), UINT16-sized measurement."""
    if len(data) < 17:
        return None
    size = data[16]
    position = 17 + size
    if len(data) < position + 3:
        return None
    description = data[17:position].decode("ascii")
    measurement_format = data[position]
    length = _U16.unpack_from(data, position + 1)[0]
    if len(data) != position + 3 + length:
        return None
    return HcrtmComponent(description, measurement_format, data[position + 3 :])


def _decode_separator(event: Event) -> Separator | None:
    """EV_SEPARATOR: an error separator's digest is the hash of 00000001h whatever its data;
    a delimiter's data is 00000000h or FFFFFFFFh (PFP 1.05 §3.3.2, §10.4.1), or in Windows'
    PCRs 12-14 "WBCL" (0x4C434257)."""
    for bank, digest in event.digests.items():
        hasher = _HASHERS.get(bank)
        if hasher is not None and digest == hasher(_SEPARATOR_ERROR):
            return Separator(None, True)
    if len(event.data) == 4:
        return Separator(_U32.unpack(event.data)[0], False)
    return None


def _decode_tagged(data: bytes) -> TaggedEvent | None:
    """TCG_PCClientTaggedEvent {taggedEventID, taggedEventDataSize, taggedEventData}; a
    Windows SIPA container (an aggregation of the container class, e.g. SIPAEVENT_TRUSTBOUNDARY)
    holds SIPA records."""
    if len(data) < 8:
        return None
    tag_id, size = struct.unpack_from("<II", data)
    if size != len(data) - 8:
        return None
    body = data[8:]
    records = None
    if tag_id & SIPA_AGGREGATION and tag_id & 0x000F0000 == 0x00010000:
        records = parse_sipa(body)
    name = _TAG_NAMES.get(tag_id) or sipa_name(tag_id)
    found = text_of(body) if records is None else None
    return TaggedEvent(tag_id, name, body, records, found[0] if found else None)


#: Tagged events of the Linux EFI stub (drivers/firmware/efi/libstub: the initrd and the
#: kernel's load options, PCR 9).
_TAG_NAMES = {0x8F3B22EC: "LINUX_INITRD", 0x8F3B22ED: "LINUX_LOAD_OPTIONS"}


# --- Boot facts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """An EV_EFI_VARIABLE_AUTHORITY event (PCR 7): the variable whose entry verified a loaded
    image (db, or shim's MokListRT / Shim / SbatLevel...), and that entry where it is a
    certificate or a hash (None: neither, as shim's SbatLevel and MokListTrusted state)."""

    event_index: int
    variable: str
    guid: str
    entry: SignatureEntry | None
    data: bytes


@dataclass(frozen=True)
class LoadedImage:
    """A PE image the firmware loaded (EV_EFI_BOOT_SERVICES_APPLICATION, _DRIVER,
    EV_EFI_RUNTIME_SERVICES_DRIVER): its Authenticode digests by bank, and its device path and
    length as the firmware logged them (labels: the digest is of the image, not of these)."""

    event_index: int
    pcr: int
    event_type: str
    digests: Mapping[str, bytes]
    device_path: str | None
    length: int | None


@dataclass(frozen=True)
class MokVariable:
    """A measurement of shim's state: MokList, MokListX, MokListTrusted (EV_IPL in PCR 14, only
    the digest: the contents are not in the log) or SbatLevel / MokListTrusted in PCR 7 (with
    the variable's data)."""

    event_index: int
    name: str
    pcr: int
    digests: Mapping[str, bytes]
    data: bytes | None


@dataclass(frozen=True)
class LoaderMeasurement:
    """An event of the boot loader or kernel stub (PCRs 8, 9, 11, 12: GRUB's commands, command
    lines and files, systemd-boot's and systemd-stub's measurements): its text where it is one.
    ``text_measured``: the digest is of the text itself (a command, a command line); otherwise
    the text is a label (a file's path) and the digest is of what it names. ``label``: the GRUB
    label a PCR 8 string carries (in ``text`` too; in no digest), whose rest is read as strict
    UTF-8: a string that is not has no text (a policy reading it refuses), never an escaped
    form that a pattern could read otherwise than the kernel does."""

    event_index: int
    pcr: int
    event_type: str
    text: str | None
    digests: Mapping[str, bytes]
    text_measured: bool = False
    label: str | None = None


@dataclass(frozen=True)
class Measurement:
    """An event that extended a PCR the facts read: its index, type name and whether its data
    is what its digest measured (``data_matches``: True, False, or None where the digest is of
    something not in the log), and its data as its type decodes it (``Event.decoded``): what a
    policy checks the log's structure with, to be believed only where ``data_verified``."""

    event_index: int
    event_type: str
    data_verified: bool | None
    decoded: Decoded = field(default=None, repr=False)


@dataclass(frozen=True)
class RevocationList:
    """A Windows boot or code-integrity revocation list as measured (SIPAEVENT_BOOT_ /
    OS_REVOCATION_LIST: its creation time as a FILETIME, and its digest), which Device Health
    Attestation reports as the list's version."""

    creation_time: int
    hash_algorithm: int
    digest: bytes


@dataclass(frozen=True)
class ElamDriver:
    """An Early Launch Anti-Malware driver's measured registry values (SIPAEVENT_ELAM_*)."""

    name: str
    measured: bytes | None
    configuration: bytes | None
    policy: bytes | None


@dataclass(frozen=True)
class WindowsModule:
    """A module Windows' boot loaders loaded (SIPAEVENT_LOADEDMODULE_AGGREGATION records with
    one Authenticode hash, merged: Windows logs a module again, with only its hash and image
    base, each time it is loaded at another address)."""

    file_path: str | None
    authenticode_hash: str | None
    image_bases: tuple[int, ...]
    hash_algorithm: int | None
    image_size: int | None
    image_validated: bool | None
    authority_issuer: str | None
    authority_publisher: str | None
    authority_serial: str | None
    authority_sha1: str | None


#: The fields of a module record that a later record of the same module may fill in.
_MODULE_FIELDS = tuple(
    found.name for found in dataclasses.fields(WindowsModule) if found.name != "image_bases"
)

#: FVEB_UNLOCK_FLAG_* of SIPAEVENT_BITLOCKER_UNLOCK: how BitLocker unlocked the OS volume.
BITLOCKER_FLAGS = {
    0x01: "cached",
    0x02: "media",
    0x04: "tpm",
    0x10: "pin",
    0x20: "external",
    0x40: "recovery",
}


@dataclass(frozen=True)
class WindowsFacts:
    """The boot facts Windows' boot manager and loader record as SIPA events in PCRs 12-14
    (those before each PCR's "WBCL" separator) and Device Health Attestation reports. The
    security-weakening switches (debugging, test signing) are True if any event set them; code
    integrity and DEP are False if any event cleared them, None if none said."""

    boot_count: int | None
    cold_boot: bool | None
    bitlocker_unlocks: tuple[int, ...]
    boot_debugging: bool
    kernel_debugging: bool
    hypervisor_debugging: bool
    test_signing: bool
    flight_signing: bool
    code_integrity: bool | None
    dep: bool | None
    safe_mode: bool
    winpe: bool
    hypervisor_launch_type: int | None
    vsm_launch_type: int | None
    elam_drivers: tuple[ElamDriver, ...]
    loaded_modules: tuple[WindowsModule, ...]
    boot_revocation_list: RevocationList | None = None
    os_revocation_list: RevocationList | None = None

    @property
    def bitlocker(self) -> bool:
        """Whether BitLocker unlocked the OS volume in this boot (an unlock was measured)."""
        return bool(self.bitlocker_unlocks)

    @staticmethod
    def bitlocker_flags(value: int) -> tuple[str, ...]:
        """The names of an unlock's flags (unknown bits as hex)."""
        names = [name for bit, name in BITLOCKER_FLAGS.items() if value & bit]
        rest = value & ~sum(BITLOCKER_FLAGS)
        return (*names, f"0x{rest:x}") if rest else tuple(names)


@dataclass(frozen=True)
class BootFacts:
    """What a log says booted, read from its events (PFP 1.05 §3.3.4 PCR usage). Trust them as
    far as the replay that ties the log to a quote: every fact comes from events whose digests
    the replay used, but most event data is not itself what was measured (shim's MOK lists,
    images), and a fact from a PCR the quote did not select proves nothing.

    ``secure_boot``: the SecureBoot variable (EV_EFI_VARIABLE_DRIVER_CONFIG, PCR 7), None if not
    measured; ``pk``/``kek``/``db``/``dbx``: their entries, None if not measured; ``authorities``:
    EV_EFI_VARIABLE_AUTHORITY events; ``boot_applications``: PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION
    events, ``drivers`` the boot and runtime drivers (option ROMs); ``mok``: shim's MOK and SBAT
    measurements; ``boot_loader``: PCR 8/9/11/12 events, with GRUB's commands and the kernel
    command lines picked out; ``separators``: the PCRs a separator was seen in, and those where
    it was an error; ``exit_boot_services``: the firmware logged ExitBootServices;
    ``firmware_debug_mode``: the firmware logged "UEFI Debug Mode"; ``windows``: SIPA facts.

    ``banks``: the banks whose digests the facts were checked against (and the only digests
    they hold); ``measurements``: per PCR read (every covered one, with or without events), the
    events that counted, in order, with whether their data matched their digests;
    ``firmware_versions``: every EV_S_CRTM_VERSION string; ``command_lines``: every command
    line measured in PCRs 8 and 12, read the same whatever label a string carries
    (``command_lines_of``: GRUB's kernel and module command lines, the arguments of its loader
    commands, strings without a label, systemd's UTF-16 lines). Data that does not match a
    digest defined over it gives no fact (``data_mismatches``)."""

    secure_boot: bool | None
    pk: tuple[SignatureEntry, ...] | None
    kek: tuple[SignatureEntry, ...] | None
    db: tuple[SignatureEntry, ...] | None
    dbx: tuple[SignatureEntry, ...] | None
    authorities: tuple[Authority, ...]
    boot_applications: tuple[LoadedImage, ...]
    drivers: tuple[LoadedImage, ...]
    mok: tuple[MokVariable, ...]
    sbat_level: str | None
    boot_loader: tuple[LoaderMeasurement, ...]
    grub_commands: tuple[str, ...]
    kernel_cmdlines: tuple[str, ...]
    firmware_version: str | None
    startup_locality: int
    h_crtm: bool
    separators: tuple[int, ...]
    separator_errors: tuple[int, ...]
    exit_boot_services: bool
    firmware_debug_mode: bool
    actions: tuple[str, ...]
    windows: WindowsFacts | None
    banks: tuple[str, ...] = ()
    measurements: Mapping[int, tuple[Measurement, ...]] = field(
        default_factory=lambda: FrozenMapping({})
    )
    firmware_versions: tuple[str, ...] = ()
    command_lines: tuple[str, ...] = ()

    @property
    def kernel_cmdline(self) -> str | None:
        """The last kernel command line measured (the one the kernel got)."""
        return self.kernel_cmdlines[-1] if self.kernel_cmdlines else None

    @property
    def pcrs(self) -> tuple[int, ...]:
        """The PCRs the facts were read from: those covered (a quoted PCR without events
        included), or without coverage those with an event that counted."""
        return tuple(sorted(self.measurements))

    @property
    def data_mismatches(self) -> tuple[Measurement, ...]:
        """The events whose data is not what their digest measured: they gave no fact."""
        return tuple(
            m
            for pcr in sorted(self.measurements)
            for m in self.measurements[pcr]
            if m.data_verified is False
        )


_MOK_NAMES = frozenset({"MokList", "MokListX", "MokListTrusted", "SbatLevel", "MokListRT"})


def _entries(variable: EfiVariable) -> tuple[SignatureEntry, ...] | None:
    if variable.signature_lists is None:
        return None
    return tuple(entry for found in variable.signature_lists for entry in found.entries)


def _facts(log: EventLog, events: Sequence[Event], coverage: _Coverage) -> BootFacts:
    """Read the boot facts from the events that ``coverage`` covers and whose data matches
    their digests where it is defined over them; each decoder returns None for what it does not
    understand, so this never raises on a parsed log."""
    secure_boot: bool | None = None
    databases: dict[str, tuple[SignatureEntry, ...] | None] = {}
    authorities: list[Authority] = []
    applications: list[LoadedImage] = []
    drivers: list[LoadedImage] = []
    mok: list[MokVariable] = []
    sbat_level: str | None = None
    loader: list[LoaderMeasurement] = []
    grub_commands: list[str] = []
    cmdlines: list[str] = []
    command_lines: list[str] = []
    versions: list[str] = []
    separators: set[int] = set()
    separator_errors: set[int] = set()
    exit_boot_services = debug_mode = False
    actions: list[str] = []
    windows_events: list[Event] = []
    closed: set[int] = set()
    # every covered PCR is listed, those without events too (their quoted value is the start)
    measurements: dict[int, list[Measurement]] = {
        pcr: [] for pcrs in (coverage or {}).values() for pcr in pcrs
    }
    banks_seen: set[str] = set(coverage or ())

    for event in events:
        kind, pcr = event.event_type, event.pcr
        if kind == EV_NO_ACTION:
            continue  # extends nothing: no replay vouches for it
        banks = _checking_banks(log, event, coverage)
        if not banks:
            continue
        banks_seen.update(banks)
        verified = data_matches(event, banks)
        decoded = event.decoded
        measurements.setdefault(pcr, []).append(
            Measurement(event.index, event.type_name, verified, decoded)
        )
        if verified is False:
            continue
        digests: Mapping[str, bytes] = FrozenMapping({b: event.digests[b] for b in banks})
        if isinstance(decoded, EfiVariable):
            if kind == EV_EFI_VARIABLE_AUTHORITY and pcr == 7:
                authorities.append(
                    Authority(
                        event.index, decoded.name, decoded.guid, decoded.authority, decoded.data
                    )
                )
            if kind == EV_EFI_VARIABLE_DRIVER_CONFIG and pcr == 7:
                key = (decoded.guid, decoded.name)
                if key == (EFI_GLOBAL_VARIABLE, "SecureBoot") and secure_boot is None:
                    secure_boot = {b"\x01": True, b"\x00": False, b"": False}.get(decoded.data)
                elif key in _DATABASES and _DATABASES[key] not in databases:
                    databases[_DATABASES[key]] = _entries(decoded)
            if decoded.guid == SHIM_LOCK and decoded.name in _MOK_NAMES and pcr == 7:
                mok.append(MokVariable(event.index, decoded.name, pcr, digests, decoded.data))
                if decoded.name == "SbatLevel":
                    sbat = text_of(decoded.data)
                    sbat_level = sbat[0] if sbat else sbat_level
        elif isinstance(decoded, ImageLoad) or kind in _IMAGE_EVENTS:
            image = LoadedImage(
                event.index,
                pcr,
                event.type_name,
                digests,
                decoded.device_path_text if isinstance(decoded, ImageLoad) else None,
                decoded.length if isinstance(decoded, ImageLoad) else None,
            )
            if kind == EV_EFI_BOOT_SERVICES_APPLICATION and pcr == 4:
                applications.append(image)
            elif kind in (EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER):
                drivers.append(image)
        elif isinstance(decoded, Separator) or kind == EV_SEPARATOR:
            separators.add(pcr)
            if isinstance(decoded, Separator) and decoded.error:
                separator_errors.add(pcr)
            if pcr in (12, 13, 14):
                closed.add(pcr)
        text = decoded.text if isinstance(decoded, EventText) else None
        if kind == EV_S_CRTM_VERSION and text is not None:
            versions.append(text)
        if kind in (EV_EFI_ACTION, EV_ACTION) and text is not None:
            actions.append(text)
            exit_boot_services |= text == "Exit Boot Services Invocation"
            debug_mode |= text == "UEFI Debug Mode" and pcr == 7
        if kind == EV_IPL and pcr == 14 and text is not None and text in _MOK_NAMES:
            mok.append(MokVariable(event.index, text, pcr, digests, None))
        if pcr in (8, 9, 11, 12) and kind in (EV_IPL, EV_EVENT_TAG):
            grub = grub_string(event.data) if kind == EV_IPL and pcr == 8 else None
            label = None if grub is None else grub[0]
            loader_text = text if text is not None else _tag_text(decoded)
            if grub is not None:  # read strictly: bytes that are no UTF-8 are no text
                try:
                    loader_text = grub[0] + grub[1].decode("utf-8")
                except UnicodeDecodeError:
                    loader_text = None
            loader.append(
                LoaderMeasurement(
                    event.index, pcr, event.type_name, loader_text, digests, verified is True,
                    label,
                )
            )  # fmt: skip
            if loader_text is not None and verified is True and kind == EV_IPL:
                body = loader_text[len(label or "") :]
                if label == "grub_cmd: ":
                    grub_commands.append(body)
                elif label == "kernel_cmdline: ":
                    cmdlines.append(body)
                elif label is None and pcr in (8, 12) and _utf16(decoded):
                    cmdlines.append(body.strip())  # systemd-boot's and systemd-stub's
                if pcr == 8:
                    command_lines.extend(command_lines_of(label, body))
                elif pcr == 12:
                    command_lines.append(body.strip())
        if kind == EV_EVENT_TAG and pcr in (12, 13, 14) and pcr not in closed:
            windows_events.append(event)

    return BootFacts(
        secure_boot=secure_boot,
        pk=databases.get("PK"),
        kek=databases.get("KEK"),
        db=databases.get("db"),
        dbx=databases.get("dbx"),
        authorities=tuple(authorities),
        boot_applications=tuple(applications),
        drivers=tuple(drivers),
        mok=tuple(mok),
        sbat_level=sbat_level,
        boot_loader=tuple(loader),
        grub_commands=tuple(grub_commands),
        kernel_cmdlines=tuple(cmdlines),
        firmware_version=versions[0] if versions else None,
        startup_locality=log.startup_locality,
        h_crtm=log.h_crtm,
        separators=tuple(sorted(separators)),
        separator_errors=tuple(sorted(separator_errors)),
        exit_boot_services=exit_boot_services,
        firmware_debug_mode=debug_mode,
        actions=tuple(actions),
        windows=_windows_facts(windows_events),
        banks=tuple(bank for bank in log.replayable_banks if bank in banks_seen),
        measurements=FrozenMapping(
            {pcr: tuple(found) for pcr, found in sorted(measurements.items())}
        ),
        firmware_versions=tuple(versions),
        command_lines=tuple(command_lines),
    )


def _utf16(decoded: Decoded) -> bool:
    return isinstance(decoded, EventText) and decoded.encoding == "utf-16le"


def _checking_banks(log: EventLog, event: Event, coverage: _Coverage) -> tuple[str, ...]:
    """The banks whose digests of this event the facts read: those of ``coverage`` that cover
    its PCR (or, without coverage, every bank a replay computes) that the event has."""
    if coverage is None:
        return tuple(bank for bank in log.replayable_banks if bank in event.digests)
    return tuple(
        bank for bank, pcrs in coverage.items() if event.pcr in pcrs and bank in event.digests
    )


_DATABASES = {
    (EFI_GLOBAL_VARIABLE, "PK"): "PK",
    (EFI_GLOBAL_VARIABLE, "KEK"): "KEK",
    (EFI_IMAGE_SECURITY_DATABASE, "db"): "db",
    (EFI_IMAGE_SECURITY_DATABASE, "dbx"): "dbx",
}
_IMAGE_EVENTS = frozenset(
    {EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_BOOT_SERVICES_DRIVER, EV_EFI_RUNTIME_SERVICES_DRIVER}
)


def _tag_text(decoded: Decoded) -> str | None:
    return decoded.text if isinstance(decoded, TaggedEvent) else None


def sipa_records(tagged: TaggedEvent) -> tuple[SipaRecord, ...] | None:
    """The SIPA records a Windows tagged event (PCRs 12-14) holds: a container's records, or
    the event itself as one record where it is none (Windows logs values at the top level
    too); None where its id is of no SIPA form (systemd-stub's add-ons) or its sizes do not
    tile (a record no reader can place)."""
    if tagged.records is not None:
        return tagged.records
    if tagged.tag_id & _NOT_SIPA:
        return None
    return parse_sipa(struct.pack("<II", tagged.tag_id, len(tagged.data)) + tagged.data)


#: The bits no SIPA event type sets (wbcl.h: a class in bits 16-19, a type below it, the
#: aggregation and trust-point flags in the top two).
_NOT_SIPA = 0x3FF00000


def _windows_facts(events: Sequence[Event]) -> WindowsFacts | None:
    """The SIPA facts of the EV_EVENT_TAG events in PCRs 12-14 (before each PCR's separator),
    every one read (``sipa_records``); None where there are none (not a Windows boot)."""
    records: list[tuple[int, SipaRecord]] = []
    for event in events:
        decoded = event.decoded
        found = sipa_records(decoded) if isinstance(decoded, TaggedEvent) else None
        if found is not None:
            records.extend((event.pcr, record) for record in found)
    if not records:
        return None
    state = _WindowsState()
    for pcr, record in records:
        state.read(pcr, record)
    return state.facts()


class _WindowsState:
    """The SIPA facts as they accumulate over the records, in log order."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.latched_on: set[str] = set()
        self.latched_off: dict[str, bool] = {}
        self.unlocks: list[int] = []
        self.elam: list[ElamDriver] = []
        # a module's first record, and its image bases in order (a list and a set: each record
        # adds in constant time, however many share a hash)
        self.modules: dict[str, tuple[WindowsModule, list[int], set[int]]] = {}
        self.lists: dict[str, RevocationList] = {}

    def read(self, pcr: int, record: SipaRecord) -> None:
        name = record.name.removeprefix("SIPAEVENT_")
        value = record.number
        if name in ("ELAM_AGGREGATION", "LOADEDMODULE_AGGREGATION"):
            children = {child.name.removeprefix("SIPAEVENT_"): child for child in record.children}
            if name == "ELAM_AGGREGATION":
                self.elam.append(_elam(children))
            else:
                self._add_module(_module(children))
            return
        for child in record.children:
            self.read(pcr, child)
        if name in ("BOOT_REVOCATION_LIST", "OS_REVOCATION_LIST"):
            found = _revocation_list(record.data)
            if found is not None:
                self.lists.setdefault(name, found)
            return
        if value is None:
            return
        if name in (
            "BOOTDEBUGGING",
            "OSKERNELDEBUG",
            "HYPERVISOR_DEBUG",
            "TESTSIGNING",
            "FLIGHTSIGNING",
            "SAFEMODE",
            "WINPE",
        ):
            if value:
                self.latched_on.add(name)
        elif name in ("CODEINTEGRITY", "DATAEXECUTIONPREVENTION"):
            self.latched_off[name] = self.latched_off.get(name, True) and bool(value)
        elif name == "BITLOCKER_UNLOCK":
            if pcr == 12:  # Windows measures each unlock into PCR 13 as well
                self.unlocks.append(value)
        elif name in (
            "BOOTCOUNTER",
            "TRANSFER_CONTROL",
            "HYPERVISOR_LAUNCH_TYPE",
            "VSM_LAUNCH_TYPE",
        ):
            self.numbers.setdefault(name, value)

    def _add_module(self, module: WindowsModule) -> None:
        key = module.authenticode_hash or f"#{len(self.modules)}"
        known = self.modules.get(key)
        if known is None:
            self.modules[key] = (module, list(module.image_bases), set(module.image_bases))
            return
        first, bases, seen = known
        if any(getattr(first, name) is None for name in _MODULE_FIELDS):  # fill what it lacks
            merged = {
                name: getattr(first, name) if getattr(first, name) is not None else value
                for name, value in vars(module).items()
            }
            self.modules[key] = (WindowsModule(**merged), bases, seen)
        for base in module.image_bases:
            if base not in seen:
                seen.add(base)
                bases.append(base)

    def facts(self) -> WindowsFacts:
        transfer = self.numbers.get("TRANSFER_CONTROL")
        return WindowsFacts(
            boot_count=self.numbers.get("BOOTCOUNTER"),
            cold_boot=None if transfer is None else transfer == 1,
            bitlocker_unlocks=tuple(self.unlocks),
            boot_debugging="BOOTDEBUGGING" in self.latched_on,
            kernel_debugging="OSKERNELDEBUG" in self.latched_on,
            hypervisor_debugging="HYPERVISOR_DEBUG" in self.latched_on,
            test_signing="TESTSIGNING" in self.latched_on,
            flight_signing="FLIGHTSIGNING" in self.latched_on,
            code_integrity=self.latched_off.get("CODEINTEGRITY"),
            dep=self.latched_off.get("DATAEXECUTIONPREVENTION"),
            safe_mode="SAFEMODE" in self.latched_on,
            winpe="WINPE" in self.latched_on,
            hypervisor_launch_type=self.numbers.get("HYPERVISOR_LAUNCH_TYPE"),
            vsm_launch_type=self.numbers.get("VSM_LAUNCH_TYPE"),
            elam_drivers=tuple(self.elam),
            loaded_modules=tuple(
                dataclasses.replace(module, image_bases=tuple(bases))
                for module, bases, _ in self.modules.values()
            ),
            boot_revocation_list=self.lists.get("BOOT_REVOCATION_LIST"),
            os_revocation_list=self.lists.get("OS_REVOCATION_LIST"),
        )


def _revocation_list(data: bytes) -> RevocationList | None:
    """SIPAEVENT_REVOCATION_LIST_PAYLOAD: CreationTime (a FILETIME), DigestLength (UINT32),
    HashAlgID (UINT16, a TPM_ALG_ID) and the digest, filling the record."""
    if len(data) < 14:
        return None
    creation, length, algorithm = struct.unpack_from("<QIH", data)
    if len(data) != 14 + length:
        return None
    return RevocationList(creation, algorithm, data[14:])


def _elam(children: Mapping[str, SipaRecord]) -> ElamDriver:
    def data(name: str) -> bytes | None:
        found = children.get(name)
        return found.data if found is not None else None

    key = children.get("ELAM_KEYNAME")
    return ElamDriver(
        (key.text or "") if key is not None else "",
        data("ELAM_MEASURED"),
        data("ELAM_CONFIGURATION"),
        data("ELAM_POLICY"),
    )


def _module(children: Mapping[str, SipaRecord]) -> WindowsModule:
    def text(name: str) -> str | None:
        found = children.get(name)
        return found.text if found is not None else None

    def number(name: str) -> int | None:
        found = children.get(name)
        return found.number if found is not None else None

    def hexed(name: str) -> str | None:
        found = children.get(name)
        return found.data.hex() if found is not None else None

    validated = number("IMAGEVALIDATED")
    base = number("IMAGEBASE")
    return WindowsModule(
        file_path=text("FILEPATH"),
        authenticode_hash=hexed("AUTHENTICODEHASH"),
        image_bases=() if base is None else (base,),
        hash_algorithm=number("HASHALGORITHMID"),
        image_size=number("IMAGESIZE"),
        image_validated=None if validated is None else validated == 1,
        authority_issuer=text("AUTHORITYISSUER"),
        authority_publisher=text("AUTHORITYPUBLISHER"),
        authority_serial=hexed("AUTHORITYSERIAL"),
        authority_sha1=hexed("AUTHORITYSHA1THUMBPRINT"),
    )
