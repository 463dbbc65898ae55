"""Opening the TPM provider and its storage key: open, ``info()`` (which opens the storage key
new keys go under, as the first key use does, and reads the TPM's properties) and close, per
second, with the storage primary created each time, with it loaded from its saved context of
this TPM boot, and with the persistent SRK of ``entra-keys tpm init`` (on a swtpm of this case's
own, so the run's TPM is not changed). Opening alone sends no TPM command. ``XDG_RUNTIME_DIR``
points at a directory of the run's own; the created case removes the saved context
(``forget_saved_primary``) before each open. The TPM commands of one round (pcap TCTI, where
libtss2-tcti-pcap is installed) go into the figures' extra fields."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from entra_keys import open_provider
from entra_keys.providers.tpm import forget_saved_primary, persist_storage_key
from entra_keys.testing.pcap import tpm_commands
from entra_keys.testing.swtpm import Swtpm

from .context import Context
from .measure import Case, Contender, Result, interleave, timed_loop

__all__ = ["CASES"]

_IDS = {n: f"open.{n}" for n in ("created_primary", "saved_primary_context", "persistent_srk")}


def _commands_of_open(tcti: str, capture: Path) -> int | None:
    """TPM commands of one open + close, or None where the pcap TCTI cannot run."""
    before = os.environ.get("TCTI_PCAP_FILE")
    os.environ["TCTI_PCAP_FILE"] = str(capture)
    try:
        with open_provider("tpm", tcti=f"pcap:{tcti}") as provider:
            provider.info()
        return tpm_commands(capture)
    except Exception:  # no libtss2-tcti-pcap: the count is left out
        return None
    finally:
        if before is None:
            os.environ.pop("TCTI_PCAP_FILE", None)
        else:
            os.environ["TCTI_PCAP_FILE"] = before


def _run(ctx: Context) -> list[Result]:
    before = os.environ.get("XDG_RUNTIME_DIR")
    with tempfile.TemporaryDirectory(prefix="entra-keys-bench-open-") as tmp:
        directory = Path(tmp)
        os.environ["XDG_RUNTIME_DIR"] = str(directory / "run")
        srk_tpm = Swtpm(directory / "srk-tpm")
        srk_tpm.start()
        try:
            persist_storage_key(srk_tpm.tcti)
            created, persistent = ctx.the_tcti, srk_tpm.tcti

            def open_created() -> None:
                forget_saved_primary(created)
                open_close(created)

            def open_close(tcti: str) -> None:
                with open_provider("tpm", tcti=tcti) as provider:
                    provider.info()

            forget_saved_primary(created)
            counts = {
                _IDS["created_primary"]: _commands_of_open(created, directory / "created.pcap"),
                _IDS["saved_primary_context"]: _commands_of_open(created, directory / "saved.pcap"),
                _IDS["persistent_srk"]: _commands_of_open(persistent, directory / "srk.pcap"),
            }

            contenders = [
                Contender(
                    _IDS["created_primary"],
                    "open + storage key + close, storage primary created",
                    timed_loop(open_created),
                ),
                Contender(
                    _IDS["saved_primary_context"],
                    "open + storage key + close, primary from its saved context of this boot",
                    timed_loop(lambda: open_close(created)),
                    baseline=_IDS["created_primary"],
                ),
                Contender(
                    _IDS["persistent_srk"],
                    "open + storage key + close, persistent SRK (entra-keys tpm init)",
                    timed_loop(lambda: open_close(persistent)),
                    baseline=_IDS["created_primary"],
                ),
            ]
            results = interleave(ctx, "Opening the TPM provider", contenders)
        finally:
            srk_tpm.stop()
            if before is None:
                os.environ.pop("XDG_RUNTIME_DIR", None)
            else:
                os.environ["XDG_RUNTIME_DIR"] = before
    for result in results:
        result.extra["tpm_commands_open_close"] = counts.get(result.id)
    return results


CASES = (
    Case(
        id="open",
        title="opening the TPM provider, with and without a persistent SRK",
        figures=tuple(_IDS.values()),
        run=_run,
    ),
)
