"""``entra-keys seal`` and ``unseal``: small secrets sealed to this TPM (or, in software, to a
passphrase), kept in the store as ``NAME.sealed``.

The PIN is read from ``--pin-file`` (this user's own file, first line); the software provider
takes the store's passphrase (``--passphrase-file`` or ``$ENTRA_KEYS_PASSPHRASE``) when no PIN
file is given. ``unseal`` writes the secret's bytes to stdout as they are. A blob is bound to
its name: one copied or renamed is refused, and one sealed by an earlier release (no name
bound) is refused unless ``--allow-unbound`` (then seal it again, with ``--replace``).
"""

from __future__ import annotations

import argparse
import base64

from ..store import sealed
from .common import (
    CommandError,
    Context,
    SubParsers,
    add_command,
    read_input,
    read_passphrase_file,
    write_bytes,
    write_json,
)

__all__ = ["add_seal_commands", "cmd_seal", "cmd_unseal"]

#: The largest secret ``seal`` reads (the library's limit, 32 KiB).
MAX_SECRET = sealed.MAX_SECRET


def _pin(ctx: Context) -> bytes | None:
    """The PIN of ``--pin-file``, else (software) the store's passphrase, else none."""
    path: str | None = ctx.args.pin_file
    if path is not None:
        return read_passphrase_file(path, "PIN")
    return ctx.passphrase()


def _pcrs(text: str) -> list[int]:
    """'0,7' as [0, 7]; the provider checks the range."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated PCR list: {text!r}") from None


def cmd_seal(ctx: Context) -> int:
    """Seal the bytes of --in under NAME."""
    data = read_input(ctx.args.input, MAX_SECRET, what="secret")
    if not data:
        raise CommandError(f"{ctx.args.input} is empty: there is nothing to seal")
    sealed.seal(
        ctx.store, ctx.args.name, data, pin=_pin(ctx), pcrs=ctx.args.pcrs, replace=ctx.args.replace
    )
    if ctx.json:
        write_json({"sealed": ctx.args.name, "provider": ctx.provider.kind})
    return 0


def cmd_unseal(ctx: Context) -> int:
    """Write the secret sealed under NAME to stdout."""
    secret = sealed.unseal(
        ctx.store, ctx.args.name, pin=_pin(ctx), allow_unbound=ctx.args.allow_unbound
    )
    if ctx.json:  # the bytes as base64 in one JSON document
        write_json({"name": ctx.args.name, "secret": base64.b64encode(secret).decode("ascii")})
    else:
        write_bytes(secret)
    return 0


def add_seal_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Register ``seal`` and ``unseal``."""
    pin_help = (
        "the PIN, on the first line of FILE (yours alone: mode 600); the software provider "
        "takes the store's passphrase when none is given"
    )
    seal = commands.add_parser(
        "seal", help="seal a small secret (a PRT, a refresh token) to this TPM, as NAME"
    )
    seal.add_argument("name")
    seal.add_argument(
        "--in",
        dest="input",
        required=True,
        metavar="FILE",
        help=f"the secret, at most {MAX_SECRET} bytes ('-' for stdin)",
    )
    seal.add_argument("--pin-file", metavar="FILE", help=pin_help)
    seal.add_argument(
        "--pcrs",
        type=_pcrs,
        metavar="LIST",
        help="bind the secret to these sha256 PCRs' current values, e.g. 0,7 (TPM only)",
    )
    seal.add_argument("--replace", action="store_true", help="replace a secret of that name")
    add_command(seal, cmd_seal)

    unseal = commands.add_parser("unseal", help="write the secret sealed as NAME to stdout")
    unseal.add_argument("name")
    unseal.add_argument("--pin-file", metavar="FILE", help=pin_help)
    unseal.add_argument(
        "--allow-unbound",
        action="store_true",
        help="unseal a blob of an earlier release, not bound to its name (you vouch that it is "
        "this name's); seal the secret again afterwards to bind it",
    )
    add_command(unseal, cmd_unseal)
