"""Memory: peak RSS of a process that signs, and RSS growth over a long signing run (leak check).

Each configuration runs in a new process so that nothing of the benchmark itself is counted:
it loads the ECC P-256 device key from the key store, warms up, then signs N times reading its
RSS (``/proc/self/statm``) at the start, halfway and at the end, after a garbage collection;
then it signs N/10 more under ``tracemalloc`` for the Python-level growth and peak. A leak shows
as growth in the second half as large as in the first, and as traced bytes kept per signature.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .context import Context
from .measure import Case, Result, Target

__all__ = ["CASES", "CHILD"]

CHILD = """\
import gc, json, os, resource, sys, tracemalloc
from contextlib import nullcontext
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
import entra_keys
kind, tcti, store, name, ops, pinned, traced = sys.argv[1:8]
ops, traced = int(ops), int(traced)
provider = entra_keys.open_provider(kind, tcti=tcti or None)
key = entra_keys.KeyStore(provider, store).load(name)
algorithm, message = ec.ECDSA(hashes.SHA256()), bytes(range(256)) * 2
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
def sign(n):
    for _ in range(n):
        key.sign(message, algorithm)
with key.loaded() if pinned == "1" else nullcontext():
    sign(max(ops // 10, 20))
    r0 = rss()
    sign(ops // 2)
    r1 = rss()
    sign(ops - ops // 2)
    r2 = rss()
    tracemalloc.start()
    sign(20)
    gc.collect()
    t0 = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    sign(traced)
    gc.collect()
    t1, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
provider.close()
print(json.dumps({"rss_start": r0, "rss_half": r1, "rss_end": r2, "traced_growth": t1 - t0,
    "traced_peak": peak - t0, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

# (configuration, provider kind, pinned, label)
_CONFIGS = (
    ("tpm_pinned", "tpm", True, "TPM, key.loaded() held"),
    ("tpm_unpinned", "tpm", False, "TPM, load + flush per call"),
    ("software", "software", False, "software"),
)
_GROUP = "Memory, ECC P-256 signing in a new process"


def _figures() -> tuple[str, ...]:
    return tuple(f"memory.{c}.{f}" for c, *_ in _CONFIGS for f in ("peak_rss", "rss_growth"))


def _ops(ctx: Context, config: str) -> int:
    s = ctx.settings
    return {
        "tpm_pinned": s.leak_ops_pinned,
        "tpm_unpinned": s.leak_ops_unpinned,
        "software": s.leak_ops_software,
    }[config]


def _child(ctx: Context, kind: str, store: Path, ops: int, pinned: bool) -> dict[str, int]:
    tcti = ctx.the_tcti if kind == "tpm" else ""
    args = [kind, tcti, str(store), "device-ecc256", str(ops), "1" if pinned else "0"]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args, str(max(ops // 10, 10))],
        env=ctx.child_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the memory process failed: {done.stderr.strip()[-2000:]}")
    out: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def _run(ctx: Context) -> list[Result]:
    results = []
    for number, (config, kind, pinned, label) in enumerate(_CONFIGS):
        ops = _ops(ctx, config)
        ctx.progress.update(number / len(_CONFIGS), f"{label}, {ops} signatures")
        m = _child(ctx, kind, ctx.key_store(kind), ops, pinned)
        traced_ops = max(ops // 10, 10)
        results.append(
            Result(
                id=f"memory.{config}.peak_rss",
                group=_GROUP,
                label=f"{label}: peak RSS",
                unit="MiB",
                samples=[m["maxrss_kib"] / 1024],
                higher_is_better=False,
                note="ru_maxrss of the process",
                extra={"tracemalloc_peak_kib": m["traced_peak"] / 1024, "traced_ops": traced_ops},
            )
        )
        results.append(
            Result(
                id=f"memory.{config}.rss_growth",
                group=_GROUP,
                label=f"{label}: RSS growth, {ops} signatures",
                unit="KiB",
                samples=[(m["rss_end"] - m["rss_start"]) / 1024],
                higher_is_better=False,
                signed=True,
                extra={
                    "ops": ops,
                    "rss_start_mib": m["rss_start"] / 2**20,
                    "first_half_kib": (m["rss_half"] - m["rss_start"]) / 1024,
                    "second_half_kib": (m["rss_end"] - m["rss_half"]) / 1024,
                    "bytes_per_op": (m["rss_end"] - m["rss_start"]) / ops,
                    "traced_bytes_per_op": m["traced_growth"] / traced_ops,
                },
            )
        )
    return results


CASES = (
    Case(
        id="memory",
        title="memory and leak check",
        figures=_figures(),
        run=_run,
        needs=frozenset({"tpm"}),
        targets=tuple(
            Target(
                f"leak check, {label}: bytes kept per signature",
                f"memory.{config}.rss_growth",
                field="traced_bytes_per_op",
            )
            for config, _, _, label in _CONFIGS
        ),
    ),
)
