"""``entra-keys leave``: remove the join (every key, the join state, sealed data) from the store.

Like ``dsregcmd /leave`` it needs no TPM: a TPM that was cleared or replaced is the reason to
leave, so the store is emptied without opening a provider.
"""

from __future__ import annotations

import argparse

from ..store.keystore import default_store_path, leave
from .common import Context, SubParsers, add_command, write, write_json

__all__ = ["add_leave_command", "cmd_leave"]


def cmd_leave(ctx: Context) -> int:
    """Remove every file of the join, all or nothing, and say what was removed."""
    store = ctx.args.store or default_store_path()
    removed = leave(store)
    if ctx.json:
        write_json({"store": str(store), "removed": removed, "azure_ad_joined": False})
    elif removed:
        write(f"Left the join: removed {', '.join(removed)} from {store}")
    else:
        write(f"Nothing to leave: {store} holds no join")
    return 0


def add_leave_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``leave`` to the ``entra-keys`` subcommands."""
    parser = commands.add_parser(
        "leave", help="remove the join: every key, the join state and sealed data (no TPM needed)"
    )
    add_command(parser, cmd_leave, opens_provider=False)
