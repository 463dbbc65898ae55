"""The ``entra-keys`` command: provider status, named keys, public keys, CSRs and raw signatures.

A thin layer over the public API (``open_provider``, ``KeyStore``, ``formats``). Every command is
a function of a :class:`Context`; ``main`` opens the provider before it unless the command
needs none (``verify``, ``keys list``) or opens its own (``demo``). A library error prints one
line, ``entra-keys: error: <message>``, and exits 1; a usage error (what argparse checks: an
unknown command or option, a missing argument, a value of the wrong form) exits 2. A reader
that stops reading early (``| head``) ends the command quietly, with status 141 (128 +
SIGPIPE, what the shell reports for a tool that SIGPIPE ended).

The global options (``--provider``, ``--tcti``, ``--store``, ``--passphrase-file``, ``--json``,
``-v``) are taken before the command and after it, at any level (``entra-keys status
--json``); given in both places, the later one wins, as a repeated option does.

A new process pays for every module it imports: ``main`` imports only the module of the command
it runs (``entra-keys sign`` neither the verifier nor the session key's code); help, an unknown
command or none builds the whole parser.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import EntraKeysError, KeyExists
from ..providers import PROVIDER_KINDS
from .common import PASSPHRASE_ENV, PROG, Command, CommandError, Context, SubParsers, one_line

__all__ = ["BROKEN_PIPE", "PASSPHRASE_ENV", "CommandError", "Context", "build_parser", "main"]

log = logging.getLogger(__name__)

#: The modules that add the commands, in help order: (module, its add function, its commands).
_MODULES = (
    ("status", "add_status_command", ("status",)),
    ("demo", "add_demo_command", ("demo",)),
    ("keys", "add_key_commands", ("keys", "csr", "sign")),
    ("session", "add_session_commands", ("session",)),
    ("attest", "add_attest_commands", ("attest", "verify")),
    ("leave", "add_leave_command", ("leave",)),
    ("seal", "add_seal_commands", ("seal", "unseal")),
    ("tpm", "add_tpm_commands", ("tpm",)),
    ("completion", "add_completion_command", ("completion",)),
)
#: The global options that take a value (the command is the first word after them).
_VALUED = ("--provider", "--tcti", "--store", "--passphrase-file")
#: The exit status when the reader of stdout went away (128 + SIGPIPE, as the shell reports a
#: tool that SIGPIPE ended).
BROKEN_PIPE = 141


def _adder(module: str, function: str) -> Callable[[SubParsers[argparse.ArgumentParser]], None]:
    adds: Callable[[SubParsers[argparse.ArgumentParser]], None] = getattr(
        importlib.import_module(f".{module}", __name__), function
    )
    return adds


def _command_of(argv: Sequence[str]) -> str | None:
    """The command word of the arguments (None before one, or for help and --version)."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word
        elif word in ("-h", "--help", "--version"):
            return None
    return None


def _add_global_options(parser: argparse._ActionsContainer, *, after: bool) -> None:
    """The options every command takes: on the main parser with their defaults, and (``after``)
    on each subcommand with none, so that one given there overrides the main parser's and one
    not given leaves it."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after else value

    parser.add_argument(
        "--provider",
        choices=PROVIDER_KINDS,
        default=default(None),
        help="where keys live (default: $ENTRA_KEYS_PROVIDER, else the TPM if there is one, "
        "else software)",
    )
    parser.add_argument(
        "--tcti",
        default=default(None),
        help="the TPM to use, e.g. device:/dev/tpmrm0 or swtpm:path=SOCK",
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=default(None),
        help="key store directory (default: $ENTRA_KEYS_STORE or $XDG_DATA_HOME/entra-keys)",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        default=default(None),
        help="the software-key passphrase, on the first line of FILE (yours alone: mode 600); "
        f"takes precedence over ${PASSPHRASE_ENV}, which stays readable in the environment",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print one JSON document"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log debug messages"
    )


@functools.cache
def _global_options() -> argparse.ArgumentParser:
    """A parent parser of the global options as a subcommand takes them (no defaults); made
    once: argparse copies a parent's options into each subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("global options (also before the command)")
    _add_global_options(group, after=True)
    return parent


class _SubCommands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands that each take the global options too, at every level."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("parents", [_global_options()])
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


class _Parser(argparse.ArgumentParser):
    """``entra-keys``'s parsers: their subcommands take the global options (``_SubCommands``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubCommands)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``entra-keys``, its global options and subcommands: with
    ``command``, only the subcommands of its module (the others are not imported)."""
    parser = _Parser(
        prog=PROG,
        description="Keep Microsoft Entra device keys in a TPM 2.0 or in software.",
        epilog="A software key file is encrypted with the passphrase of --passphrase-file, else "
        f"${PASSPHRASE_ENV}, when one is given. The global options may also follow the "
        "command (entra-keys status --json); given twice, the later one wins.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_global_options(parser, after=False)
    commands: SubParsers[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True
    )  # type: ignore[assignment]  # its parsers are _Parser, an ArgumentParser
    chosen = [m for m in _MODULES if command in m[2]]
    for module, function, _ in chosen or _MODULES:
        _adder(module, function)(commands)
    return parser


def _error(message: str) -> int:
    """Print the one error line of a failed command; return its exit code, 1."""
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 1


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null, so that the interpreter's last flush of
    what is still buffered fails no more (where stdout is a real descriptor)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _flushed(code: int) -> int:
    """``code``, once stdout is flushed; ``BROKEN_PIPE`` when its reader went away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE
    return code


def _hint(exc: EntraKeysError, args: argparse.Namespace) -> str:
    """The error line's text, with what the command line can do about it: ``--replace`` for
    a name that exists, where the command has that option."""
    message = str(exc)
    if isinstance(exc, KeyExists) and hasattr(args, "replace") and not args.replace:
        message += "; --replace overwrites it"
    return message


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``entra-keys`` on these arguments (default ``sys.argv[1:]``); return the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(words))
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return _flushed(exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format=f"{PROG}: %(levelname)s: %(message)s",
    )
    if not args.verbose:
        # libtss2 logs its own errors to stderr; the one error line below already says what failed.
        os.environ.setdefault("TSS2_LOG", "all+NONE")
    run: Command = args.run
    ctx = Context(args)
    try:
        if args.opens_provider:
            ctx.open()
        return _flushed(run(ctx))  # a reader gone away is found here, not at the exit
    except EntraKeysError as exc:
        log.debug("%s failed", args.command, exc_info=True)
        return _error(_hint(exc, args))
    except BrokenPipeError:
        _quiet_stdout()
        return BROKEN_PIPE
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        _quiet_stdout()
        return BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()
