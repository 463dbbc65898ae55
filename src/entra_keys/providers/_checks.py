"""What both providers take as a PIN, a store passphrase and a list of PCRs, refused alike
(``InvalidData``)."""

from __future__ import annotations

from ..errors import InvalidData
from ..tcg import model

__all__ = ["MAX_PIN", "check_passphrase", "check_pin", "pcr_list"]

#: The longest key PIN: a TPM2B_AUTH holds at most a TPMU_HA (64 bytes, TPM 2.0 Part 2, 10.4.5).
MAX_PIN = 64


def check_pin(pin: object, *, limit: int | None = MAX_PIN, what: str = "a PIN") -> bytes | None:
    """The PIN as bytes (None for none or an empty one); InvalidData for one that is not
    bytes-like, longer than ``limit`` bytes, or ends in a NUL byte.

    The TPM removes trailing zero octets from an authorization value (TPM 2.0 Part 1,
    authorization values), so ``b"1234\\0"`` would be the PIN ``b"1234"`` and ``b"\\0\\0"`` no
    PIN at all; the software provider would keep them. Refused on both, so that a PIN is the
    bytes given on each.
    """
    if pin is None:
        return None
    if not isinstance(pin, bytes | bytearray | memoryview):
        raise InvalidData(f"{what} is bytes, not {type(pin).__name__}")
    data = bytes(pin)
    if limit is not None and len(data) > limit:
        raise InvalidData(f"{what} is at most {limit} bytes, not {len(data)}")
    if data.endswith(b"\0"):
        raise InvalidData(
            f"{what} may not end in a NUL byte (a TPM drops trailing zeros from an "
            "authorization value: it would not be the one given)"
        )
    return data or None


def check_passphrase(passphrase: object) -> bytes | None:
    """The store passphrase as bytes (None for none or an empty one); InvalidData for one that
    is not bytes-like: ``bytes()`` would make a str a TypeError, an int that many NUL bytes,
    and 0 or False no passphrase at all (an unencrypted key file)."""
    if passphrase is None:
        return None
    if not isinstance(passphrase, bytes | bytearray | memoryview):
        raise InvalidData(f"a passphrase is bytes, not {type(passphrase).__name__}")
    return bytes(passphrase) or None


def pcr_list(pcrs: object) -> list[int]:
    """The PCR indices of an iterable, as a list checked by ``model.check_pcr_indices``;
    InvalidData for what is not an iterable of ints (a bool is no PCR index)."""
    try:
        found: list[object] = list(pcrs)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidData(f"PCRs are a sequence of ints, not {type(pcrs).__name__}") from None
    if any(isinstance(p, bool) or not isinstance(p, int) for p in found):
        raise InvalidData(f"PCR indices are ints, not {found!r}"[:200])
    indices = [p for p in found if isinstance(p, int)]
    model.check_pcr_indices(indices)
    return indices
