"""Cold start: a new process that imports entra_keys, opens the TPM provider, loads a stored key
and makes its first signature. The figure is the wall time of that whole process, seen from
outside; the process reports its own breakdown (imports, provider, load, sign, close). The floor
is ``python -c "import tpm2_pytss"`` in the same run (its rounds between the others'): the
target is a ratio to it, which carries over between machines where milliseconds do not.

``entra-keys sign`` as a new process is measured the same way, on a swtpm of this case's own
after ``tpm init`` (the persistent SRK: what a provisioned machine runs), as the console script
runs it (``from entra_keys.cli import main``)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from entra_keys import KeyStore, KeyType, KeyUsage, open_provider
from entra_keys.providers.tpm import persist_storage_key
from entra_keys.testing.swtpm import Swtpm

from .context import Context
from .measure import Case, Result, Target
from .signing import NAMES

__all__ = ["CASES", "CHILD"]

#: The new process. Timing starts before the first import of the application.
CHILD = """\
import time
t0 = time.perf_counter()
import sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
import entra_keys
t1 = time.perf_counter()
provider = entra_keys.open_provider("tpm", tcti=sys.argv[1])
t2 = time.perf_counter()
key = entra_keys.KeyStore(provider, sys.argv[2]).load(sys.argv[3])
t3 = time.perf_counter()
if isinstance(key, entra_keys.EntraRSAKey):
    key.sign(b"first signature", padding.PKCS1v15(), hashes.SHA256())
else:
    key.sign(b"first signature", ec.ECDSA(hashes.SHA256()))
t4 = time.perf_counter()
provider.close()
t5 = time.perf_counter()
import json
ms = lambda a, b: (b - a) * 1000
print(json.dumps({"import_ms": ms(t0, t1), "open_provider_ms": ms(t1, t2),
    "load_ms": ms(t2, t3), "first_sign_ms": ms(t3, t4), "close_ms": ms(t4, t5),
    "import_to_signature_ms": ms(t0, t4)}))
"""

_KEY_TYPES = (KeyType.RSA2048, KeyType.ECC256)
_IDS = {kt: f"coldstart.{kt.value}" for kt in _KEY_TYPES}
_FLOOR = "coldstart.import_tpm2_pytss"
_CLI = "coldstart.cli_sign"
#: The console script ``entra-keys``, as its entry point runs it.
_CONSOLE = "import sys; from entra_keys.cli import main; sys.exit(main())"


def _floor_once(ctx: Context) -> float:
    """Wall time (ms) of a new process that only imports tpm2_pytss."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import tpm2_pytss"], env=ctx.child_env(), check=True, timeout=120
    )
    return (time.perf_counter() - start) * 1000


def _once(ctx: Context, store: Path, key_type: KeyType) -> tuple[float, dict[str, float]]:
    args = [sys.executable, "-c", CHILD, ctx.the_tcti, str(store), f"device-{key_type.value}"]
    start = time.perf_counter()
    done = subprocess.run(
        args, env=ctx.child_env(), capture_output=True, text=True, timeout=120, check=False
    )
    wall = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"the cold-start process failed: {done.stderr.strip()[-2000:]}")
    parts: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, parts


def _cli_once(ctx: Context, args: list[str]) -> float:
    """Wall time (ms) of ``entra-keys sign`` as a new process."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CONSOLE, *args],
        env=ctx.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    wall = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        raise RuntimeError(f"entra-keys sign failed: {done.stderr.strip()[-2000:]}")
    return wall


def _cli_args(work: Path, tcti: str) -> list[str]:
    """A store with an ECC key on a TPM after ``tpm init``; the arguments that sign with it."""
    persist_storage_key(tcti)
    with open_provider("tpm", tcti=tcti) as provider:
        KeyStore(provider, work / "store").create("device", KeyType.ECC256, KeyUsage.SIGN)
    (work / "message").write_bytes(bytes(range(256)))
    return ["--tcti", tcti, "--store", str(work / "store"), "sign", "device", "--alg", "ES256",
            "--in", str(work / "message"), "--out", str(work / "signature")]  # fmt: skip


def _run(ctx: Context) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="entra-keys-bench-cold-") as tmp:
        work = Path(tmp)
        srk_tpm = Swtpm(work / "tpm")
        srk_tpm.start()
        try:
            return _measure(ctx, _cli_args(work, srk_tpm.tcti))
        finally:
            srk_tpm.stop()


def _measure(ctx: Context, cli_args: list[str]) -> list[Result]:
    store = ctx.key_store("tpm")
    runs = ctx.settings.coldstart_runs
    walls: dict[KeyType, list[float]] = {kt: [] for kt in _KEY_TYPES}
    parts: dict[KeyType, list[dict[str, float]]] = {kt: [] for kt in _KEY_TYPES}
    floor: list[float] = []
    cli: list[float] = []
    for key_type in _KEY_TYPES:  # warm-up: page cache, bytecode written once
        _once(ctx, store, key_type)
    _floor_once(ctx)
    _cli_once(ctx, cli_args)
    for number in range(runs):
        floor.append(_floor_once(ctx))
        ctx.progress.update(number / runs, f"run {number + 1}/{runs}, entra-keys sign")
        cli.append(_cli_once(ctx, cli_args))
        for key_type in _KEY_TYPES:
            ctx.progress.update(number / runs, f"run {number + 1}/{runs}, {NAMES[key_type]}")
            wall, breakdown = _once(ctx, store, key_type)
            walls[key_type].append(wall)
            parts[key_type].append(breakdown)
    results = [
        Result(
            id=_FLOOR,
            group="Cold start, new process to first TPM signature",
            label='python -c "import tpm2_pytss" (the floor), process wall time',
            unit="ms",
            samples=floor,
            higher_is_better=False,
        ),
        Result(
            id=_CLI,
            group="Cold start, new process to first TPM signature",
            label="entra-keys sign, ECC P-256, after tpm init, process wall time",
            unit="ms",
            samples=cli,
            higher_is_better=False,
        ),
    ]
    for key_type in _KEY_TYPES:
        extra: dict[str, float | int | str | None] = {
            name: statistics.median(p[name] for p in parts[key_type]) for name in parts[key_type][0]
        }
        extra["interpreter_and_exit_ms"] = statistics.median(
            wall - p["import_to_signature_ms"] - p["close_ms"]
            for wall, p in zip(walls[key_type], parts[key_type], strict=True)
        )
        results.append(
            Result(
                id=_IDS[key_type],
                group="Cold start, new process to first TPM signature",
                label=f"{NAMES[key_type]} key from the store, process wall time",
                unit="ms",
                samples=walls[key_type],
                higher_is_better=False,
                extra=extra,
                note="the extra figures are medians of the process's own timings",
            )
        )
    return results


CASES = (
    Case(
        id="coldstart",
        title="cold start",
        figures=(_FLOOR, _CLI, *_IDS.values()),
        run=_run,
        targets=(
            Target(
                "entra-keys sign, after tpm init: over import tpm2_pytss",
                _CLI,
                over=_FLOOR,
                at_most=1.3,
            ),
            *(
                target
                for kt in _KEY_TYPES
                for target in (
                    Target(f"cold start {NAMES[kt]}: process wall time", _IDS[kt], at_most=150),
                    Target(
                        f"cold start {NAMES[kt]}: over import tpm2_pytss",
                        _IDS[kt],
                        over=_FLOOR,
                        at_most=1.10,
                    ),
                    Target(
                        f"cold start {NAMES[kt]}: in-process, import to first signature",
                        _IDS[kt],
                        field="import_to_signature_ms",
                        at_most=150,
                    ),
                )
            ),
        ),
    ),
)
