"""Files and directories this user alone controls: the rules the key store and the TPM
provider's saved primary context share (``store._files`` builds the store's on them).

Whoever could swap such a file could swap what the library trusts, so a file or directory is
refused unless it is of the kind expected (a link, a FIFO is not), owned by the effective uid and
closed to group and others; directories are opened without following a link, and what is in
them is then reached relative to the open descriptor, so a path swapped after the check changes
nothing. Each refusal is a ``StorePermissionError`` naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from ..errors import StorePermissionError

__all__ = ["DIR_FLAGS", "check_owned", "file_type", "open_owned_dir"]

#: How a checked directory is opened: never through a link, never blocking on a FIFO.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def file_type(mode: int) -> str:
    """What kind of file a mode says, for messages: 'a symbolic link', 'a FIFO', ..."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((kind for test, kind in kinds if test(mode)), "an unknown kind of file")


def check_owned(
    st: os.stat_result, path: Path, subject: str, key_name: str | None, *, directory: bool
) -> None:
    """Refuse what another user could swap or read: the wrong kind of file (a link, a FIFO),
    another owner, or group/other permission bits."""
    wanted = "a directory" if directory else "a regular file"
    if file_type(st.st_mode) != wanted:
        raise StorePermissionError(
            f"{subject} {path} is {file_type(st.st_mode)}, not {wanted}; refusing it",
            key_name,
            path=str(path),
        )
    euid = os.geteuid()
    if st.st_uid != euid:
        raise StorePermissionError(
            f"{subject} {path} is owned by uid {st.st_uid}, not by this user (uid {euid}); "
            "whoever owns it could swap the keys",
            key_name,
            path=str(path),
        )
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        advice = f"chmod {'700' if directory else '600'} it"
        if directory and _shared(path, st):  # never advise changing a shared directory
            advice = (
                "it is a shared directory: use a directory of your own for it (entra_keys makes "
                "a missing one 0700), and leave this one's permissions as they are"
            )
        raise StorePermissionError(
            f"{subject} {path} is open to other users (mode {mode:o}); {advice}",
            key_name,
            path=str(path),
        )


def _shared(path: Path, st: os.stat_result) -> bool:
    """True for a directory others share, whose permissions are not the caller's to change:
    sticky or writable by others (/tmp), at the top of the file system (/var, /srv), or holding
    directories or special files (/var/lib, /etc), which a key store does not (but for its
    hidden ``.leaving`` marker)."""
    if st.st_mode & (stat.S_ISVTX | 0o022) or len(path.absolute().parts) <= 2:
        return True
    try:
        with os.scandir(path) as entries:
            return any(
                not entry.is_file(follow_symlinks=False) and not entry.name.startswith(".")
                for entry in entries
            )
    except OSError:
        return True


def open_owned_dir(path: Path, subject: str, *, create: bool) -> int:
    """A descriptor of the directory ``path``, opened without following a link and checked
    (``check_owned``); with ``create``, made 0700 first where there is none. Its parent must be
    this user's too and writable by no one else, or whoever owns it could replace the directory
    between two opens. OS errors are the caller's to translate (FileNotFoundError first)."""
    parent_st = os.stat(path.parent)
    if parent_st.st_uid != os.geteuid() or parent_st.st_mode & 0o022:
        raise StorePermissionError(
            f"{subject}: its parent {path.parent} belongs to uid {parent_st.st_uid} or is "
            f"writable by others (mode {stat.S_IMODE(parent_st.st_mode):o}); refusing it",
            path=str(path),
        )
    if create:  # where something is there already (a link, a file), the open refuses it
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    try:
        fd = os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        raise
    except OSError:
        # ELOOP for a link, ENOTDIR for a file: say which, naming the path.
        check_owned(os.stat(path, follow_symlinks=False), path, subject, None, directory=True)
        raise
    try:
        check_owned(os.fstat(fd), path, subject, None, directory=True)
    except BaseException:
        os.close(fd)
        raise
    return fd
