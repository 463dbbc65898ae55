"""Keys kept loaded in the TPM between uses, least recently used first: with a key cached,
unpinned signing is one TPM command instead of three (load, sign, flush).

The connection decides when a key must go: before each command it flushes the least recently
used keys until what the command needs fits in its object budget (``Connection.room``); a key
in use by a command now is never flushed to make room. ``slots`` bounds the cache on its own.
Callers hold the connection's lock; ``flush`` is called under it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["KeyCache"]


class KeyCache:
    """Loaded keys by key object (the handle is the TPM's), flushed least recently used first."""

    def __init__(self, flush: Callable[[Any], object], slots: int = 0) -> None:
        """``flush(handle)`` flushes a loaded object from the TPM (TSS errors raised as are)."""
        #: How many keys the cache may keep loaded.
        self.slots = slots
        self._flush = flush
        #: id(key) -> (key, handle); the key is held so that its id stays its own.
        self._entries: OrderedDict[int, tuple[object, Any]] = OrderedDict()
        #: id(key) -> how many commands use it now: never flushed until they end.
        self._in_use: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object) -> Any:
        """The key's handle (the key now the most recently used), or None where not kept."""
        entry = self._entries.get(id(key))
        if entry is None:
            return None
        self._entries.move_to_end(id(key))
        return entry[1]

    def put(self, key: object, handle: Any) -> bool:
        """Keep a loaded key (True), making room for it; False where there is none (every kept
        key in use now, or no slots): the caller flushes the handle after its use."""
        if self.slots <= 0:
            return False
        self.make_room()
        if len(self._entries) >= self.slots:
            return False
        self._entries[id(key)] = (key, handle)
        return True

    def items(self) -> list[tuple[Any, Any]]:
        """(key, handle) of every kept key."""
        return list(self._entries.values())

    def take(self, key: object) -> Any:
        """Remove a key and hand its handle to the caller (None where not kept)."""
        entry = self._entries.pop(id(key), None)
        return None if entry is None else entry[1]

    def load(
        self, key: object, loader: Callable[[], Any], *, keep: bool = True
    ) -> tuple[Any, bool]:
        """``loader()``'s handle for a key; True with it where the cache keeps it (``keep`` and
        room), False where the caller flushes it after use."""
        handle = loader()
        return handle, keep and self.put(key, handle)

    def make_room(self, count: int = 1) -> None:
        """Flush least recently used keys (not in use) until ``count`` more fit."""
        while len(self._entries) + count > self.slots and self.evict_one():
            pass

    def in_use(self, key: object) -> _InUse:
        """The key is not flushed to make room while the block runs (blocks may nest)."""
        return _InUse(self._in_use, id(key))

    def evict_one(self) -> bool:
        """Flush the least recently used key not in use; False where there is none."""
        for ident in self._entries:
            if ident not in self._in_use:
                _, handle = self._entries.pop(ident)
                self._flush(handle)
                return True
        return False

    def flush_all(self) -> None:
        """Flush every key not in use (they load again on their next use)."""
        while self.evict_one():
            pass

    def close(self) -> None:
        """Flush every key, in use or not (the connection closes)."""
        self._in_use.clear()
        try:
            self.flush_all()
        finally:
            self._entries.clear()

    def forget(self) -> None:
        """Drop every key without flushing it: the TPM connection is gone, and they with it."""
        self._entries.clear()


class _InUse:
    """One ``KeyCache.in_use`` block (a class, not a generator: it runs on every signature)."""

    __slots__ = ("_counts", "_ident")

    def __init__(self, counts: dict[int, int], ident: int) -> None:
        self._counts = counts
        self._ident = ident

    def __enter__(self) -> None:
        counts = self._counts
        counts[self._ident] = counts.get(self._ident, 0) + 1

    def __exit__(self, *exc: object) -> None:
        uses = self._counts.pop(self._ident, 1) - 1  # absent after KeyCache.close()
        if uses:
            self._counts[self._ident] = uses
