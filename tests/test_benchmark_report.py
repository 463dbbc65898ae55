"""The benchmark report a reader gets: verdicts per question, the PASS / MISS counts at the end
of the table, the noise warning, and one chart per question (or a note saying why none).

Synthetic results and cases: no TPM, no timing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benchmarks import report
from benchmarks.measure import NOT_APPLICABLE, Case, Result, Target
from benchmarks.settings import FULL, SHORT

PNG = b"\x89PNG\r\n\x1a\n"


def _result(
    id: str,
    group: str,
    samples: list[float],
    *,
    baseline: str | None = None,
    run: int | None = 1,
    unit: str = "/s",
) -> Result:
    return Result(
        id=id,
        group=group,
        label=id.replace(".", " "),
        unit=unit,
        samples=samples,
        baseline=baseline,
        interleaved=run,
    )


def _case(id: str, title: str, figures: tuple[str, ...], *targets: Target) -> Case:
    return Case(id=id, title=title, figures=figures, run=lambda ctx: [], targets=targets)


def _run() -> tuple[list[Case], list[Result]]:
    """Signing: one target met, one missed (both clear of the noise); decryption: a target on a
    figure not measured; threads: a target met whose rounds straddle the bound; memory: figures
    only; and a case no question names."""
    results = [
        _result("sign.raw", "Signing", [100.0, 100.0, 100.0]),
        _result("sign.lib", "Signing", [99.0, 98.0, 100.0], baseline="sign.raw"),
        _result("sign.slow", "Signing", [50.0, 52.0, 49.0], baseline="sign.raw"),
        Result(
            id="decrypt.lib",
            group="Decryption",
            label="decrypt lib",
            unit="",
            status=NOT_APPLICABLE,
            note="not yet",
        ),
        _result("threads.1", "Threads", [100.0, 100.0, 100.0], run=2),
        _result("threads.4", "Threads", [90.0, 100.0, 110.0], baseline="threads.1", run=2),
        _result("memory.rss", "Memory", [52.0], unit="MiB", run=None),
        _result("future.thing", "Future things", [7.0, 8.0, 9.0], run=None),
    ]
    cases = [
        _case(
            "sign-x",
            "signing",
            ("sign.raw", "sign.lib", "sign.slow"),
            Target("lib / raw", "sign.lib", over="sign.raw", at_least=0.95),
            Target("slow / raw", "sign.slow", over="sign.raw", at_least=0.95),
            Target("lib / slow (reported)", "sign.lib", over="sign.slow"),
        ),
        _case(
            "decrypt-x",
            "decryption",
            ("decrypt.lib",),
            Target("decrypt lib / raw", "decrypt.lib", over="sign.raw", at_least=0.95),
        ),
        _case(
            "threads",
            "threads",
            ("threads.1", "threads.4"),
            Target("4 threads / 1", "threads.4", over="threads.1", at_least=0.95),
        ),
        _case("memory", "memory", ("memory.rss",), Target("peak (reported)", "memory.rss")),
        _case("future", "future things", ("future.thing",)),
    ]
    return cases, results


def _asked() -> tuple[list[report.Question], list[Result]]:
    cases, results = _run()
    return report.questions(cases, results), results


def test_verdicts_count_met_missed_unmeasured_and_figures_only() -> None:
    asked, _ = _asked()
    assert [q.verdict() for q in asked] == [
        "Signing: 1 of 2 targets met",
        "Decryption: 1 target, none measured",
        "Threads: 1 of 1 target met",
        "Memory: no targets (figures only)",
        "Future things: no targets (figures only)",
    ]
    signing = asked[0]
    assert [r.id for r in signing.results] == ["sign.raw", "sign.lib", "sign.slow"]
    assert (signing.count("PASS"), signing.count("MISS"), signing.count("n/a")) == (1, 1, 0)


def test_a_target_whose_rounds_straddle_the_bound_is_noisy() -> None:
    asked, _ = _asked()
    judged = {j.check.name: j for q in asked for j in q.judged}
    assert judged["4 threads / 1"].check.verdict == "PASS"
    assert judged["4 threads / 1"].spread == pytest.approx((0.9, 1.1))
    assert judged["4 threads / 1"].noisy
    assert not judged["lib / raw"].noisy  # every round at 0.98 or more
    assert not judged["slow / raw"].noisy  # every round below 0.95
    assert not judged["decrypt lib / raw"].noisy  # nothing measured


def test_the_table_ends_with_the_counts_and_the_noise_in_a_full_run() -> None:
    asked, results = _asked()
    text = report.table(results, asked, ["header"], ["JSON: x"], FULL)
    lines = text.splitlines()
    assert lines[-2] == (
        "Targets: 2 PASS, 1 MISS, 1 n/a (not measured), of 4; 1 within the spread of their rounds"
    )
    assert lines[-1].startswith("1 target within the spread of its rounds (marked ~): too noisy")
    assert "Signing: 1 of 2 targets met" in lines
    threads = next(line for line in lines if line.lstrip().startswith("4 threads / 1"))
    assert threads.endswith("PASS ~ rounds 0.90 .. 1.10x")
    slow = next(line for line in lines if line.lstrip().startswith("slow / raw"))
    assert slow.endswith("MISS")


def test_a_short_run_says_it_is_too_noisy_to_judge() -> None:
    asked, results = _asked()
    last = report.table(results, asked, [], [], SHORT).splitlines()[-1]
    assert last.startswith("Short run (3 rounds of 0.15 s): too noisy to judge the targets.")
    assert report.summary_json(asked, {}, SHORT)["summary"]["too_noisy_to_judge"] is True


def test_a_full_run_without_noise_says_the_rounds_agree() -> None:
    cases, results = _run()
    steady = [r for r in results if not r.id.startswith("threads.")]
    asked = report.questions([c for c in cases if c.id != "threads"], steady)
    lines = report.table(steady, asked, [], [], FULL).splitlines()
    assert lines[-2].startswith("Targets: 1 PASS, 1 MISS, 1 n/a")
    assert lines[-1] == "15 rounds each; every target's rounds agree with its verdict."


def test_the_json_adds_to_every_check_and_keeps_its_fields() -> None:
    asked, _ = _asked()
    for j in (j for q in asked for j in q.judged):
        entry = j.to_json()
        assert entry.items() >= j.check.to_json().items()
        assert {"rounds_low", "rounds_high", "within_noise"} <= entry.keys()
    summary = report.summary_json(asked, {}, FULL)
    assert summary["summary"] | {"note": ""} == {
        "targets": 4,
        "pass": 2,
        "miss": 1,
        "n/a": 1,
        "within_noise": 1,
        "too_noisy_to_judge": False,
        "note": "",
    }
    assert summary["verdicts"][0]["verdict"] == "Signing: 1 of 2 targets met"


def test_one_chart_per_question_with_figures(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    asked, _ = _asked()
    overview = tmp_path / "benchmarks.png"
    drawn, why_not = report.charts(overview, asked, "a run", SHORT)
    assert why_not is None
    # Decryption has no measured figure: its verdict is in the overview, it has no chart.
    assert drawn == {
        key: tmp_path / f"benchmarks-{key}.png"
        for key in ("signing", "threads", "memory", "future")
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["benchmarks.png", *(p.name for p in drawn.values())]
    )
    for path in (overview, *drawn.values()):
        assert path.read_bytes()[:8] == PNG


def test_without_matplotlib_no_chart_and_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    asked, _ = _asked()
    drawn, why_not = report.charts(tmp_path / "benchmarks.png", asked, "a run", FULL)
    assert drawn == {}
    assert why_not == "matplotlib is not installed (pip install 'entra_keys[bench]'): no charts"
    assert list(tmp_path.iterdir()) == []
