"""The outputs: a table for the terminal, a JSON file with every figure, and PNG charts.

The results are sorted into the questions a reader asks (signing, decryption, the session key,
verification, opening and cold start, threads, key creation, quotes and certifications, memory),
each with a one-line verdict over its targets. The charts, one per question and an overview of
the verdicts, need matplotlib (the ``bench`` extra); without it they are skipped and the report
says so.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .measure import Case, Check, Result, Target
from .settings import Settings

__all__ = [
    "QUESTIONS",
    "Judged",
    "Question",
    "charts",
    "noise_note",
    "questions",
    "summary_json",
    "table",
    "write_json",
]

#: The questions, in report order: (key, title, the case ids it covers as globs). A case that
#: no pattern matches becomes a question of its own, titled as the case.
QUESTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("signing", "Signing", ("sign-*", "tpm2-tools-*")),
    ("decryption", "Decryption", ("decrypt-*",)),
    ("session-key", "Session key (derive)", ("derive",)),
    ("verification", "Verification", ("attestation-verify", "attestation-pool", "measured-*")),
    ("opening", "Opening and cold start", ("open", "coldstart")),
    ("roundtrips", "TPM commands per flow", ("roundtrips",)),
    ("threads", "Threads", ("threads",)),
    ("key-creation", "Key creation", ("keygen-*",)),
    ("attestation", "Quotes and certifications", ("attestation",)),
    ("memory", "Memory", ("memory",)),
)

_LABEL = 56
_VERDICTS = ("PASS", "MISS", "n/a")
_MET, _MISSED, _NO_TARGET, _BASELINE, _NOT_MEASURED = (
    "#2e7d32",
    "#c62828",
    "#1565c0",
    "#9e9e9e",
    "#d7d7d7",
)


@dataclass(frozen=True)
class Judged:
    """A target checked against the run, with the range its figure took over the rounds."""

    target: Target
    check: Check
    #: The lowest and highest value over the rounds (a ratio: per round where the rounds ran
    #: side by side), or None for a figure without rounds (a counter, a sum).
    spread: tuple[float, float] | None

    @property
    def is_target(self) -> bool:
        """True for a figure with a bound (PASS / MISS / n/a), False for one only reported."""
        return self.target.at_least is not None or self.target.at_most is not None

    @property
    def noisy(self) -> bool:
        """True when some rounds meet the bound and others miss it: too close to call."""
        if not self.is_target or self.spread is None or self.check.value is None:
            return False
        low, high = self.spread
        return self._meets(low) != self._meets(high)

    def _meets(self, value: float) -> bool:
        return (self.target.at_least is None or value >= self.target.at_least) and (
            self.target.at_most is None or value <= self.target.at_most
        )

    def to_json(self) -> dict[str, Any]:
        """The check's JSON with the rounds' range and whether they disagree on the verdict."""
        return self.check.to_json() | {
            "rounds_low": None if self.spread is None else self.spread[0],
            "rounds_high": None if self.spread is None else self.spread[1],
            "within_noise": self.noisy,
        }


@dataclass(frozen=True)
class Question:
    """One question the benchmarks answer: its cases' results and targets, and the verdict."""

    key: str
    title: str
    results: tuple[Result, ...]
    judged: tuple[Judged, ...]

    @property
    def targets(self) -> list[Judged]:
        """The judged figures that have a bound."""
        return [j for j in self.judged if j.is_target]

    def count(self, verdict: str) -> int:
        """How many targets have this verdict (PASS, MISS, n/a)."""
        return sum(1 for j in self.targets if j.check.verdict == verdict)

    def verdict(self) -> str:
        """One line: how many of the measured targets were met, e.g. "Signing: 4 of 4 targets
        met"; a question without bounds says it has figures only."""
        targets = self.targets
        if not targets:
            return f"{self.title}: no targets (figures only)"
        met, measured = self.count("PASS"), self.count("PASS") + self.count("MISS")
        if not measured:
            return f"{self.title}: {_plural(len(targets), 'target')}, none measured"
        text = f"{self.title}: {met} of {_plural(measured, 'target')} met"
        unmeasured = self.count("n/a")
        if unmeasured:
            text += f"; {unmeasured} not measured"
        return text


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def questions(cases: Sequence[Case], results: Sequence[Result]) -> list[Question]:
    """Sort the cases' results and targets into questions, in ``QUESTIONS`` order (cases that
    no question names follow in run order); a question without a case in this run is left out."""
    by_id = {r.id: r for r in results}
    grouped: dict[str, tuple[str, list[Case]]] = {key: (title, []) for key, title, _ in QUESTIONS}
    for case in cases:
        key, title = next(
            (
                (key, title)
                for key, title, patterns in QUESTIONS
                if any(fnmatch.fnmatchcase(case.id, p) for p in patterns)
            ),
            (case.id, case.title[:1].upper() + case.title[1:]),
        )
        grouped.setdefault(key, (title, []))[1].append(case)
    out = []
    for key, (title, members) in grouped.items():
        if not members:
            continue
        figures = {f for case in members for f in case.figures}
        judged = tuple(
            Judged(target, target.check(by_id), _spread(target, by_id))
            for case in members
            for target in case.targets
        )
        out.append(Question(key, title, tuple(r for r in results if r.id in figures), judged))
    return out


def _spread(target: Target, by_id: Mapping[str, Result]) -> tuple[float, float] | None:
    """The lowest and highest value a target's figure took over the rounds."""
    ids = (target.of,) if isinstance(target.of, str) else target.of
    figure = by_id.get(ids[0])
    if target.field != "median" or len(ids) != 1 or figure is None or not figure.measured:
        return None
    if target.over is None:
        return figure.minimum, figure.maximum
    base = by_id.get(target.over)
    if base is None or not base.measured:
        return None
    try:
        if _paired(figure, base):
            ratios = [a / b for a, b in zip(figure.samples, base.samples, strict=True)]
            return min(ratios), max(ratios)
        return figure.minimum / base.maximum, figure.maximum / base.minimum
    except ZeroDivisionError:
        return None


def noise_note(asked: Sequence[Question], settings: Settings) -> str:
    """Whether the targets can be judged from this run: never from a short run, and not those
    whose rounds disagree on the verdict."""
    noisy = sum(1 for q in asked for j in q.targets if j.noisy)
    if settings.mode == "short":
        return (
            f"Short run ({settings.rounds} rounds of {settings.round_time:g} s): too noisy to "
            "judge the targets. Read PASS and MISS as hints; run without --short to judge."
        )
    if noisy:
        return (
            f"{_plural(noisy, 'target')} within the spread of {'its' if noisy == 1 else 'their'} "
            "rounds (marked ~): too noisy to judge; run again, or with more --rounds."
        )
    return f"{settings.rounds} rounds each; every target's rounds agree with its verdict."


def _counts(asked: Sequence[Question]) -> dict[str, int]:
    """The targets of every question by verdict, and how many are within the noise."""
    targets = [j for q in asked for j in q.targets]
    counts = {v.lower(): sum(1 for j in targets if j.check.verdict == v) for v in _VERDICTS}
    return counts | {"targets": len(targets), "within_noise": sum(1 for j in targets if j.noisy)}


def _totals(asked: Sequence[Question]) -> str:
    c = _counts(asked)
    return (
        f"Targets: {c['pass']} PASS, {c['miss']} MISS, {c['n/a']} n/a (not measured), "
        f"of {c['targets']}; {c['within_noise']} within the spread of their rounds"
    )


def _number(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    size = abs(value)
    if (unit == "/s" and size >= 100) or (unit == "KiB" and size >= 10) or size >= 1000:
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
    results: Sequence[Result],
    asked: Sequence[Question],
    header: Sequence[str],
    footer: Sequence[str],
    settings: Settings,
) -> str:
    """The whole report as text: results by group, then each question's verdict and targets,
    and last the PASS / MISS counts and whether the run can judge them."""
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
    for question in asked:
        if not question.judged:
            continue
        lines.append(question.verdict())
        for j in question.judged:
            c = j.check
            value = "-" if c.value is None else f"{_number(c.value, '')}{c.unit}"
            line = f"  {c.name:66} {value:>10} {c.wanted:>11}  {c.verdict}"
            if j.noisy and j.spread is not None:
                low, high = j.spread
                line += f" ~ rounds {_number(low, '')} .. {_number(high, '')}{c.unit}"
            lines.append(line)
    untargeted = [q.verdict() for q in asked if not q.judged]
    if untargeted:
        lines += ["", *untargeted]
    return "\n".join([*lines, "", *footer, "", _totals(asked), noise_note(asked, settings)])


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


def summary_json(
    asked: Sequence[Question], drawn: Mapping[str, Path], settings: Settings
) -> dict[str, Any]:
    """The verdict per question (with its chart) and the counts, for the JSON report."""
    return {
        "verdicts": [
            {
                "question": q.key,
                "title": q.title,
                "verdict": q.verdict(),
                "targets": len(q.targets),
                "pass": q.count("PASS"),
                "miss": q.count("MISS"),
                "n/a": q.count("n/a"),
                "within_noise": sum(1 for j in q.targets if j.noisy),
                "chart": str(drawn[q.key]) if q.key in drawn else None,
            }
            for q in asked
        ],
        "summary": _counts(asked)
        | {"too_noisy_to_judge": settings.mode == "short", "note": noise_note(asked, settings)},
    }


# The charts. Each is laid out in inches from the top: title, run, note; one panel per result
# group (and unit), with the labels on the left and the figures in a column on the right; the
# legend; the targets and their verdicts. ``bbox_inches="tight"`` keeps any overflow in the file.

_WIDTH, _LEFT, _RIGHT, _ROW = 12.0, 3.7, 2.9, 0.27


@dataclass(frozen=True)
class _Row:
    label: str
    value: float | None  # the bar; None: no bar
    text: str  # the figure column
    colour: str
    bounds: tuple[float, ...] = ()  # where the row's targets are drawn


@dataclass(frozen=True)
class _Panel:
    title: str
    axis: str
    column: str  # the heading of the figures' column
    rows: tuple[_Row, ...]


def charts(
    overview: Path, asked: Sequence[Question], run: str, settings: Settings
) -> tuple[dict[str, Path], str | None]:
    """Draw ``overview`` (the verdict per question) and beside it one PNG per question with
    figures (``benchmarks-signing.png``...). Returns those by question key, and why no chart was
    drawn (or None)."""
    try:
        importlib.import_module("matplotlib").use("Agg")
        plt: Any = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return {}, "matplotlib is not installed (pip install 'entra_keys[bench]'): no charts"
    note = noise_note(asked, settings)
    _overview(plt, overview, asked, run, note)
    drawn = {}
    for question in asked:
        panels = _panels(question)
        if panels:
            path = overview.with_name(f"{overview.stem}-{question.key}.png")
            _question_chart(plt, path, question, panels, run, note)
            drawn[question.key] = path
    return drawn, None


def _short(label: str) -> str:
    """A result's label as a baseline's name: up to the first comma, without a trailing aside."""
    name = label.split(",")[0].strip()
    if name.endswith(")") and " (" in name:
        name = name[: name.rindex(" (")]
    return name if len(name) <= 40 else name[:39] + "…"


def _colour(drawn: Sequence[Judged]) -> str | None:
    verdicts = {j.check.verdict for j in drawn}
    if "MISS" in verdicts:
        return _MISSED
    if "PASS" in verdicts:
        return _MET
    return None


def _panels(question: Question) -> list[_Panel]:
    """The question's figures by result group and unit, as bars: ratios to the baseline where the
    group has them, else the figures themselves; each target drawn where it is exact."""
    by_id = {r.id: r for r in question.results}
    referenced = {r.baseline for r in question.results if r.baseline}
    compared = referenced | {j.target.over for j in question.targets if j.target.over}
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in question.results:
        unit = r.unit or next((x.unit for x in question.results if x.group == r.group), "")
        groups.setdefault((r.group, unit), []).append(r)
    panels = []
    for (group, unit), members in groups.items():
        if not any(r.measured for r in members):
            continue
        ratios = {r.id: _relative(r, by_id) for r in members}
        in_ratio = any(v is not None for v in ratios.values())
        rows: list[_Row] = []
        grey = ""  # the last baseline drawn grey above: a ratio to it needs no name
        for r in members:
            label = r.label if len(r.label) <= 52 else r.label[:51] + "…"
            if not r.measured:
                rows.append(_Row(label, None, r.status, _NOT_MEASURED))
                continue
            figure = f"{_number(r.median, r.unit)} {r.unit}"
            mine = [
                j
                for j in question.targets
                if j.target.of == r.id and j.target.field == "median" and j.check.value is not None
            ]
            rel = ratios[r.id]
            if in_ratio and rel is not None:
                drawn = [j for j in mine if j.target.over == r.baseline]
                base = "" if r.baseline == grey else " " + _short(by_id[r.baseline or ""].label)
                rows.append(
                    _Row(
                        label,
                        rel,
                        f"{figure} ({_number(rel, '')}x{base})",
                        _colour(drawn) or _NO_TARGET,
                        tuple(_bounds(j.target, 1.0) for j in drawn),
                    )
                )
            elif in_ratio:
                baseline = r.id in referenced
                grey = r.id if baseline else grey
                rows.append(
                    _Row(
                        label,
                        1.0 if baseline else None,
                        f"{figure} (baseline)" if baseline else f"{figure} (no baseline)",
                        _BASELINE,
                    )
                )
            else:
                drawn, scales, text = [], [], figure
                for j in mine:
                    over = by_id.get(j.target.over or "")
                    if j.target.over is None:
                        drawn.append(j)
                        scales.append(1.0)
                    elif over is not None and over.measured and not _paired(r, over):
                        drawn.append(j)
                        scales.append(over.median)
                        text += f" ({_number(r.median / over.median, '')}x {_short(over.label)})"
                rows.append(
                    _Row(
                        label,
                        r.median,
                        text,
                        _colour(drawn) or (_BASELINE if r.id in compared else _NO_TARGET),
                        tuple(
                            _bounds(j.target, scale) for j, scale in zip(drawn, scales, strict=True)
                        ),
                    )
                )
        sample = next(r for r in members if r.measured)
        better = "higher is better" if sample.higher_is_better else "lower is better"
        if in_ratio:
            axis = f"throughput as a multiple of its baseline's ({better})"
            title, column = group, "figure (x the grey bar above, or as named)"
        else:
            axis = f"{unit} ({better})"
            title, column = f"{group} ({unit})", "figure"
        panels.append(_Panel(title, axis, column, tuple(rows)))
    return panels


def _paired(result: Result, base: Result) -> bool:
    """True when the two ran side by side: their ratio is the median of per-round ratios."""
    return result.interleaved is not None and result.interleaved == base.interleaved


def _bounds(target: Target, scale: float) -> float:
    bound = target.at_least if target.at_least is not None else target.at_most
    return (bound or 0.0) * scale


def _legend(colours: set[str], bounds: bool) -> tuple[list[Any], list[str]]:
    patches = importlib.import_module("matplotlib.patches")
    lines = importlib.import_module("matplotlib.lines")
    entries = [
        (_MET, "target met"),
        (_MISSED, "target missed"),
        (_NO_TARGET, "no target on this figure"),
        (_BASELINE, "baseline (1.0x) or reference"),
    ]
    handles: list[Any] = [patches.Patch(color=c, label=t) for c, t in entries if c in colours]
    labels = [t for c, t in entries if c in colours]
    if bounds:
        handles.append(lines.Line2D([], [], color="black", linewidth=2))
        labels.append("target (the bound)")
    return handles, labels


def _header(fig: Any, height: float, title: str, run: str, note: str) -> float:
    """Title, run and note at the top; returns the inches they take."""
    top = 0.25
    fig.text(0.2 / _WIDTH, 1 - top / height, title, fontsize=13, fontweight="bold", va="top")
    top += 0.38
    for line in textwrap.wrap(run, 150):
        fig.text(0.2 / _WIDTH, 1 - top / height, line, fontsize=8, va="top", color="#444444")
        top += 0.17
    for line in textwrap.wrap(note, 150):
        fig.text(0.2 / _WIDTH, 1 - top / height, line, fontsize=8.5, va="top", color=_MISSED)
        top += 0.18
    return top + 0.1


def _header_height(run: str, note: str) -> float:
    return (
        0.25
        + 0.38
        + 0.17 * len(textwrap.wrap(run, 150))
        + 0.18 * len(textwrap.wrap(note, 150))
        + 0.1
    )


def _question_chart(
    plt: Any, path: Path, question: Question, panels: Sequence[_Panel], run: str, note: str
) -> None:
    checks = question.judged
    head = _header_height(run, note)
    panel_heights = [0.35 + _ROW * len(p.rows) + 0.5 for p in panels]
    height = head + sum(panel_heights) + 0.5 + 0.2 * len(checks) + 0.3
    fig = plt.figure(figsize=(_WIDTH, height))
    _header(fig, height, question.verdict(), run, note)
    blended = importlib.import_module("matplotlib.transforms").blended_transform_factory
    top, colours = head, set()
    for panel, panel_height in zip(panels, panel_heights, strict=True):
        axes_height = _ROW * len(panel.rows)
        bottom = height - top - 0.3 - axes_height
        ax = fig.add_axes(
            [
                _LEFT / _WIDTH,
                bottom / height,
                (_WIDTH - _LEFT - _RIGHT) / _WIDTH,
                axes_height / height,
            ]
        )
        positions = list(range(len(panel.rows)))[::-1]
        edge = max(
            [1.15 if "multiple" in panel.axis else 0.0]
            + [r.value for r in panel.rows if r.value is not None]
            + [b for r in panel.rows for b in r.bounds]
        )
        column = blended(ax.transAxes, ax.transData)
        for y, row in zip(positions, panel.rows, strict=True):
            if row.value is not None:
                ax.barh(y, row.value, color=row.colour, height=0.7)
                colours.add(row.colour)
            for bound in row.bounds:
                ax.vlines(bound, y - 0.45, y + 0.45, colors="black", linewidth=2, zorder=3)
            muted = row.value is None and row.colour == _NOT_MEASURED
            ax.text(
                1.02,
                y,
                row.text,
                transform=column,
                va="center",
                fontsize=8,
                color="#777777" if muted else "black",
            )
        ax.set_ylim(-0.6, len(panel.rows) - 0.4)
        ax.set_xlim(0, (edge or 1.0) * 1.08)
        ax.set_yticks(positions)
        ax.set_yticklabels([r.label for r in panel.rows], fontsize=8)
        ax.tick_params(axis="x", labelsize=7.5)
        ax.set_xlabel(panel.axis, fontsize=8)
        ax.set_title(panel.title, fontsize=9.5, fontweight="bold", loc="left")
        ax.text(
            1.02,
            1.0,
            panel.column,
            transform=ax.transAxes,
            fontsize=7.5,
            va="bottom",
            style="italic",
            color="#444444",
        )
        ax.grid(axis="x", color="#e0e0e0", linewidth=0.6)
        ax.set_axisbelow(True)
        top += panel_height
    handles, labels = _legend(colours, any(r.bounds for p in panels for r in p.rows))
    fig.legend(
        handles,
        labels,
        loc="upper left",
        bbox_to_anchor=(_LEFT / _WIDTH, 1 - (top + 0.05) / height),
        ncol=len(labels),
        fontsize=8,
        frameon=False,
    )
    top += 0.5
    for j in checks:
        c = j.check
        value = "not measured" if c.value is None else f"{_number(c.value, '')}{c.unit}"
        wanted = f", wanted {c.wanted}" if c.wanted else ""
        line = f"{c.verdict or 'info':4}  {c.name}: {value}{wanted}"
        if j.noisy and j.spread is not None:
            low, high = j.spread
            line += (
                f"  ~ rounds {_number(low, '')} .. {_number(high, '')}{c.unit}: within the noise"
            )
        colour = {"PASS": _MET, "MISS": _MISSED}.get(c.verdict, "#777777")
        fig.text(0.2 / _WIDTH, 1 - top / height, line, fontsize=8, va="top", color=colour)
        top += 0.2
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)


def _overview(plt: Any, path: Path, asked: Sequence[Question], run: str, note: str) -> None:
    """One bar per question: its targets met, missed and not measured."""
    targets = [j for q in asked for j in q.targets]
    met = sum(1 for j in targets if j.check.verdict == "PASS")
    judged = sum(1 for j in targets if j.check.verdict in ("PASS", "MISS"))
    title = f"entra_keys benchmarks: {met} of {_plural(judged, 'target')} met"
    head = _header_height(run, note)
    rows = max(1, len(asked))
    height = head + 0.45 + 0.34 * rows + 0.5 + 0.5
    fig = plt.figure(figsize=(_WIDTH, height))
    _header(fig, height, title, run, note)
    axes_height = 0.34 * rows
    ax = fig.add_axes(
        [
            _LEFT / _WIDTH,
            (height - head - 0.4 - axes_height) / height,
            (_WIDTH - _LEFT - _RIGHT - 1.2) / _WIDTH,
            axes_height / height,
        ]
    )
    positions = list(range(rows))[::-1]
    widest = max([1] + [len(q.targets) for q in asked])
    for y, q in zip(positions, asked, strict=True):
        left = 0
        for verdict, colour in (("PASS", _MET), ("MISS", _MISSED), ("n/a", _NOT_MEASURED)):
            n = q.count(verdict)
            if n:
                ax.barh(y, n, left=left, color=colour, height=0.65)
                left += n
        text = q.verdict().split(": ", 1)[1]
        ax.text(widest * 1.03, y, text, va="center", fontsize=8.5)
    ax.set_ylim(-0.6, rows - 0.4)
    ax.set_xlim(0, widest)
    ax.set_yticks(positions)
    ax.set_yticklabels([q.title for q in asked], fontsize=9)
    ax.set_xlabel("targets", fontsize=8)
    ax.tick_params(axis="x", labelsize=7.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title("targets per question", fontsize=9.5, fontweight="bold", loc="left")
    patches = importlib.import_module("matplotlib.patches")
    fig.legend(
        [patches.Patch(color=c) for c in (_MET, _MISSED, _NOT_MEASURED)],
        ["met", "missed", "not measured"],
        loc="upper left",
        bbox_to_anchor=(_LEFT / _WIDTH, 1 - (head + 0.45 + axes_height + 0.5) / height),
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
