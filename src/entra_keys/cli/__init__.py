"""The ``entra-keys`` command: provider status, named keys, public keys, CSRs and raw signatures.

A thin layer over the public API (``open_provider``, ``KeyStore``, ``formats``). Every command is
a function of a :class:`Context`; ``main`` opens the provider before it unless the command
needs none (``verify``) or opens its own (``demo``). A library error prints one line,
``entra-keys: error: <message>``, and exits 1; a usage error exits 2.

A new process pays for every module it imports: ``main`` imports only the module of the command
it runs (``entra-keys sign`` neither the verifier nor the session key's code); help, an unknown
command or none builds the whole parser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import EntraKeysError
from ..providers import PROVIDER_KINDS
from .common import PASSPHRASE_ENV, PROG, Command, CommandError, Context, SubParsers, one_line

__all__ = ["PASSPHRASE_ENV", "CommandError", "Context", "build_parser", "main"]

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
)
#: The global options that take a value (the command is the first word after them).
_VALUED = ("--provider", "--tcti", "--store", "--passphrase-file")


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``entra-keys``, its global options and subcommands: with
    ``command``, only the subcommands of its module (the others are not imported)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Keep Microsoft Entra device keys in a TPM 2.0 or in software.",
        epilog="A software key file is encrypted with the passphrase of --passphrase-file, else "
        f"${PASSPHRASE_ENV}, when one is given.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--provider",
        choices=PROVIDER_KINDS,
        default=None,
        help="where keys live (default: $ENTRA_KEYS_PROVIDER, else the TPM if there is one, "
        "else software)",
    )
    parser.add_argument("--tcti", help="the TPM to use, e.g. device:/dev/tpmrm0 or swtpm:path=SOCK")
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="key store directory (default: $ENTRA_KEYS_STORE or $XDG_DATA_HOME/entra-keys)",
    )
    parser.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="the software-key passphrase, on the first line of FILE (yours alone: mode 600); "
        f"takes precedence over ${PASSPHRASE_ENV}, which stays readable in the environment",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = [m for m in _MODULES if command in m[2]]
    for module, function, _ in chosen or _MODULES:
        _adder(module, function)(commands)
    return parser


def _error(message: str) -> int:
    """Print the one error line of a failed command; return its exit code, 1."""
    print(f"{PROG}: error: {one_line(message)}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``entra-keys`` on these arguments (default ``sys.argv[1:]``); return the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(words))
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
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
        return run(ctx)
    except EntraKeysError as exc:
        log.debug("%s failed", args.command, exc_info=True)
        return _error(str(exc))
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()
