"""Sealed secrets in a key store: the PRT, refresh tokens, Kerberos keys, kept as ``NAME.sealed``.

The store's provider seals the secret (a TPM data object only this TPM unseals, with its PIN
and PCRs; in software, scrypt and AES-256-GCM under the passphrase given as ``pin``), bound to
its name, and the store writes the blob beside the keys, atomically and readable only by its
owner. No file holds the secret in the clear, and a blob copied or renamed to another name is
refused there (``KeyFileCorrupt``). An older blob of the same name still unseals after a newer
one was sealed, if someone put it back: rollback is not detected (SECURITY.md says why).

    >>> sealed.seal(store, "prt", prt_bytes, pin=b"1234")
    >>> sealed.unseal(store, "prt", pin=b"1234")
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import KeyExists, KeyNotFound
from ..providers._sealed_blob import MAX_SECRET
from .keystore import KeyStore

__all__ = ["MAX_SECRET", "delete", "names", "seal", "unseal"]


def seal(
    store: KeyStore,
    name: str,
    data: bytes,
    *,
    pin: bytes | None = None,
    pcrs: Sequence[int] | None = None,
    replace: bool = False,
) -> None:
    """Seals ``data`` with the store's provider and stores it under ``name``; an existing
    secret of that name is KeyExists unless ``replace``."""
    try:  # a bad name or a taken one is refused before the provider seals anything
        store.read_sealed(name)
    except KeyNotFound:
        pass
    else:
        if not replace:
            raise KeyExists(f"a sealed secret {name!r} already exists", name)
    blob = store.provider.seal(data, pin=pin, pcrs=pcrs, name=name)
    store.write_sealed(name, blob, replace=replace)


def unseal(
    store: KeyStore, name: str, *, pin: bytes | None = None, allow_unbound: bool = False
) -> bytes:
    """The secret stored under ``name``, unsealed by the store's provider; a blob sealed as
    another name is refused. A blob of an earlier release (not bound to its name) is refused
    unless ``allow_unbound``: then seal the secret again (``replace=True``) to bind it."""
    return store.provider.unseal(
        store.read_sealed(name), pin=pin, name=name, allow_unbound=allow_unbound
    )


def delete(store: KeyStore, name: str) -> None:
    """Removes the sealed secret ``name`` from the store."""
    store.delete_sealed(name)


def names(store: KeyStore) -> list[str]:
    """The names of the sealed secrets in the store, sorted."""
    return store.sealed_names()
