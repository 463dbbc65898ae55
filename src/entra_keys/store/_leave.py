"""Leaving a join: every file of the join removed from the store, all or nothing.

A leave first makes the directory ``.leaving`` in the store (one ``mkdir``, fsynced): from then on
the leave has happened. It then moves the join's files (key files, the join state, sealed data,
temporary files) into that directory, removes them and the directory. A process killed on the way
leaves the marker behind, and the next open of the store completes the leave before it reads
anything, so a reader sees either the whole join or an empty store, never a part of it.

The TPM keeps nothing of a join (keys are blobs loaded for one use), so a leave flushes nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat

from ..errors import KeyStoreError, StorePermissionError

__all__ = ["MARKER", "finish", "is_join_file", "leave", "pending"]

#: The directory whose existence records that a leave was decided.
MARKER = ".leaving"
#: The suffixes of the files a join leaves in the store: key files and sealed data.
JOIN_SUFFIXES = (".pem", ".sealed")
JOIN_STATE = "join.json"
TEMP_PREFIX = ".tmp-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def is_join_file(entry: str) -> bool:
    """True for a file of a join: a key file, sealed data, the join state, a temporary file."""
    if entry.startswith(TEMP_PREFIX) or entry == JOIN_STATE:
        return True
    return not entry.startswith(".") and entry.endswith(JOIN_SUFFIXES)


def pending(dir_fd: int) -> bool:
    """True when a leave was decided and not completed (its process was killed)."""
    try:
        os.stat(MARKER, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def leave(dir_fd: int, store: str = ".") -> list[str]:
    """Remove every file of the join from the open store directory (``store`` names it in
    errors); the names removed. An entry named as a join file that is neither a regular file
    nor a link (a directory ``x.pem``) is refused before anything changes."""
    if not pending(dir_fd):
        entries = [entry for entry in os.listdir(dir_fd) if is_join_file(entry)]
        if not entries:
            return []
        for entry in entries:
            _check_removable(dir_fd, entry, store)
        with contextlib.suppress(FileExistsError):  # another leave decided it just now
            os.mkdir(MARKER, 0o700, dir_fd=dir_fd)
        os.fsync(dir_fd)  # the decision is on disk: the join is gone from here on
    return finish(dir_fd)


def finish(dir_fd: int) -> list[str]:
    """Complete a decided leave: move the join's files under the marker, remove them and it."""
    try:
        marker_fd = os.open(MARKER, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise StorePermissionError(
            f"the key store's {MARKER} is not a directory of this user ({exc.strerror})"
        ) from exc
    removed: list[str] = []
    try:
        st = os.fstat(marker_fd)
        if st.st_uid != os.geteuid() or not stat.S_ISDIR(st.st_mode):
            raise StorePermissionError(
                f"the key store's {MARKER} is owned by uid {st.st_uid}, not by this user"
            )
        for entry in sorted(os.listdir(dir_fd)):
            if is_join_file(entry) and not _is_directory(dir_fd, entry):  # left: never a wedge
                with contextlib.suppress(FileNotFoundError):  # a concurrent leave took it
                    os.rename(entry, entry, src_dir_fd=dir_fd, dst_dir_fd=marker_fd)
        os.fsync(dir_fd)
        for entry in sorted(os.listdir(marker_fd)):
            with contextlib.suppress(FileNotFoundError):
                if _is_directory(marker_fd, entry):  # moved there by an earlier release
                    shutil.rmtree(entry, dir_fd=marker_fd)
                else:
                    os.unlink(entry, dir_fd=marker_fd)
            removed.append(entry)
        os.fsync(marker_fd)
    except OSError as exc:
        raise KeyStoreError(f"cannot complete leaving the join: {exc.strerror}") from exc
    finally:
        os.close(marker_fd)
    try:
        os.rmdir(MARKER, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # a concurrent leave finished first
    except OSError as exc:
        raise KeyStoreError(f"cannot complete leaving the join: {exc.strerror}") from exc
    os.fsync(dir_fd)
    return sorted(removed)


def _check_removable(dir_fd: int, entry: str, store: str) -> None:
    """StorePermissionError naming ``entry`` unless a leave can unlink it (a file or a link)."""
    try:
        mode = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        path = os.path.join(store, entry)
        raise StorePermissionError(
            f"{path} is named as a file of the join but is not a regular file: a leave removes "
            "files only; move it out of the key store and leave again (nothing was removed)",
            path=path,
        )


def _is_directory(dir_fd: int, entry: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(entry, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False
