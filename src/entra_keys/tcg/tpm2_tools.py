"""The files tpm2-tools reads and writes, so that ``tpm2_checkquote`` checks our quotes.

``tpm2_checkquote -m MESSAGE -s SIGNATURE -f PCRS`` takes the TPMS_ATTEST, the TPMT_SIGNATURE
and a PCR file in tpm2-tools 5.x "serialized" form; ``write_checkquote_files`` writes the three
from a ``Quote``, and ``tpm2_pcrs_file`` / ``parse_tpm2_pcrs_file`` write and read the PCR file.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidData
from .records import Quote
from .structures import (
    TPMLPCRSelection,
    TPMSAttest,
    TPMSPCRSelection,
    TPMSQuoteInfo,
    hash_info_by_name,
)

__all__ = ["CheckquoteFiles", "parse_tpm2_pcrs_file", "tpm2_pcrs_file", "write_checkquote_files"]

# tpm2-tools 5.x "serialized" PCR file: the C structures in host (little-endian) order.
# TPML_PCR_SELECTION: count, then 16 TPMS_PCR_SELECTION {hash, sizeofSelect, pcrSelect[4], pad};
# a count of TPML_DIGEST; each TPML_DIGEST: count, then 8 TPM2B_DIGEST {size, buffer[64]}.
_FILE_SELECTION = struct.Struct("<HB4sx")
_FILE_DIGEST = struct.Struct("<H64s")
_FILE_BANKS, _FILE_DIGESTS = 16, 8
_SELECTION_SIZE = 4 + _FILE_BANKS * _FILE_SELECTION.size
_DIGEST_LIST_SIZE = 4 + _FILE_DIGESTS * _FILE_DIGEST.size


def tpm2_pcrs_file(selection: TPMLPCRSelection, values: Mapping[int, Mapping[int, bytes]]) -> bytes:
    """The PCR file of ``tpm2_quote -o`` / ``tpm2_checkquote -f`` (tpm2-tools 5.x "serialized"
    form), with ``values`` as {hash alg: {PCR: value}} in the selection's order."""
    if len(selection.selections) > _FILE_BANKS:
        raise InvalidData(f"a PCR file holds at most {_FILE_BANKS} banks")
    out = [struct.pack("<I", len(selection.selections))]
    ordered: list[bytes] = []
    for sel in selection.selections:
        bits = sum(1 << p for p in sel.pcrs).to_bytes(4, "little")
        out.append(_FILE_SELECTION.pack(sel.hash, sel.size_of_select, bits))
        bank = values.get(sel.hash, {})
        for pcr in sorted(sel.pcrs):
            if pcr not in bank:
                raise InvalidData(f"no value for PCR {pcr} of bank 0x{sel.hash:04x}")
            ordered.append(bank[pcr])
    out.append(bytes(_FILE_SELECTION.size * (_FILE_BANKS - len(selection.selections))))
    groups = [ordered[i : i + _FILE_DIGESTS] for i in range(0, len(ordered), _FILE_DIGESTS)]
    out.append(struct.pack("<I", len(groups)))
    for group in groups:
        out.append(struct.pack("<I", len(group)))
        for value in group:
            if len(value) > 64:
                raise InvalidData(f"a PCR value is {len(value)} bytes, more than 64")
            out.append(_FILE_DIGEST.pack(len(value), value))
        out.append(bytes(_FILE_DIGEST.size * (_FILE_DIGESTS - len(group))))
    return b"".join(out)


def parse_tpm2_pcrs_file(data: bytes) -> tuple[TPMLPCRSelection, dict[int, dict[int, bytes]]]:
    """(selection, {hash alg: {PCR: value}}) from a tpm2-tools 5.x "serialized" PCR file."""
    what = "tpm2-tools PCR file"
    if len(data) < _SELECTION_SIZE + 4:
        raise InvalidData(f"{what}: {len(data)} bytes, shorter than its headers")
    (count,) = struct.unpack_from("<I", data, 0)
    if count > _FILE_BANKS:
        raise InvalidData(f"{what}: {count} banks, more than {_FILE_BANKS}")
    selections = []
    for i in range(count):
        alg, size, bits = _FILE_SELECTION.unpack_from(data, 4 + i * _FILE_SELECTION.size)
        if size > 4:
            raise InvalidData(f"{what}: sizeofSelect {size} is more than 4")
        mask = int.from_bytes(bits[:size], "little")
        selections.append(
            TPMSPCRSelection(alg, frozenset(p for p in range(8 * size) if mask >> p & 1), size)
        )
    selection = TPMLPCRSelection(tuple(selections))
    (groups,) = struct.unpack_from("<I", data, _SELECTION_SIZE)
    if len(data) != _SELECTION_SIZE + 4 + groups * _DIGEST_LIST_SIZE:
        raise InvalidData(f"{what}: {len(data)} bytes do not hold {groups} digest lists")
    digests: list[bytes] = []
    for g in range(groups):
        base = _SELECTION_SIZE + 4 + g * _DIGEST_LIST_SIZE
        (n,) = struct.unpack_from("<I", data, base)
        if n > _FILE_DIGESTS:
            raise InvalidData(f"{what}: a digest list of {n}, more than {_FILE_DIGESTS}")
        for k in range(n):
            size, buffer = _FILE_DIGEST.unpack_from(data, base + 4 + k * _FILE_DIGEST.size)
            if size > 64:
                raise InvalidData(f"{what}: a digest of {size} bytes, more than 64")
            digests.append(buffer[:size])
    wanted = sum(len(s.pcrs) for s in selections)
    if len(digests) != wanted:
        raise InvalidData(f"{what}: {len(digests)} PCR values for {wanted} selected PCRs")
    values: dict[int, dict[int, bytes]] = {}
    it = iter(digests)
    for sel in selections:
        bank = values.setdefault(sel.hash, {})
        for pcr in sorted(sel.pcrs):
            bank[pcr] = next(it)
    return selection, values


@dataclass(frozen=True)
class CheckquoteFiles:
    """The three files ``tpm2_checkquote -m MESSAGE -s SIGNATURE -f PCRS`` reads."""

    message: Path
    signature: Path
    pcrs: Path


def write_checkquote_files(
    quote: Quote, directory: str | Path, stem: str = "quote"
) -> CheckquoteFiles:
    """Writes STEM.msg (TPMS_ATTEST), STEM.sig (TPMT_SIGNATURE) and STEM.pcrs (PCR values)."""
    attest = TPMSAttest.parse(quote.attest)
    if not isinstance(attest.attested, TPMSQuoteInfo):
        raise InvalidData("the attestation is not a quote")
    bank = hash_info_by_name(quote.pcr_bank).alg
    pcrs = tpm2_pcrs_file(attest.attested.pcr_select, {bank: quote.pcr_values})
    folder = Path(directory)
    files = CheckquoteFiles(folder / f"{stem}.msg", folder / f"{stem}.sig", folder / f"{stem}.pcrs")
    files.message.write_bytes(quote.attest)
    files.signature.write_bytes(quote.signature)
    files.pcrs.write_bytes(pcrs)
    return files
