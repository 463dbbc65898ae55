"""The outputs: a table for the terminal, a JSON file with every figure, a PNG chart.

The chart (throughput relative to the raw baseline of the same run) needs matplotlib, the
``bench`` extra; without it the chart is skipped and the report says so.
"""

from __future__ import annotations

import importlib
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .measure import Check, Result

__all__ = ["chart", "table", "write_json"]

_LABEL = 56


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    size = abs(value)
    if (unit == "/s" and size >= 100) or (unit == "KiB" and size >= 10):
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:,.1f}"
    return f"{value:.2f}" if size >= 0.1 or value == 0 else f"{value:.3g}"


def _per_op(rate: float) -> str:
    seconds = 1 / rate
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _relative(result: Result, by_id: Mapping[str, Result]) -> float | None:
    base = by_id.get(result.baseline or "")
    if base is None or not base.measured or not result.measured:
        return None
    return result.over(base)


def table(
    results: Sequence[Result], checks: Sequence[Check], header: Sequence[str], footer: Sequence[str]
) -> str:
    """The whole report as text: results by group, then targets and ratios with PASS/MISS."""
    by_id = {r.id: r for r in results}
    lines = [*header, ""]
    head = (
        f"{'':{_LABEL}} {'median':>14} {'per op':>9} {'min .. max':>21} {'IQR':>19} {'x base':>7}"
    )
    lines.append(head)
    group = None
    for r in results:
        if r.group != group:
            group = r.group
            lines.append(group)
        label = f"  {r.label}"
        if len(label) > _LABEL:
            label = label[: _LABEL - 1] + "…"
        if not r.measured:
            lines.append(f"{label:{_LABEL}} {r.status}")
            if r.note:
                lines.extend(
                    textwrap.wrap(r.note, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
                )
            continue
        q1, q3 = r.quartiles()
        median = f"{_number(r.median, r.unit)} {r.unit}"
        per_op = _per_op(r.median) if r.unit == "/s" else ""
        spread = f"{_number(r.minimum, r.unit)} .. {_number(r.maximum, r.unit)}"
        iqr = f"{_number(q1, r.unit)} .. {_number(q3, r.unit)}" if len(r.samples) > 2 else ""
        rel = _relative(r, by_id)
        ratio = f"{rel:.3f}" if rel is not None else ""
        lines.append(f"{label:{_LABEL}} {median:>14} {per_op:>9} {spread:>21} {iqr:>19} {ratio:>7}")
        details = {k: v for k, v in r.extra.items() if v is not None}
        if details:
            text = ", ".join(
                f"{k} {_number(v, '') if isinstance(v, float) else v}" for k, v in details.items()
            )
            lines.extend(
                textwrap.wrap(text, 100, initial_indent=" " * 6, subsequent_indent=" " * 6)
            )
    lines += ["", f"{'Targets and ratios (from this run)':68} {'value':>10} {'wanted':>11}  result"]
    for c in checks:
        value = "-" if c.value is None else f"{_number(c.value, '')}{c.unit}"
        lines.append(f"  {c.name:66} {value:>10} {c.wanted:>11}  {c.verdict}")
    return "\n".join([*lines, "", *footer])


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    """The report as JSON (NaN written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    path.write_text(json.dumps(clean(report), indent=2, ensure_ascii=False) + "\n")


def chart(path: Path, results: Sequence[Result], checks: Sequence[Check], title: str) -> str | None:
    """Draw throughput relative to each figure's raw baseline; returns why not, or None."""
    try:
        importlib.import_module("matplotlib").use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return "matplotlib is not installed (pip install 'entra_keys[bench]'); no chart"
    by_id = {r.id: r for r in results}
    baselines = {r.baseline for r in results if r.baseline}
    rows: list[tuple[str, float | None, str]] = []  # label, value (None: group title), colour
    group = None
    for r in results:
        if r.unit != "/s" or not r.measured:
            continue
        rel = _relative(r, by_id)
        if rel is None and r.id not in baselines:
            continue
        if r.group != group:
            group = r.group
            rows.append((group, None, ""))
        if rel is None:
            rows.append((f"{r.label}", 1.0, "#9e9e9e"))
        else:
            rows.append((f"{r.label}", rel, _colour(r, checks)))
    if not rows:
        return "no throughput figure to draw"
    height = 0.26 * len(rows) + 1.4
    fig, ax = plt.subplots(figsize=(11, height))
    positions = list(range(len(rows)))[::-1]
    top = max([1.15] + [v * 1.12 for _, v, _ in rows if v is not None])
    for y, (_, value, colour) in zip(positions, rows, strict=True):
        if value is None:
            continue
        ax.barh(y, value, color=colour, height=0.7)
        ax.text(value + top * 0.005, y, f"{value:.2f}x", va="center", fontsize=7)
    ax.set_yticks(positions)
    ax.set_yticklabels([label for label, _, _ in rows], fontsize=7)
    for tick, (_, value, _) in zip(ax.get_yticklabels(), rows, strict=True):
        if value is None:
            tick.set_fontweight("bold")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_xlim(0, top)
    ax.set_xlabel("throughput relative to the raw baseline of the same run (grey bars: baselines)")
    ax.set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def _colour(result: Result, checks: Sequence[Check]) -> str:
    """Green or red where a ratio target covers the figure, else blue."""
    for check in checks:
        if check.figure == result.id and check.unit == "x" and check.verdict in ("PASS", "MISS"):
            return "#2e7d32" if check.verdict == "PASS" else "#c62828"
    return "#1565c0"
