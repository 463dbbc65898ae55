"""What tests and benchmarks read of a TPM provider's state, through its own connection.

``connection_handles`` lists the transient objects as the provider's connection sees them
(through a resource manager, only its own; tpm2-tools on a connection of their own see the TPM
as a whole); ``cached_keys`` counts the keys its key cache keeps loaded.
"""

from __future__ import annotations

from ..provider import Provider
from ..providers.tpm import TPMProvider

__all__ = ["cached_keys", "connection_handles"]


def _tpm(provider: Provider) -> TPMProvider:
    if not isinstance(provider, TPMProvider):
        raise TypeError(f"a TPM provider is needed, not {type(provider).__name__}")
    return provider


def connection_handles(provider: Provider) -> list[int]:
    """The transient objects loaded in the TPM now, as the provider's connection sees them (the
    storage key it created, and the keys it keeps loaded)."""
    conn = _tpm(provider).connection
    t = conn.tss
    with conn.command("list transient objects") as esys:
        _, data = esys.get_capability(t.TPM2_CAP.HANDLES, t.TPM2_HC.TRANSIENT_FIRST, 64)
    return [int(h) for h in data.data.handles]


def cached_keys(provider: Provider) -> int:
    """How many keys the provider's key cache keeps loaded now."""
    conn = _tpm(provider).connection
    with conn.lock:
        return len(conn.keys)
