"""A saved context of the storage primary, so an open without a persistent SRK skips
TPM2_CreatePrimary (seconds on some chips for RSA, ~0.1 s for ECC) within one TPM boot.

The context (TPM2_ContextSave) lives in a per-user file, 0600, in ``$XDG_RUNTIME_DIR/entra-keys``
(else ``~/.cache/entra-keys``), named by a hash of the TCTI. The file is never trusted: the TPM
refuses a context from another boot, after a clear, from another TPM or altered (its integrity
HMAC), and what it loads is checked by the TPM's own answer to TPM2_ReadPublic (``checked``).
Any failure means: create the primary again and rewrite the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
from pathlib import Path
from typing import Any

from ...tcg import model

__all__ = ["checked", "path_for", "read", "write"]

_MAGIC = b"entra-keys primary context 1\n"
_OWNER = struct.pack(">I", model.TPM_RH_OWNER)


def path_for(tcti: str) -> Path:
    """The cache file for a TCTI: per user, in the runtime directory where there is one."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path.home() / ".cache"
    digest = hashlib.sha256(tcti.encode()).hexdigest()[:24]
    return base / "entra-keys" / f"primary-{digest}.ctx"


def read(path: Path) -> tuple[bytes, int, bytes] | None:
    """(recorded name, transient slots, marshaled TPMS_CONTEXT), or None where the file is
    missing, not ours (another owner, group/other access, a link) or not in this format."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        data = f.read(1 << 16)
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        return None
    offset = len(_MAGIC)
    slots, name_len = struct.unpack_from(">HH", data, offset)
    offset += 4
    name = data[offset : offset + name_len]
    context = data[offset + name_len :]
    if len(name) != name_len or not context:
        return None
    return name, slots, context


def write(path: Path, name: bytes, slots: int, context: bytes) -> None:
    """Replace the cache file atomically (0600, in a 0700 directory); best effort: a cache
    that cannot be written only costs the next open a TPM2_CreatePrimary."""
    data = _MAGIC + struct.pack(">HH", min(slots, 0xFFFF), len(name)) + name + context
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()


def checked(public: Any, name: bytes, qualified: bytes, recorded: bytes, template: Any) -> bool:
    """True when the TPM's ReadPublic answer for the loaded context is the standard storage
    primary: its name is the one recorded when this process's user created it, its parent is
    the owner hierarchy (the qualified name, which the TPM computes, is H(owner || name)), and
    its public area is the standard template (every field but the unique key).

    Why this is enough: a file swapped for another object's context would give an object with
    another name, parent or attributes. An object that passes is a fixedTPM, fixedParent,
    restricted storage key of the owner hierarchy: keys made under a wrong one could only
    become unusable (they load under it alone), never leak, as no such parent can leave the TPM.
    """
    if name != recorded or len(name) != 34:
        return False
    alg = name[:2]
    if alg != struct.pack(">H", model.NAME_ALG):
        return False
    if qualified != alg + hashlib.sha256(_OWNER + name).digest():
        return False
    return _without_unique(public.publicArea) == _without_unique(template.publicArea)


def _without_unique(area: Any) -> bytes:
    """A TPMT_PUBLIC marshaled without its unique field (the key itself)."""
    raw = bytes(area.marshal())
    copy = type(area).unmarshal(raw)[0]
    copy.unique = type(copy.unique)()
    return bytes(copy.marshal())
