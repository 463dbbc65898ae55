"""What every ``entra-keys`` command shares: the Context, the passphrase, reading and writing.

A command is a function of a Context that returns the exit code. The Context opens the provider
and the key store only when asked; ``main`` asks before every command that uses them, so a
command that does not (``verify``) opens none.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import stat
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidData
from ..provider import EntraPrivateKey, Provider
from ..store import KeyInfo, KeyStore

__all__ = [
    "MAX_PASSPHRASE",
    "PASSPHRASE_ENV",
    "PROG",
    "Command",
    "CommandError",
    "Context",
    "SubParsers",
    "add_command",
    "info_json",
    "one_line",
    "parse_hex",
    "read_input",
    "read_passphrase_file",
    "section",
    "sections",
    "write",
    "write_bytes",
    "write_json",
    "write_output",
    "yes",
]

PROG = "entra-keys"
#: The environment variable that holds the passphrase of software key files.
PASSPHRASE_ENV = "ENTRA_KEYS_PASSPHRASE"  # noqa: S105 - a variable name, not a secret
#: The longest passphrase ``--passphrase-file`` reads (a longer first line is refused).
MAX_PASSPHRASE = 4096
_RULE = "+" + "-" * 78 + "+"

SubParsers = argparse._SubParsersAction


class CommandError(InvalidData):
    """Input the command cannot use (an unreadable --in file, a bad --nonce): an InvalidData,
    reported as every library error is."""


class Context:
    """What a command works with: the parsed arguments, and the provider and its key store,
    opened on first use (or given, as the demo gives its own)."""

    def __init__(
        self,
        args: argparse.Namespace,
        provider: Provider | None = None,
        store: KeyStore | None = None,
    ) -> None:
        self.args = args
        self._provider = provider
        self._store = store
        self._owns_provider = False  # True once this Context opened the provider itself

    @property
    def provider(self) -> Provider:
        """The provider of ``--provider``/``--tcti`` (the one the key store needs), opened on
        first use."""
        if self._provider is None:
            self._store = KeyStore.open(self.args.store, self.args.provider, tcti=self.args.tcti)
            self._provider = self._store.provider
            self._owns_provider = True
        return self._provider

    @property
    def store(self) -> KeyStore:
        """The key store of ``--store`` over the provider, opened on first use."""
        if self._store is None:
            self._store = KeyStore(self.provider, self.args.store)
        return self._store

    def open(self) -> None:
        """Open the provider and store, and read the passphrase: a refused
        ``--passphrase-file`` fails the command before it starts."""
        _ = self.store
        self.passphrase()

    def close(self) -> None:
        """Close the provider if this Context opened it (a given one is its giver's to close)."""
        if self._owns_provider and self._provider is not None:
            self._provider.close()

    @property
    def json(self) -> bool:
        """True when machine output (one JSON document) was asked for."""
        return bool(self.args.json)

    def passphrase(self) -> bytes | None:
        """The software-key passphrase: ``--passphrase-file``, else ``$ENTRA_KEYS_PASSPHRASE``;
        TPM key files take none, so neither is read for them."""
        if self.provider.kind != "software":
            return None
        return self._given_passphrase

    @functools.cached_property
    def _given_passphrase(self) -> bytes | None:
        """The passphrase the caller gave, read once (a file is read and checked only once)."""
        path: str | None = self.args.passphrase_file
        if path is not None:
            return read_passphrase_file(path)
        value = os.environ.get(PASSPHRASE_ENV)
        return value.encode("utf-8") if value else None

    def load(self, name: str) -> EntraPrivateKey:
        """Loads a named key of the store with the passphrase, if any."""
        return self.store.load(name, passphrase=self.passphrase())


#: A command: runs on a Context and returns the exit code.
Command = Callable[[Context], int]


def add_command(
    parser: argparse.ArgumentParser, run: Command, *, opens_provider: bool = True
) -> None:
    """Make ``run`` the command of this (sub)parser; ``main`` opens the provider before it unless
    ``opens_provider`` is False (a command that needs none, or opens its own)."""
    parser.set_defaults(run=run, opens_provider=opens_provider)


# -- input ----------------------------------------------------------------------------------


def read_input(path: str, limit: int | None = None, *, what: str = "", stdin: bool = True) -> bytes:
    """The bytes of a file, or of stdin for '-' (unless ``stdin`` is False); more than ``limit``
    bytes is an error, found by reading one byte past it, never the whole input."""
    try:
        if stdin and path == "-":
            data = sys.stdin.buffer.read(-1 if limit is None else limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(-1 if limit is None else limit + 1)
    except OSError as exc:
        the = f"the {what} " if what else ""
        raise CommandError(f"cannot read {the}{path}: {exc.strerror or exc}") from exc
    if limit is not None and len(data) > limit:
        the = f"the {what}, " if what else ""
        raise CommandError(f"{the}{path}, holds more than {limit} bytes, its limit")
    return data


def parse_hex(text: str, what: str) -> bytes:
    """The bytes a hex argument spells; ``what`` names the argument in the error."""
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise CommandError(f"{what} is not hex: {text!r}") from exc


def read_passphrase_file(path: str) -> bytes:
    """The first line of a passphrase file, without its newline; refused unless it is this
    user's own (mode 600 or stricter), as anyone who could read or change it has the keys."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
                raise CommandError(f"the passphrase file {path} is not a regular file or a pipe")
            euid = os.geteuid()
            if st.st_uid != euid:
                raise CommandError(
                    f"the passphrase file {path} is owned by uid {st.st_uid}, "
                    f"not by this user (uid {euid})"
                )
            if st.st_mode & 0o077:
                raise CommandError(
                    f"the passphrase file {path} is open to other users "
                    f"(mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
                )
            line = f.readline(MAX_PASSPHRASE + 1)
    except OSError as exc:
        raise CommandError(
            f"cannot read the passphrase file {path}: {exc.strerror or exc}"
        ) from exc
    passphrase = line.removesuffix(b"\n").removesuffix(b"\r")
    if len(passphrase) > MAX_PASSPHRASE:
        raise CommandError(f"the passphrase in {path} is longer than {MAX_PASSPHRASE} bytes")
    if not passphrase:
        raise CommandError(f"the passphrase file {path} holds no passphrase on its first line")
    return passphrase


# -- output ---------------------------------------------------------------------------------


def write(text: str) -> None:
    """Print text to stdout, ending it with a newline if it has none."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def write_bytes(data: bytes) -> None:
    """Write bytes to stdout as they are, after any text already written."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def write_json(document: object) -> None:
    """Print one JSON document, indented."""
    write(json.dumps(document, indent=2))


def write_output(path: str, data: str | bytes) -> None:
    """Write data to the file ``path``, or to stdout for '-'."""
    if path == "-":
        if isinstance(data, str):
            write(data)
        else:
            write_bytes(data)
        return
    try:
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from exc


def yes(flag: bool) -> str:
    """YES or NO, as dsregcmd writes a flag."""
    return "YES" if flag else "NO"


def one_line(message: str) -> str:
    """The message with its whitespace runs (newlines too) folded into single spaces."""
    return " ".join(message.split())


# -- dsregcmd-style text (status, keys) -------------------------------------------------------


def section(title: str, rows: Sequence[tuple[str, str]], width: int) -> list[str]:
    """A dsregcmd-style section: a boxed title, then right-aligned ``Name : value`` lines."""
    lines = [_RULE, f"| {title}".ljust(len(_RULE) - 1) + "|", _RULE, ""]
    for name, value in rows:
        lines.append(f"{name:>{width}} : {value}" if name else "")
    lines.append("")
    return lines


def sections(parts: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> str:
    """Sections whose names are all aligned to the longest one."""
    width = max((len(name) for _, rows in parts for name, _ in rows), default=0) + 8
    return "\n".join(line for title, rows in parts for line in section(title, rows, width))


# -- key descriptions -----------------------------------------------------------------------


def info_json(info: KeyInfo) -> dict[str, Any]:
    """A stored key as ``--json`` shows it."""
    return {
        "name": info.name,
        "type": info.key_type.value,
        "usage": info.usage.value,
        "provider": info.kind,
        "hardware_backed": info.hardware_backed,
        "encrypted": info.encrypted,
        "pin": info.pin,
        "lockout": info.lockout,
        "path": str(info.path),
    }
