"""Timing with warm-up and interleaved rounds, results with medians and spread, and targets.

A contender runs ``n`` operations and says how long they took (``Round``). ``interleave`` warms
every contender up, sizes its rounds to ``Settings.round_time`` and then runs round 1 of each,
round 2 of each, and so on, so that a slow drift of the machine touches every contender alike and
the ratios of one run stay fair. A ``Case`` (a registry entry) returns ``Result`` objects; a
``Target`` turns results into one checked figure (a ratio, a count, a time).
"""

from __future__ import annotations

import gc
import itertools
import math
import statistics
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "FAILED",
    "MEASURED",
    "NOT_APPLICABLE",
    "SKIPPED",
    "Case",
    "Check",
    "Contender",
    "Result",
    "Round",
    "Target",
    "interleave",
    "timed_loop",
]

MEASURED = "measured"
#: The library does not do this yet; the case is ready for the day it does.
NOT_APPLICABLE = "not applicable yet"
#: Something the case needs is missing on this machine (tpm2-tools, a TPM).
SKIPPED = "skipped"
FAILED = "failed"


@dataclass
class Result:
    """One figure: a sample per round, and what it is compared with."""

    id: str
    group: str
    label: str
    unit: str
    samples: list[float] = field(default_factory=list)
    status: str = MEASURED
    #: The result this one is shown relative to (the raw baseline of the same run).
    baseline: str | None = None
    higher_is_better: bool = True
    ops_per_round: int | None = None
    note: str = ""
    extra: dict[str, float | int | str | None] = field(default_factory=dict)
    #: A difference (memory growth) that may be zero or negative; every other figure is > 0.
    signed: bool = False
    #: Results measured in the same ``interleave`` share this: their rounds ran side by side.
    interleaved: int | None = None

    @property
    def measured(self) -> bool:
        """True when the figure holds samples."""
        return self.status == MEASURED and bool(self.samples)

    @property
    def median(self) -> float:
        """The median of the rounds (NaN when not measured)."""
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def minimum(self) -> float:
        """The slowest or smallest round."""
        return min(self.samples) if self.samples else math.nan

    @property
    def maximum(self) -> float:
        """The fastest or largest round."""
        return max(self.samples) if self.samples else math.nan

    def quartiles(self) -> tuple[float, float]:
        """The first and third quartiles (inclusive method; equal to the value for one round)."""
        if len(self.samples) < 2:
            return self.median, self.median
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    def over(self, base: Result) -> float:
        """Relative to ``base``: the median of per-round ratios when the rounds ran side by side
        (a burst of other work skews one pair, not the ratio), else the ratio of medians."""
        if not self.measured or not base.measured:
            return math.nan
        if self.interleaved is not None and self.interleaved == base.interleaved:
            pairs = zip(self.samples, base.samples, strict=True)
            return statistics.median(a / b for a, b in pairs)
        return self.median / base.median

    def to_json(self) -> dict[str, Any]:
        """Everything about the figure, for the JSON report."""
        q1, q3 = self.quartiles()
        out: dict[str, Any] = {
            "id": self.id,
            "group": self.group,
            "label": self.label,
            "status": self.status,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "signed": self.signed,
            "interleaved": self.interleaved,
        }
        if self.measured:
            out |= {
                "median": self.median,
                "min": self.minimum,
                "max": self.maximum,
                "q1": q1,
                "q3": q3,
                "rounds": len(self.samples),
                "samples": self.samples,
                "ops_per_round": self.ops_per_round,
            }
        if self.note:
            out["note"] = self.note
        if self.extra:
            out["extra"] = self.extra
        return out


@dataclass(frozen=True)
class Round:
    """What one round did: timed seconds, operations that succeeded, errors, counters."""

    seconds: float
    ops: int
    errors: int = 0
    #: Counters a round observed (e.g. leaked handles); the result keeps the largest.
    counters: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Contender:
    """One way of doing the operation: ``run(n)`` does it ``n`` times and times it."""

    id: str
    label: str
    run: Callable[[int], Round]
    baseline: str | None = None
    note: str = ""
    #: Report the errors counted (threads); elsewhere an error ends the case.
    counts_errors: bool = False


def timed_loop(
    op: Callable[[], object],
    around: Callable[[], AbstractContextManager[object]] = nullcontext,
    *,
    cpu: list[float] | None = None,
) -> Callable[[int], Round]:
    """A contender's ``run``: ``op`` n times in a row, inside ``around`` (which is not timed).
    With ``cpu``, each run appends the calling thread's CPU seconds per op (``thread_time``:
    the work in this process, which other processes' load touches far less than wall time)."""

    def run(n: int) -> Round:
        gc.collect()
        with around():
            used = time.thread_time()
            start = time.perf_counter()
            for _ in range(n):
                op()
            seconds = time.perf_counter() - start
            used = time.thread_time() - used
        if cpu is not None:
            cpu.append(used / n)
        return Round(seconds, n)

    return run


def interleave(
    ctx: Context,
    group: str,
    contenders: list[Contender],
    *,
    unit: str = "/s",
) -> list[Result]:
    """Warm up and size each contender, then run their rounds in turn; throughput per round."""
    settings = ctx.settings
    steps = len(contenders) * (1 + settings.rounds)
    done = 0
    sizes: dict[str, int] = {}
    errors = dict.fromkeys((c.id for c in contenders), 0)
    counters: dict[str, dict[str, int]] = {c.id: {} for c in contenders}

    def note(contender: Contender, outcome: Round) -> None:
        errors[contender.id] += outcome.errors
        seen = counters[contender.id]
        for name, value in outcome.counters.items():
            seen[name] = max(seen.get(name, 0), value)

    for contender in contenders:
        ctx.progress.update(done / steps, f"warm-up: {contender.label}")
        n, ops, spent = 1, 0, 0.0
        while True:
            outcome = contender.run(n)
            note(contender, outcome)
            ops, spent = ops + outcome.ops, spent + outcome.seconds
            if spent >= settings.warmup:
                break
            n *= 2
        rate = ops / spent if spent > 0 else 1.0
        sizes[contender.id] = max(1, round(rate * settings.round_time))
        done += 1

    samples: dict[str, list[float]] = {c.id: [] for c in contenders}
    for number in range(settings.rounds):
        for contender in contenders:
            ctx.progress.update(
                done / steps, f"round {number + 1}/{settings.rounds}: {contender.label}"
            )
            outcome = contender.run(sizes[contender.id])
            note(contender, outcome)
            samples[contender.id].append(outcome.ops / outcome.seconds)
            done += 1

    results = []
    run = next(_RUNS)
    for contender in contenders:
        extra: dict[str, float | int | str | None] = dict(counters[contender.id])
        if contender.counts_errors:
            extra["errors"] = errors[contender.id]
        results.append(
            Result(
                id=contender.id,
                group=group,
                label=contender.label,
                unit=unit,
                samples=samples[contender.id],
                baseline=contender.baseline,
                ops_per_round=sizes[contender.id],
                note=contender.note,
                extra=extra,
                interleaved=run,
            )
        )
    return results


_RUNS = itertools.count(1)


@dataclass(frozen=True)
class Check:
    """A target checked against one run: the value, what was wanted, PASS / MISS / blank."""

    name: str
    figure: str
    value: float | None
    unit: str
    wanted: str
    verdict: str

    def to_json(self) -> dict[str, Any]:
        """The check for the JSON report."""
        return {
            "name": self.name,
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "wanted": self.wanted,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Target:
    """A result's field, or its ratio ``over`` another result; with bounds, a target (else only
    reported). ``of`` may name several results whose counter ``field`` is added up."""

    name: str
    of: str | tuple[str, ...]
    over: str | None = None
    field: str = "median"
    at_least: float | None = None
    at_most: float | None = None

    def check(self, results: Mapping[str, Result]) -> Check:
        """Evaluate against the results of one run; a missing figure gives verdict "n/a"."""
        ids = (self.of,) if isinstance(self.of, str) else self.of
        unit = "x" if self.over else ""
        try:
            if self.over is not None and self.field == "median":
                value = results[ids[0]].over(results[self.over])
            else:
                value = sum(_field(results[i], self.field) for i in ids)
                if self.over is not None:
                    value /= _field(results[self.over], "median")
            if not unit:
                unit = results[ids[0]].unit if self.field == "median" else ""
        except (KeyError, ZeroDivisionError):
            value = math.nan
        wanted = " and ".join(
            part
            for part in (
                f"≥ {_number(self.at_least)}{unit}" if self.at_least is not None else "",
                f"≤ {_number(self.at_most)}{unit}" if self.at_most is not None else "",
            )
            if part
        )
        if math.isnan(value):
            return Check(self.name, ids[0], None, unit, wanted, "n/a")
        if not wanted:
            return Check(self.name, ids[0], value, unit, "", "")
        ok = (self.at_least is None or value >= self.at_least) and (
            self.at_most is None or value <= self.at_most
        )
        return Check(self.name, ids[0], value, unit, wanted, "PASS" if ok else "MISS")


def _field(result: Result, name: str) -> float:
    if not result.measured:
        raise KeyError(result.id)
    if name == "median":
        return result.median
    value = result.extra.get(name)
    if not isinstance(value, int | float):
        raise KeyError(name)
    return float(value)


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Case:
    """A registry entry: what it measures (``figures``), what it needs, how it runs, targets."""

    id: str
    title: str
    figures: tuple[str, ...]
    run: Callable[[Context], list[Result]]
    #: "tpm" (a TPM to talk to), "tpm2-tools" (the tpm2_* programs).
    needs: frozenset[str] = frozenset({"tpm"})
    targets: tuple[Target, ...] = ()
