"""TPM 2.0 wire structures (TCG TPM 2.0 Library, Part 2) as frozen dataclasses.

Each structure has ``parse(data)``, strict (the whole input, no trailing bytes; every failure an
``InvalidData`` with an exact message), and ``to_bytes()``, its canonical marshaling:
``X.parse(b).to_bytes() == b``. Names follow the specification (``TPMS_ATTEST`` is
``TPMSAttest``, ``qualifiedSigner`` is ``qualified_signer``). Pure Python: no TSS is needed.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Self

from cryptography.hazmat.primitives.asymmetric import ec, utils

from ..errors import InvalidData, UnsupportedAlgorithm
from . import wire
from .public import (
    PublicKey,
    TPMSECCParms,
    TPMSECCPoint,
    TPMSKeyedHashParms,
    TPMSRSAParms,
    TPMSSymCipherParms,
    TPMTPublic,
    TPMTScheme,
    TPMTSymDefObject,
)
from .wire import *  # noqa: F403 - re-exported: __all__ += wire.__all__
from .wire import (
    CLOCK,
    HEADER,
    MAX_DATA,
    MAX_DIGEST,
    MAX_ECC,
    MAX_NAME,
    MAX_RSA,
    NUM_PCR_BANKS,
    PCR_SELECT_MAX,
    TPM_ALG_ECDSA,
    TPM_ALG_RSAPSS,
    TPM_ALG_RSASSA,
    TPM_ST_ATTEST_CERTIFY,
    TPM_ST_ATTEST_QUOTE,
    U32,
    as_bytes,
    der_signature,
    hash_info_by_name,
    too_large_error,
    tpm2b,
    tpm2b_at,
    trailing_error,
    truncated_error,
)

__all__ = [
    "TPMLPCRSelection",
    "TPMSAttest",
    "TPMSCertifyInfo",
    "TPMSClockInfo",
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
    "pcr_select_bytes",
]
__all__ += wire.__all__  # the wire constants and helpers are exported from here too


# --- TPML_PCR_SELECTION --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TPMSPCRSelection:
    """TPMS_PCR_SELECTION: a hash bank and the PCRs selected in it (sizeofSelect bytes)."""

    hash: int
    pcrs: frozenset[int]
    size_of_select: int = 3

    def _write(self, out: list[bytes]) -> None:
        bits = 0
        for pcr in self.pcrs:
            if not 0 <= pcr < 8 * self.size_of_select:
                raise InvalidData(f"PCR {pcr} does not fit a {self.size_of_select}-byte select")
            bits |= 1 << pcr
        out.append(pcr_select_bytes(self.hash, bits, self.size_of_select))


@dataclass(frozen=True, slots=True)
class TPMLPCRSelection:
    """TPML_PCR_SELECTION: the PCR banks and indices a quote covers, in the TPM's order."""

    selections: tuple[TPMSPCRSelection, ...]

    @classmethod
    def parse(cls, data: bytes) -> TPMLPCRSelection:
        """A TPML_PCR_SELECTION that is exactly the input."""
        what = "TPML_PCR_SELECTION"
        if type(data) is not bytes:
            data = as_bytes(data, what)
        selection, pos = _pcr_selection_at(data, 0, len(data), what)
        if pos != len(data):
            raise trailing_error(what, len(data) - pos)
        return selection

    def to_bytes(self) -> bytes:
        """The marshaled TPML_PCR_SELECTION."""
        out = [U32.pack(len(self.selections))]
        for selection in self.selections:
            selection._write(out)
        return b"".join(out)

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
        """{hash alg: PCR indices}, banks with nothing selected left out; InvalidData when a
        bank appears twice."""
        out: dict[int, frozenset[int]] = {}
        for selection in self.selections:
            if not selection.pcrs:
                continue
            if selection.hash in out:
                raise InvalidData(f"PCR bank 0x{selection.hash:04x} is selected twice")
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


_ATTEST = "TPMS_ATTEST"
_ATTEST_HEAD = struct.Struct(">IHH")  # magic, type, qualifiedSigner size


@dataclass(frozen=True, slots=True)
class TPMSAttest:
    """TPMS_ATTEST (Part 2, 10.12.12): what a TPM signs in TPM2_Quote and TPM2_Certify.

    Only the quote and certify types parse; any other type is an InvalidData.
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: TPMSClockInfo
    firmware_version: int
    attested: TPMSQuoteInfo | TPMSCertifyInfo

    @classmethod
    def parse(cls, data: bytes) -> TPMSAttest:
        """A TPMS_ATTEST (quote or certify) that is exactly the input.

        The verifier's hot path: one pass with ``struct`` and slices, each field bounds-checked
        where it is read, so that a failure says exactly which field is short or too large.
        """
        if type(data) is not bytes:
            data = as_bytes(data, _ATTEST)
        end = len(data)
        if end < 8:
            if end < 6:
                raise truncated_error(_ATTEST, "magic and type", 6, 0, end)
            raise truncated_error(_ATTEST, "qualifiedSigner size", 2, 6, end)
        magic, kind, size = _ATTEST_HEAD.unpack_from(data, 0)
        # Each TPM2B inline (the hot path): size, limit, then the bytes, as tpm2b_at says.
        if size > MAX_NAME:
            raise too_large_error(_ATTEST, "qualifiedSigner", size, MAX_NAME)
        pos = 8 + size
        if pos > end:
            raise truncated_error(_ATTEST, "qualifiedSigner", size, 8, end)
        signer = data[8:pos]
        extra, pos = tpm2b_at(data, pos, end, _ATTEST, "extraData", MAX_DATA)
        if pos + CLOCK.size > end:
            raise truncated_error(_ATTEST, "clockInfo and firmwareVersion", CLOCK.size, pos, end)
        clock, resets, restarts, safe, firmware = CLOCK.unpack_from(data, pos)
        pos += CLOCK.size
        if safe > 1:
            raise InvalidData(f"TPMS_ATTEST: clockInfo.safe is {safe}, not YES (1) or NO (0)")
        attested: TPMSQuoteInfo | TPMSCertifyInfo
        if kind == TPM_ST_ATTEST_QUOTE:
            selection, pos = _pcr_selection_at(data, pos, end, _ATTEST)
            digest, pos = tpm2b_at(data, pos, end, _ATTEST, "quote.pcrDigest", MAX_DIGEST)
            attested = _quote_info(selection, digest)
        elif kind == TPM_ST_ATTEST_CERTIFY:
            name, pos = tpm2b_at(data, pos, end, _ATTEST, "certify.name", MAX_NAME)
            qualified, pos = tpm2b_at(data, pos, end, _ATTEST, "certify.qualifiedName", MAX_NAME)
            attested = _certify_info(name, qualified)
        else:
            raise InvalidData(
                f"TPMS_ATTEST: type 0x{kind:04x} is neither a quote (0x8018) "
                "nor a certification (0x8017)"
            )
        if pos != end:
            raise trailing_error(_ATTEST, end - pos)
        info = _clock_info(clock, resets, restarts, safe == 1)
        return _attest(magic, kind, signer, extra, info, firmware, attested)

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
        else:
            out += [tpm2b(a.name), tpm2b(a.qualified_name)]
        return b"".join(out)


_SELECT_HEAD = struct.Struct(">HB")  # TPMS_PCR_SELECTION hash, sizeofSelect
_BYTE_BITS = tuple(tuple(b for b in range(8) if v >> b & 1) for v in range(256))
# Parsed selections by their bytes: a device quotes the same PCRs again and again, and the
# objects are immutable. Bounded: once full, further selections are built each time.
_SELECTIONS: dict[bytes, TPMLPCRSelection] = {}
_SELECTIONS_MAX = 256


def pcr_select_bytes(alg: int, bits: int, size: int | None = None) -> bytes:
    """A TPMS_PCR_SELECTION: the bank, sizeofSelect (``size``, 0 included, or when not given the
    least that holds the bits and at least 3, as TPMs select 24 PCRs) and the bitmap, PCR n in
    bit n."""
    if size is None:
        size = max(3, (bits.bit_length() + 7) // 8)
    return _SELECT_HEAD.pack(alg, size) + bits.to_bytes(size, "little")


def _pcr_set(select: bytes) -> frozenset[int]:
    """The PCR indices a pcrSelect bitmap (PCR 0 in bit 0 of byte 0) selects."""
    return frozenset(8 * i + b for i, byte in enumerate(select) for b in _BYTE_BITS[byte])


def _pcr_selection_at(data: bytes, pos: int, end: int, what: str) -> tuple[TPMLPCRSelection, int]:
    """The TPML_PCR_SELECTION at ``pos`` and the offset after it."""
    if pos + 4 > end:
        raise truncated_error(what, "count", 4, pos, end)
    (count,) = U32.unpack_from(data, pos)
    if count > NUM_PCR_BANKS:
        raise InvalidData(f"{what}: {count} PCR banks, more than {NUM_PCR_BANKS}")
    start = pos
    pos += 4
    for _ in range(count):
        if pos + 3 > end:
            if pos + 2 > end:
                raise truncated_error(what, "pcrSelections.hash", 2, pos, end)
            raise truncated_error(what, "pcrSelections.sizeofSelect", 1, pos + 2, end)
        size = data[pos + 2]
        if size > PCR_SELECT_MAX:
            raise InvalidData(f"{what}: sizeofSelect {size} is more than {PCR_SELECT_MAX}")
        pos += 3
        if pos + size > end:
            raise truncated_error(what, "pcrSelections.pcrSelect", size, pos, end)
        pos += size
    raw = data[start:pos]
    selection = _SELECTIONS.get(raw)
    if selection is None:
        banks = []
        at = 4
        for _ in range(count):
            alg, size = _SELECT_HEAD.unpack_from(raw, at)
            at += 3 + size
            banks.append(TPMSPCRSelection(alg, _pcr_set(raw[at - size : at]), size))
        selection = TPMLPCRSelection(tuple(banks))
        if len(_SELECTIONS) < _SELECTIONS_MAX:
            _SELECTIONS[raw] = selection
    return selection, pos


# The hot parsers build their results slot by slot. A frozen dataclass's __init__ sets each
# field through object.__setattr__, to get past its own __setattr__, which costs about twice
# what setting the slot does; TPMSAttest.parse and TPMTSignature.parse (one of each per
# verified attestation) have checked every value and set the slots directly. The objects are
# the same as the constructors make: frozen, equal, hashable.

_new = object.__new__


def _slot_setters(cls: type) -> tuple[Callable[[object, object], None], ...]:
    """The ``__set__`` of each field's slot of a slotted dataclass, in field order."""
    return tuple(getattr(cls, field.name).__set__ for field in fields(cls))


_set_clock, _set_resets, _set_restarts, _set_safe = _slot_setters(TPMSClockInfo)
_set_select, _set_digest = _slot_setters(TPMSQuoteInfo)
_set_name, _set_qualified = _slot_setters(TPMSCertifyInfo)
_set_magic, _set_type, _set_signer, _set_extra, _set_info, _set_firmware, _set_attested = (
    _slot_setters(TPMSAttest)
)


def _clock_info(clock: int, resets: int, restarts: int, safe: bool) -> TPMSClockInfo:
    obj = _new(TPMSClockInfo)
    _set_clock(obj, clock)
    _set_resets(obj, resets)
    _set_restarts(obj, restarts)
    _set_safe(obj, safe)
    return obj


def _quote_info(selection: TPMLPCRSelection, digest: bytes) -> TPMSQuoteInfo:
    obj = _new(TPMSQuoteInfo)
    _set_select(obj, selection)
    _set_digest(obj, digest)
    return obj


def _certify_info(name: bytes, qualified: bytes) -> TPMSCertifyInfo:
    obj = _new(TPMSCertifyInfo)
    _set_name(obj, name)
    _set_qualified(obj, qualified)
    return obj


def _attest(
    magic: int,
    kind: int,
    signer: bytes,
    extra: bytes,
    info: TPMSClockInfo,
    firmware: int,
    attested: TPMSQuoteInfo | TPMSCertifyInfo,
) -> TPMSAttest:
    obj = _new(TPMSAttest)
    _set_magic(obj, magic)
    _set_type(obj, kind)
    _set_signer(obj, signer)
    _set_extra(obj, extra)
    _set_info(obj, info)
    _set_firmware(obj, firmware)
    _set_attested(obj, attested)
    return obj


# --- TPMT_SIGNATURE ----------------------------------------------------------------------------

_SIGNATURE = "TPMT_SIGNATURE"
_SIG_HEAD = struct.Struct(">HHH")  # sigAlg, hash, the first TPM2B's size
_RSA_SIG = frozenset({TPM_ALG_RSASSA, TPM_ALG_RSAPSS})
_ECC_SIG = frozenset({TPM_ALG_ECDSA})


def _unknown_signature(alg: int) -> InvalidData:
    return InvalidData(f"TPMT_SIGNATURE: sigAlg 0x{alg:04x} is not RSASSA, RSAPSS or ECDSA")


@dataclass(frozen=True, slots=True)
class TPMTSignature:
    """TPMT_SIGNATURE: RSASSA or RSAPSS (``signature``) or ECDSA (``signature_r``/``_s``)."""

    sig_alg: int
    hash: int
    signature: bytes = b""
    signature_r: bytes = b""
    signature_s: bytes = b""

    @classmethod
    def parse(cls, data: bytes) -> TPMTSignature:
        """A TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA) that is exactly the input."""
        if type(data) is not bytes:
            data = as_bytes(data, _SIGNATURE)
        end = len(data)
        if end < 6:  # too short for any signature: which field is missing
            if end < 2:
                raise truncated_error(_SIGNATURE, "sigAlg", 2, 0, end)
            alg = data[0] << 8 | data[1]
            if alg in _RSA_SIG or alg in _ECC_SIG:
                if end < 4:
                    raise truncated_error(_SIGNATURE, "hash", 2, 2, end)
                first = "signature.sig" if alg in _RSA_SIG else "signature.signatureR"
                raise truncated_error(_SIGNATURE, f"{first} size", 2, 4, end)
            raise _unknown_signature(alg)
        alg, hash_alg, size = _SIG_HEAD.unpack_from(data, 0)
        stop = 6 + size
        if alg in _RSA_SIG:
            if size > MAX_RSA:
                raise too_large_error(_SIGNATURE, "signature.sig", size, MAX_RSA)
            if stop != end:
                if stop > end:
                    raise truncated_error(_SIGNATURE, "signature.sig", size, 6, end)
                raise trailing_error(_SIGNATURE, end - stop)
            return _signature(alg, hash_alg, data[6:], b"", b"")
        if alg not in _ECC_SIG:
            raise _unknown_signature(alg)
        if size > MAX_ECC:
            raise too_large_error(_SIGNATURE, "signature.signatureR", size, MAX_ECC)
        if stop > end:
            raise truncated_error(_SIGNATURE, "signature.signatureR", size, 6, end)
        sig_s, pos = tpm2b_at(data, stop, end, _SIGNATURE, "signature.signatureS", MAX_ECC)
        if pos != end:
            raise trailing_error(_SIGNATURE, end - pos)
        return _signature(alg, hash_alg, b"", data[6:stop], sig_s)

    def to_bytes(self) -> bytes:
        """The marshaled TPMT_SIGNATURE."""
        head = struct.pack(">HH", self.sig_alg, self.hash)
        if self.sig_alg in _RSA_SIG:
            return head + tpm2b(self.signature)
        if self.sig_alg in _ECC_SIG:
            return head + tpm2b(self.signature_r) + tpm2b(self.signature_s)
        raise InvalidData(f"TPMT_SIGNATURE: sigAlg 0x{self.sig_alg:04x} is not offered")

    @property
    def is_rsa(self) -> bool:
        """True for RSASSA and RSAPSS."""
        return self.sig_alg in _RSA_SIG

    def to_der(self) -> bytes:
        """An ECDSA signature as DER (ECDSA-Sig-Value), what ``cryptography`` verifies."""
        if self.sig_alg not in _ECC_SIG:
            raise InvalidData("TPMT_SIGNATURE: only an ECDSA signature has a DER form")
        return der_signature(self.signature_r, self.signature_s)

    def signature_bytes(self) -> bytes:
        """The signature as ``cryptography``'s verify takes it: RSA bytes, or DER for ECDSA."""
        return self.signature if self.sig_alg in _RSA_SIG else self.to_der()

    @classmethod
    def from_signature(
        cls, sig_alg: int, hash_alg: int, signature: bytes, key: PublicKey | None = None
    ) -> Self:
        """From ``cryptography``'s output (RSA bytes, or DER ECDSA with r and s padded to the
        key's curve size as a TPM does)."""
        if sig_alg in _RSA_SIG:
            return cls(sig_alg, hash_alg, signature)
        if sig_alg not in _ECC_SIG:
            raise UnsupportedAlgorithm(f"signature algorithm 0x{sig_alg:04x}")
        try:
            r, s = utils.decode_dss_signature(signature)
        except ValueError as exc:
            raise InvalidData("not a DER ECDSA signature") from exc
        if isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
        else:
            size = max((r.bit_length() + 7) // 8, (s.bit_length() + 7) // 8)
        return cls(sig_alg, hash_alg, b"", r.to_bytes(size, "big"), s.to_bytes(size, "big"))


_set_sig_alg, _set_hash, _set_sig, _set_r, _set_s = _slot_setters(TPMTSignature)


def _signature(alg: int, hash_alg: int, sig: bytes, sig_r: bytes, sig_s: bytes) -> TPMTSignature:
    obj = _new(TPMTSignature)
    _set_sig_alg(obj, alg)
    _set_hash(obj, hash_alg)
    _set_sig(obj, sig)
    _set_r(obj, sig_r)
    _set_s(obj, sig_s)
    return obj
