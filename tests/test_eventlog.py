"""TCG event logs (entra_keys.tcg.eventlog): parsed, replayed and read, against real logs first.

The real logs (tests/vectors/realworld, SOURCES.md) parse and re-serialize to their own bytes;
they agree event by event with tpm2-tools' tpm2_eventlog, an independent parser (CI installs it),
whose event list this file replays by the spec's rules with its own code; and their replay gives
the PCR values and the pcrDigest that real quotes signed (a Windows vTPM on GCE, a COS vTPM on
GCE). Every malformed log is an InvalidData naming the offset; Hypothesis feeds random and mutated
logs and only InvalidData may escape.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import random
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_keys.attestation import BootPolicy
from entra_keys.errors import AttestationCheckFailed, Check, InvalidData, UnsupportedAlgorithm
from entra_keys.tcg import _efi, eventlog
from entra_keys.tcg.eventlog import (
    EfiVariable,
    EventLog,
    EventText,
    HcrtmComponent,
    ImageLoad,
    NoActionEvent,
    Separator,
    SpecIdEvent,
    StartupLocality,
    TaggedEvent,
    WindowsFacts,
    first_difference,
    parse_event_log,
    selection_digest,
)

from .helpers import unavailable
from .test_real_hardware import REAL_HARDWARE_VECTORS

REALWORLD = Path(__file__).parent / "vectors" / "realworld"
ALG_IDS = {"sha1": 0x0004, "sha256": 0x000B, "sha384": 0x000C, "sha512": 0x000D, "sm3_256": 0x0012}
TPM_ALG_NAMES = {value: key for key, value in ALG_IDS.items()}
HASHES: dict[str, Callable[[bytes], bytes]] = {
    "sha1": lambda data: hashlib.sha1(data).digest(),
    "sha256": lambda data: hashlib.sha256(data).digest(),
    "sha384": lambda data: hashlib.sha384(data).digest(),
    "sha512": lambda data: hashlib.sha512(data).digest(),
}

EV_NO_ACTION = 0x03
EV_SEPARATOR = 0x04
EV_IPL = 0x0D
EV_EFI_ACTION = 0x80000007
EV_EFI_HCRTM_EVENT = 0x80000010


# --- The real logs -----------------------------------------------------------------------------


def _json(relative: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((REALWORLD / relative).read_text())
    return loaded


WINDOWS = _json("go-attestation/windows_gcp_shielded_vm.json")
COS = _json("go-tpm-tools/gce-cos-85-no-nonce.json")


def _windows_log() -> bytes:
    log = WINDOWS["Log"]
    assert isinstance(log, dict)
    return base64.b64decode(log["Raw"])


def _cos_log() -> bytes:
    raw = COS["event_log"]
    assert isinstance(raw, str)
    return base64.b64decode(raw)


def _file(relative: str) -> Callable[[], bytes]:
    return lambda: (REALWORLD / relative).read_bytes()


#: Every real log that parses, by name: tpm2-tools' fixtures, go-attestation's logs, and the logs
#: inside the two attestation dumps.
LOGS: dict[str, Callable[[], bytes]] = {
    **{
        path.name: _file(f"tpm2-tools/{path.name}")
        for path in sorted((REALWORLD / "tpm2-tools").glob("*.bin"))
        if path.name != "specid-vendordata.bin"
    },
    **{
        name: _file(f"go-attestation/{name}")
        for name in (
            "crypto_agile_eventlog",
            "option_rom_eventlog",
            "sb_cert_eventlog",
            "short_no_action_eventlog",
        )
    },
    "windows_gcp_shielded_vm": _windows_log,
    "gce-cos-85-no-nonce": _cos_log,
}
#: The largest real log (the throughput figure in the report is measured on it).
LARGEST = "option_rom_eventlog"


def load(name: str) -> EventLog:
    return parse_event_log(LOGS[name]())


def test_every_vector_is_used() -> None:
    """The vectors directory holds nothing this file forgets."""
    files = {
        path.relative_to(REALWORLD).as_posix()
        for path in REALWORLD.rglob("*")
        if path.is_file() and path.name != "SOURCES.md"
    }
    used = {f"tpm2-tools/{name}" for name in LOGS if name.endswith(".bin")}
    used |= {f"go-attestation/{name}" for name in LOGS if name.endswith("_eventlog")}
    used |= {
        "tpm2-tools/specid-vendordata.bin",
        "go-attestation/windows_gcp_shielded_vm.json",
        "go-tpm-tools/gce-cos-85-no-nonce.json",
    }
    used |= REAL_HARDWARE_VECTORS  # read by the hardware tests (test_real_hardware lists them)
    assert files == used
    sources = (REALWORLD / "SOURCES.md").read_text()
    assert all(f"`{name}`" in sources for name in files)


# --- An independent writer: builds logs, and re-serializes parsed ones --------------------------


def sha1_event(pcr: int, event_type: int, digest: bytes, data: bytes) -> bytes:
    """A TCG_PCClientPCREvent."""
    return struct.pack("<II20sI", pcr, event_type, digest, len(data)) + data


def agile_event(
    pcr: int, event_type: int, digests: Sequence[tuple[int, bytes]], data: bytes
) -> bytes:
    """A TCG_PCR_EVENT2."""
    body = struct.pack("<III", pcr, event_type, len(digests))
    body += b"".join(struct.pack("<H", alg) + digest for alg, digest in digests)
    return body + struct.pack("<I", len(data)) + data


def spec_id(
    algs: Sequence[tuple[int, int]] = ((0x0004, 20), (0x000B, 32)),
    *,
    vendor: bytes = b"",
    version: tuple[int, int] = (2, 0),
    uintn: int = 2,
    pcr: int = 0,
    digest: bytes = bytes(20),
) -> bytes:
    """The first event of a crypto-agile log, declaring ``algs`` (id, size)."""
    data = b"Spec ID Event03\0" + struct.pack(
        "<IBBBBI", 0, version[1], version[0], 0, uintn, len(algs)
    )
    data += b"".join(struct.pack("<HH", alg, size) for alg, size in algs)
    data += bytes((len(vendor),)) + vendor
    return sha1_event(pcr, EV_NO_ACTION, digest, data)


def all_banks(data: bytes, banks: Sequence[str] = ("sha1", "sha256")) -> list[tuple[int, bytes]]:
    """A digest of ``data`` for each bank, as firmware measures an event."""
    return [(ALG_IDS[bank], HASHES[bank](data)) for bank in banks]


def serialize(log: EventLog) -> bytes:
    """The bytes of a parsed log, written from its fields alone."""
    out = []
    for event in log.events:
        if not log.crypto_agile or event.index == 0:
            out.append(sha1_event(event.pcr, event.event_type, event.digests["sha1"], event.data))
        else:
            digests = [
                (ALG_IDS.get(name) or int(name.removeprefix("alg_0x"), 16), digest)
                for name, digest in event.digests.items()
            ]
            out.append(agile_event(event.pcr, event.event_type, digests, event.data))
    return b"".join(out)


@pytest.mark.parametrize("name", sorted(LOGS))
def test_real_log_parses_and_reserializes(name: str) -> None:
    data = LOGS[name]()
    log = parse_event_log(data)
    assert serialize(log) == data
    assert [event.index for event in log.events] == list(range(len(log.events)))
    assert log.events[0].offset == 0
    offsets = [event.offset for event in log.events] + [len(data)]
    assert all(a < b for a, b in itertools.pairwise(offsets))
    assert log.crypto_agile == (log.spec_id is not None)
    for event in log.events[1 if log.crypto_agile else 0 :]:  # the Spec ID event has SHA-1
        assert set(event.digests) <= set(log.banks)
        assert event.type_name == eventlog.EVENT_TYPES[event.event_type]


def test_sha1_and_agile_logs() -> None:
    sha1 = load("event-uefi-sha1-log.bin")
    assert (sha1.crypto_agile, sha1.spec_id, sha1.banks) == (False, None, ("sha1",))
    assert sha1.events[0].type_name == "EV_S_CRTM_VERSION"
    agile = load("event-gce-ubuntu-2104-log.bin")
    assert agile.crypto_agile and agile.banks == ("sha1", "sha256", "sha384")
    assert isinstance(agile.events[0].decoded, SpecIdEvent)
    assert agile.events[0].decoded == agile.spec_id
    assert agile.spec_id.uintn_size == 2 and agile.spec_id.vendor_info == b""
    assert [a.digest_size for a in agile.spec_id.algorithms] == [20, 32, 48]
    assert load("event-moklisttrusted.bin").banks == ("sha256",)
    assert load("event.bin").banks == ("sha1", "sha256", "sha384", "sha512")


def test_specid_vendordata_fixture_is_refused() -> None:
    """tpm2-tools' specid-vendordata.bin sets eventSize 37, which ends at vendorInfoSize (4):
    the vendor data lies outside the event. tpm2_eventlog reads it anyway; the spec's event
    holds it, so this log is refused, naming the field."""
    data = (REALWORLD / "tpm2-tools/specid-vendordata.bin").read_bytes()
    assert struct.unpack_from("<I", data, 28)[0] == 37 and len(data) == 32 + 37 + 4
    with pytest.raises(InvalidData, match=r"event 0 at offset 0: Spec ID event: vendorInfoSize 4"):
        parse_event_log(data)


# --- Against tpm2-tools' tpm2_eventlog ---------------------------------------------------------


@dataclass
class ToolEvent:
    """An event as tpm2_eventlog's YAML lists it."""

    pcr: int
    event_type: str = ""
    size: int = -1
    digests: dict[str, str] = field(default_factory=dict)
    startup_locality: int | None = None


def read_tool_yaml(text: str) -> list[ToolEvent]:
    """The events of tpm2_eventlog's output, read line by line (no YAML library: and 5.4's
    output for a SHA-1 log is not valid YAML, its events lack the "- " of list items)."""
    events: list[ToolEvent] = []
    algorithm: str | None = None
    for line in text.splitlines():
        if line.startswith("pcrs:"):
            break
        if line.startswith(("  PCRIndex: ", "- PCRIndex: ")):
            events.append(ToolEvent(int(line.split(": ")[1])))
        elif line.startswith("  EventType: "):
            events[-1].event_type = line.split(": ")[1]
        elif line.startswith("  EventSize: "):
            events[-1].size = int(line.split(": ")[1])
        elif line.startswith("  - AlgorithmId: "):
            algorithm = line.split(": ")[1]
        elif line.startswith(("    Digest: ", "  Digest: ")):
            events[-1].digests[algorithm or "sha1"] = line.split(": ")[1].strip('"')
            algorithm = None
        elif line.strip().startswith("StartupLocality: "):
            events[-1].startup_locality = int(line.split(": ")[1])
    return events


def replay_tool_events(
    events: Sequence[ToolEvent], banks: Sequence[str]
) -> dict[str, dict[int, bytes]]:
    """Replay tpm2_eventlog's event list by the PFP's rules, written apart from the library:
    PCRs 17-22 start all ones, the rest zero; a StartupLocality event before PCR 0's first
    extend sets PCR 0's last byte; EV_NO_ACTION extends nothing."""
    locality = 0
    for event in events:
        if event.pcr == 0 and event.event_type != "EV_NO_ACTION":
            break
        if event.pcr == 0 and event.startup_locality is not None:
            locality = event.startup_locality
    values: dict[str, dict[int, bytes]] = {}
    for bank in banks:
        size = len(HASHES[bank](b""))
        values[bank] = {pcr: (b"\xff" if 17 <= pcr <= 22 else b"\0") * size for pcr in range(24)}
        values[bank][0] = bytes(size - 1) + bytes((locality,))
    for event in events:
        if event.event_type == "EV_NO_ACTION":
            continue
        for bank, digest in event.digests.items():
            if bank in values:
                values[bank][event.pcr] = HASHES[bank](
                    values[bank][event.pcr] + bytes.fromhex(digest)
                )
    return values


#: Logs tpm2-tools 5.4 cannot read: it dies of SIGSEGV on option_rom_eventlog (a SHA-1 log
#: with an event in "PCR" 0xFFFFFFFF, which 5.4's SHA-1 path uses as an array index; the bounds
#: check came in 2026) and refuses short_no_action_eventlog ("invalid eventDataSize in specid
#: event": it takes every EV_NO_ACTION first event for a Spec ID event). Ours parses both.
TOOL_FAILS = {"option_rom_eventlog", "short_no_action_eventlog"}


@pytest.fixture(scope="module")
def tpm2_eventlog() -> str:
    found = shutil.which("tpm2_eventlog")
    if found is None:
        unavailable("tpm2_eventlog (tpm2-tools) is not installed")
    assert found is not None
    return found


@pytest.mark.parametrize("name", sorted(LOGS))
def test_agrees_with_tpm2_eventlog(name: str, tpm2_eventlog: str, tmp_path: Path) -> None:
    """Each event's PCR, type, size and digests are the ones tpm2_eventlog reads, and our replay
    equals its event list replayed by the spec's rules (not its "pcrs:" totals: 5.4 predates
    StartupLocality in its totals)."""
    path = tmp_path / "log.bin"
    path.write_bytes(LOGS[name]())
    ran = subprocess.run(
        [tpm2_eventlog, str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    log = load(name)
    if ran.returncode != 0:
        assert name in TOOL_FAILS, ran.stderr
        if name == "option_rom_eventlog" and ran.returncode < 0:
            assert ran.returncode == -signal.SIGSEGV
        assert log.events  # ours reads what the tool cannot
        return
    theirs = read_tool_yaml(ran.stdout)
    assert len(theirs) == len(log.events)
    for ours, tool in zip(log.events, theirs, strict=True):
        assert (ours.pcr, ours.type_name, len(ours.data)) == (tool.pcr, tool.event_type, tool.size)
        assert {bank: d.hex() for bank, d in ours.digests.items()} == tool.digests
    expected = replay_tool_events(theirs, log.replayable_banks)
    assert log.replay() == expected


def test_tpm2_eventlog_reads_vendor_info_past_the_event(tpm2_eventlog: str) -> None:
    """Where ours refuses specid-vendordata.bin, tpm2_eventlog reports vendorInfo "deadbeef",
    the 4 bytes after the event's end."""
    path = REALWORLD / "tpm2-tools/specid-vendordata.bin"
    ran = subprocess.run([tpm2_eventlog, str(path)], capture_output=True, text=True, check=False)
    if ran.returncode == 0:
        assert "EventSize: 37" in ran.stdout and "vendorInfoSize: 4" in ran.stdout
        assert 'vendorInfo: "deadbeef"' in ran.stdout
    with pytest.raises(InvalidData, match="vendorInfoSize 4, but 0 bytes follow it"):
        parse_event_log(path.read_bytes())


def test_tool_yaml_reader_reads_both_layouts() -> None:
    """The YAML reader against tpm2-tools' own committed output (a newer tpm2-tools): the
    crypto-agile layout and the SHA-1 layout without list markers."""
    agile = read_tool_yaml(
        "---\nversion: 1\nevents:\n- EventNum: 0\n  PCRIndex: 0\n  EventType: EV_NO_ACTION\n"
        '  Digest: "' + "00" * 20 + '"\n  EventSize: 45\n- EventNum: 1\n  PCRIndex: 7\n'
        "  EventType: EV_EFI_VARIABLE_DRIVER_CONFIG\n  DigestCount: 1\n  Digests:\n"
        '  - AlgorithmId: sha256\n    Digest: "' + "ab" * 32 + '"\n  EventSize: 53\npcrs:\n'
        "  sha256:\n    7  : 0x00\n"
    )
    assert [(e.pcr, e.event_type, e.size, e.digests) for e in agile] == [
        (0, "EV_NO_ACTION", 45, {"sha1": "00" * 20}),
        (7, "EV_EFI_VARIABLE_DRIVER_CONFIG", 53, {"sha256": "ab" * 32}),
    ]
    sha1 = read_tool_yaml(
        "events:\n  PCRIndex: 0\n  EventType: EV_S_CRTM_VERSION\n  DigestCount: 1\n  Digests:\n"
        '  - AlgorithmId: sha1\n    Digest: "' + "cd" * 20 + '"\n  EventSize: 16\n'
    )
    assert [(e.pcr, e.digests) for e in sha1] == [(0, {"sha1": "cd" * 20})]


# --- Against real quotes -----------------------------------------------------------------------


def quote_selection(attest: bytes) -> tuple[dict[str, list[int]], bytes]:
    """The PCR selection and pcrDigest of a TPMS_ATTEST of a quote (TPM 2.0 Part 2 §10.12),
    read here apart from the library's own structures."""
    position = 6
    for _ in range(2):  # qualifiedSigner, extraData
        position += 2 + struct.unpack_from(">H", attest, position)[0]
    position += 17 + 8  # clockInfo, firmwareVersion
    count = struct.unpack_from(">I", attest, position)[0]
    position += 4
    selection: dict[str, list[int]] = {}
    for _ in range(count):
        alg, size = struct.unpack_from(">HB", attest, position)
        bits = attest[position + 3 : position + 3 + size]
        selection[TPM_ALG_NAMES[alg]] = [i for i in range(8 * size) if bits[i // 8] >> (i % 8) & 1]
        position += 3 + size
    size = struct.unpack_from(">H", attest, position)[0]
    return selection, attest[position + 2 : position + 2 + size]


def test_windows_replay_matches_its_quote() -> None:
    """go-attestation's Windows dump: the SHA-1 replay gives PCRs 0-23 as read from the vTPM,
    and they hash to the signed quote's pcrDigest (SHA-1, the AK's scheme hash)."""
    log = load("windows_gcp_shielded_vm")
    raw = WINDOWS["Log"]
    assert isinstance(raw, dict)
    quoted = {"sha1": {pcr["Index"]: base64.b64decode(pcr["Digest"]) for pcr in raw["PCRs"]}}
    assert sorted(quoted["sha1"]) == list(range(24))
    replayed = log.replay()
    assert first_difference(replayed, quoted) is None
    assert replayed["sha1"] == quoted["sha1"]
    quote = WINDOWS["Quote"]
    assert isinstance(quote, dict)
    selection, pcr_digest = quote_selection(base64.b64decode(quote["Quote"]))
    assert selection == {"sha1": list(range(24))}
    assert selection_digest(replayed, selection, "sha1") == pcr_digest
    assert log.matching_prefix(selection, "sha1", pcr_digest) == len(log.events)


@pytest.mark.parametrize("bank", ["sha1", "sha256", "sha384"])
def test_cos_replay_matches_its_quotes(bank: str) -> None:
    """go-tpm-tools' COS dump has a quote per bank over PCRs 0-23. The replay gives every
    quoted PCR but PCR 10, which IMA extends from its own log (not the firmware's); with the
    quoted PCR 10 the replayed values hash to each quote's pcrDigest."""
    log = load("gce-cos-85-no-nonce")
    quotes = COS["quotes"]
    assert isinstance(quotes, list)
    (quote,) = [q for q in quotes if TPM_ALG_NAMES[q["pcrs"]["hash"]] == bank]
    quoted = {bank: {int(k): base64.b64decode(v) for k, v in quote["pcrs"]["pcrs"].items()}}
    replayed = log.replay()
    difference = first_difference(replayed, quoted)
    assert difference is not None and (difference.bank, difference.pcr) == (bank, 10)
    assert difference.replayed == bytes(len(difference.quoted))  # nothing in the log for it
    without_ima = {bank: {pcr: v for pcr, v in quoted[bank].items() if pcr != 10}}
    assert first_difference(replayed, without_ima) is None
    selection, pcr_digest = quote_selection(base64.b64decode(quote["quote"]))
    assert selection == {bank: list(range(24))}
    signature_hash = TPM_ALG_NAMES[struct.unpack_from(">HH", base64.b64decode(quote["raw_sig"]))[1]]
    replayed[bank][10] = quoted[bank][10]
    assert selection_digest(replayed, selection, signature_hash) == pcr_digest
    # the log's own PCRs are enough to tie it to the quote: 10 excluded, the prefix is all of it
    partial = {bank: [pcr for pcr in range(24) if pcr != 10]}
    digest = selection_digest(quoted, partial, "sha256")
    assert log.matching_prefix(partial, "sha256", digest) == len(log.events)


# --- Replay rules ------------------------------------------------------------------------------


def extend(bank: str, old: bytes, *digests: bytes) -> bytes:
    for digest in digests:
        old = HASHES[bank](old + digest)
    return old


def test_startup_locality_3_real_log() -> None:
    """go-attestation's short_no_action_eventlog is a SHA-1 log of one EV_NO_ACTION
    StartupLocality event (locality 3, as TXT / Boot Guard machines start the TPM): PCR 0
    starts at 00..03 and the event extends nothing."""
    log = load("short_no_action_eventlog")
    assert not log.crypto_agile and len(log.events) == 1
    assert log.events[0].decoded == StartupLocality(3)
    assert log.startup_locality == 3 and not log.h_crtm
    replayed = log.replay()["sha1"]
    assert replayed[0] == bytes(19) + b"\x03"
    assert all(replayed[pcr] == bytes(20) for pcr in range(1, 17))
    assert log.facts().startup_locality == 3


def locality_event(locality: int, banks: Sequence[str] = ("sha1", "sha256")) -> bytes:
    data = b"StartupLocality\0" + bytes((locality,))
    return agile_event(
        0, EV_NO_ACTION, [(ALG_IDS[b], bytes(len(HASHES[b](b"")))) for b in banks], data
    )


def test_startup_locality_sets_pcr0_start() -> None:
    crtm = b"firmware version"
    log = parse_event_log(spec_id() + locality_event(3) + agile_event(0, 8, all_banks(crtm), crtm))
    for bank in ("sha1", "sha256"):
        size = len(HASHES[bank](b""))
        start = bytes(size - 1) + b"\x03"
        assert log.replay()[bank][0] == extend(bank, start, HASHES[bank](crtm))
        assert log.replay(upto=2)[bank][0] == start  # before any extend: the start value
    assert log.startup_locality == 3


def test_startup_locality_after_pcr0_was_extended_is_ignored() -> None:
    crtm = b"version"
    log = parse_event_log(spec_id() + agile_event(0, 8, all_banks(crtm), crtm) + locality_event(3))
    assert log.startup_locality == 0
    assert log.replay()["sha256"][0] == extend("sha256", bytes(32), HASHES["sha256"](crtm))


def test_h_crtm_starts_pcr0_at_locality_4() -> None:
    """An EV_EFI_HCRTM_EVENT as PCR 0's first extend: the H-CRTM ran before TPM2_Startup, so
    PCR 0 started at 00..04 (TPM 2.0 Part 1 §34.3); its H-CRTM CompMeas record extends nothing."""
    component = (
        b"H-CRTM CompMeas\0"
        + bytes((9,))
        + b"TD REPORT"
        + bytes((0,))
        + struct.pack("<H", 2)
        + b"\x0b\x00"
    )
    measured = HASHES["sha256"](b"h-crtm image")
    log = parse_event_log(
        spec_id()
        + agile_event(0, EV_NO_ACTION, [(4, bytes(20)), (11, bytes(32))], component)
        + agile_event(0, EV_EFI_HCRTM_EVENT, [(4, HASHES["sha1"](b"x")), (11, measured)], b"HCRTM")
    )
    assert log.h_crtm and log.startup_locality == 4
    assert log.events[1].decoded == HcrtmComponent("TD REPORT", 0, b"\x0b\x00")
    assert log.events[2].decoded == EventText("HCRTM", "ascii")
    assert log.replay()["sha256"][0] == extend("sha256", bytes(31) + b"\x04", measured)
    assert log.facts().h_crtm


def test_startup_locality_4_is_an_h_crtm() -> None:
    log = parse_event_log(spec_id() + locality_event(4))
    assert log.h_crtm and log.replay()["sha1"][0] == bytes(19) + b"\x04"


def test_drtm_pcrs_start_all_ones() -> None:
    data = b"dynamic launch"
    log = parse_event_log(spec_id() + agile_event(17, 0x0D, all_banks(data), data))
    replayed = log.replay()
    for bank in ("sha1", "sha256"):
        ones = b"\xff" * len(HASHES[bank](b""))
        assert all(replayed[bank][pcr] == ones for pcr in range(18, 23))
        assert replayed[bank][17] == extend(bank, ones, HASHES[bank](data))
        assert replayed[bank][23] == bytes(len(ones))
    assert log.initial_value("sha256", 20) == b"\xff" * 32


def test_no_action_never_extends() -> None:
    """EV_NO_ACTION events carry (zero or any) digests that no PCR sees."""
    log = parse_event_log(
        spec_id()
        + agile_event(5, EV_NO_ACTION, all_banks(b"ignored"), b"SP800-155 Event\0" + bytes(20))
    )
    assert log.replay() == log.replay(upto=0)
    assert log.events[1].decoded == NoActionEvent("SP800-155 Event", log.events[1].data)


def test_bank_missing_from_an_event_leaves_that_bank_alone() -> None:
    """As TPM2_PCR_Extend does: a bank without a digest in the event is not extended."""
    data = b"only sha256"
    log = parse_event_log(spec_id() + agile_event(4, 0x0D, [(11, HASHES["sha256"](data))], data))
    assert log.replay()["sha1"][4] == bytes(20)
    assert log.replay()["sha256"][4] == extend("sha256", bytes(32), HASHES["sha256"](data))


def test_unknown_algorithm_is_kept_raw_and_not_replayed() -> None:
    odd = bytes(range(40))
    log = parse_event_log(
        spec_id(((0x000B, 32), (0x0099, 40)))
        + agile_event(4, 0x0D, [(11, bytes(32)), (0x99, odd)], b"x")
    )
    assert log.banks == ("sha256", "alg_0x0099")
    assert log.events[1].digests["alg_0x0099"] == odd
    assert log.replayable_banks == ("sha256",)
    assert set(log.replay()) == {"sha256"}
    with pytest.raises(UnsupportedAlgorithm, match="alg_0x0099"):
        log.matching_prefix({"alg_0x0099": [4]}, "sha256", bytes(32))


def test_sm3_bank_replays_where_pyca_has_sm3() -> None:
    from cryptography.hazmat.primitives import hashes

    data = b"sm3 measured"
    log = parse_event_log(
        spec_id(((0x0012, 32),)) + agile_event(4, 0x0D, [(0x12, bytes(32))], data)
    )
    if "sm3_256" not in log.replayable_banks:
        pytest.skip("this cryptography's OpenSSL has no SM3")
    digest = hashes.Hash(hashes.SM3())
    digest.update(bytes(32) + bytes(32))
    assert log.replay()["sm3_256"][4] == digest.finalize()


def test_replay_upto() -> None:
    log = load("event-gce-ubuntu-2104-log.bin")
    assert log.replay(upto=len(log.events)) == log.replay()
    assert log.replay(upto=10**6) == log.replay()
    start = log.replay(upto=0)
    assert start["sha256"] == {pcr: log.initial_value("sha256", pcr) for pcr in range(24)}
    with pytest.raises(InvalidData, match="negative"):
        log.replay(upto=-1)
    with pytest.raises(InvalidData, match="negative"):
        log.facts(upto=-1)


def test_selection_digest_without_a_value_is_invalid_data() -> None:
    """A selected PCR or bank the values lack is a typed refusal, not a KeyError or ValueError."""
    values = load("event-uefi-sha1-log.bin").replay()
    with pytest.raises(InvalidData, match="no value for 24"):
        selection_digest(values, {"sha1": [0, 24]}, "sha256")
    with pytest.raises(InvalidData, match="no value for 'sha256'"):
        selection_digest(values, {"sha256": [0]}, "sha256")


def test_the_log_banks_are_the_wire_hashes_and_sm3() -> None:
    """One hash table: the SHA family is tcg.wire's; SM3-256 is the log's own addition."""
    from entra_keys.tcg import wire

    log = parse_event_log(
        spec_id(((0x0004, 20), (0x000B, 32), (0x000C, 48), (0x000D, 64), (0x12, 32)))
    )
    assert log.banks == (*(info.name for info in wire.HASH_ALGORITHMS.values()), "sm3_256")
    assert not hasattr(eventlog, "HASH_ALGORITHMS")
    with pytest.raises(InvalidData, match="sha256 declared with digest size 20"):
        parse_event_log(spec_id(((0x000B, 20),)))


# --- Tying a log read later to a quote ---------------------------------------------------------


def appended(log_bytes: bytes, *events: bytes) -> bytes:
    return log_bytes + b"".join(events)


def test_matching_prefix_with_later_events() -> None:
    """A log read after the quote holds later events (IMA in PCR 10, another boot application
    in PCR 4): the prefix found is the quoted one, and replaying it gives the quoted values."""
    base = LOGS["event-gce-ubuntu-2104-log.bin"]()
    log = parse_event_log(base)
    selection = {"sha256": list(range(10)), "sha1": [0, 4, 7]}
    quoted = log.replay()
    pcr_digest = selection_digest(quoted, selection, "sha256")
    ima = b"ima boot_aggregate"
    later = parse_event_log(
        appended(
            base,
            agile_event(10, 0x0D, all_banks(ima, ("sha1", "sha256", "sha384")), ima),
            agile_event(4, 0x80000003, all_banks(b"app", ("sha1", "sha256", "sha384")), bytes(32)),
            agile_event(10, 0x0D, all_banks(ima, ("sha1", "sha256", "sha384")), ima),
        )
    )
    prefix = later.matching_prefix(selection, "sha256", pcr_digest)
    # PCR 10 is not selected: the IMA event after the quote leaves the quoted values as they
    # were, so the longest matching prefix takes it in; the PCR 4 event ends the match.
    assert prefix == len(log.events) + 1
    at_quote = later.replay(upto=prefix)["sha256"]
    assert {pcr: at_quote[pcr] for pcr in range(10)} == {
        pcr: quoted["sha256"][pcr] for pcr in range(10)
    }
    assert later.replay()["sha256"][4] != quoted["sha256"][4]
    with_ima = {"sha256": list(range(11))}
    digest = selection_digest(quoted, with_ima, "sha256")
    assert later.matching_prefix(with_ima, "sha256", digest) == len(log.events)
    assert (
        first_difference(later.replay(upto=len(log.events)), {"sha256": quoted["sha256"]}) is None
    )


def test_matching_prefix_none_when_tampered() -> None:
    base = LOGS["event-gce-ubuntu-2104-log.bin"]()
    log = parse_event_log(base)
    selection = {"sha256": [0, 1, 2, 3, 4, 5, 6, 7]}
    digest = selection_digest(log.replay(), selection, "sha256")
    event = next(
        e for e in log.events[20:] if e.pcr in selection["sha256"] and e.event_type != EV_NO_ACTION
    )
    position = base.index(event.digests["sha256"], event.offset)
    tampered = bytearray(base)
    tampered[position] ^= 1
    bad = parse_event_log(bytes(tampered))
    assert bad.matching_prefix(selection, "sha256", digest) is None
    difference = first_difference(bad.replay(), {"sha256": log.replay()["sha256"]})
    assert difference is not None and (difference.bank, difference.pcr) == ("sha256", event.pcr)


def test_matching_prefix_at_start_and_arguments() -> None:
    log = load("event-uefivar.bin")
    selection = {"sha1": [7]}
    start = selection_digest(log.replay(0), selection, "sha1")
    # the values before any event: the Spec ID event (event 0) changes nothing, so the longest
    # matching prefix takes it in; the PCR 7 event ends it
    assert log.matching_prefix(selection, "sha1", start) == 1
    assert (
        log.matching_prefix(
            {"sha1": [0]}, "sha1", selection_digest(log.replay(0), {"sha1": [0]}, "sha1")
        )
        == 2
    )
    with pytest.raises(UnsupportedAlgorithm):
        log.matching_prefix(selection, "md5", bytes(16))
    with pytest.raises(UnsupportedAlgorithm, match="sm3_256"):
        log.matching_prefix({"sm3_256": [0]}, "sha256", bytes(32))
    with pytest.raises(InvalidData, match="negative"):
        log.matching_prefix({"sha1": [-1]}, "sha1", bytes(20))


def test_matching_prefix_equals_a_full_search() -> None:
    """The one-pass search finds the same prefix as replaying every prefix would."""
    log = load("event-sd-boot-fedora37.bin")
    selection = {"sha256": [0, 4, 7, 9, 12]}
    for upto in range(len(log.events) + 1):
        digest = selection_digest(log.replay(upto), selection, "sha256")
        matches = [
            n
            for n in range(len(log.events) + 1)
            if selection_digest(log.replay(n), selection, "sha256") == digest
        ]
        assert log.matching_prefix(selection, "sha256", digest) == max(matches)


# --- Malformed logs: each attack is a typed error naming the offset ----------------------------


def test_truncated_at_every_byte() -> None:
    """Every prefix of real logs (one of each format): a prefix that ends on an event boundary is
    a shorter log; any other is an InvalidData naming where the cut field starts."""
    for name in ("event-uefivar.bin", "event-sd-boot-fedora37.bin", "short_no_action_eventlog"):
        data = LOGS[name]()
        log = parse_event_log(data)
        boundaries = {event.offset for event in log.events} | {len(data)}
        for cut in range(1, len(data)):
            if cut in boundaries:
                assert len(parse_event_log(data[:cut]).events) == sorted(boundaries).index(cut)
                continue
            with pytest.raises(InvalidData, match=r"^event log: event \d+ at offset \d+: ") as info:
                parse_event_log(data[:cut])
            message = str(info.value)
            assert "truncated" in message or "Spec ID event" in message, message


def test_truncated_field_is_named() -> None:
    body = spec_id() + agile_event(7, 1, all_banks(b"x"), b"x")
    second = len(spec_id())
    cases = {
        second + 2: f"event 1 at offset {second}: truncated: PCR index at offset {second}",
        second + 10: f"truncated: digest count at offset {second + 8}",
        second + 13: f"truncated: digest 0 algorithm at offset {second + 12}",
        second + 20: f"truncated: sha1 digest at offset {second + 14}",
        second + 14 + 20 + 1: f"truncated: digest 1 algorithm at offset {second + 34}",
        len(body) - 3: f"truncated: event size at offset {second + 68} needs 4 bytes, 2 left",
        len(body) - 1: f"truncated: event data at offset {len(body) - 1} needs 1 bytes, 0 left",
    }
    for cut, expected in cases.items():
        with pytest.raises(InvalidData, match=expected.replace("(", r"\(")):
            parse_event_log(body[:cut])


def test_huge_digest_count() -> None:
    offset = len(spec_id())
    evil = spec_id() + struct.pack("<III", 4, 1, 70000) + bytes(100)
    with pytest.raises(
        InvalidData,
        match=rf"event 1 at offset {offset}: digest count at offset {offset + 8}: 70000 is more "
        "than the 2 algorithms the Spec ID event declares",
    ):
        parse_event_log(evil)


def test_undeclared_algorithm() -> None:
    offset = len(spec_id())
    evil = spec_id() + agile_event(4, 1, [(0x000C, bytes(48))], b"")
    with pytest.raises(
        InvalidData,
        match=rf"event 1 at offset {offset}: digest 0 at offset {offset + 12}: algorithm 0x000c "
        "is not one the Spec ID event declares",
    ):
        parse_event_log(evil)


def test_digest_twice() -> None:
    evil = spec_id() + agile_event(4, 1, [(4, bytes(20)), (4, bytes(20))], b"")
    with pytest.raises(InvalidData, match="a second sha1 digest"):
        parse_event_log(evil)


def test_digest_size_mismatch() -> None:
    """A Spec ID event may not declare a known algorithm with another size; an event's digest
    is read at the declared size, so a short one runs into the next field."""
    with pytest.raises(InvalidData, match="sha256 declared with digest size 31, not 32"):
        parse_event_log(spec_id(((0x000B, 31),)))
    short = spec_id(((0x000B, 32),)) + struct.pack("<IIIH", 4, 1, 1, 11) + bytes(20)
    with pytest.raises(
        InvalidData, match=r"truncated: sha256 digest at offset \d+ needs 32 bytes, 20 left"
    ):
        parse_event_log(short)


def test_event_data_beyond_the_log() -> None:
    evil = spec_id() + agile_event(4, 1, [], b"")[:-4] + struct.pack("<I", 1000) + b"abc"
    offset = len(spec_id())
    with pytest.raises(
        InvalidData,
        match=rf"event 1 at offset {offset}: truncated: event data at offset {offset + 16} needs "
        "1000 bytes, 3 left",
    ):
        parse_event_log(evil)
    sha1 = sha1_event(0, 8, bytes(20), b"")[:-4] + struct.pack("<I", 2**32 - 1)
    with pytest.raises(
        InvalidData, match=r"event 0 at offset 0: event size at offset 28: 4294967295"
    ):
        parse_event_log(sha1)


def test_event_data_over_the_limit() -> None:
    big = eventlog.MAX_EVENT_DATA + 1
    evil = sha1_event(0, 8, bytes(20), bytes(big))
    with pytest.raises(InvalidData, match=rf"event size at offset 28: {big} is more than 1048576"):
        parse_event_log(evil)


def test_oversized_log() -> None:
    with pytest.raises(InvalidData, match=r"^event log: 16777217 bytes is more than the 16777216"):
        parse_event_log(bytes(eventlog.MAX_LOG_SIZE + 1))


def test_too_many_events() -> None:
    """100,001 events of 32 bytes (3.2 MB, under the size limit): the count limit stops it."""
    one = sha1_event(4, 1, bytes(20), b"")
    count = eventlog.MAX_EVENTS
    with pytest.raises(
        InvalidData, match=rf"event {count} at offset {32 * count}: more than {count} events"
    ):
        parse_event_log(one * (count + 1))
    assert len(parse_event_log(one * 1000).events) == 1000


def test_empty_and_tiny_logs() -> None:
    with pytest.raises(InvalidData, match="empty"):
        parse_event_log(b"")
    with pytest.raises(
        InvalidData, match=r"event 0 at offset 0: truncated: event type at offset 4"
    ):
        parse_event_log(b"\0" * 5)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (spec_id(pcr=3), "Spec ID event: PCR index 3, not 0"),
        (spec_id(digest=b"\x01" * 20), "Spec ID event: its digest is not zero"),
        (spec_id(version=(1, 2)), "spec version 1.2, not 2.0"),
        (spec_id(uintn=3), "uintnSize 3, not 1 or 2"),
        (spec_id(()), "numberOfAlgorithms 0, not 1 to 16"),
        (spec_id(tuple((0x100 + n, 32) for n in range(17))), "numberOfAlgorithms 17"),
        (spec_id(((4, 20), (4, 20))), "algorithm 0x0004 declared twice"),
        (spec_id(((0x55, 0),)), "algorithm 0x0055 declared with digest size 0"),
        (spec_id(vendor=b"abc")[:-1], "vendorInfoSize 3, but 2 bytes follow it"),
    ],
)
def test_bad_spec_id_event(first: bytes, expected: str) -> None:
    if first[28:32] != struct.pack("<I", len(first) - 32):  # keep eventSize consistent
        first = first[:28] + struct.pack("<I", len(first) - 32) + first[32:]
    with pytest.raises(InvalidData, match=rf"^event log: event 0 at offset 0: .*{expected}"):
        parse_event_log(first)


def test_vendor_info_and_uintn_1() -> None:
    log = parse_event_log(spec_id(vendor=b"\xde\xad\xbe\xef", uintn=1))
    assert log.spec_id is not None
    assert (log.spec_id.vendor_info, log.spec_id.uintn_size) == (b"\xde\xad\xbe\xef", 1)
    image = struct.pack("<QIII", 0x1000, 0x2000, 0, 4) + b"\x7f\xff\x04\x00"
    log = parse_event_log(spec_id(uintn=1) + agile_event(4, 0x80000003, all_banks(b"pe"), image))
    assert log.events[1].decoded == ImageLoad(0x1000, 0x2000, 0, b"\x7f\xff\x04\x00", "")


# --- Fuzzing: only InvalidData escapes, decoding and facts never raise --------------------------

FUZZ = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


#: Boot policies the fuzzed facts are evaluated against: every requirement at once, and none.
FUZZ_POLICIES = (
    BootPolicy(
        secure_boot=True,
        allowed_boot_loaders=["00" * 32],
        allowed_kernels=["11" * 20],
        allowed_signers=["44" * 32],
        allowed_kernel_cmdline_patterns=[r"(a|b)*c", r".*"],
        required_dbx=["22" * 32],
        forbidden_db=["CN=nobody", "33" * 32],
        allowed_firmware_versions=["1.0"],
        require_bitlocker=True,
        require_code_integrity=True,
        forbid_test_signing=True,
        forbid_debugging=True,
        require_elam=True,
    ),
    BootPolicy(secure_boot=False, allowed_kernel_cmdline_patterns=[]),
    BootPolicy(),
)


def exercise(data: bytes) -> None:
    """Parse; if it parses, decode every event, read the facts (of every event, and of the
    PCRs of each bank as a quote would cover them), evaluate the boot policies over them and
    replay: nothing may raise but a policy's BOOT_POLICY refusal."""
    try:
        log = parse_event_log(data)
    except InvalidData:
        return
    for event in log.events:
        _ = event.decoded
    every = log.facts()
    covered = log.facts(pcrs={bank: range(24) for bank in log.replayable_banks})
    for facts in (every, covered):
        for entries in (facts.pk, facts.kek, facts.db, facts.dbx):
            for entry in entries or ():
                _ = (entry.subject, entry.kind, entry.hash_hex, entry.spki_sha256)
                _ = entry.image_hash_hex
        for policy in FUZZ_POLICIES:
            found = policy.violations(facts)
            assert all(isinstance(line, str) for line in found)
            if found:
                with pytest.raises(AttestationCheckFailed) as refused:
                    policy.check(facts)
                assert refused.value.check is Check.BOOT_POLICY
            else:
                policy.check(facts)
    log.replay()


def test_certificates_pyca_refuses_give_no_name_and_no_escape() -> None:
    """Certificates pyca refuses with exceptions of its own (X.509 version 6 or 127:
    InvalidVersion; a key algorithm it does not know: UnsupportedAlgorithm, on reading the key)
    in db, KEK and an authority: no subject or no key hash, and every policy over the log
    gives a typed refusal or none."""
    from entra_keys.testing import measured_boot as mb

    boot = mb.synthetic_boot()
    genuine = boot.certificates["db"]
    version = genuine.index(bytes([0xA0, 0x03, 0x02, 0x01, 0x02])) + 4
    v6, v127 = bytearray(genuine), bytearray(genuine)
    v6[version], v127[version] = 5, 127
    rsa_oid = bytes.fromhex("06092a864886f70d010101")
    assert rsa_oid in genuine
    unknown_key = genuine.replace(rsa_oid, bytes.fromhex("06092a864886f70d01017f"))
    odd = [bytes(v6), bytes(v127), unknown_key]
    for der in odd:
        entry = _efi.SignatureEntry(mb.EFI_CERT_X509, "EFI_CERT_X509_GUID", None, der)
        assert entry.spki_sha256 is None and entry.kind == "certificate"
    assert _efi.SignatureEntry(mb.EFI_CERT_X509, "", None, unknown_key).subject is not None
    lists = mb.signature_list(mb.EFI_CERT_X509, odd)
    events = []
    for event in boot.events:
        data = event.data
        variable = _efi.decode_variable(data)
        if (
            event.event_type == mb.EV_EFI_VARIABLE_DRIVER_CONFIG
            and variable
            and variable.name == "db"
        ):
            data = mb.variable_data(mb.EFI_IMAGE_SECURITY_DATABASE, "db", lists)
        elif event.event_type == mb.EV_EFI_VARIABLE_AUTHORITY:
            data = mb.variable_data(mb.EFI_IMAGE_SECURITY_DATABASE, "db", bytes(16) + odd[0])
        else:
            events.append(event)
            continue
        events.append(mb.BootEvent(event.pcr, event.event_type, data, data))
    log = mb.spec_id_event(["sha256"]) + b"".join(
        mb.event2(e.pcr, e.event_type, [("sha256", e.digest("sha256"))], e.data) for e in events
    )
    facts = parse_event_log(log).facts()
    assert facts.db is not None and [e.subject for e in facts.db][:2] == [None, None]
    exercise(log)


@FUZZ
@given(st.binary(max_size=4096))
def test_fuzz_random_bytes(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.binary(max_size=400))
def test_fuzz_random_agile_bodies(body: bytes) -> None:
    """Random bytes after a valid Spec ID event, so the agile parser sees them."""
    exercise(spec_id(((4, 20), (11, 32), (12, 48), (0x77, 8))) + body)


@st.composite
def mutated_logs(draw: st.DrawFn) -> bytes:
    name = draw(st.sampled_from(sorted(LOGS)))
    data = bytearray(LOGS[name]())
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "splice"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and len(data) >= position + 4:
            value = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            data[position : position + 4] = struct.pack("<I", value)
        elif kind == "cut":
            del data[position:]
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        elif kind == "splice" and data:
            other = LOGS[draw(st.sampled_from(sorted(LOGS)))]()
            start = draw(st.integers(0, len(other) - 1))
            data[position:] = other[start : start + draw(st.integers(1, 4096))]
    return bytes(data)


@FUZZ
@given(mutated_logs())
def test_fuzz_mutated_real_logs(data: bytes) -> None:
    exercise(data)


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(sorted(eventlog.EVENT_TYPES)), st.integers(0, 24))
def test_fuzz_event_data_of_every_type(data: bytes, event_type: int, pcr: int) -> None:
    """Random data under every event type reaches every decoder; none raises."""
    log = parse_event_log(spec_id() + agile_event(pcr, event_type, all_banks(data), data))
    _ = log.events[1].decoded
    log.facts()


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([None, 4, 8]))
def test_fuzz_efi_decoders(data: bytes, uintn: int | None) -> None:
    """Each UEFI / SIPA decoder on its own: None or a value, never an error."""
    _efi.decode_variable(data)
    _efi.decode_variable(data, authority=True)
    _efi.decode_image_load(data, uintn)
    _efi.decode_gpt(b"EFI PART" + data)
    _efi.decode_firmware_blob2(data)
    _efi.device_path_text(data)
    _efi.parse_signature_lists(data)
    _efi.parse_sipa(data)
    _efi.text_of(data)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, 4, 5, 0x7F]), st.integers(0, 30), st.binary(max_size=40)
        ),
        max_size=8,
    )
)
def test_fuzz_device_path_nodes(nodes: list[tuple[int, int, bytes]]) -> None:
    """Well-framed device paths of random nodes reach every node renderer: text, never an
    error."""
    path = b"".join(struct.pack("<BBH", t, sub, 4 + len(body)) + body for t, sub, body in nodes)
    text = _efi.device_path_text(path + b"\x7f\xff\x04\x00")
    assert text is not None


@FUZZ
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=70),
        lambda children: st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["secure_boot", "allowed_kernels", "allowed_kernel_cmdline_patterns",
                 "required_dbx", "forbid_debugging", "forbidden_db", "other"]
            ),
            children,
            max_size=4,
        ),
        max_leaves=12,
    )
)  # fmt: skip
def test_fuzz_boot_policy_json(document: object) -> None:
    """A boot policy from any JSON value: a BootPolicy or InvalidData, nothing else."""
    try:
        policy = BootPolicy.from_json(json.dumps(document))
    except InvalidData:
        return
    assert isinstance(policy, BootPolicy)


def test_fuzz_decoders_on_real_event_data() -> None:
    """Each real event's data, cut short and bit-flipped, under its own type: decoding stays
    total (a fixed-seed sweep beside the Hypothesis runs)."""
    rng = random.Random(24)
    for name in sorted(LOGS):
        for event in load(name).events:
            for _ in range(4):
                data = bytearray(event.data)
                if data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                    del data[rng.randrange(len(data) + 1) :]
                mutated = eventlog.Event(
                    0, 0, event.pcr, event.event_type, event.type_name, event.digests, bytes(data)
                )
                _ = mutated.decoded


# --- Decoded events and boot facts from the real logs ------------------------------------------


def test_decoded_variables_and_images() -> None:
    var = load("event-uefivar.bin").events[1].decoded
    assert isinstance(var, EfiVariable)
    assert (var.guid, var.name, var.data) == (
        "8be4df61-93ca-11d2-aa0d-00e098032b8c",
        "SecureBoot",
        b"\x01",
    )
    driver = load("event-uefiservices.bin").events[1].decoded
    assert isinstance(driver, ImageLoad)
    assert (
        driver.device_path_text == "PciRoot(0x0)/Pci(0x2,0x0)/Pci(0x0,0x0)/Offset(0x12600,0x3c3ff)"
    )
    agile = load("crypto_agile_eventlog")
    boot_order = agile.events[18].decoded
    assert isinstance(boot_order, EfiVariable) and boot_order.boot_order == (5, 2, 1, 4, 3, 0)
    gpt = agile.events[17].decoded
    assert gpt is not None and gpt.__class__.__name__ == "GptData"
    assert agile.events[1].decoded == EventText("Boot Guard Measured S-CRTM", "ascii")
    arch = load("event-arch-linux.bin")
    assert arch.events[1].decoded == EventText("{546bfb1e-1d0c-4055-a4ad-4ef4bf17b83a}", "guid")
    loads = [
        e.decoded
        for e in arch.events
        if isinstance(e.decoded, EfiVariable) and e.decoded.load_option
    ]
    assert loads and all(v.load_option is not None and v.load_option.description for v in loads)


def test_shim_quirks_are_decoded() -> None:
    """shim logs LengthOfDevicePath 0 with 9 stray bytes after it, and its "Shim" authority
    event (and GCE firmware its db authorities) with 6 bytes past the variable: decoded, the
    extra bytes kept as ``trailing``."""
    log = load("sb_cert_eventlog")
    image = log.events[11].decoded
    assert isinstance(image, ImageLoad) and image.device_path == b"" and len(image.trailing) == 9
    shim = log.events[12].decoded
    assert isinstance(shim, EfiVariable) and shim.name == "Shim" and len(shim.trailing) == 6
    assert shim.authority is not None and shim.authority.subject is not None
    assert "Canonical Ltd. Master Certificate Authority" in shim.authority.subject


def test_separators() -> None:
    log = load("windows_gcp_shielded_vm")
    wbcl = [e.decoded for e in log.events if e.pcr in (12, 13, 14) and e.event_type == EV_SEPARATOR]
    assert wbcl == [Separator(0x4C434257, False)] * 3
    assert not wbcl[0].standard
    ubuntu = load("event-gce-ubuntu-2104-log.bin")
    normal = [e.decoded for e in ubuntu.events if e.event_type == EV_SEPARATOR]
    assert normal and all(s == Separator(0, False) and s.standard for s in normal)
    error = parse_event_log(
        spec_id() + agile_event(0, EV_SEPARATOR, all_banks(b"\x01\0\0\0"), b"TPM failed: 0x921")
    )
    assert error.events[1].decoded == Separator(None, True)
    assert error.facts().separator_errors == (0,)
    ones = parse_event_log(
        spec_id() + agile_event(4, EV_SEPARATOR, all_banks(b"\xff" * 4), b"\xff" * 4)
    )
    assert (
        ones.events[1].decoded == Separator(0xFFFFFFFF, False) and not ones.facts().separator_errors
    )


def test_facts_ubuntu_gce() -> None:
    facts = load("event-gce-ubuntu-2104-log.bin").facts()
    assert facts.secure_boot is False
    assert facts.firmware_version == "GCE Virtual Firmware v1"
    assert facts.separators == tuple(range(8)) and facts.separator_errors == ()
    assert facts.exit_boot_services and not facts.firmware_debug_mode
    assert facts.pk is not None and [e.subject for e in facts.pk] == ["CN=newpk"]
    assert facts.db is not None and all(e.kind == "certificate" for e in facts.db)
    assert facts.dbx == ()
    paths = [app.device_path for app in facts.boot_applications]
    assert paths[0] is not None and paths[0].endswith(r"\EFI\ubuntu\shimx64.efi")
    assert paths[1] == r"\EFI\ubuntu\grubx64.efi"
    assert set(facts.boot_applications[0].digests) == {"sha1", "sha256", "sha384"}
    assert facts.sbat_level == "sbat,1,2021030218\n"
    assert [(m.name, m.pcr, m.data) for m in facts.mok] == [
        ("MokList", 14, None),
        ("MokListX", 14, None),
        ("SbatLevel", 7, b"sbat,1,2021030218\n"),
    ]
    assert "set prefix=(hd0,gpt1)/boot/grub" in facts.grub_commands
    assert facts.kernel_cmdline is not None
    assert facts.kernel_cmdline.startswith("/boot/vmlinuz-5.11.0-1008-gcp root=PARTUUID=")
    assert any(m.pcr == 9 and m.text == "(hd0,gpt1)/boot/grub/grub.cfg" for m in facts.boot_loader)
    assert facts.windows is None


def test_facts_shim_mok_trusted() -> None:
    facts = load("event-moklisttrusted.bin").facts()
    assert facts.secure_boot is True
    assert [a.variable for a in facts.authorities] == ["db", "SbatLevel", "MokListTrusted", "Shim"]
    db, _, _, shim = facts.authorities
    assert db.entry is not None and db.entry.subject is not None
    assert "Microsoft Corporation UEFI CA 2011" in db.entry.subject
    assert shim.entry is not None and "Red Hat Secure Boot CA 5" in (shim.entry.subject or "")
    assert ("MokListTrusted", 7, b"\x01") in [(m.name, m.pcr, m.data) for m in facts.mok]
    assert facts.dbx is not None and facts.dbx[0].kind == "hash"
    assert facts.dbx[0].hash_hex == hashlib.sha256(b"").hexdigest()  # a placeholder entry


def test_facts_systemd_boot() -> None:
    facts = load("event-sd-boot-fedora37.bin").facts()
    assert facts.kernel_cmdlines == ("console=ttyS0 console=tty0 efi=debug",) * 2
    initrd = [m for m in facts.boot_loader if m.pcr == 9]
    assert [(m.event_type, m.text) for m in initrd] == [("EV_EVENT_TAG", "Linux initrd")]
    arch = load("event-arch-linux.bin").facts()  # older systemd-boot: PCR 8, an odd size
    assert arch.kernel_cmdline is not None and arch.kernel_cmdline.startswith(
        r"initrd=\intel-ucode.img"
    )
    assert arch.pk is not None and arch.pk[0].subject == "CN=Joe Richey (PK)"
    assert arch.dbx is not None and len(arch.dbx) == 77
    assert all(
        e.type_name == "EFI_CERT_SHA256_GUID" and len(e.hash_hex or "") == 64 for e in arch.dbx
    )


def test_facts_windows() -> None:
    """The Windows log's SIPA facts, as go-attestation's own test reads the same log."""
    facts = load("windows_gcp_shielded_vm").facts()
    assert facts.secure_boot is True
    assert facts.boot_applications[0].device_path is not None
    assert facts.boot_applications[0].device_path.endswith(r"\EFI\Microsoft\Boot\bootmgfw.efi")
    (authority,) = facts.authorities
    assert authority.entry is not None
    assert "Microsoft Root Certificate Authority 2010" in (authority.entry.subject or "")
    windows = facts.windows
    assert isinstance(windows, WindowsFacts)
    assert (windows.boot_count, windows.cold_boot) == (4, True)
    assert (windows.code_integrity, windows.dep) == (True, True)
    assert not (windows.test_signing or windows.boot_debugging or windows.kernel_debugging)
    assert not (windows.safe_mode or windows.winpe)
    assert windows.bitlocker_unlocks == (0, 0)
    (elam,) = windows.elam_drivers
    assert elam.name == "Windows Defender"
    assert elam.measured == bytes.fromhex("067d5b9dc5627f97dcf3feff602a342ed698d2cc")
    modules = {m.authenticode_hash: m for m in windows.loaded_modules}
    vioscsi = modules["0fdce7d71936f79445e7d2c84cbeb97c948d3730e0b839166b0a4e625c2d4547"]
    assert vioscsi.file_path == r"\Windows\System32\drivers\vioscsi.sys"
    assert (vioscsi.image_bases, vioscsi.image_size, vioscsi.image_validated) == (
        (81416192,),
        86016,
        True,
    )
    assert vioscsi.authority_issuer == "Microsoft Windows Third Party Component CA 2014"
    assert vioscsi.authority_sha1 == "2629e86aae6eb9c9adcc1c548d601a50fd96927a"
    tags = [e.decoded for e in load("windows_gcp_shielded_vm").events if e.event_type == 6]
    assert all(isinstance(t, TaggedEvent) for t in tags)
    assert {t.name for t in tags if isinstance(t, TaggedEvent)} == {
        "SIPAEVENT_TRUSTBOUNDARY",
        "SIPAEVENT_AUTHORITYPUBKEY",
    }


def test_facts_hp_windows_with_option_rom() -> None:
    log = load("option_rom_eventlog")
    facts = log.facts()
    assert [d.device_path for d in facts.drivers] == [
        "PciRoot(0x0)/Pci(0x2,0x0)/Pci(0x0,0x0)/Offset(0xf600,0x207ff)"
    ]
    assert facts.windows is not None and facts.windows.bitlocker_unlocks == (4, 1)
    assert [WindowsFacts.bitlocker_flags(v) for v in facts.windows.bitlocker_unlocks] == [
        ("tpm",),
        ("cached",),
    ]
    # Windows' AIK record, logged as EV_NO_ACTION in "PCR" 0xFFFFFFFF: its SIPA trust point
    # aggregation claims 969 bytes where 416 follow, so it stays raw
    (aik,) = [e for e in log.events if e.pcr == 0xFFFFFFFF]
    assert aik.decoded == NoActionEvent("", aik.data, None)
    assert struct.unpack_from("<II", aik.data) == (0xC0010004, 969) and len(aik.data) == 424
    assert 0xFFFFFFFF not in log.replay()["sha1"]  # an EV_NO_ACTION: nothing extended


def test_facts_upto_a_prefix() -> None:
    """Facts from the quoted prefix only: events appended after it do not count."""
    base = LOGS["event-gce-ubuntu-2104-log.bin"]()
    later = parse_event_log(
        base + agile_event(8, EV_IPL, all_banks(b"evil", ("sha1",)), b"kernel_cmdline: evil\0")
    )
    count = len(parse_event_log(base).events)
    assert later.facts().kernel_cmdline == "evil"
    assert later.facts(upto=count) == parse_event_log(base).facts()
    assert later.facts(upto=0).secure_boot is None


def test_facts_of_synthetic_events() -> None:
    """The facts the real logs lack: UEFI debug mode, a SecureBoot variable of another value."""
    secure = variable_bytes("8be4df61-93ca-11d2-aa0d-00e098032b8c", "SecureBoot", b"\x02")
    log = parse_event_log(
        spec_id()
        + agile_event(7, EV_EFI_ACTION, all_banks(b"UEFI Debug Mode"), b"UEFI Debug Mode")
        + agile_event(7, 0x80000001, all_banks(secure), secure)
        + agile_event(8, EV_IPL, all_banks(b"linux /vmlinuz ro"), b"grub_cmd: linux /vmlinuz ro\0")
        + agile_event(8, EV_IPL, all_banks(b"/vmlinuz ro"), b"kernel_cmdline: /vmlinuz ro\0")
    )
    facts = log.facts()
    assert facts.firmware_debug_mode and facts.actions == ("UEFI Debug Mode",)
    assert facts.secure_boot is None  # neither 0 nor 1
    assert (facts.grub_commands, facts.kernel_cmdline) == (("linux /vmlinuz ro",), "/vmlinuz ro")


def variable_bytes(guid: str, name: str, value: bytes) -> bytes:
    """A UEFI_VARIABLE_DATA."""
    import uuid

    encoded = name.encode("utf-16-le")
    return uuid.UUID(guid).bytes_le + struct.pack("<QQ", len(name), len(value)) + encoded + value


def test_unknown_event_type_stays_raw() -> None:
    log = parse_event_log(spec_id() + agile_event(3, 0x4242, all_banks(b"?"), b"\x00\x01\x02"))
    event = log.events[1]
    assert event.type_name == "EV_UNKNOWN_0x00004242" and event.decoded is None
    assert event.data == b"\x00\x01\x02"


def test_decoded_is_never_an_error_for_garbage_of_a_known_type() -> None:
    for event_type in (0x80000001, 0x80000003, 0x800000E0, 0x80000006, 6, 4, 8, 3):
        log = parse_event_log(
            spec_id() + agile_event(1, event_type, all_banks(b"\xff"), b"\xff" * 7)
        )
        decoded = log.events[1].decoded
        assert decoded is None or isinstance(decoded, (NoActionEvent, Separator, EventText)), (
            decoded
        )


def test_facts_mapping_types() -> None:
    """Digests are read-only mappings; events and logs are frozen."""
    log = load("event-uefivar.bin")
    event = log.events[1]
    assert isinstance(event.digests, Mapping)
    with pytest.raises(TypeError):
        event.digests["sha1"] = b""  # type: ignore[index]
    with pytest.raises(AttributeError):
        event.pcr = 3  # type: ignore[misc]


# --- Data against digests, and facts from the covered events only ------------------------------


@pytest.mark.parametrize("name", sorted(LOGS))
def test_real_logs_data_matches_where_defined(name: str) -> None:
    """Every real event whose digest the PFP (or the boot loader) defines over its data has the
    data it measured, the firmware quirks included: no real fact is lost to the check."""
    log = load(name)
    facts = log.facts()
    assert facts.data_mismatches == ()
    checked = [m for found in facts.measurements.values() for m in found if m.data_verified]
    if any(e.event_type == EV_SEPARATOR for e in log.events):
        assert checked


def test_authority_quirk_one_byte_short() -> None:
    """shim and GCE's firmware log an EV_EFI_VARIABLE_AUTHORITY one byte longer than what they
    hashed (the byte after the variable's data): the candidate without it matches, and only
    where that byte lies outside the variable."""
    log = load("sb_cert_eventlog")
    shim = log.events[12]
    assert eventlog.data_matches(shim, ["sha256"]) is True
    sha256 = HASHES["sha256"]
    assert shim.digests["sha256"] == sha256(shim.data[:-1]) != sha256(shim.data)
    # the same bytes without the trailing bytes: the variable ends at the end, no quirk allowed
    variable = variable_bytes(_efi.SHIM_LOCK, "Shim", b"\x30\x03\x02\x01\x01")
    short = parse_event_log(
        spec_id() + agile_event(7, 0x800000E0, all_banks(variable[:-1]), variable)
    )
    assert eventlog.data_matches(short.events[1], ["sha1", "sha256"]) is False


def test_grub_and_systemd_strings_are_measured_as_text() -> None:
    ubuntu = load("event-gce-ubuntu-2104-log.bin")
    (cmdline,) = [e for e in ubuntu.events if e.data.startswith(b"kernel_cmdline: ")]
    assert eventlog.measured_data(cmdline) == (cmdline.data[16:].rstrip(b"\0"),)
    assert eventlog.data_matches(cmdline, ubuntu.banks) is True
    arch = load("event-arch-linux.bin")  # old systemd-boot: 365 bytes logged, 366 hashed
    (wide,) = [e for e in arch.events if e.pcr == 8]
    assert len(wide.data) % 2 == 1 and eventlog.data_matches(wide, ["sha256"]) is True
    files = [e for e in ubuntu.events if e.pcr == 9]
    assert files and all(eventlog.measured_data(e) is None for e in files)  # labels
    facts = ubuntu.facts()
    assert all(not m.text_measured for m in facts.boot_loader if m.pcr == 9)
    assert all(m.text_measured for m in facts.boot_loader if m.pcr == 8)


def test_a_secure_boot_variable_whose_data_is_not_its_digest_gives_no_fact() -> None:
    """The attack: SecureBoot=1 in the event's data, the digest of SecureBoot=0 (what the
    firmware measured, so the replay still matches the quote). The data is refused: no
    secure_boot fact, the event listed as a mismatch."""
    off = variable_bytes(_efi.EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x00")
    on = variable_bytes(_efi.EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    forged = parse_event_log(spec_id() + agile_event(7, 0x80000001, all_banks(off), on))
    genuine = parse_event_log(spec_id() + agile_event(7, 0x80000001, all_banks(off), off))
    assert forged.replay() == genuine.replay()
    assert genuine.facts().secure_boot is False
    facts = forged.facts()
    assert facts.secure_boot is None
    assert [(m.event_index, m.event_type) for m in facts.data_mismatches] == [
        (1, "EV_EFI_VARIABLE_DRIVER_CONFIG")
    ]


def test_a_mismatch_in_an_unchecked_bank_is_not_read() -> None:
    """With the quoted bank given, only its digests are read: a forged SHA-1 digest (a bank the
    quote did not cover) can neither vouch for data nor refuse it."""
    off = variable_bytes(_efi.EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x00")
    on = variable_bytes(_efi.EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01")
    log = parse_event_log(
        spec_id()
        + agile_event(7, 0x80000001, [(4, HASHES["sha1"](on)), (11, HASHES["sha256"](off))], on)
    )
    assert log.facts(pcrs={"sha1": [7]}).secure_boot is True  # what SHA-1 alone would say
    sha256 = log.facts(pcrs={"sha256": [7]})
    assert sha256.secure_boot is None and len(sha256.data_mismatches) == 1
    assert sha256.banks == ("sha256",)


def test_facts_from_covered_pcrs_only() -> None:
    log = load("event-gce-ubuntu-2104-log.bin")
    full = log.facts()
    only7 = log.facts(pcrs={"sha256": [7]})
    assert only7.pcrs == (7,) and only7.secure_boot is False and only7.pk == full.pk
    assert only7.boot_applications == () and only7.kernel_cmdlines == ()
    assert only7.firmware_version is None and only7.separators == (7,)
    apps = log.facts(pcrs={"sha384": [4]}).boot_applications
    assert [set(a.digests) for a in apps] == [{"sha384"}, {"sha384"}]
    assert apps[0].digests["sha384"] == full.boot_applications[0].digests["sha384"]
    with pytest.raises(InvalidData, match="sha512"):
        log.facts(pcrs={"sha512": [7]})


def test_windows_revocation_lists_and_bitlocker() -> None:
    windows = load("windows_gcp_shielded_vm").facts().windows
    assert windows is not None and windows.bitlocker
    boot = windows.boot_revocation_list
    assert boot is not None and boot.hash_algorithm == 0x000B and len(boot.digest) == 32
    assert boot.creation_time == 0x01D37370AD9AA180
    assert windows.os_revocation_list is not None
    assert windows.os_revocation_list.digest.hex().startswith("1bab1978c5b1")
