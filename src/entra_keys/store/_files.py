"""The key store's file-system rules: what it opens, reads and writes, and how.

Whoever could swap a store file could swap the device's identity, so every path goes through
here: the store directory is opened once per operation without following links and checked to
be this user's alone (``open_dir``); files are opened, created, renamed and removed relative to
that descriptor, checked the same way after opening (``read_file``), and written through a
fsynced temporary file linked or renamed into place (``write_atomic``), so a crash leaves the
old file or the new one, never half of either. Every change to the store is made under its lock
(``locked``: flock on the store directory itself), so a leave and a writer never interleave.
``keystore`` is the API over these; the rules of what this user alone controls are
``providers._owned``'s, which the TPM provider's saved primary context follows too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import EntraKeysError, KeyExists, KeyStoreError
from ..providers._owned import DIR_FLAGS, check_owned
from . import _leave

__all__ = [
    "KEY_SUFFIX",
    "LOCK_WAIT",
    "ensure_dir",
    "hold_lock",
    "locked",
    "lstat",
    "open_dir",
    "read_file",
    "remove_stale_temp_files",
    "write_atomic",
]

#: The suffix of a key file (``NAME.pem``).
KEY_SUFFIX = ".pem"
#: Seconds a change to the store waits for its lock before it fails (``KeyStoreError``).
LOCK_WAIT = 10.0
_TEMP_PREFIX = _leave.TEMP_PREFIX
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        if _leave.pending(dir_fd):  # a leave was killed half-way: complete it, under the lock
            with hold_lock(dir_fd, store):
                if _leave.pending(dir_fd):  # not the leave that held the lock, done meanwhile
                    _leave.finish(dir_fd)
        yield dir_fd
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def locked(store: Path, *, create: bool = True, wait: float | None = None) -> Iterator[int | None]:
    """The store directory's descriptor with the store's lock held: every change to the store
    (a key written or deleted, the join state, a sealed secret, a leave) is made inside one.
    ``create`` makes a missing store first; without it a missing store yields None.

    The lock is the store directory itself (flock on a descriptor of it), not a file in it:
    there is no lock file to plant, link, chmod or leave behind, and the directory already
    passed ``open_dir``'s checks (this user's, closed to others, not a link)."""
    if create:
        ensure_dir(store)
    with open_dir(store) as dir_fd:
        if dir_fd is None:
            if create:
                raise KeyStoreError(f"the key store {store} was removed", path=str(store))
            yield None
            return
        with hold_lock(dir_fd, store, wait):
            if _leave.pending(dir_fd):  # killed while this process waited for the lock
                _leave.finish(dir_fd)
            yield dir_fd


class _Hold:
    """This process's hold on one store's lock: a lock for its threads, the flock (on a
    descriptor of the directory of its own) for other processes, and how often the holding
    thread re-entered it."""

    __slots__ = ("depth", "fd", "threads")

    def __init__(self) -> None:
        self.threads = threading.RLock()
        self.depth = 0
        self.fd = -1


#: The holds of this process by store directory (device, inode): a thread that holds a store's
#: lock takes it again at once (a write inside the demo's run); others wait for it.
_HOLDS: dict[tuple[int, int], _Hold] = {}
_HOLDS_GUARD = threading.Lock()


@contextlib.contextmanager
def hold_lock(dir_fd: int, store: Path, wait: float | None = None) -> Iterator[None]:
    """Hold the lock of the open store directory for the block: flock on the directory, which
    the kernel releases when its holder exits or is killed, so a dead writer never blocks the
    store. Waits up to ``wait`` seconds (``LOCK_WAIT``), then ``KeyStoreError`` naming the store."""
    limit = LOCK_WAIT if wait is None else wait
    deadline = time.monotonic() + limit
    st = os.fstat(dir_fd)
    with _HOLDS_GUARD:
        hold = _HOLDS.setdefault((st.st_dev, st.st_ino), _Hold())
    if not hold.threads.acquire(timeout=max(limit, 0.0)):
        raise _busy(store, limit)
    try:
        if hold.depth == 0:
            hold.fd = _take_flock(dir_fd, store, deadline, limit)
        hold.depth += 1
    except BaseException:
        hold.threads.release()
        raise
    try:
        yield
    finally:
        hold.depth -= 1
        if hold.depth == 0:
            fd, hold.fd = hold.fd, -1
            os.close(fd)  # closing the descriptor releases the flock
        hold.threads.release()


def _take_flock(dir_fd: int, store: Path, deadline: float, limit: float) -> int:
    """A descriptor of the store directory of its own (``.`` relative to the checked one, so no
    path is followed again), flocked, waiting until ``deadline``."""
    try:
        fd = os.open(".", _LOCK_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise KeyStoreError(
            f"cannot lock the key store {store}: {exc.strerror}", path=str(store)
        ) from exc
    try:
        pause = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _busy(store, limit) from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)
    except BaseException:
        os.close(fd)
        raise


def _busy(store: Path, limit: float) -> KeyStoreError:
    return KeyStoreError(
        f"the key store {store} is busy: another writer (or a leave) has held its lock for "
        f"{limit:g} s; try again",
        path=str(store),
    )


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
    place, under the store's lock; each step is relative to the directory's descriptor, so a
    swapped path changes nothing. Without ``replace`` a taken name is KeyExists, never
    overwritten."""
    name = path.name.removesuffix(KEY_SUFFIX)
    with locked(store) as dir_fd:
        assert dir_fd is not None  # locked(create=True) makes the store or raises
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
