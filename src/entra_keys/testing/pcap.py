"""Reading the captures of tpm2-tss's pcap TCTI (``pcap:<tcti>``, file from ``TCTI_PCAP_FILE``).

Each TPM command and each response is one pcapng Enhanced Packet Block (type 6), in order, so
the commands are every other packet: what tests and benchmarks count to say how many TPM
commands an operation costs, and search to see what crosses the TPM interface.
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["command_codes", "tpm_commands", "tpm_packets"]

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


def command_codes(capture: Path) -> list[int]:
    """The command code of each captured command, in order: found where a TPM command header
    (tag, size to the packet's end, code) starts in the packet."""
    codes = []
    for packet in tpm_packets(capture)[::2]:
        for start in range(len(packet) - _HEADER.size + 1):
            tag, size, code = _HEADER.unpack_from(packet, start)
            if tag in (0x8001, 0x8002) and size == len(packet) - start:
                codes.append(code)
                break
    return codes
