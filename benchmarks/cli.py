"""``python -m benchmarks [--short] [--tcti TCTI] [--out DIR]``: run the cases, write the report.

Without ``--tcti`` a swtpm is provisioned and started in a temp directory and stopped at the end.
The TPM should hold no transient objects when the run starts: a swtpm has three object slots
and no resource manager, and the tpm2-tools cases flush every transient object after each tool.
Exit status 0 when every case ran (a missed target is reported, not an error), 1 when one
failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from entra_keys.testing.swtpm import Swtpm, SwtpmError, swtpm_available

from . import report
from .context import Context
from .environment import machine, tpm_info, versions
from .measure import FAILED, SKIPPED, Case, Result
from .progress import Progress
from .registry import CASES
from .settings import FULL, SHORT

__all__ = ["main", "run_cases"]

JSON_NAME = "benchmarks.json"
CHART_NAME = "benchmarks.png"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="entra_keys throughput against the raw TPM and raw cryptography, in one run.",
    )
    parser.add_argument(
        "--short", action="store_true", help="short rounds, for CI (well under a minute)"
    )
    parser.add_argument(
        "--tcti",
        help="the TPM to measure (e.g. swtpm:path=/tmp/tpm/sock); default: start a swtpm",
    )
    parser.add_argument(
        "--out",
        default="bench-out",
        type=Path,
        metavar="DIR",
        help="where the JSON and the chart go (default: bench-out)",
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="run only the cases whose id matches (glob; repeatable; see --list)",
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds per contender (default 3 short, 15 full)"
    )
    parser.add_argument(
        "--round-time", type=float, help="seconds per round (default 0.15 short, 0.4 full)"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and their figures")
    return parser


def _start_tpm(args: argparse.Namespace, tmp: Path) -> tuple[str | None, Swtpm | None, str]:
    """(TCTI, the swtpm started here or None, why there is no TPM)."""
    if args.tcti:
        return args.tcti, None, ""
    if not swtpm_available():
        return None, None, "swtpm is not installed and no --tcti was given"
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        return None, None, f"tpm2-pytss is not importable ({exc})"
    tpm = Swtpm(tmp / "swtpm")
    try:
        return tpm.start(), tpm, ""
    except SwtpmError as exc:
        return None, None, f"swtpm did not start: {exc}"


def run_cases(ctx: Context, cases: Sequence[Case]) -> tuple[list[Result], list[dict[str, Any]]]:
    """Run the cases in order; returns their results and events (failures, objects left)."""
    results: list[Result] = []
    events: list[dict[str, Any]] = []
    initial = set(ctx.loaded_handles() or ())
    if initial:
        ctx.progress.message(
            f"benchmarks: warning: {len(initial)} objects or sessions are loaded in the TPM "
            "already; cases may fail for want of slots"
        )
        events.append({"event": "objects-at-start", "handles": [hex(h) for h in initial]})
    for index, case in enumerate(cases):
        ctx.progress.start_case(index, case.title)
        lacking = ctx.lacks(case.needs)
        if lacking:
            results += [_placeholder(case, f, SKIPPED, lacking) for f in case.figures]
            events.append({"event": "skipped", "case": case.id, "reason": lacking})
            continue
        started = time.monotonic()
        try:
            got = case.run(ctx)
            ids = [r.id for r in got]
            if sorted(ids) != sorted(case.figures):
                raise RuntimeError(f"case {case.id} gave figures {ids}, not {list(case.figures)}")
            results += got
        except Exception as exc:
            ctx.progress.message(f"benchmarks: case {case.id} failed: {exc}")
            traceback.print_exc(file=ctx.progress.stream)
            results += [_placeholder(case, f, FAILED, str(exc)) for f in case.figures]
            events.append({"event": "failed", "case": case.id, "error": repr(exc)})
        events.append(
            {"event": "done", "case": case.id, "seconds": round(time.monotonic() - started, 3)}
        )
        if "tpm" in case.needs:
            left = sorted(set(ctx.loaded_handles() or ()) - initial)
            if left:
                ctx.progress.message(
                    f"benchmarks: case {case.id} left objects or sessions "
                    f"{', '.join(hex(h) for h in left)} in the TPM; flushing them"
                )
                events.append(
                    {"event": "objects-left", "case": case.id, "handles": [hex(h) for h in left]}
                )
                ctx.flush(left)
    return results, events


def _load_note(machine_now: dict[str, Any]) -> str:
    start, end = machine_now["load_average"][0], machine_now["load_average_end"][0]
    note = f"load average {start:.2f} at the start, {end:.2f} at the end"
    if max(start, end) > 0.25 * (machine_now["cpus"] or 1):
        note += ": other work on this machine, expect noise in the figures"
    return note


def _placeholder(case: Case, figure: str, status: str, why: str) -> Result:
    return Result(id=figure, group=case.title, label=figure, unit="", status=status, note=why)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmarks; print the table, write the JSON and the chart."""
    args = _parser().parse_args(argv)
    cases = [
        case
        for case in CASES
        if not args.only or any(fnmatch.fnmatch(case.id, p) for p in args.only)
    ]
    if args.list:
        for case in CASES:
            print(f"{case.id:18} {case.title} [{', '.join(sorted(case.needs))}]")
            for figure in case.figures:
                print(f"{'':18}   {figure}")
        return 0
    if not cases:
        print(f"python -m benchmarks: no case matches {args.only}", file=sys.stderr)
        return 2
    settings = SHORT if args.short else FULL
    if args.rounds or args.round_time:
        settings = replace(
            settings,
            rounds=args.rounds or settings.rounds,
            round_time=args.round_time or settings.round_time,
        )
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(UTC)
    clock = time.monotonic()
    progress = Progress(len(cases))
    machine_now = machine()
    with tempfile.TemporaryDirectory(prefix="entra-keys-bench-") as tmp:
        tcti, swtpm, no_tpm = _start_tpm(args, Path(tmp))
        try:
            ctx = Context(settings, Path(tmp), progress, tcti, no_tpm)
            tpm = tpm_info(tcti)
            results, events = run_cases(ctx, cases)
        finally:
            if swtpm is not None:
                swtpm.stop()
    progress.clear()
    asked = report.questions(cases, results)
    versions_now = versions()
    machine_now["load_average_end"] = os.getloadavg()
    where = (
        "no TPM" if tcti is None else f"{tcti} ({'swtpm started by the run' if swtpm else 'given'})"
    )
    title = (
        f"entra_keys {versions_now['entra_keys']} benchmarks, {settings.mode} mode, "
        f"{started:%Y-%m-%d %H:%M} UTC; TPM: {where}"
    )
    report_json: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - clock, 1),
        "mode": settings.mode,
        "settings": vars(settings),
        "tpm": {
            "tcti": tcti,
            "started_by_benchmark": swtpm is not None,
            "info": tpm,
            "none": no_tpm,
        },
        "machine": machine_now,
        "versions": versions_now,
        "results": [r.to_json() for r in results],
        "targets": [j.to_json() for q in asked for j in q.judged],
        "events": events,
    }
    chart_path = out / CHART_NAME
    run = (
        f"entra_keys {versions_now['entra_keys']}, {settings.mode} mode, {started:%Y-%m-%d %H:%M} "
        f"UTC, {'swtpm' if swtpm or 'swtpm' in (tcti or '') else tcti}; "
        f"{machine_now['cpus']} CPUs, {machine_now['python']}, cryptography "
        f"{versions_now['cryptography']}, tpm2-pytss {versions_now['tpm2-pytss']}; "
        f"{settings.rounds} rounds of ~{settings.round_time:g} s"
    )
    drawn, why_no_chart = report.charts(chart_path, asked, run, settings)
    report_json["chart"] = None if why_no_chart else str(chart_path)
    report_json["chart_skipped"] = why_no_chart
    report_json |= report.summary_json(asked, drawn, settings)
    json_path = out / JSON_NAME
    report.write_json(json_path, report_json)
    header = [
        title,
        f"{machine_now['cpu']}, {machine_now['cpus']} CPUs; {machine_now['python']}; "
        f"cryptography {versions_now['cryptography']}, tpm2-pytss {versions_now['tpm2-pytss']}, "
        f"tpm2-tools {versions_now['tpm2-tools']}, swtpm {versions_now['swtpm']}",
        f"{settings.rounds} rounds of ~{settings.round_time:g} s after {settings.warmup:g} s "
        "warm-up, contenders interleaved; medians, min..max, IQR; x base: median of the per-round "
        "ratios to the raw baseline",
        _load_note(machine_now),
    ]
    footer = [
        f"JSON: {json_path}",
        why_no_chart
        or f"charts: {chart_path} (the verdicts), "
        + ", ".join(str(p.name) for p in drawn.values()),
    ]
    failed = [e["case"] for e in events if e["event"] == "failed"]
    if failed:
        footer.append(f"FAILED cases: {', '.join(failed)}")
    print(report.table(results, asked, header, footer, settings))
    return 1 if failed else 0
