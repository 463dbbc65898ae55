"""Reading the captures of tpm2-tss's pcap TCTI (``pcap:<tcti>``, file from ``TCTI_PCAP_FILE``).

Each TPM command and each response is one pcapng Enhanced Packet Block (type 6), in order, so
the commands are every other packet: what tests and benchmarks count to say how many TPM
commands an operation costs, and search to see what crosses the TPM interface. A capture that
another process writes (tpm2-abrmd's, on its TPM side) is read once it has ``settled``.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

__all__ = [
    "COMMANDS",
    "RESUBMIT",
    "command_codes",
    "command_names",
    "response_codes",
    "settled",
    "tpm_commands",
    "tpm_packets",
]

#: The names of the TPM commands entra_keys sends (TPM 2.0 Part 2, Table 12, TPM_CC).
COMMANDS = {
    0x120: "EvictControl", 0x126: "Clear", 0x12A: "NV_DefineSpace", 0x131: "CreatePrimary",
    0x137: "NV_Write", 0x139: "DictionaryAttackLockReset", 0x144: "Startup",
    0x145: "Shutdown", 0x147: "ActivateCredential", 0x148: "Certify", 0x14E: "NV_Read",
    0x151: "PolicySecret", 0x153: "Create", 0x155: "HMAC", 0x157: "Load", 0x158: "Quote",
    0x159: "RSA_Decrypt", 0x15D: "Sign", 0x15E: "Unseal", 0x161: "ContextLoad",
    0x162: "ContextSave", 0x165: "FlushContext", 0x169: "NV_ReadPublic",
    0x16B: "PolicyAuthValue", 0x173: "ReadPublic", 0x176: "StartAuthSession",
    0x17A: "GetCapability", 0x17B: "GetRandom", 0x17E: "PCR_Read", 0x17F: "PolicyPCR",
    0x180: "PolicyRestart", 0x189: "PolicyGetDigest", 0x191: "CreateLoaded",
}  # fmt: skip

_BLOCK = struct.Struct("<II")  # block type, total length
_PACKET = 6  # Enhanced Packet Block
_HEADER = struct.Struct(">HII")  # TPM tag, size, command code


def _packet_blocks(data: bytes) -> list[int]:
    """Where each Enhanced Packet Block starts in the capture's bytes."""
    starts, offset = [], 0
    while offset + 12 <= len(data):
        kind, length = _BLOCK.unpack_from(data, offset)
        if length < 12:
            break
        if kind == _PACKET:
            starts.append(offset)
        offset += length
    return starts


def tpm_packets(capture: Path) -> list[bytes]:
    """The captured packets (commands and responses alternating), each with the TCTI's
    framing before the TPM bytes."""
    data = capture.read_bytes()
    packets = []
    for start in _packet_blocks(data):
        (captured,) = struct.unpack_from("<I", data, start + 20)
        packets.append(data[start + 28 : start + 28 + captured])
    return packets


def tpm_commands(capture: Path) -> int:
    """How many TPM commands the capture holds: half its packets."""
    return len(_packet_blocks(capture.read_bytes())) // 2


def _headers(packets: list[bytes]) -> list[int]:
    """The third field of each packet's TPM header (a command's code, a response's code):
    found where a header (tag, size to the packet's end, code) starts in the packet."""
    found = []
    for packet in packets:
        for start in range(len(packet) - _HEADER.size + 1):
            tag, size, code = _HEADER.unpack_from(packet, start)
            if tag in (0x8001, 0x8002) and size == len(packet) - start:
                found.append(code)
                break
    return found


def command_codes(capture: Path) -> list[int]:
    """The command code of each captured command, in order."""
    return _headers(tpm_packets(capture)[::2])


def response_codes(capture: Path) -> list[int]:
    """The response code of each captured response, in order (0 for success)."""
    return _headers(tpm_packets(capture)[1::2])


#: The warnings on which tpm2-tss sends the same command again (TPM 2.0 Part 2, 6.6.3):
#: TPM_RC_TESTING, TPM_RC_YIELDED, TPM_RC_RETRY. A swtpm answers some RSA operations so.
RESUBMIT = frozenset({0x90A, 0x908, 0x922})


def command_names(capture: Path, *, resubmitted: bool = True) -> list[str]:
    """The names of the captured commands, in order (``0x...`` for one not in ``COMMANDS``);
    without ``resubmitted``, a command the TPM answered "send it again" (``RESUBMIT``) is left
    out: the TSS sends it again, the TPM's doing, not the caller's."""
    packets = tpm_packets(capture)
    codes = _headers(packets[::2])
    answers = _headers(packets[1::2])
    names = []
    for index, code in enumerate(codes):
        if not resubmitted and index < len(answers) and answers[index] in RESUBMIT:
            continue
        names.append(COMMANDS.get(code, f"0x{code:x}"))
    return names


def settled(capture: Path, *, quiet: float = 0.3, timeout: float = 15.0) -> int:
    """How many commands the capture holds once its writer has been quiet for ``quiet``
    seconds (another process may still be sending commands the caller caused)."""
    deadline = time.monotonic() + timeout
    size = capture.stat().st_size if capture.exists() else -1
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(quiet / 6)
        now = capture.stat().st_size if capture.exists() else -1
        if now != size:
            size, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet:
            break
    return tpm_commands(capture) if capture.exists() else 0
