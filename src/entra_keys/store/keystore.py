"""Named keys on disk: one PEM file a key, written atomically, readable only by its owner.

A key file is the provider's own PEM (``TSS2 PRIVATE KEY`` for a TPM key, which tpm2-openssl and
tpm2-tss-engine load; PKCS#8 for a software key) preceded by two lines of RFC 7468 explanatory
text, ``Entra-Keys-Type`` and ``Entra-Keys-Usage``, that PEM readers skip. A TPM key file holds
only a blob that this TPM alone can load; a software key file is encrypted when a passphrase is
given. Writes go to a temporary file that is fsynced and renamed, so a crash leaves either the
old key or the new one, never half of either.

Whoever could swap a key file could swap the device's identity, so the store trusts only what this
user alone controls: the directory and every file it reads must be owned by the effective uid,
closed to others, and not a symbolic link; a file must be a regular file (a FIFO or device is
refused before it is read). The directory is opened once per operation without following links,
and every file is opened, created, renamed and removed relative to that descriptor (those rules
live in ``store._files``; this module is the API over them and the key file format). Every change
(a key written or deleted, the join state, a sealed secret, a leave) holds the store's lock, so a
leave is all or nothing under concurrent writers too.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._json import dump_object, load_object
from ..errors import (
    ForeignKey,
    HardwareUnavailable,
    InvalidData,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStoreError,
    KeysUnusable,
    KeyUsageError,
    TPMError,
    WrongPassphrase,
)
from ..provider import EntraPrivateKey, KeyType, KeyUsage, Provider, SessionKey
from ..providers import open_provider
from ..providers._checks import check_passphrase
from ..tcg.model import (
    ENCRYPTED_PEM_LABELS,
    KIND_BY_PEM_LABEL,
    PEM_LABEL_ENCRYPTED_SOFTWARE_KEY,
    TPM_RH_OWNER,
)
from ..tcg.model import (
    SRK_HANDLE_RSA as SRK_HANDLE,
)
from . import _leave, tss2file
from ._files import KEY_SUFFIX, locked, open_dir, read_file, write_atomic

__all__ = [
    "KeyInfo",
    "KeyStore",
    "default_store_path",
    "leave",
    "list_keys",
    "parent_text",
    "storage_parents",
    "store_path",
    "stored_kinds",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUFFIX = KEY_SUFFIX
_SEALED_SUFFIX = ".sealed"
_JOIN_STATE = _leave.JOIN_STATE
_TSS2_LABEL = "TSS2 PRIVATE KEY"
_PEM_BEGIN = re.compile(rb"^-----BEGIN ([A-Z0-9 ]+)-----\r?$", re.MULTILINE)
_MAX_FILE = 64 * 1024
_MAX_JOIN_STATE = 1024 * 1024


def default_store_path() -> Path:
    """``$ENTRA_KEYS_STORE``, else ``entra-keys`` under the user's data directory (XDG)."""
    env = os.environ.get("ENTRA_KEYS_STORE")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "entra-keys"


def store_path(path: str | os.PathLike[str] | None) -> Path:
    """The store directory: ``path``, else ``default_store_path()``; KeyStoreError for a path
    no file system takes (a NUL byte)."""
    store = Path(path) if path is not None else default_store_path()
    if "\0" in str(store):
        raise KeyStoreError("a key store path may not hold a NUL byte", path=repr(str(store)))
    return store


def leave(path: str | os.PathLike[str] | None = None) -> list[str]:
    """Leave the join of the store at ``path``: remove every key, the join state and the sealed
    data, all or nothing (a process killed half-way leaves a marker the next open completes).
    Needs no provider, so it works when the TPM is gone; the file names removed."""
    store = store_path(path)
    with locked(store, create=False) as dir_fd:  # no writer runs while a leave does
        if dir_fd is None:
            return []
        try:
            return _leave.leave(dir_fd, str(store))
        except OSError as exc:
            raise KeyStoreError(
                f"cannot leave the join in {store}: {exc.strerror}", path=str(store)
            ) from exc


def list_keys(
    path: str | os.PathLike[str] | None = None,
) -> tuple[list[KeyInfo], list[tuple[str, str]]]:
    """The keys of the store at ``path`` (``KeyStore.list``) and the key files that cannot be
    read, with why (``KeyStore.broken``), from the files alone: needs no provider, so a TPM
    store is listed with the TPM out of reach, as ``leave`` works."""
    found = _scan(store_path(path))
    keys = [info for _, info in found if isinstance(info, KeyInfo)]
    broken = [(name, str(error)) for name, error in found if not isinstance(error, KeyInfo)]
    return keys, broken


def _scan(store: Path) -> list[tuple[str, KeyInfo | KeyStoreError]]:
    """Each key file of the store by name, with what is read of it or why it cannot be; a
    refused store directory is raised, not listed."""
    found: list[tuple[str, KeyInfo | KeyStoreError]] = []
    with open_dir(store) as dir_fd:
        if dir_fd is None:
            return found
        for filename in sorted(os.listdir(dir_fd)):
            name = filename.removesuffix(_SUFFIX)
            if not filename.endswith(_SUFFIX) or not _NAME.fullmatch(name):
                continue
            try:
                found.append((name, _read_key(dir_fd, store, name)[0]))
            except KeyStoreError as exc:
                found.append((name, exc))
    return found


def _key_file(store: Path, name: str) -> Path:
    """The file of the key ``name``; KeyStoreError for a name the store does not take."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyStoreError(
            f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            name if isinstance(name, str) else None,
        )
    return store / (name + _SUFFIX)


def _read_key(dir_fd: int, store: Path, name: str) -> tuple[KeyInfo, bytes]:
    """Read and parse ``name``'s file relative to the open store directory."""
    path = _key_file(store, name)
    data = _read_entry(dir_fd, store, path, "key", name)
    if len(data) > _MAX_FILE:
        raise KeyFileCorrupt(f"key {name!r}: the file is larger than any key file", name)
    info = _parse_key_file(name, path, data)
    return info, data[data.index(b"-----BEGIN ") :]


def _read_entry(dir_fd: int, store: Path, path: Path, what: str, name: str) -> bytes:
    """One file of the store read through the checked directory, its errors naming what it
    is: ``KeyNotFound``, else ``KeyStoreError``."""
    try:
        return read_file(dir_fd, path, f"{what} {name!r}:", name, _MAX_FILE)
    except FileNotFoundError:
        raise KeyNotFound(f"no {what} {name!r} in {store}", name) from None
    except OSError as exc:
        raise KeyStoreError(
            f"cannot read {what} {name!r}: {exc.strerror}", name, path=str(path)
        ) from exc


def stored_kinds(path: str | os.PathLike[str] | None = None) -> frozenset[str]:
    """The providers whose keys the store at ``path`` holds ("tpm", "software"), read from the
    PEM labels of its key files; a file that cannot be read counts as none."""
    store = store_path(path)
    kinds: set[str] = set()
    with open_dir(store) as dir_fd:
        if dir_fd is None:
            return frozenset()
        for entry in os.listdir(dir_fd):
            if not entry.endswith(_SUFFIX) or not _NAME.fullmatch(entry.removesuffix(_SUFFIX)):
                continue
            try:
                data = read_file(dir_fd, store / entry, "key file", None, _MAX_FILE)
            except (OSError, KeyStoreError):
                continue
            begin = _PEM_BEGIN.search(data)
            kind = KIND_BY_PEM_LABEL.get(begin.group(1).decode()) if begin else None
            if kind is not None:
                kinds.add(kind)
    return frozenset(kinds)


def storage_parents(path: str | os.PathLike[str] | None = None) -> dict[str, int | None]:
    """The storage parent each TPM key file and TPM sealed secret of the store at ``path``
    names, by file name (``{"device.pem": 0x40000001, "prt.sealed": 0x40000001}``): what a
    change of the TPM's storage key (``tpm init``) would leave behind. None for an entry whose
    parent cannot be read (a file the store refuses, a TPM key file whose parent does not
    parse): it may be a TPM key too. Software key files are left out. Needs no provider."""
    from ..providers._sealed_blob import label as sealed_label

    store = store_path(path)
    found: dict[str, int | None] = {}
    with open_dir(store) as dir_fd:
        if dir_fd is None:
            return found
        for entry in sorted(os.listdir(dir_fd)):
            name, dot, suffix = entry.rpartition(".")
            kind = f"{dot}{suffix}"
            if kind not in (_SUFFIX, _SEALED_SUFFIX) or not _NAME.fullmatch(name):
                continue
            try:
                data = read_file(dir_fd, store / entry, "store file", name, _MAX_FILE)
            except FileNotFoundError:
                continue
            except (OSError, KeyStoreError):
                found[entry] = None
                continue
            begin = _PEM_BEGIN.search(data)
            if kind == _SUFFIX:
                if begin is None or begin.group(1).decode() != _TSS2_LABEL:
                    continue  # a software key, or no key at all: no storage parent
                end = data.find(b"-----END ", begin.end())
                found[entry] = tss2file.tss2_parent(data[begin.end() : end]) if end > 0 else None
            elif f"-----BEGIN {sealed_label('tpm')}-----".encode() in data:
                from ..providers.tpm._sealing import recorded_parent

                try:
                    found[entry] = recorded_parent(data)
                except KeyStoreError:
                    found[entry] = None
    return found


def parent_text(handle: int) -> str:
    """A storage parent as messages name it: '0x81000001 (the persistent SRK)'."""
    known = {SRK_HANDLE: "the persistent SRK", TPM_RH_OWNER: "the TCG key-file primary"}
    return f"0x{handle:08x}" + (f" ({known[handle]})" if handle in known else "")


@dataclass(frozen=True)
class KeyInfo:
    """What the store knows of a key without loading it into the provider (``hardware_backed``
    from the TPM key's public area: an imported key in a TSS2 file says False)."""

    name: str
    key_type: KeyType
    usage: KeyUsage
    kind: str
    hardware_backed: bool
    encrypted: bool
    path: Path
    pin: bool = False
    """The key needs its PIN (a TPM key's authorization value, or a software key file written
    under its PIN): from the ``Entra-Keys-PIN`` header, the TSS2 emptyAuth, or the software
    file's own encryption (PBES2 with scrypt)."""
    lockout: bool = False
    """A wrong authorization of this key counts toward the TPM's dictionary-attack lockout (its
    public area lacks noDA): it may have a PIN whatever its file says, so nothing the library
    does unasked (``status``) uses it; it is only loaded."""
    parent_name: bytes | None = None
    """The TPM name of the persistent SRK the key was made under (``Entra-Keys-Parent-Name``):
    it loads only where 0x81000001 still holds that key. None in other and older files."""


class KeyStore:
    """A directory of named keys belonging to one provider."""

    def __init__(self, provider: Provider, path: str | os.PathLike[str] | None = None) -> None:
        self.provider = provider
        self.path = store_path(path)
        self._owns_provider = False

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        kind: str | None = None,
        *,
        tcti: str | None = None,
        require_hardware: bool = False,
    ) -> KeyStore:
        """The store at ``path`` with a provider chosen for it (``open_provider``'s rules): with
        ``auto``, a store that holds TPM keys requires the TPM, never a silent software downgrade.
        The store owns that provider: ``close()`` (or ``with``) closes it."""
        store = store_path(path)
        chosen = kind or os.environ.get("ENTRA_KEYS_PROVIDER") or "auto"
        holds_tpm_keys = chosen == "auto" and "tpm" in stored_kinds(store)
        try:
            provider = open_provider(
                kind, tcti=tcti, require_hardware=require_hardware or holds_tpm_keys
            )
        except HardwareUnavailable as exc:
            if holds_tpm_keys and not require_hardware:
                raise HardwareUnavailable(
                    f"the key store {store} holds TPM keys, but {exc}"
                ) from exc
            raise
        opened = cls(provider, store)
        opened._owns_provider = True
        return opened

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock for a run of changes (the demo's join): other writers and
        leaves, in this process or another, wait for it (``LOCK_WAIT``, then KeyStoreError);
        this thread's own changes inside the block take it again at once."""
        with locked(self.path):
            yield

    def is_empty(self) -> bool:
        """True when the store directory is missing or holds nothing at all: no key, join
        state, sealed secret, or any other file."""
        with open_dir(self.path) as dir_fd:
            return dir_fd is None or not os.listdir(dir_fd)

    def close(self) -> None:
        """Close the provider if ``open`` opened it (a given provider is its giver's to close)."""
        if self._owns_provider:
            self.provider.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- public API ---------------------------------------------------------------------------

    def create(
        self,
        name: str,
        key_type: KeyType,
        usage: KeyUsage,
        *,
        passphrase: bytes | None = None,
        pin: bytes | None = None,
        replace: bool = False,
    ) -> EntraPrivateKey:
        """Creates a key in the provider and stores it under ``name`` (with a PIN if given)."""
        passphrase = check_passphrase(passphrase)
        self._file(name)  # refuse a bad name before making a key
        if not replace and name in self:
            raise KeyExists(f"key {name!r} already exists", name)
        self._refuse_downgrade(name)
        key = self.provider.create_key(key_type, usage, pin=pin)
        pem = self.provider.key_to_pem(key, passphrase)
        header = _header(key.key_type, key.usage, pin=bool(pin), parent=self._parent_name(pem))
        self._write(name, header + pem, replace=replace)
        return key

    def save(
        self,
        name: str,
        key: EntraPrivateKey,
        *,
        passphrase: bytes | None = None,
        replace: bool = False,
    ) -> None:
        """Stores a key of this store's provider under ``name``, atomically (a key with a PIN
        stays under it)."""
        passphrase = check_passphrase(passphrase)
        self._file(name)
        self._refuse_downgrade(name)
        pem = self.provider.key_to_pem(key, passphrase)
        header = _header(
            key.key_type,
            key.usage,
            pin=bool(getattr(key, "has_pin", False)),
            parent=self._parent_name(pem),
        )
        self._write(name, header + pem, replace=replace)

    def save_session_key(
        self,
        name: str,
        key: SessionKey,
        *,
        passphrase: bytes | None = None,
        replace: bool = False,
    ) -> None:
        """Stores the PRT session key under ``name``; a new PRT's key replaces it atomically."""
        passphrase = check_passphrase(passphrase)
        self._file(name)
        self._refuse_downgrade(name)
        pem = self.provider.session_key_to_pem(key, passphrase)
        header = _header(KeyType.HMAC_SHA256, KeyUsage.DERIVE, parent=self._parent_name(pem))
        self._write(name, header + pem, replace=replace)

    def _parent_name(self, pem: bytes) -> bytes | None:
        """The name of the persistent SRK a TPM key file names as its parent, to record beside
        it; None for any other parent and for software keys."""
        if self.provider.kind != "tpm" or _file_parent(pem) != SRK_HANDLE:
            return None
        from ..providers.tpm.provider import TPMProvider

        if not isinstance(self.provider, TPMProvider):
            return None
        return self.provider.storage_key_name(SRK_HANDLE)

    def _check_parent(self, info: KeyInfo, pem: bytes) -> None:
        """A key file that records its SRK's name loads only under that SRK: another storage
        key persisted at 0x81000001 is a ForeignKey naming the change (the TPM was not cleared
        and the join is intact), never 'leave and join again'; nothing is sent to that key."""
        recorded = info.parent_name
        if recorded is None or self.provider.kind != "tpm" or _file_parent(pem) != SRK_HANDLE:
            return
        from ..providers.tpm.provider import TPMProvider

        if not isinstance(self.provider, TPMProvider):
            return
        with _naming(info.name), _unusable(info.name, self.provider, pem):
            now = self.provider.storage_key_name(SRK_HANDLE)
        if now != recorded:
            raise ForeignKey(
                f"key {info.name!r}: 0x{SRK_HANDLE:08x} now holds another storage key than the "
                f"one this key was made under (name {now.hex()}, the key file records "
                f"{recorded.hex()}). The TPM was not cleared and the key file is intact: if the "
                "SRK was evicted and another key persisted there, remove that object "
                f"(tpm2_evictcontrol -C o -c 0x{SRK_HANDLE:08x}) and run `entra-keys tpm init`",
                info.name,
                path=str(info.path),
            )

    def _write(self, name: str, data: bytes, *, replace: bool) -> None:
        """Write a key file under the store's lock, once more refusing a software key beside TPM
        keys (another writer may have stored one since the first check)."""
        if len(data) > _MAX_FILE:
            raise KeyFileCorrupt(f"key {name!r}: the file would be larger than any key file", name)
        with self.locked():
            self._refuse_downgrade(name)
            write_atomic(self.path, self._file(name), data, replace=replace)

    def load(
        self,
        name: str,
        *,
        passphrase: bytes | None = None,
        pin: bytes | None = None,
        allow_imported: bool = False,
    ) -> EntraPrivateKey:
        """Loads the key stored under ``name``; errors name the key and leave the store as is.
        A key the store recorded as having a PIN needs it (``WrongPassphrase``), so that no use
        without it spends a dictionary-attack try. A TPM key not made in the TPM is
        ``ImportedKey`` unless ``allow_imported``."""
        passphrase = check_passphrase(passphrase)
        info, pem = self._read_for_provider(name)
        if info.usage is KeyUsage.DERIVE:
            raise KeyUsageError(f"key {name!r} is a session key: load it with load_session_key")
        if info.pin and not pin:  # the header is the store's: whatever the key file says
            raise WrongPassphrase(f"key {name!r}: the key has a PIN; give it to use the key", name)
        if info.kind == "software" and info.pin and not _software_pin_file(pem):
            key = self._load_old_pin_key(info, pem, passphrase, pin)
        else:
            self._check_parent(info, pem)
            with _naming(name), _unusable(name, self.provider, pem):
                key = self.provider.key_from_pem(
                    pem, info.usage, passphrase, pin=pin, allow_imported=allow_imported
                )
        if key.key_type is not info.key_type or key.usage is not info.usage:
            raise KeyFileCorrupt(
                f"key {name!r}: the file says {info.key_type.value}/{info.usage.value} but holds "
                f"a {key.key_type.value}/{key.usage.value} key",
                name,
            )
        return key

    def load_session_key(self, name: str, *, passphrase: bytes | None = None) -> SessionKey:
        """Loads the session key stored under ``name`` (typed errors name it)."""
        passphrase = check_passphrase(passphrase)
        info, pem = self._read_for_provider(name)
        if info.usage is not KeyUsage.DERIVE:
            raise KeyUsageError(f"key {name!r} is a {info.usage.value} key, not a session key")
        self._check_parent(info, pem)
        with _naming(name), _unusable(name, self.provider, pem):
            return self.provider.session_key_from_pem(pem, passphrase)

    def _load_old_pin_key(
        self, info: KeyInfo, pem: bytes, passphrase: bytes | None, pin: bytes | None
    ) -> EntraPrivateKey:
        """A software PIN key of an earlier release: its PKCS#8 was encrypted under the store
        passphrase if there was one, else under the PIN. Under the PIN it opens with the PIN
        and is written again under the PIN and the passphrase (scrypt); under the passphrase
        alone the PIN was never part of it, so it is refused: create the key again. So is an
        unencrypted one: any PIN would open it."""
        name = info.name
        if not pin:
            raise WrongPassphrase(f"key {name!r}: the key has a PIN; give it to use the key", name)
        if not info.encrypted:
            raise KeyFileCorrupt(
                f"key {name!r} is recorded as having a PIN but its file is not encrypted: its PIN "
                "was never part of the file, so it is refused rather than opened with any PIN. "
                f"Create the key again with its PIN (store.create({name!r}, ..., pin=PIN, "
                "replace=True)) and register the new key where the old one was (Windows Hello)",
                name,
            )
        try:
            key = self.provider.key_from_pem(pem, info.usage, None, pin=pin)
        except WrongPassphrase:
            if passphrase and self._opens(pem, info.usage, passphrase):
                raise KeyFileCorrupt(
                    f"key {name!r} was written by an earlier entra_keys under the store "
                    "passphrase alone: its PIN was never part of the file, so it is refused "
                    "rather than used without it. Create the key again with its PIN "
                    f"(store.create({name!r}, ..., pin=PIN, replace=True)) and register the "
                    "new key where the old one was (Windows Hello)",
                    name,
                ) from None
            raise WrongPassphrase(f"key {name!r}: the PIN is wrong", name) from None
        migrated = _header(key.key_type, key.usage, pin=True) + self.provider.key_to_pem(
            key, passphrase
        )
        if not _software_pin_file(migrated):  # never written again where no PIN opens it
            raise KeyFileCorrupt(f"key {name!r}: the key did not keep its PIN", name)
        with self.locked():
            if self._read(name)[1] == pem:  # still the file read: write it under the PIN
                write_atomic(self.path, self._file(name), migrated, replace=True)
        return key

    def _read_for_provider(self, name: str) -> tuple[KeyInfo, bytes]:
        info, pem = self._read(name)
        if info.kind != self.provider.kind:
            raise KeyFileCorrupt(
                f"key {name!r} is a {info.kind} key; open the store with the "
                f"{info.kind} provider to use it",
                name,
            )
        return info, pem

    def _opens(self, pem: bytes, usage: KeyUsage, passphrase: bytes) -> bool:
        """Whether a key file opens under ``passphrase`` (the key is dropped)."""
        try:
            self.provider.key_from_pem(pem, usage, passphrase)
        except WrongPassphrase:
            return False
        return True

    def save_join_state(self, state: Mapping[str, Any]) -> None:
        """Records what a join established (device id, certificate, AK, session key names)
        beside the keys, atomically, for ``status`` to report; InvalidData, before the
        recorded state is replaced, for anything ``load_join_state`` would not read back."""
        data = dump_object(state, "the join state")
        if len(data) > _MAX_JOIN_STATE:
            raise InvalidData(f"the join state is {len(data)} bytes, over {_MAX_JOIN_STATE}")
        write_atomic(self.path, self.path / _JOIN_STATE, data, replace=True)

    def load_join_state(self) -> dict[str, Any] | None:
        """The recorded join state, or None when this store's device has not joined; the file
        is held to the key files' rules, as it names the session key to use."""
        path = self.path / _JOIN_STATE
        with open_dir(self.path) as dir_fd:
            if dir_fd is None:
                return None
            try:
                data = read_file(dir_fd, path, "the join state", None, _MAX_JOIN_STATE)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise KeyStoreError(
                    f"cannot read the join state {path}: {exc.strerror}", path=str(path)
                ) from exc
        if len(data) > _MAX_JOIN_STATE:
            raise KeyFileCorrupt(f"the join state {path} is too large", path=str(path))
        try:  # the strict reader: no nesting past its limit, one object, no member twice
            return load_object(data, f"the join state {_JOIN_STATE}", max_size=_MAX_JOIN_STATE)
        except InvalidData as exc:
            raise KeyFileCorrupt(str(exc), path=str(path)) from exc

    def info(self, name: str) -> KeyInfo:
        """Describes the key stored under ``name`` from its file alone."""
        return self._read(name)[0]

    def list(self) -> builtins.list[KeyInfo]:
        """Every readable key in the store, by name; unreadable files (a link, a FIFO, damage)
        are skipped, not fatal, and ``broken()`` says why."""
        return [found for _, found in self._scan() if isinstance(found, KeyInfo)]

    def broken(self) -> builtins.list[tuple[str, str]]:
        """The names and errors of key files that cannot be read (for status reports)."""
        return [
            (name, str(found)) for name, found in self._scan() if not isinstance(found, KeyInfo)
        ]

    def _scan(self) -> builtins.list[tuple[str, KeyInfo | KeyStoreError]]:
        """Each key file by name, with what the store reads of it or why it cannot; a refused
        store directory is raised, not listed."""
        return _scan(self.path)

    def delete(self, name: str) -> None:
        """Removes the key stored under ``name`` (the TPM keeps nothing of it)."""
        path = self._file(name)
        with locked(self.path, create=False) as dir_fd:
            if dir_fd is None:
                raise KeyNotFound(f"no key {name!r} in {self.path}", name)
            try:
                os.unlink(path.name, dir_fd=dir_fd)
            except FileNotFoundError:
                raise KeyNotFound(f"no key {name!r} in {self.path}", name) from None
            except OSError as exc:
                raise KeyStoreError(
                    f"cannot delete key {name!r}: {exc.strerror}", name, path=str(path)
                ) from exc
            os.fsync(dir_fd)

    def import_key_file(
        self,
        name: str,
        data: bytes,
        *,
        pin: bytes | None = None,
        replace: bool = False,
        allow_imported: bool = False,
    ) -> EntraPrivateKey:
        """Stores a TSS2 PRIVATE KEY another tool made (tpm2-openssl, tpm2-tools) under ``name``,
        its type and usage read from its public area, once this TPM has loaded it. The trust rules
        hold: a key not made in the TPM is ``ImportedKey`` unless ``allow_imported``."""
        self._file(name)
        if not replace and name in self:
            raise KeyExists(f"key {name!r} already exists", name)
        pem = _one_tss2_block(name, data)
        if self.provider.kind != "tpm":
            raise KeyFileCorrupt(
                f"key {name!r}: a {_TSS2_LABEL} is a TPM key; import it with the TPM provider", name
            )
        info = _parse_key_file(name, self._file(name), pem)  # type and usage from the public area
        try:
            with _naming(name):
                key = self.provider.key_from_pem(
                    pem, info.usage, pin=pin, allow_imported=allow_imported
                )
        except KeysUnusable:
            raise
        except ForeignKey as exc:
            raise ForeignKey(
                f"{exc}. entra_keys loads keys made under this TPM's storage key: the persistent "
                f"SRK at 0x{SRK_HANDLE:08x} where there is one, else the TCG key-file primary "
                "(ECC P-256, as tpm2-openssl makes); make the key under that parent",
                name,
            ) from exc
        # A PIN given, or a file that says the key has one: status and list never use it.
        header = _header(
            key.key_type, key.usage, pin=bool(pin) or info.pin, parent=self._parent_name(pem)
        )
        self._write(name, header + pem, replace=replace)
        return key

    def leave(self) -> builtins.list[str]:
        """Removes the join: every key (device, transport, AK, session key), the join state and
        sealed data, all or nothing (see ``leave``); the file names removed."""
        return leave(self.path)

    def _refuse_downgrade(self, name: str) -> None:
        """A software key never joins TPM keys in one store: that would downgrade the join."""
        if self.provider.kind == "tpm":
            return
        held = {info.name for info in self.list() if info.kind == "tpm"}
        if held:
            raise HardwareUnavailable(
                f"the key store {self.path} holds TPM keys ({', '.join(sorted(held))}); a "
                f"{self.provider.kind} key {name!r} would downgrade the join. Use the TPM, or "
                "leave the join first"
            )

    def __contains__(self, name: object) -> bool:
        """True when an entry has that key name; a link is not followed (``load`` refuses it).
        Read through the checked store directory, which completes a leave killed half-way
        first, so no part of a join is seen."""
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            return False
        with open_dir(self.path) as dir_fd:
            if dir_fd is None:
                return False
            try:
                os.stat(name + _SUFFIX, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise KeyStoreError(
                    f"cannot read the key store {self.path}: {exc.strerror}",
                    name,
                    path=str(self.path),
                ) from exc
        return True

    # -- files --------------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        return _key_file(self.path, name)

    def _read(self, name: str) -> tuple[KeyInfo, bytes]:
        """The key file of ``name``, parsed, and its PEM block, from the checked store."""
        self._file(name)  # refuse a bad name before touching the disk
        with open_dir(self.path) as dir_fd:
            if dir_fd is None:
                raise KeyNotFound(f"no key {name!r} in {self.path}", name)
            return self._read_key(dir_fd, name)

    def _read_key(self, dir_fd: int, name: str) -> tuple[KeyInfo, bytes]:
        """Read and parse ``name``'s file relative to the open store directory."""
        return _read_key(dir_fd, self.path, name)

    def _read_entry(self, dir_fd: int, path: Path, what: str, name: str) -> bytes:
        """One file of the store (a key file, a sealed secret) read through the checked
        directory, its errors naming what it is: ``KeyNotFound``, else ``KeyStoreError``."""
        return _read_entry(dir_fd, self.path, path, what, name)

    # -- sealed secrets (store.sealed): NAME.sealed beside the keys, same rules -----------------

    def write_sealed(self, name: str, blob: bytes, *, replace: bool = False) -> None:
        """Stores a provider's sealed blob as ``NAME.sealed``, atomically (0600, fsynced); a
        software-sealed secret never joins TPM keys (a downgrade, as a software key would be)."""
        path = self._file(name).with_suffix(_SEALED_SUFFIX)
        self._refuse_downgrade(name)
        if len(blob) > _MAX_FILE:
            raise KeyStoreError(f"the sealed secret {name!r} is larger than a store file", name)
        try:
            write_atomic(self.path, path, bytes(blob), replace=replace)  # under the store's lock
        except KeyExists:
            raise KeyExists(f"a sealed secret {name!r} already exists", name) from None

    def read_sealed(self, name: str) -> bytes:
        """The sealed blob stored as ``NAME.sealed``, read from the checked store."""
        path = self._file(name).with_suffix(_SEALED_SUFFIX)
        with open_dir(self.path) as dir_fd:
            if dir_fd is None:
                raise KeyNotFound(f"no sealed secret {name!r} in {self.path}", name)
            data = self._read_entry(dir_fd, path, "sealed secret", name)
        if len(data) > _MAX_FILE:
            raise KeyFileCorrupt(f"the sealed secret {name!r} is larger than any blob", name)
        return data

    def delete_sealed(self, name: str) -> None:
        """Removes the sealed blob ``NAME.sealed`` (the TPM keeps nothing of it)."""
        path = self._file(name).with_suffix(_SEALED_SUFFIX)
        with locked(self.path, create=False) as dir_fd:
            try:
                if dir_fd is None:
                    raise FileNotFoundError
                os.unlink(path.name, dir_fd=dir_fd)
            except FileNotFoundError:
                raise KeyNotFound(f"no sealed secret {name!r} in {self.path}", name) from None
            except OSError as exc:
                raise KeyStoreError(
                    f"cannot delete sealed secret {name!r}: {exc.strerror}", name, path=str(path)
                ) from exc
            os.fsync(dir_fd)

    def sealed_names(self) -> builtins.list[str]:
        """The names of the sealed secrets in the store, sorted."""
        with open_dir(self.path) as dir_fd:
            if dir_fd is None:
                return []
            entries = os.listdir(dir_fd)
        names = (e.removesuffix(_SEALED_SUFFIX) for e in entries if e.endswith(_SEALED_SUFFIX))
        return sorted(n for n in names if _NAME.fullmatch(n))


def _header(
    key_type: KeyType, usage: KeyUsage, *, pin: bool = False, parent: bytes | None = None
) -> bytes:
    """The explanatory-text lines before the PEM block that say what the key is (that it needs
    a PIN, which ``status`` reads without trying one, and the name of the SRK it was made
    under)."""
    text = f"Entra-Keys-Type: {key_type.value}\nEntra-Keys-Usage: {usage.value}\n"
    text += "Entra-Keys-PIN: yes\n" if pin else ""
    text += f"Entra-Keys-Parent-Name: {parent.hex()}\n" if parent is not None else ""
    return text.encode()


def _file_parent(pem: bytes) -> int | None:
    """The parent handle a TSS2 PRIVATE KEY names, or None (another file, or unreadable)."""
    begin = _PEM_BEGIN.search(pem)
    if begin is None or begin.group(1).decode() != _TSS2_LABEL:
        return None
    end = pem.find(b"-----END ", begin.end())
    return tss2file.tss2_parent(pem[begin.end() : end]) if end > 0 else None


@contextlib.contextmanager
def _naming(name: str) -> Iterator[None]:
    """Re-raise a provider's key-store error with the key's name in it."""
    try:
        yield
    except KeyStoreError as exc:
        raise type(exc)(f"key {name!r}: {exc}", name, path=exc.path) from exc


@contextlib.contextmanager
def _unusable(name: str, provider: Provider, pem: bytes) -> Iterator[None]:
    """A stored TPM key this TPM refuses, said as what it is. The TPM refusing the blob under
    the parent the file names means the storage hierarchy it was made under is gone: one state
    for the whole store (KeysUnusable). A file naming a parent this TPM does not offer is a
    ForeignKey naming both parents: the TPM was not cleared, and the key is intact; only the
    persistent SRK gone from its handle (a clear evicts it) is KeysUnusable, with the way back
    when it was only evicted."""
    try:
        yield
    except ForeignKey as exc:
        if provider.kind != "tpm" or isinstance(exc, KeysUnusable) or _srk_refused(provider):
            raise  # an object at 0x81000001 that is not the standard SRK: ForeignKey says so
        parent = _file_parent(pem)
        names = f"parent {parent_text(parent)}" if parent is not None else "parent (unreadable)"
        if isinstance(exc.__cause__, TPMError):  # the TPM itself refused the blob
            raise KeysUnusable(
                f"keys unusable on this TPM: leave and join again (key {name!r}: this TPM "
                f"refuses it under {names}: the TPM was cleared or replaced since the key was "
                f"made; {exc})",
                name,
                path=exc.path,
            ) from exc
        if parent == SRK_HANDLE:
            raise KeysUnusable(
                f"keys unusable on this TPM: leave and join again (key {name!r} was made under "
                f"{names}, and this TPM has no storage key there: a TPM clear evicts it. If it "
                "was only evicted, `entra-keys tpm init` brings the same key back and the keys "
                f"load again; {exc})",
                name,
                path=exc.path,
            ) from exc
        raise ForeignKey(
            f"the key file names the storage {names}, which this TPM does not offer as its "
            f"storage key (the TPM was not cleared: the key file is intact; {exc})",
            name,
            path=exc.path,
        ) from exc


def _srk_refused(provider: Provider) -> bool:
    """Whether the TPM holds an object at 0x81000001 that the provider refused as not the
    standard SRK (planted, or made with an authorization value): no sign of a cleared TPM."""
    from ..providers.tpm.provider import TPMProvider

    return isinstance(provider, TPMProvider) and provider.connection.refused_srk is not None


def _software_pin_file(pem: bytes) -> bool:
    """Whether a software key file is written under its PIN (``software.pin_protected``)."""
    from ..providers.software import pin_protected

    return pin_protected(pem)


def _one_tss2_block(name: str, data: bytes) -> bytes:
    """The one TSS2 PRIVATE KEY block of a file to import, from its BEGIN line to its END line
    and newline; KeyFileCorrupt for a file over the store's size limit, without that block,
    with a second PEM block, or with anything but whitespace after it (the store would keep
    what it could never load)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise KeyFileCorrupt(f"key {name!r}: a key file is bytes, not {type(data).__name__}", name)
    data = bytes(data)
    if len(data) > _MAX_FILE:
        raise KeyFileCorrupt(
            f"key {name!r}: the file is {len(data)} bytes, more than a key file may be "
            f"({_MAX_FILE})",
            name,
        )
    begin = _PEM_BEGIN.search(data)
    if begin is None or begin.group(1).decode() != _TSS2_LABEL:
        raise KeyFileCorrupt(f"key {name!r}: the file holds no {_TSS2_LABEL}", name)
    end_line = f"-----END {_TSS2_LABEL}-----".encode()
    end = data.find(end_line, begin.end())
    if end < 0:
        raise KeyFileCorrupt(f"key {name!r}: the file is truncated (no PEM end line)", name)
    after = data[end + len(end_line) :]
    if after.strip():
        more = "a second PEM block" if b"-----BEGIN " in after else "data"
        raise KeyFileCorrupt(
            f"key {name!r}: the file has {more} after its {_TSS2_LABEL} ({len(after)} bytes); "
            "import the key block alone",
            name,
        )
    if _PEM_BEGIN.search(data, begin.end()) is not None:
        raise KeyFileCorrupt(f"key {name!r}: the file holds a second PEM block", name)
    return data[begin.start() : end + len(end_line)] + b"\n"


def _parse_key_file(name: str, path: Path, data: bytes) -> KeyInfo:
    """Read the header lines and the PEM label; the key itself is the provider's to parse."""
    begin = _PEM_BEGIN.search(data)
    if begin is None:
        raise KeyFileCorrupt(f"key {name!r}: {path} holds no PEM key", name)
    label = begin.group(1).decode()
    kind = KIND_BY_PEM_LABEL.get(label)
    if kind is None:
        raise KeyFileCorrupt(f"key {name!r}: a {label!r} is not a key file entra_keys writes", name)
    end = data.find(f"-----END {label}-----".encode(), begin.end())
    if end < 0:
        raise KeyFileCorrupt(f"key {name!r}: the file is truncated (no PEM end line)", name)
    if not tss2file.is_der_sequence(data[begin.end() : end]):
        raise KeyFileCorrupt(f"key {name!r}: the PEM body is not base64 of a DER key", name)
    fields: dict[str, str] = {}
    for line in data[: begin.start()].decode("ascii", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        if label == _TSS2_LABEL and "Entra-Keys-Type" not in fields:
            # another tool's key file (tpm2-openssl, tpm2-tools): what its public area says
            key_type, usage = tss2file.kind_of_public(
                name, tss2file.tss2_public(data[begin.end() : end])
            )
        else:
            key_type = KeyType(fields["Entra-Keys-Type"])
            usage = KeyUsage(fields["Entra-Keys-Usage"])
    except (KeyError, ValueError):
        raise KeyFileCorrupt(
            f"key {name!r}: the Entra-Keys-Type / Entra-Keys-Usage header is missing or wrong",
            name,
        ) from None
    parent_name: bytes | None = None
    if "Entra-Keys-Parent-Name" in fields:
        try:
            parent_name = bytes.fromhex(fields["Entra-Keys-Parent-Name"])
        except ValueError:
            parent_name = b""
        if not 2 < len(parent_name) <= 2 + 64:
            raise KeyFileCorrupt(f"key {name!r}: the Entra-Keys-Parent-Name header is wrong", name)
    body = data[begin.end() : end]
    body_and_lines = data[begin.start() :]
    tss2 = label == _TSS2_LABEL
    return KeyInfo(
        name=name,
        key_type=key_type,
        usage=usage,
        kind=kind,
        hardware_backed=kind == "tpm" and tss2file.made_in_tpm(body, usage),
        encrypted=label in ENCRYPTED_PEM_LABELS,
        path=path,
        pin=fields.get("Entra-Keys-PIN") == "yes"
        or (tss2 and tss2file.tss2_has_pin(body))
        or (label == PEM_LABEL_ENCRYPTED_SOFTWARE_KEY and _software_pin_file(body_and_lines)),
        lockout=tss2 and tss2file.counts_toward_lockout(body),
        parent_name=parent_name,
    )
