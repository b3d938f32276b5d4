"""--quiet runs: an ETA line per loop at most every 30 s, and where the report page is."""

from __future__ import annotations

import io
from pathlib import Path

from harness.progress import EVERY, eta_lines


def test_at_most_one_eta_line_every_30_seconds():
    ticks = iter([0.0, 10.0, 29.0, 31.0, 40.0, 60.0, 62.0, 100.0])  # start, then per item
    out = io.StringIO()
    items = list(eta_lines(range(7), "judge pairs", every=EVERY, stream=out,
                           clock=lambda: next(ticks)))
    assert items == list(range(7))  # every item, in order
    assert out.getvalue().splitlines() == [
        "judge pairs: 3/7 done in 31s, ETA 41s",  # 31 s / 3 items · 4 left
        "judge pairs: 6/7 done in 62s, ETA 10s",  # 31 s after the previous line
        "judge pairs: 7/7 done in 100s, ETA 0s",
    ]


def test_a_short_loop_prints_nothing_and_an_unsized_one_counts():
    out = io.StringIO()
    assert list(eta_lines(iter("ab"), "score", stream=out)) == ["a", "b"]
    assert out.getvalue() == ""
    ticks = iter([0.0, 45.0])
    list(eta_lines(iter("a"), "score", stream=out, clock=lambda: next(ticks)))
    assert out.getvalue() == "score: 1 done in 45s\n"


def test_a_run_prints_where_its_report_page_is(reference_run):
    lines = [x for x in reference_run.proc.stdout.splitlines() if x.startswith("report: ")]
    assert len(lines) == 1, reference_run.proc.stdout
    page = Path(lines[0].removeprefix("report: "))
    page = page if page.is_absolute() else reference_run.cwd / page
    assert page.resolve() == (reference_run.results / "report.html").resolve()
    assert reference_run.proc.stderr.count("ETA") == 0  # a quiet run under 30 s
