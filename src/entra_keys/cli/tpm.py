"""``entra-keys tpm init``: persist the standard storage root key, so that opening the provider
no longer creates a primary (0.1-3 s on a real chip)."""

from __future__ import annotations

import argparse

from ..errors import UnsupportedAlgorithm
from .common import Context, SubParsers, add_command, read_input, write

__all__ = ["add_tpm_commands", "cmd_tpm_init"]

#: The longest owner authorization value read from --owner-auth-file (TPM2B_AUTH, SHA-256).
_MAX_OWNER_AUTH = 64


def cmd_tpm_init(ctx: Context) -> int:
    """Persist the SRK at 0x81000001 (idempotent) and say what the provider uses now."""
    if ctx.args.provider not in (None, "tpm"):
        raise UnsupportedAlgorithm("tpm init is for the TPM provider (--provider tpm)")
    from ..providers.tpm import persist_storage_key

    owner_auth = None
    if ctx.args.owner_auth_file:
        raw = read_input(ctx.args.owner_auth_file, _MAX_OWNER_AUTH + 2, what="owner auth")
        owner_auth = raw.splitlines()[0] if raw.strip() else b""
    created = persist_storage_key(ctx.args.tcti, owner_auth)
    if created:
        write(
            "persisted the storage root key at 0x81000001; keys made before under the owner "
            "primary (parent 0x40000001) must be created again"
        )
    else:
        write("the storage root key is already persistent at 0x81000001")
    return 0


def add_tpm_commands(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``tpm init`` to the ``entra-keys`` subcommands."""
    tpm = commands.add_parser("tpm", help="set up the TPM (persistent storage root key)")
    actions = tpm.add_subparsers(dest="tpm_command", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="persist the standard SRK at 0x81000001 (owner authorization)"
    )
    init.add_argument(
        "--owner-auth-file",
        metavar="FILE",
        help="the owner hierarchy's password, on the first line of FILE",
    )
    add_command(init, cmd_tpm_init, opens_provider=False)
