"""``entra-keys tpm init``: persist the standard storage root key, so that opening the provider
no longer creates a primary (0.1-3 s on a real chip).

Before it changes the TPM's storage key it reads the key store (``--store``, else the default
one): every TPM key file and sealed secret names the storage parent it was made under, and one
whose parent the provider does not load under once the SRK is persistent would be lost. Then it
refuses without ``--force`` and names them.
"""

from __future__ import annotations

import argparse

from ..errors import EntraKeysError, KeyStoreError, UnsupportedAlgorithm
from ..store import default_store_path, storage_parents
from ..store.keystore import parent_text
from ..tcg.model import SRK_HANDLE_RSA, TPM_RH_OWNER
from .common import (
    CommandError,
    Context,
    SubParsers,
    add_command,
    read_passphrase_file,
    write,
    write_json,
)

__all__ = ["KEPT_PARENTS", "add_tpm_commands", "cmd_tpm_init"]

#: The longest owner authorization value read from --owner-auth-file (TPM2B_AUTH, SHA-256).
_MAX_OWNER_AUTH = 64
#: The storage parents under which the TPM provider loads key files and sealed secrets once the
#: SRK is persistent (each entry under the parent its file names): what ``tpm init`` keeps. A
#: store entry naming another parent, or one it cannot read, is counted as lost, and ``tpm init``
#: refuses without --force.
KEPT_PARENTS = frozenset({SRK_HANDLE_RSA, TPM_RH_OWNER})


def _already_persistent(tcti: str | None) -> bool:
    """True when the TPM's storage key is the persistent SRK already (``tpm init`` then changes
    nothing); False where that cannot be told."""
    from ..providers.tpm import TPMProvider

    try:
        with TPMProvider(tcti) as provider:
            storage = provider.info().storage_key or ""
    except EntraKeysError:
        return False
    return storage.startswith(f"0x{SRK_HANDLE_RSA:08x}")


def cmd_tpm_init(ctx: Context) -> int:
    """Persist the SRK at 0x81000001 (idempotent) and say what the provider uses now."""
    args = ctx.args
    if args.provider not in (None, "tpm"):
        raise UnsupportedAlgorithm("tpm init is for the TPM provider (--provider tpm)")
    from ..providers.tpm import persist_storage_key

    owner_auth = None
    if args.owner_auth_file:
        # This user's own file (mode 600), as PIN and passphrase files: it holds the owner's
        # password, which can change every hierarchy key's parent.
        owner_auth = read_passphrase_file(args.owner_auth_file, "owner password")
        if len(owner_auth) > _MAX_OWNER_AUTH:
            raise CommandError(
                f"the owner password in {args.owner_auth_file} is longer than {_MAX_OWNER_AUTH} "
                "bytes (a TPM2B_AUTH)"
            )
    lost = {
        entry: parent
        for entry, parent in storage_parents(args.store).items()
        if parent not in KEPT_PARENTS
    }
    listing = ", ".join(
        f"{entry} (parent {parent_text(p) if p is not None else 'unknown: it cannot be read'})"
        for entry, p in sorted(lost.items())
    )
    if lost and not args.force and not _already_persistent(args.tcti):
        store = args.store or str(default_store_path())
        raise KeyStoreError(
            f"tpm init would persist the SRK at 0x{SRK_HANDLE_RSA:08x}, and these entries of the "
            f"key store {store} would no longer load: {listing}. Nothing was changed; --force "
            "persists it anyway (the join is then lost: leave and join again)",
            path=store,
        )
    created = persist_storage_key(args.tcti, owner_auth)
    if ctx.json:
        write_json(
            {
                "storage_root_key": f"0x{SRK_HANDLE_RSA:08x}",
                "persisted": created,
                "no_longer_load": sorted(lost) if created else [],
            }
        )
        return 0
    if created:
        write(f"persisted the storage root key at 0x{SRK_HANDLE_RSA:08x}")
        if lost:
            write(f"--force: these entries of the key store no longer load: {listing}")
    else:
        write(f"the storage root key is already persistent at 0x{SRK_HANDLE_RSA:08x}")
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
    init.add_argument(
        "--force",
        action="store_true",
        help="persist it even though keys or sealed secrets of the store would no longer load",
    )
    add_command(init, cmd_tpm_init, opens_provider=False)
