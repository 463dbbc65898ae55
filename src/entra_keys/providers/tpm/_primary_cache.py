"""A saved context of the storage primary, so an open without a persistent SRK skips
TPM2_CreatePrimary (seconds on some chips for RSA, ~0.1 s for ECC) within one TPM boot.

The context (TPM2_ContextSave, as ESYS saves it) lives in a per-user file, 0600, named by a hash
of the TCTI, in ``$XDG_RUNTIME_DIR/entra-keys`` (else ``~/.cache/entra-keys``): a directory this
user alone controls, by the key store's rules (``providers._owned``: opened without following a
link, owned by the effective uid, 0700, in a parent of this user's that no one else may write);
where it is not, nothing is saved or read, and every open creates the primary.

The file is never trusted. The TPM refuses a context from another boot, after a clear, from
another TPM or altered (its integrity HMAC), and what it loads is checked against the TPM's own
answer to TPM2_ReadPublic (``checked``): the name recorded when this user created it, the owner
hierarchy as its parent, and the one template the store's keys hang under (the TCG key-file
parent, ECC P-256). ESYS keeps its own copy of the object's public area in the saved context, and
the salted sessions encrypt their salt to that copy: it must be exactly the TPM's answer too, or
a planted point would let whoever planted it decrypt every PIN and sealed secret sent after.
Any failure means: create the primary again and rewrite the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from pathlib import Path
from typing import Any

from ...errors import StorePermissionError
from ...tcg import model
from .._owned import check_owned, open_owned_dir
from ._templates import without_unique

__all__ = ["checked", "directory", "forget", "read", "write"]

_MAGIC = b"entra-keys primary context 2\n"
_OWNER = struct.pack(">I", model.TPM_RH_OWNER)
_LIMIT = 1 << 16
#: ESYS's serialized metadata of a key object (``ESAPI.tr_serialize``): the TPM handle, the name,
#: the resource type (1, a key) and the public area.
_KEY_RESOURCE = 1


def directory() -> Path:
    """The cache directory of this user: in the runtime directory where there is one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path.home() / ".cache"
    return base / "entra-keys"


def _name(tcti: str) -> str:
    return f"primary-{hashlib.sha256(tcti.encode()).hexdigest()[:24]}.ctx"


@contextlib.contextmanager
def _open_dir(*, create: bool) -> Any:
    """The checked cache directory's descriptor, or None where there is none or it is refused
    (another user's, a link, open to others: then nothing is cached)."""
    path = directory()
    try:
        if create and not os.environ.get("XDG_RUNTIME_DIR"):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # ~/.cache
        fd = open_owned_dir(path, "the saved primary context's directory", create=create)
    except (OSError, StorePermissionError):
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def read(tcti: str) -> tuple[bytes, bytes] | None:
    """(recorded name, marshaled TPMS_CONTEXT) for a TCTI, or None where the file is missing,
    not ours (another owner, group/other access, a link) or not in this format."""
    with _open_dir(create=False) as dir_fd:
        if dir_fd is None:
            return None
        name = _name(tcti)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)  # fmt: skip
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            try:
                check_owned(os.fstat(f.fileno()), directory() / name, "the saved primary "
                            "context", None, directory=False)  # fmt: skip
            except StorePermissionError:
                return None
            data = f.read(_LIMIT)
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 2:
        return None
    offset = len(_MAGIC)
    (name_len,) = struct.unpack_from(">H", data, offset)
    offset += 2
    recorded = data[offset : offset + name_len]
    context = data[offset + name_len :]
    if len(recorded) != name_len or not context:
        return None
    return recorded, context


def write(tcti: str, name: bytes, context: bytes) -> None:
    """Replace the cache file atomically (0600, in the checked directory); best effort: a cache
    that cannot be written only costs the next open a TPM2_CreatePrimary."""
    data = _MAGIC + struct.pack(">H", len(name)) + name + context
    with _open_dir(create=True) as dir_fd:
        if dir_fd is None:
            return
        target = _name(tcti)
        tmp = f".{target}.{os.getpid()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(OSError):
            fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)


def forget(tcti: str) -> bool:
    """Remove the cache file of a TCTI; True where there was one. OS errors other than its
    absence are raised."""
    with _open_dir(create=False) as dir_fd:
        if dir_fd is None:
            return False
        try:
            os.unlink(_name(tcti), dir_fd=dir_fd)
        except FileNotFoundError:
            return False
    return True


def checked(
    public: Any,
    name: bytes,
    qualified: bytes,
    recorded: bytes,
    template: Any,
    metadata: bytes,
    tpm_handle: int,
) -> bool:
    """True when the TPM's ReadPublic answer for the loaded context is the standard storage
    primary and ESYS's metadata of it is that answer.

    The name is the one recorded when this process's user created it; its parent is the owner
    hierarchy (the qualified name, which the TPM computes, is H(owner || name)); its public area
    is ``template`` in every field but the unique key; and ``metadata`` (``ESAPI.tr_serialize``
    of the loaded object) is the TPM's handle, name and public area, byte for byte, so that the
    salt of a session started with it is encrypted to the TPM's key and no other.

    Why this is enough: a file swapped for another object's context would give an object with
    another name, parent or attributes. An object that passes is a fixedTPM, fixedParent,
    restricted storage key of the owner hierarchy, made from the template the store's keys hang
    under, so the same TPM makes it again after a reboot.
    """
    if name != recorded or len(name) != 34:
        return False
    alg = name[:2]
    if alg != struct.pack(">H", model.NAME_ALG):
        return False
    if qualified != alg + hashlib.sha256(_OWNER + name).digest():
        return False
    if without_unique(public.publicArea) != without_unique(template.publicArea):
        return False
    expected = (
        struct.pack(">I", tpm_handle)
        + struct.pack(">H", len(name))
        + name
        + struct.pack(">I", _KEY_RESOURCE)
        + bytes(public.marshal())
    )
    return metadata == expected
