"""The key store's file-system rules: what it opens, reads and writes, and how.

Whoever could swap a store file could swap the device's identity, so every path goes through
here: the store directory is opened once per operation without following links and checked to
be this user's alone (``open_dir``); files are opened, created, renamed and removed relative to
that descriptor, checked the same way after opening (``read_file``), and written through a
fsynced temporary file linked or renamed into place (``write_atomic``), so a crash leaves the
old file or the new one, never half of either. ``keystore`` is the API over these; the rules of
what this user alone controls are ``providers._owned``'s, which the TPM provider's saved
primary context follows too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ..errors import EntraKeysError, KeyExists, KeyStoreError
from ..providers._owned import DIR_FLAGS, check_owned
from . import _leave

__all__ = [
    "KEY_SUFFIX",
    "ensure_dir",
    "lstat",
    "open_dir",
    "read_file",
    "remove_stale_temp_files",
    "write_atomic",
]

#: The suffix of a key file (``NAME.pem``).
KEY_SUFFIX = ".pem"
_TEMP_PREFIX = _leave.TEMP_PREFIX
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def lstat(path: Path, dir_fd: int | None = None) -> os.stat_result | None:
    """What is at ``path`` itself (a link is not followed), or None when nothing is."""
    try:
        return os.stat(path if dir_fd is None else path.name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None


def read_file(dir_fd: int, path: Path, subject: str, key_name: str | None, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of ``path.name`` in the open store directory, after checking
    the opened file: O_NOFOLLOW refuses a link, O_NONBLOCK keeps a FIFO from hanging the open.
    OS errors (FileNotFoundError first) are the caller's to translate."""
    try:
        fd = os.open(path.name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError:
        found = lstat(path, dir_fd)  # ELOOP (a link), ENXIO (a socket): say which
        if found is not None:
            check_owned(found, path, subject, key_name, directory=False)
        raise
    try:
        check_owned(os.fstat(fd), path, subject, key_name, directory=False)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read(limit + 1)


@contextlib.contextmanager
def open_dir(store: Path) -> Iterator[int | None]:
    """The store directory's descriptor, opened without following a link and checked to be
    this user's alone, or None when there is no store yet; closed on leaving. A leave killed
    half-way is completed first, so no reader sees part of a join."""
    try:
        dir_fd = os.open(store, DIR_FLAGS)
    except FileNotFoundError:
        dir_fd = None
    except OSError as exc:
        # A link, a file or a FIFO in the directory's place: say which, naming the path.
        found = lstat(store)
        if found is not None:
            check_owned(found, store, "the key store", None, directory=True)
        raise KeyStoreError(
            f"cannot open the key store {store}: {exc.strerror}", path=str(store)
        ) from exc
    if dir_fd is None:
        yield None
        return
    try:
        check_owned(os.fstat(dir_fd), store, "the key store", None, directory=True)
        if _leave.pending(dir_fd):  # a leave was killed half-way: complete it first
            _leave.finish(dir_fd)
        yield dir_fd
    finally:
        os.close(dir_fd)


def ensure_dir(store: Path) -> None:
    """Create the store directory (0700) when there is none; what is there is checked when
    it is opened."""
    try:
        store.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass  # a directory, or a link or file that open_dir refuses by name
    except OSError as exc:
        raise KeyStoreError(
            f"cannot create the key store {store}: {exc.strerror}", path=str(store)
        ) from exc


def write_atomic(store: Path, path: Path, data: bytes, *, replace: bool) -> None:
    """Temp file (0600) in the checked store directory, fsync, then link or rename into
    place; each step is relative to the directory's descriptor, so a swapped path changes
    nothing. Without ``replace`` a taken name is KeyExists, never overwritten."""
    ensure_dir(store)
    name = path.name.removesuffix(KEY_SUFFIX)
    with open_dir(store) as dir_fd:
        if dir_fd is None:
            raise KeyStoreError(
                f"cannot store key {name!r}: the key store {store} was removed",
                name,
                path=str(store),
            )
        remove_stale_temp_files(dir_fd)
        tmp = f"{_TEMP_PREFIX}{os.getpid()}.{name}.{secrets.token_hex(8)}"
        created = False
        try:
            fd = os.open(tmp, _NEW_FLAGS, 0o600, dir_fd=dir_fd)
            created = True
            with os.fdopen(fd, "wb") as f:
                made = os.fstat(f.fileno())
                check_owned(made, store / tmp, f"key {name!r}:", name, directory=False)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if replace:
                os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                try:
                    # fails if the name is taken: no silent overwrite
                    os.link(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except FileExistsError:
                    raise KeyExists(f"key {name!r} already exists", name) from None
                os.unlink(tmp, dir_fd=dir_fd)
        except OSError as exc:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            if exc.errno == errno.ENOSPC:
                raise KeyStoreError(f"no space left to store key {name!r}", name) from exc
            raise KeyStoreError(f"cannot store key {name!r}: {exc.strerror}", name) from exc
        except EntraKeysError:
            if created:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)


def remove_stale_temp_files(dir_fd: int) -> None:
    """Remove temp files a killed writer left (their process is gone); they never held a
    key under its name, so nothing stored is lost."""
    for entry in os.listdir(dir_fd):
        if not entry.startswith(_TEMP_PREFIX):
            continue
        pid = entry[len(_TEMP_PREFIX) :].partition(".")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=dir_fd)


def _alive(pid: int) -> bool:
    """True while a process of that id exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
