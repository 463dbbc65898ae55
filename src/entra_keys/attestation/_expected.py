"""A quote verifier's expected PCR values, checked once per distinct contents.

``verify_quote`` takes {bank: {PCR: value}}; here they are checked (known banks, SHA-1 only when
allowed, indices 0..31, values of the bank's size) and turned into what a quote of them holds:
the TPML_PCR_SELECTION in the caller's order of banks and, per signing hash, the pcrDigest. A
service checks its fleet's quotes against the same golden values again and again, so the
checked values are kept by their contents (bounded) and shared, read-only, by the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import AttestationCheckFailed, Check, InvalidData, UnsupportedAlgorithm
from ..tcg.structures import (
    HASH_ALGORITHMS,
    TPM_ALG_SHA1,
    HashInfo,
    hash_info_by_name,
    pcr_select_bytes,
)
from ..tcg.wire import U16, U32

if TYPE_CHECKING:
    from .policy import TrustPolicy

__all__ = ["ExpectedPCRs"]

#: Expected PCR values by bank, the bank named ("sha256") or a TPM_ALG id: {bank: {PCR: value}}.
ExpectedPCRs = Mapping[str, Mapping[int, bytes]] | Mapping[int, Mapping[int, bytes]]


class _Bank(NamedTuple):
    """An expected PCR bank: its hash, PCR indices (as a set and as the bitmap a quote's
    pcrSelect holds), values and their concatenation."""

    info: HashInfo
    pcrs: frozenset[int]
    bits: int
    values: dict[int, bytes]
    concatenated: bytes


class _Frozen(Mapping[Any, Any]):
    """A read-only mapping (a result's PCR values, shared by every result against the same
    expected values) that pickles: once per batch of results that share it, by pickle's memo."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[Any, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[object, ...]:
        return _Frozen, (self._data,)


class _Expected:
    """Checked expected PCR values: the banks by hash, the TPML_PCR_SELECTION a TPM quotes them
    in (the caller's order of banks), their values as a result gives them (read-only: shared
    by every result), and per signing hash the PCR digest and the quote's end that holds it."""

    __slots__ = ("banks", "concatenated", "digests", "pcr_values", "selection", "sha1")

    def __init__(self, banks: dict[int, _Bank]) -> None:
        self.banks = banks
        selects = [pcr_select_bytes(alg, bank.bits) for alg, bank in banks.items()]
        self.selection = U32.pack(len(selects)) + b"".join(selects)
        self.concatenated = b"".join([b.concatenated for b in banks.values()])
        self.pcr_values: Mapping[str, Mapping[int, bytes]] = _Frozen(
            {b.info.name: _Frozen(b.values) for b in banks.values()}
        )
        self.sha1 = TPM_ALG_SHA1 in banks
        self.digests: dict[int, tuple[bytes, bytes]] = {}

    def digest(self, info: HashInfo) -> tuple[bytes, bytes]:
        """The PCR digest under the quote's signing hash, and the quote's end: the selection
        and the digest as a TPM2B."""
        found = self.digests.get(info.alg)
        if found is None:
            digest = info.digest(self.concatenated)
            found = digest, self.selection + U16.pack(len(digest)) + digest
            self.digests[info.alg] = found  # (the same value whichever thread sets it)
        return found


# Banks as callers name them, "sha256" or TPM_ALG_SHA256 (others take the general lookup).
_BANKS: dict[str | int, HashInfo] = {
    key: info for info in HASH_ALGORITHMS.values() for key in (info.alg, info.name)
}
# Checked expected values by their contents: a service checks its fleet's quotes against the
# same golden values again and again. Bounded: once full, further values are checked each time.
_EXPECTED: dict[tuple[object, ...], _Expected] = {}
_EXPECTED_MAX = 256


def _expected_key(pcrs: ExpectedPCRs) -> tuple[object, ...]:
    """The expected values as a key of ``_EXPECTED``, with the type of each bank, index and
    value: 1.0 and True equal 1, but a key with them is no cached one's (TypeError: some
    value is not hashable)."""
    items: Iterable[tuple[object, Mapping[int, bytes]]] = pcrs.items()
    key = []
    for bank, values in items:
        types = (type(bank), *map(type, values), *map(type, values.values()))
        key.append((bank, types, tuple(values.items())))
    return tuple(key)


def _expected_pcrs(pcrs: ExpectedPCRs, policy: TrustPolicy) -> _Expected:
    """The caller's expected values, checked for size, by bank."""
    try:
        key: tuple[object, ...] | None = _expected_key(pcrs)
        found = _EXPECTED.get(key)  # type: ignore[arg-type]
    except (TypeError, AttributeError):  # unhashable, or not a mapping: the checks say what
        key = found = None
    if found is not None and (policy.allow_sha1 or not found.sha1):
        return found
    out: dict[int, _Bank] = {}
    items: Iterable[tuple[str | int, Mapping[int, bytes]]] = pcrs.items()
    for bank, values in items:
        info = _BANKS.get(bank) if type(bank) is str or type(bank) is int else None
        if info is None:
            try:
                info = HASH_ALGORITHMS[bank] if isinstance(bank, int) else hash_info_by_name(bank)
            except (KeyError, UnsupportedAlgorithm) as exc:
                raise AttestationCheckFailed(
                    f"PCR bank {bank!r} is not SHA-1/256/384/512", Check.HASH
                ) from exc
        if info.alg == TPM_ALG_SHA1 and not policy.allow_sha1:
            raise AttestationCheckFailed(
                "the sha1 PCR bank is refused: allow_sha1 is off", Check.HASH
            )
        size = info.digest_size
        bits = 0
        for index, value in values.items():
            if not (type(index) is int and 0 <= index < 32):
                raise InvalidData(f"expected PCR index {index!r} is not 0..31")
            if len(value) != size:
                raise InvalidData(
                    f"expected PCR {info.name}:{index} is {len(value)} bytes, not {size}"
                )
            bits |= 1 << index
        if values:
            ordered = dict(sorted(values.items()))
            concatenated = b"".join(ordered.values())
            out[info.alg] = _Bank(info, frozenset(ordered), bits, ordered, concatenated)
    if not out:
        raise InvalidData("no expected PCR values: a quote is checked against some")
    expected = _Expected(out)
    if key is not None and len(_EXPECTED) < _EXPECTED_MAX:
        _EXPECTED[key] = expected
    return expected
