"""Named keys on disk: one PEM file a key, written atomically, readable only by its owner.

A key file is the provider's own PEM (``TSS2 PRIVATE KEY`` for a TPM key, which tpm2-openssl and
tpm2-tss-engine load; PKCS#8 for a software key) preceded by two lines of RFC 7468 explanatory
text, ``Entra-Keys-Type`` and ``Entra-Keys-Usage``, that PEM readers skip. A TPM key file holds
only a blob that this TPM alone can load; a software key file is encrypted when a passphrase is
given. Writes go to a temporary file that is fsynced and renamed, so a crash leaves either the
old key or the new one, never half of either.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import contextlib
import errno
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    EntraKeysError,
    InvalidKeyName,
    KeyExists,
    KeyFileCorrupt,
    KeyNotFound,
    KeyStoreError,
    KeyUsageError,
    StorePermissionError,
    WrongProvider,
)
from .provider import EntraPrivateKey, KeyType, KeyUsage, Provider, SessionKey

__all__ = ["KeyInfo", "KeyStore", "default_store_path"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUFFIX = ".pem"
_TEMP_PREFIX = ".tmp-"
_JOIN_STATE = "join.json"
_PEM_BEGIN = re.compile(rb"^-----BEGIN ([A-Z0-9 ]+)-----\r?$", re.MULTILINE)
_MAX_FILE = 64 * 1024
_TPM_LABEL = "TSS2 PRIVATE KEY"
_KIND_BY_LABEL = {
    _TPM_LABEL: "tpm",
    "PRIVATE KEY": "software",
    "ENCRYPTED PRIVATE KEY": "software",
    "ENTRA SESSION KEY": "software",
    "ENTRA ENCRYPTED SESSION KEY": "software",
}
_ENCRYPTED_LABELS = {"ENCRYPTED PRIVATE KEY", "ENTRA ENCRYPTED SESSION KEY"}


def default_store_path() -> Path:
    """``$ENTRA_KEYS_STORE``, else ``entra-keys`` under the user's data directory (XDG)."""
    env = os.environ.get("ENTRA_KEYS_STORE")
    if env:
        return Path(env)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "entra-keys"


@dataclass(frozen=True)
class KeyInfo:
    """What the store knows of a key without loading it into the provider."""

    name: str
    key_type: KeyType
    usage: KeyUsage
    kind: str
    hardware_backed: bool
    encrypted: bool
    path: Path


class KeyStore:
    """A directory of named keys belonging to one provider."""

    def __init__(self, provider: Provider, path: str | os.PathLike[str] | None = None) -> None:
        self.provider = provider
        self.path = Path(path) if path is not None else default_store_path()

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
        self._file(name)  # refuse a bad name before making a key
        if not replace and name in self:
            raise KeyExists(f"key {name!r} already exists", name)
        key = self.provider.create_key(key_type, usage, pin=pin)
        self.save(name, key, passphrase=passphrase, replace=replace)
        return key

    def save(
        self,
        name: str,
        key: EntraPrivateKey,
        *,
        passphrase: bytes | None = None,
        replace: bool = False,
    ) -> None:
        """Stores a key of this store's provider under ``name``, atomically."""
        path = self._file(name)
        pem = self.provider.key_to_pem(key, passphrase)
        self._write_atomic(path, _header(key.key_type, key.usage) + pem, replace=replace)

    def save_session_key(
        self,
        name: str,
        key: SessionKey,
        *,
        passphrase: bytes | None = None,
        replace: bool = False,
    ) -> None:
        """Stores the PRT session key under ``name``; a new PRT's key replaces it atomically."""
        path = self._file(name)
        pem = self.provider.session_key_to_pem(key, passphrase)
        header = _header(KeyType.HMAC_SHA256, KeyUsage.DERIVE)
        self._write_atomic(path, header + pem, replace=replace)

    def load(
        self, name: str, *, passphrase: bytes | None = None, pin: bytes | None = None
    ) -> EntraPrivateKey:
        """Loads the key stored under ``name``; errors name the key and leave the store as is."""
        info, pem = self._read_for_provider(name)
        if info.usage is KeyUsage.DERIVE:
            raise KeyUsageError(f"key {name!r} is a session key: load it with load_session_key")
        with _naming(name):
            key = self.provider.key_from_pem(pem, info.usage, passphrase, pin=pin)
        if key.key_type is not info.key_type or key.usage is not info.usage:
            raise KeyFileCorrupt(
                f"key {name!r}: the file says {info.key_type.value}/{info.usage.value} but holds "
                f"a {key.key_type.value}/{key.usage.value} key",
                name,
            )
        return key

    def load_session_key(self, name: str, *, passphrase: bytes | None = None) -> SessionKey:
        """Loads the session key stored under ``name`` (typed errors name it)."""
        info, pem = self._read_for_provider(name)
        if info.usage is not KeyUsage.DERIVE:
            raise KeyUsageError(f"key {name!r} is a {info.usage.value} key, not a session key")
        with _naming(name):
            return self.provider.session_key_from_pem(pem, passphrase)

    def _read_for_provider(self, name: str) -> tuple[KeyInfo, bytes]:
        info, pem = self._read(name)
        if info.kind != self.provider.kind:
            raise WrongProvider(
                f"key {name!r} is a {info.kind} key; open the store with the "
                f"{info.kind} provider to use it",
                name,
            )
        return info, pem

    def save_join_state(self, state: Mapping[str, Any]) -> None:
        """Records what a join established (device id, certificate, AK, session key names)
        beside the keys, atomically, for ``status`` to report."""
        data = json.dumps(dict(state), indent=2, sort_keys=True).encode()
        self._write_atomic(self.path / _JOIN_STATE, data, replace=True)

    def load_join_state(self) -> dict[str, Any] | None:
        """The recorded join state, or None when this store's device has not joined."""
        self._check_dir()
        try:
            data = (self.path / _JOIN_STATE).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"cannot read the join state: {exc.strerror}") from exc
        try:
            state = json.loads(data)
        except ValueError as exc:
            raise KeyFileCorrupt(f"the join state {_JOIN_STATE} is not JSON ({exc})") from exc
        if not isinstance(state, dict):
            raise KeyFileCorrupt(f"the join state {_JOIN_STATE} is not a JSON object")
        return state

    def info(self, name: str) -> KeyInfo:
        """Describes the key stored under ``name`` from its file alone."""
        return self._read(name)[0]

    def list(self) -> builtins.list[KeyInfo]:
        """Every readable key in the store, by name; unreadable files are skipped, not fatal."""
        if not self.path.is_dir():
            return []
        self._check_dir()
        return [found for _, found in self._scan() if isinstance(found, KeyInfo)]

    def broken(self) -> builtins.list[tuple[str, str]]:
        """The names and errors of key files that cannot be read (for status reports)."""
        return [
            (name, str(found)) for name, found in self._scan() if not isinstance(found, KeyInfo)
        ]

    def _scan(self) -> Iterator[tuple[str, KeyInfo | KeyStoreError]]:
        """Each key file by name, with what the store reads of it or why it cannot."""
        if not self.path.is_dir():
            return
        for entry in sorted(self.path.glob("*" + _SUFFIX)):
            name = entry.name.removesuffix(_SUFFIX)
            if not _NAME.fullmatch(name):
                continue
            try:
                yield name, self.info(name)
            except KeyStoreError as exc:
                yield name, exc

    def delete(self, name: str) -> None:
        """Removes the key stored under ``name`` (the TPM keeps nothing of it)."""
        path = self._file(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise KeyNotFound(f"no key {name!r} in {self.path}", name) from None
        except OSError as exc:
            raise KeyStoreError(f"cannot delete key {name!r}: {exc.strerror}", name) from exc
        self._fsync_dir()

    def __contains__(self, name: object) -> bool:
        return (
            isinstance(name, str)
            and _NAME.fullmatch(name) is not None
            and (self.path / (name + _SUFFIX)).is_file()
        )

    # -- files --------------------------------------------------------------------------------

    def _file(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidKeyName(
                f"invalid key name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit",
                name if isinstance(name, str) else None,
            )
        return self.path / (name + _SUFFIX)

    def _read(self, name: str) -> tuple[KeyInfo, bytes]:
        path = self._file(name)
        self._check_dir()
        try:
            with path.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = f.read(_MAX_FILE + 1)
        except FileNotFoundError:
            raise KeyNotFound(f"no key {name!r} in {self.path}", name) from None
        except OSError as exc:
            raise KeyStoreError(f"cannot read key {name!r}: {exc.strerror}", name) from exc
        if mode & 0o077:
            raise StorePermissionError(
                f"key {name!r}: {path} is open to other users (mode {stat.S_IMODE(mode):o}); "
                "chmod 600 it",
                name,
            )
        if len(data) > _MAX_FILE:
            raise KeyFileCorrupt(f"key {name!r}: the file is larger than any key file", name)
        info = _parse_key_file(name, path, data)
        return info, data[data.index(b"-----BEGIN ") :]

    def _check_dir(self) -> None:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            return
        if mode & 0o077:
            raise StorePermissionError(
                f"the key store {self.path} is open to other users (mode {stat.S_IMODE(mode):o}); "
                "chmod 700 it"
            )

    def _ensure_dir(self) -> None:
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise KeyStoreError(f"cannot create the key store {self.path}: {exc.strerror}") from exc
        self._check_dir()

    def _write_atomic(self, path: Path, data: bytes, *, replace: bool) -> None:
        """Temp file (0600) in the same directory, fsync, then link or rename into place."""
        self._ensure_dir()
        name = path.name.removesuffix(_SUFFIX)
        self._remove_stale_temp_files()
        fd, tmp = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}.{name}.", dir=self.path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path)  # fails if the name is taken: no silent overwrite
                except FileExistsError:
                    raise KeyExists(f"key {name!r} already exists", name) from None
                os.unlink(tmp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if exc.errno == errno.ENOSPC:
                raise KeyStoreError(f"no space left to store key {name!r}", name) from exc
            raise KeyStoreError(f"cannot store key {name!r}: {exc.strerror}", name) from exc
        except EntraKeysError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._fsync_dir()

    def _remove_stale_temp_files(self) -> None:
        """Remove temp files a killed writer left (their process is gone); they never held a
        key under its name, so nothing stored is lost."""
        for entry in self.path.glob(_TEMP_PREFIX + "*"):
            pid = entry.name[len(_TEMP_PREFIX) :].partition(".")[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    entry.unlink()

    def _fsync_dir(self) -> None:
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _header(key_type: KeyType, usage: KeyUsage) -> bytes:
    """The explanatory-text lines before the PEM block that say what the key is."""
    return f"Entra-Keys-Type: {key_type.value}\nEntra-Keys-Usage: {usage.value}\n".encode()


@contextlib.contextmanager
def _naming(name: str) -> Iterator[None]:
    """Re-raise a provider's key-store error with the key's name in it."""
    try:
        yield
    except KeyStoreError as exc:
        raise type(exc)(f"key {name!r}: {exc}", name) from exc


def _is_der_sequence(body: bytes) -> bool:
    """True when a PEM body is base64 of exactly one DER SEQUENCE (catches cut or mangled files)."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        return False
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return len(der) == 2 + first
    n = first & 0x7F
    if not 1 <= n <= 4 or len(der) < 2 + n:
        return False
    return len(der) == 2 + n + int.from_bytes(der[2 : 2 + n], "big")


def _parse_key_file(name: str, path: Path, data: bytes) -> KeyInfo:
    """Read the header lines and the PEM label; the key itself is the provider's to parse."""
    begin = _PEM_BEGIN.search(data)
    if begin is None:
        raise KeyFileCorrupt(f"key {name!r}: {path} holds no PEM key", name)
    label = begin.group(1).decode()
    kind = _KIND_BY_LABEL.get(label)
    if kind is None:
        raise KeyFileCorrupt(f"key {name!r}: a {label!r} is not a key file entra_keys writes", name)
    end = data.find(f"-----END {label}-----".encode(), begin.end())
    if end < 0:
        raise KeyFileCorrupt(f"key {name!r}: the file is truncated (no PEM end line)", name)
    if not _is_der_sequence(data[begin.end() : end]):
        raise KeyFileCorrupt(f"key {name!r}: the PEM body is not base64 of a DER key", name)
    fields: dict[str, str] = {}
    for line in data[: begin.start()].decode("ascii", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    try:
        key_type = KeyType(fields["Entra-Keys-Type"])
        usage = KeyUsage(fields["Entra-Keys-Usage"])
    except (KeyError, ValueError):
        raise KeyFileCorrupt(
            f"key {name!r}: the Entra-Keys-Type / Entra-Keys-Usage header is missing or wrong",
            name,
        ) from None
    return KeyInfo(
        name=name,
        key_type=key_type,
        usage=usage,
        kind=kind,
        hardware_backed=kind == "tpm",
        encrypted=label in _ENCRYPTED_LABELS,
        path=path,
    )
