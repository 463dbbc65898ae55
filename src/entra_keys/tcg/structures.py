"""TPM 2.0 wire structures (TCG TPM 2.0 Library, Part 2) as frozen dataclasses.

Each structure has ``parse(data)``, strict (the whole input, no trailing bytes; every failure an
``InvalidData`` with an exact message), and ``to_bytes()``, its canonical marshaling:
``X.parse(b).to_bytes() == b``. Names follow the specification (``TPMS_ATTEST`` is
``TPMSAttest``, ``qualifiedSigner`` is ``qualified_signer``). Pure Python: no TSS is needed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from ..errors import InvalidData
from . import wire
from .public import (
    TPMSECCParms,
    TPMSECCPoint,
    TPMSKeyedHashParms,
    TPMSRSAParms,
    TPMSSymCipherParms,
    TPMTPublic,
    TPMTScheme,
    TPMTSymDefObject,
)
from .signature import TPMTSignature
from .wire import *  # noqa: F403 - re-exported: __all__ += wire.__all__
from .wire import (
    CLOCK,
    HEADER,
    MAX_DATA,
    MAX_DIGEST,
    MAX_NAME,
    NUM_PCR_BANKS,
    PCR_SELECT_MAX,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    U16,
    U32,
    Reader,
    hash_info_by_name,
    tpm2b,
)

__all__ = [
    "TPM_ST_ATTEST_CREATION",
    "TPMLPCRSelection",
    "TPMSAttest",
    "TPMSCertifyInfo",
    "TPMSClockInfo",
    "TPMSCreationData",
    "TPMSCreationInfo",
    "TPMSECCParms",
    "TPMSECCPoint",
    "TPMSKeyedHashParms",
    "TPMSPCRSelection",
    "TPMSQuoteInfo",
    "TPMSRSAParms",
    "TPMSSymCipherParms",
    "TPMTPublic",
    "TPMTScheme",
    "TPMTSignature",
    "TPMTSymDefObject",
]
__all__ += wire.__all__  # the wire constants and helpers are exported from here too


#: TPM_ST_ATTEST_CREATION: the TPMS_ATTEST type of TPM2_CertifyCreation (Part 2, 6.9).
TPM_ST_ATTEST_CREATION = 0x801A

_SELECT_HEAD = struct.Struct(">HB")  # TPMS_PCR_SELECTION hash, sizeofSelect
#: The bits set in each byte value, for reading pcrSelect bitmaps.
_BITS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))


# --- TPML_PCR_SELECTION --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSPCRSelection:
    """TPMS_PCR_SELECTION: a hash bank and the PCRs selected in it (sizeofSelect bytes)."""

    hash: int
    pcrs: frozenset[int]
    size_of_select: int = 3

    def to_bytes(self) -> bytes:
        """The marshaled TPMS_PCR_SELECTION: hash, sizeofSelect (as given, 0 included) and the
        bitmap, PCR n in bit n."""
        size = self.size_of_select
        bits = 0
        for pcr in self.pcrs:
            if not 0 <= pcr < 8 * size:
                raise InvalidData(f"PCR {pcr} does not fit a {size}-byte select")
            bits |= 1 << pcr
        return U16.pack(self.hash) + bytes([size]) + bits.to_bytes(size, "little")

    @classmethod
    def read(cls, r: Reader) -> TPMSPCRSelection:
        """The TPMS_PCR_SELECTION at the reader's position."""
        alg, size = r.fields(_SELECT_HEAD, "pcrSelections.hash and sizeofSelect")
        if size > PCR_SELECT_MAX:
            raise InvalidData(f"{r.what}: sizeofSelect {size} is more than {PCR_SELECT_MAX}")
        select = r.take(size, "pcrSelections.pcrSelect")  # PCR n in bit n % 8 of byte n // 8
        pcrs = frozenset([8 * i + bit for i, byte in enumerate(select) for bit in _BITS[byte]])
        return cls(alg, pcrs, size)


@dataclass(frozen=True, slots=True)
class TPMLPCRSelection:
    """TPML_PCR_SELECTION: the PCR banks and indices a quote covers, in the TPM's order."""

    selections: tuple[TPMSPCRSelection, ...]

    @classmethod
    def parse(cls, data: bytes) -> TPMLPCRSelection:
        """A TPML_PCR_SELECTION that is exactly the input."""
        r = Reader(data, "TPML_PCR_SELECTION")
        selection = cls.read(r)
        r.done()
        return selection

    @classmethod
    def read(cls, r: Reader) -> TPMLPCRSelection:
        """The TPML_PCR_SELECTION at the reader's position."""
        count = r.u32("count")
        if count > NUM_PCR_BANKS:
            raise InvalidData(f"{r.what}: {count} PCR banks, more than {NUM_PCR_BANKS}")
        return cls(tuple([TPMSPCRSelection.read(r) for _ in range(count)]))

    def to_bytes(self) -> bytes:
        """The marshaled TPML_PCR_SELECTION."""
        return U32.pack(len(self.selections)) + b"".join(s.to_bytes() for s in self.selections)

    @classmethod
    def of(cls, banks: Mapping[str, Iterable[int]] | Mapping[int, Iterable[int]]) -> Self:
        """A selection from {bank: PCR indices}, banks named ("sha256") or TPM_ALG ids."""
        selections = []
        items: Iterable[tuple[str | int, Iterable[int]]] = banks.items()
        for bank, pcrs in items:
            alg = bank if isinstance(bank, int) else hash_info_by_name(bank).alg
            selections.append(TPMSPCRSelection(alg, frozenset(pcrs)))
        return cls(tuple(selections))

    def as_dict(self) -> dict[int, frozenset[int]]:
        """{hash alg: PCR indices} in the selection's order, banks with nothing selected left
        out; InvalidData when a bank appears twice (even with nothing selected)."""
        out: dict[int, frozenset[int]] = {}
        seen: set[int] = set()
        for selection in self.selections:
            if selection.hash in seen:
                raise InvalidData(f"PCR bank 0x{selection.hash:04x} is selected twice")
            seen.add(selection.hash)
            if selection.pcrs:
                out[selection.hash] = selection.pcrs
        return out


# --- TPMS_ATTEST -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSClockInfo:
    """TPMS_CLOCK_INFO: the TPM's clock (ms), reset and restart counts, and whether it is safe."""

    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, slots=True)
class TPMSQuoteInfo:
    """TPMS_QUOTE_INFO: the quoted PCR selection and the digest of their values."""

    pcr_select: TPMLPCRSelection
    pcr_digest: bytes


@dataclass(frozen=True, slots=True)
class TPMSCertifyInfo:
    """TPMS_CERTIFY_INFO: the certified object's name and qualified name."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True, slots=True)
class TPMSCreationInfo:
    """TPMS_CREATION_INFO: the created object's name and the digest of its creation data."""

    object_name: bytes
    creation_hash: bytes


@dataclass(frozen=True, slots=True)
class TPMSAttest:
    """TPMS_ATTEST (Part 2, 10.12.12): what a TPM signs in TPM2_Quote, TPM2_Certify and
    TPM2_CertifyCreation.

    Only the quote, certify and creation types parse; any other type is an InvalidData.
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: TPMSClockInfo
    firmware_version: int
    attested: TPMSQuoteInfo | TPMSCertifyInfo | TPMSCreationInfo

    @classmethod
    def parse(cls, data: bytes) -> TPMSAttest:
        """A TPMS_ATTEST (quote, certify or creation) that is exactly the input."""
        r = Reader(data, "TPMS_ATTEST")
        magic, kind = r.fields(HEADER, "magic and type")
        signer = r.tpm2b("qualifiedSigner", MAX_NAME)
        extra = r.tpm2b("extraData", MAX_DATA)
        clock, resets, restarts, safe, firmware = r.fields(CLOCK, "clockInfo and firmwareVersion")
        if safe > 1:
            raise InvalidData(f"TPMS_ATTEST: clockInfo.safe is {safe}, not YES (1) or NO (0)")
        attested: TPMSQuoteInfo | TPMSCertifyInfo | TPMSCreationInfo
        if kind == TPM_ST_ATTEST_QUOTE:
            selection = TPMLPCRSelection.read(r)
            attested = TPMSQuoteInfo(selection, r.tpm2b("quote.pcrDigest", MAX_DIGEST))
        elif kind == TPM_ST_ATTEST_CERTIFY:
            name = r.tpm2b("certify.name", MAX_NAME)
            attested = TPMSCertifyInfo(name, r.tpm2b("certify.qualifiedName", MAX_NAME))
        elif kind == TPM_ST_ATTEST_CREATION:
            name = r.tpm2b("creation.objectName", MAX_NAME)
            attested = TPMSCreationInfo(name, r.tpm2b("creation.creationHash", MAX_DIGEST))
        else:
            raise InvalidData(
                f"TPMS_ATTEST: type 0x{kind:04x} is neither a quote (0x8018), "
                "a certification (0x8017) nor a creation (0x801A)"
            )
        r.done()
        info = TPMSClockInfo(clock, resets, restarts, safe == 1)
        return cls(magic, kind, signer, extra, info, firmware, attested)

    def to_bytes(self) -> bytes:
        """The marshaled TPMS_ATTEST."""
        c = self.clock_info
        out = [
            HEADER.pack(self.magic, self.type),
            tpm2b(self.qualified_signer),
            tpm2b(self.extra_data),
            CLOCK.pack(c.clock, c.reset_count, c.restart_count, int(c.safe), self.firmware_version),
        ]
        a = self.attested
        if isinstance(a, TPMSQuoteInfo):
            out += [a.pcr_select.to_bytes(), tpm2b(a.pcr_digest)]
        elif isinstance(a, TPMSCertifyInfo):
            out += [tpm2b(a.name), tpm2b(a.qualified_name)]
        else:
            out += [tpm2b(a.object_name), tpm2b(a.creation_hash)]
        return b"".join(out)


# --- TPMS_CREATION_DATA --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSCreationData:
    """TPMS_CREATION_DATA (Part 2, 15.1): what a TPM records when it creates an object: the
    PCRs selected and their digest, the locality, the parent's name and qualified name, and
    the caller's outsideInfo. TPM2_CertifyCreation certifies its digest (the creationHash)."""

    pcr_select: TPMLPCRSelection
    pcr_digest: bytes
    locality: int
    parent_name_alg: int
    parent_name: bytes
    parent_qualified_name: bytes
    outside_info: bytes

    @classmethod
    def parse(cls, data: bytes) -> TPMSCreationData:
        """A TPMS_CREATION_DATA that is exactly the input."""
        r = Reader(data, "TPMS_CREATION_DATA")
        selection = TPMLPCRSelection.read(r)
        digest = r.tpm2b("pcrDigest", MAX_DIGEST)
        locality = r.u8("locality")
        parent_alg = r.u16("parentNameAlg")
        parent = r.tpm2b("parentName", MAX_NAME)
        qualified = r.tpm2b("parentQualifiedName", MAX_NAME)
        outside = r.tpm2b("outsideInfo", MAX_DATA)
        r.done()
        return cls(selection, digest, locality, parent_alg, parent, qualified, outside)

    def to_bytes(self) -> bytes:
        """The marshaled TPMS_CREATION_DATA."""
        return b"".join(
            [
                self.pcr_select.to_bytes(),
                tpm2b(self.pcr_digest),
                bytes([self.locality]),
                U16.pack(self.parent_name_alg),
                tpm2b(self.parent_name),
                tpm2b(self.parent_qualified_name),
                tpm2b(self.outside_info),
            ]
        )
