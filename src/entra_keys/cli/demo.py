"""``entra-keys demo``: run a whole join (``entra_keys.cli._demo``), then show ``status`` of it.

The demo opens its own provider (a throwaway swtpm unless ``--tcti`` names a TPM), so ``main``
opens none for it.
"""

from __future__ import annotations

import argparse
import sys

from .common import Context, SubParsers, add_command
from .status import cmd_status

__all__ = ["add_demo_command", "cmd_demo"]


def cmd_demo(ctx: Context) -> int:
    """Run the join demo, then show the status report of what it built."""
    from ._demo import run_demo  # the demo pulls in attestation and the stand-in services

    args = ctx.args
    out = sys.stderr if args.json else sys.stdout
    provider, store, cleanup = run_demo(
        args.provider, args.tcti, args.store, out, args.ek_ca,
        passphrase=lambda provider: Context(args, provider).passphrase(),
    )  # fmt: skip
    with cleanup:
        out.write("\n")
        status = Context(args, provider, store)
        status.passphrase()  # a refused --passphrase-file fails here, not as a KeySignTest
        return cmd_status(status)


def add_demo_command(commands: SubParsers[argparse.ArgumentParser]) -> None:
    """Add ``demo`` to the ``entra-keys`` subcommands."""
    demo = commands.add_parser(
        "demo",
        help="run a whole join on a throwaway swtpm (or --tcti, or software) and show status",
    )
    demo.add_argument(
        "--ek-ca",
        metavar="PEM",
        action="append",
        default=[],
        help="a CA certificate the EK certificate chains to (for a TPM given with --tcti)",
    )
    add_command(demo, cmd_demo, opens_provider=False)
