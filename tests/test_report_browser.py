"""report.html in a real browser (issue 12): headless Debian Chromium driven by Playwright.

A copy of the tiny reference run's report.html is opened as a file:// URL with every other
request aborted (and counted). The page must raise no console error and make no request;
the leaderboard must show leaderboard.json's values, sort on a header click, and the
sample browser's prompt picker and filters must change what is shown. A full-page
screenshot is saved in the test's tmp folder. Skips where /usr/bin/chromium or the
playwright package is missing (`.ci/run` installs chromium with apt-get).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_ok, cli, edited_copy, leaderboard

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("report_screenshot",
                                               REPO / "scripts" / "report_screenshot.py")
shot = sys.modules.setdefault("report_screenshot", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(shot)

pytestmark = [
    pytest.mark.skipif(not shot.CHROMIUM.exists(),
                       reason=f"{shot.CHROMIUM} is missing: apt-get install -y chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is missing: pip install -e .[dev]"),
]

ROWS = "#leaderboard ~ .tab.shown table.leaderboard tbody tr"


@pytest.fixture(scope="module")
def folder(reference_run, tmp_path_factory) -> Path:
    """A copy of the reference run, reported again after giving the filters something to
    find: prompt 0001 gets one long (and so unscored) answer, one judgment of 0002 a
    position flip."""
    folder = tmp_path_factory.mktemp("browser") / "A"
    con = edited_copy(reference_run, folder, "0001", "long " * 60)
    with con:
        key, = con.execute("SELECT key FROM judgments WHERE prompt_id = ? ORDER BY key LIMIT 1",
                           ("0002",)).fetchone()
        con.execute("UPDATE judgments SET info = ? WHERE key = ?",
                    (json.dumps({"flipped": True}), key))
    con.close()
    assert_ok(cli("report", reference_run.spec, "--results-dir", folder, cwd=folder.parent))
    return folder


@pytest.fixture(scope="module")
def opened(folder):
    with shot.open_report(folder / "report.html") as o:
        yield o
    # checked once the page has been driven by every test
    assert o.blocked == [], o.blocked
    assert o.failed == [], o.failed
    assert o.console_errors == [], o.console_errors


def test_the_page_loads_with_no_error_and_no_request(opened, tmp_path):
    page = opened.page
    assert page.title() and page.locator("#leaderboard").is_visible()
    assert opened.blocked == [] and opened.failed == [] and opened.console_errors == []
    # a request the page would make is aborted and counted (the block works)
    page.evaluate("fetch('https://example.com/x').catch(function () {})")
    for _ in range(50):  # the abort's failure and console error arrive asynchronously
        if opened.failed and opened.console_errors:
            break
        page.wait_for_timeout(100)
    assert opened.blocked == ["https://example.com/x"]
    assert opened.failed == ["https://example.com/x"]
    assert [e for e in opened.console_errors if "ERR_FAILED" in e] == opened.console_errors
    for seen in (opened.blocked, opened.failed, opened.console_errors):
        seen.clear()
    png = tmp_path / "report.png"
    page.screenshot(path=str(png), full_page=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def _cells(page) -> list[tuple[str, str, str]]:
    return page.eval_on_selector_all(
        ROWS + " td[data-key]",
        "tds => tds.map(td => [td.parentElement.dataset.label, td.dataset.key,"
        " td.dataset.value])")


def test_leaderboard_rows_show_leaderboard_json(opened, folder):
    rows = {r["label"]: r for r in leaderboard(folder)}
    labels = opened.page.eval_on_selector_all(ROWS, "rs => rs.map(r => r.dataset.label)")
    assert sorted(labels) == sorted(rows)
    cells = _cells(opened.page)
    assert {"oracle:win_rate", "mean_reward", "entropy"} <= {k for _, k, _ in cells}
    for label, key, value in cells:
        expected = rows[label][key]
        if expected is None:
            assert value == "", (label, key, value)
        else:
            assert float(value) == expected, (label, key, value, expected)
    # the visible text of the first number agrees too (rounded as shown)
    first = opened.page.locator(ROWS).first.locator("td[data-key]").first
    assert first.inner_text().strip()


def test_clicking_a_header_sorts_the_rows(opened, folder):
    page = opened.page
    header = page.locator("#leaderboard ~ .tab.shown th[title='mean_reward']")
    rewards = {r["label"]: r["mean_reward"] for r in leaderboard(folder)}

    def order():
        return page.eval_on_selector_all(ROWS, "rs => rs.map(r => r.dataset.label)")

    header.click()
    assert order() == sorted(rewards, key=lambda k: -rewards[k])  # descending first
    header.click()
    assert order() == sorted(rewards, key=lambda k: rewards[k])
    page.locator("#leaderboard ~ .tab.shown th", has_text="model").first.click()
    assert order() == sorted(rewards, reverse=True)  # text columns sort too


def _shown(page) -> list[str]:
    return page.eval_on_selector_all(".prompt.shown", "ps => ps.map(p => p.dataset.id)")


def _options(page) -> list[str]:
    return page.eval_on_selector_all("#prompt-select option", "os => os.map(o => o.value)")


def test_the_prompt_picker_and_filters_change_what_is_shown(opened):
    page = opened.page
    prompts = page.eval_on_selector_all(
        ".prompt", "ps => ps.map(p => [p.id, p.dataset.id, p.dataset.flags,"
        " +p.dataset.longest])")
    assert len(prompts) == 3
    # the long answer was never scored: 0001 is "failed" as well as longest
    assert [p[2] for p in prompts] == ["", "failed", "flip"]
    assert max(prompts, key=lambda p: p[3])[1] == "0001"
    ids = {pid: data_id for pid, data_id, _, _ in prompts}
    # all prompts, the first shown
    page.select_option("#filter", "all")
    assert _options(page) == [p[0] for p in prompts]
    assert _shown(page) == [prompts[0][1]]
    assert page.inner_text("#count") == "3 of 3 prompts"
    # the picker and the arrows show one prompt at a time
    page.select_option("#prompt-select", prompts[2][0])
    assert _shown(page) == [prompts[2][1]]
    page.click("#prev")
    assert _shown(page) == [prompts[1][1]]
    page.click("#next")
    assert _shown(page) == [prompts[2][1]]
    assert page.locator(".prompt.shown .answers").is_visible()
    assert not page.locator(f"#{prompts[0][0]} .answers").is_visible()
    # longest answers first: the same prompts, reordered by their longest answer
    page.select_option("#filter", "longest")
    by_length = [p[0] for p in sorted(prompts, key=lambda p: -p[3])]
    assert _options(page) == by_length
    assert _shown(page) == [ids[by_length[0]]]
    # each flag filter keeps exactly the prompts carrying that flag
    for flag in ("disagree", "flip", "failed"):
        page.select_option("#filter", flag)
        keep = [p[0] for p in prompts if flag in p[2].split()]
        assert _options(page) == keep, flag
        assert _shown(page) == [ids[k] for k in keep[:1]], flag
        assert page.inner_text("#count") == f"{len(keep)} of 3 prompts"
    page.select_option("#filter", "all")
    assert len(_options(page)) == 3 and len(_shown(page)) == 1



def test_the_screenshot_script_writes_a_cropped_png(folder, tmp_path):
    # a subprocess: Playwright's sync API does not nest inside the page `opened` holds
    out = tmp_path / "docs" / "report.png"
    script = [sys.executable, str(REPO / "scripts" / "report_screenshot.py")]
    proc = subprocess.run([*script, folder, out, "--max-height", "700"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"wrote {out}", proc
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")) == (1280, 700)
    proc = subprocess.run([*script, tmp_path, out], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no report.html" in proc.stderr, proc
