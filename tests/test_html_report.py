"""report.html and the cross-experiment leaderboard (issue 12).

A copy of the tiny reference run gets one answer replaced by hostile markup, and the report
stage runs again with the sample browser capped at 2 of its 3 prompts. The page is parsed
with html.parser: it must reference nothing outside itself, show exactly leaderboard.json's
values, every model in the sample browser, the markup as text, and say what the cap left
out. `spo-harness leaderboard` then merges two such folders and refuses mismatched ones.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from evaluators.collect import ModelResults
from evaluators.html_report import PageInputs, render_page
from harness.units import Judged
from tests.conftest import assert_input_error, assert_ok, cli, edited_copy, leaderboard

HOSTILE = '<script>alert("x")</script><img src=https://example.com/a.png> & </pre>'
EXTERNAL_ATTRS = {"src", "href", "data", "action", "formaction", "poster", "srcset",
                  "background", "xlink:href", "manifest", "ping", "codebase", "cite"}
EXTERNAL_TAGS = {"link", "img", "iframe", "object", "embed", "base", "audio", "video",
                 "source", "frame", "applet"}


class Page(HTMLParser):
    """Every tag with its attributes, the text of each <script> and <style>, and the
    leaderboard cells / sample-browser headers the tests read."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.cells: list[tuple[str, str, str, str]] = []  # judge tab, label, key, value
        self.models: list[list[str]] = []                 # per prompt: model headers
        self.prompts: list[str] = []
        self.texts: list[str] = []                        # <pre class="text"> contents
        self._in: str | None = None
        self._tab = self._label = None
        self._pre = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("script", "style"):
            self._in = tag
            (self.scripts if tag == "script" else self.styles).append("")
        if tag == "div" and "data-judge" in a:
            self._tab = a["data-judge"]
        if tag == "div" and "prompt" in (a.get("class") or "").split():
            self.prompts.append(a["data-id"])
            self.models.append([])
        if tag == "tr" and "data-label" in a:
            self._label = a["data-label"]
        if tag == "td" and "data-key" in a:
            self.cells.append((self._tab, self._label, a["data-key"], a["data-value"]))
        if tag == "th" and "data-model" in a:
            self.models[-1].append(a["data-model"])
        if tag == "pre" and a.get("class") == "text":
            self._pre = True
            self.texts.append("")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._in = None
        if tag == "pre":
            self._pre = False

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "style":
            self.styles[-1] += data
        if self._pre:
            self.texts[-1] += data


def assert_self_contained(text: str) -> Page:
    """Nothing in the page makes the browser fetch anything: no external tag, no URL
    attribute other than an in-page #anchor, no url()/@import in CSS, no script src."""
    page = Page(text)
    for tag, attrs in page.tags:
        assert tag not in EXTERNAL_TAGS, (tag, attrs)
        for name, value in attrs.items():
            if name in EXTERNAL_ATTRS:
                assert name == "href" and (value or "").startswith("#"), (tag, name, value)
            assert "://" not in (value or ""), (tag, name, value)
        if tag == "meta":
            assert "http-equiv" not in attrs, attrs
    for css in page.styles:
        assert "url(" not in css and "@import" not in css
    for js in page.scripts:
        for call in ("fetch(", "XMLHttpRequest", "import(", "src", "WebSocket"):
            assert call not in js, call
    return page


# ------------------------------------------------------------------ the real page


@pytest.fixture(scope="module")
def reported(reference_run, tmp_path_factory) -> Path:
    """A copy of the reference run, one candidate answer replaced by HOSTILE, reported
    again with the sample browser capped at 2 of the 3 prompts."""
    folder = tmp_path_factory.mktemp("html") / "A"
    edited_copy(reference_run, folder, "0002", HOSTILE).close()
    assert_ok(cli("report", reference_run.spec, "--results-dir", folder, "--set",
                  "report.html_max_prompts=2", cwd=folder.parent))
    return folder


def test_the_page_is_one_self_contained_file(reported):
    text = (reported / "report.html").read_text(encoding="utf-8")
    # the one URL is the hostile answer's own text, shown as text (never an attribute)
    assert "://" not in text.replace("https://example.com/a.png", "")
    page = assert_self_contained(text)
    assert [t for t, a in page.tags if t == "script"] == ["script"]  # ours, inline
    assert 1_000 < len(text) < 2_000_000
    for section in ('id="leaderboard"', 'id="pareto"', 'id="samples"', 'id="judges"',
                    'id="training"', 'id="run"'):
        assert section in text, section
    assert text.count('<svg class="chart"') >= 3  # Pareto and training curves, inline


def test_leaderboard_values_are_leaderboard_json(reported):
    page = Page((reported / "report.html").read_text(encoding="utf-8"))
    rows = {r["label"]: r for r in leaderboard(reported)}
    assert {tab for tab, *_ in page.cells} == {"oracle"}
    assert {label for _, label, *_ in page.cells} == set(rows)
    keys = {key for _, _, key, _ in page.cells}
    assert {"oracle:win_rate", "oracle:bt_rating", "mean_reward", "entropy"} <= keys
    for _, label, key, value in page.cells:
        expected = rows[label][key]
        if expected is None:
            assert value == "", (label, key, value)
        else:
            assert float(value) == expected, (label, key, value, expected)


def test_every_model_is_in_the_sample_browser(reported):
    page = Page((reported / "report.html").read_text(encoding="utf-8"))
    labels = [r["label"] for r in leaderboard(reported)]
    assert page.models and all(sorted(m) == sorted(labels) for m in page.models)
    assert page.models[0][0] == "sft"  # the baseline first, the others beside it


def test_an_answer_with_markup_is_shown_as_text(reported):
    text = (reported / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<img" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text
    page = Page(text)
    assert HOSTILE in page.texts  # the browser shows the answer's characters as they are


def test_the_cap_keeps_the_flagged_prompt_and_says_what_it_left_out(reported):
    text = (reported / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert len(page.prompts) == 2
    assert "0002" in page.prompts  # its replaced answer was never judged: 'failed', kept
    note = re.search(r'id="cap-note">(.*?)</p>', text, re.S).group(1)
    assert "Showing 2 of 3 prompts" in " ".join(note.split())
    left_out = ({"0000", "0001", "0002"} - set(page.prompts)).pop()
    assert note.rstrip(".").endswith(f"(1): {left_out}")


# ------------------------------------------------------------------ hand-built pages


def _results(text: str, info: dict, label: str = "dpo") -> list[ModelResults]:
    def sample(pid: str, t: str) -> dict:
        return {"prompt_id": pid, "sample_index": 0, "text": t, "rewards": {"oracle": 0.5},
                "reward": 0.5, "logp": -3.0, "ref_logp": -3.5, "key": f"{pid}{t}",
                "prompt": f"prompt {pid}"}

    base = ModelResults("sft", "sft", {}, None, True, [sample(p, "base") for p in "ab"])
    cand = [sample("a", text), sample("b", "plain")]
    judged = [Judged(base.samples[0], cand[0], "k0",
                     {"preference": 0.9, "status": "ok", "info": info}),
              Judged(base.samples[1], cand[1], "k1", None)]  # not judged yet
    return [base, ModelResults(label, "dpo", {"beta": 0.1}, 0, False, cand,
                               {"llm": judged})]


class Oracle:
    fingerprint = {"judge": "oracle-bt"}

    def judge(self, prompt, baselines, candidates):
        return [0.1 for _ in candidates]  # the baseline wins: disagrees with P = 0.9


def test_judge_outputs_labels_and_prompts_are_escaped_too():
    info = {"orders": ["baseline_first", "candidate_first"], "p_calls": [0.8, 1.0],
            "verdicts": ["second", "first"], "flipped": True,
            "raw": ["</pre><script>raw()</script>"]}
    label = "dpo<b>&"
    records = [{"label": "sft", "is_baseline": True, "method": "sft", "params": {},
                "seed": None, "primary_judge": "llm", "llm:win_rate": None, "entropy": 3.0,
                "n_prompts": 2},
               {"label": label, "is_baseline": False, "method": "dpo", "params": {"beta": 0.1},
                "seed": 0, "primary_judge": "llm", "llm:win_rate": 90.0,
                "llm:win_rate_ci_low": 80.0, "llm:win_rate_ci_high": 95.0, "entropy": 2.0,
                "n_prompts": 2}]
    text = render_page(PageInputs("x<script>", records, _results(HOSTILE, info, label),
                                  prompts={"a": "<script>p()</script>", "b": "b"},
                                  judges={"llm": "fp"}, oracle=Oracle(),
                                  histories={label: {"history": [{"step": 1, "loss": 0.7},
                                                                 {"step": 2, "loss": 0.6}]}}))
    assert_self_contained(text.replace("https://example.com", ""))  # the answer's own text
    for raw in ("<script>alert", "<script>raw", "<script>p(", "<b>&", "x<script>"):
        assert raw not in text, raw
    assert "dpo&lt;b&gt;&amp;" in text  # the label, in the tables and in the SVG titles
    page = Page(text)
    assert page.scripts and all("alert" not in s for s in page.scripts)
    flags = {a["data-id"]: a["data-flags"].split() for t, a in page.tags
             if t == "div" and "data-flags" in a}
    assert flags == {"a": ["disagree", "flip"], "b": ["failed"]}
    assert "not judged" in text and "oracle P = 0.100" in text
    assert ("both orders: baseline_first P = 0.800 (verdict \"second\"), "
            "candidate_first P = 1.000 (verdict \"first\")") in " ".join(text.split())


def test_no_prompts_embedded_at_cap_zero():
    text = render_page(PageInputs("x", [{"label": "sft", "is_baseline": True, "method": "sft",
                                        "params": {}, "seed": None, "n_prompts": 2}],
                                  _results("t", {}), max_prompts=0))
    page = Page(text)
    assert page.prompts == [] and "Showing 0 of 2 prompts" in text


# ------------------------------------------------------------------ across experiments


def _two_folders(reported: Path, tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "A", tmp_path / "B"
    for folder in (a, b):
        folder.mkdir()
        for name in ("leaderboard.json", "report.json"):
            shutil.copy(reported / name, folder / name)
    return a, b


def test_leaderboard_merges_folders_with_one_baseline_and_judge(reported, tmp_path):
    """Two folders holding the same models: each model (one content key) appears once, with
    both experiments named; a model only one folder holds keeps its own row."""
    a, b = _two_folders(reported, tmp_path)
    source = leaderboard(reported)
    runs = [r for r in source if not r["is_baseline"]]
    ident = json.loads((b / "report.json").read_text())
    assert set(ident["models"]) == {r["label"] for r in source}
    other = runs[-1]["label"]
    ident["models"][other] = "f" * 16  # B's row of that label is another model
    (b / "report.json").write_text(json.dumps(ident))
    out = tmp_path / "merged"
    result = cli("leaderboard", a, b, "--out", out, quiet=False, cwd=tmp_path)
    assert_ok(result)
    merged = json.loads((out / "leaderboard.json").read_text())
    assert len(merged) == len(source) + 1
    assert [r["is_baseline"] for r in merged].count(True) == 1
    by = {(r["results_dir"], r["label"]): r for r in merged}
    both = f"tiny ({a}); tiny ({b})"
    for r in source:
        row = by[(str(a), r["label"])]
        assert row["experiment"] == (f"tiny ({a})" if r["label"] == other else both)
        assert row["oracle:win_rate"] == r["oracle:win_rate"]
    assert by[(str(b), other)]["experiment"] == f"tiny ({b})"
    assert "shown once with the first folder's numbers" in (out / "leaderboard.md").read_text()
    for suffix in ("md", "csv", "html"):
        assert (out / f"leaderboard.{suffix}").stat().st_size > 0
    assert_self_contained((out / "leaderboard.html").read_text(encoding="utf-8"))


def test_leaderboard_without_model_keys_merges_only_the_baseline(reported, tmp_path):
    """A report.json written before it named its models' keys: only the baseline, whose key
    it always had, is merged; every run keeps its row."""
    a, b = _two_folders(reported, tmp_path)
    for folder in (a, b):
        ident = json.loads((folder / "report.json").read_text())
        del ident["models"]
        (folder / "report.json").write_text(json.dumps(ident))
    out = tmp_path / "merged"
    assert_ok(cli("leaderboard", a, b, "--out", out, cwd=tmp_path))
    merged = json.loads((out / "leaderboard.json").read_text())
    assert len(merged) == 1 + 2 * (len(leaderboard(reported)) - 1)
    assert [r["experiment"] for r in merged if r["is_baseline"]] == [
        f"tiny ({a}); tiny ({b})"]


@pytest.mark.parametrize("what,change,fragment", [
    ("baseline", lambda r: r["baseline"].update(key="0123456789abcdef"), "baseline"),
    ("judge", lambda r: r["judges"].update(oracle="fedcba9876543210"), "primary judge"),
])
def test_leaderboard_refuses_folders_that_differ(reported, tmp_path, what, change, fragment):
    a, b = _two_folders(reported, tmp_path)
    ident = json.loads((b / "report.json").read_text())
    change(ident)
    (b / "report.json").write_text(json.dumps(ident))
    line = assert_input_error(cli("leaderboard", a, b, "--out", tmp_path / "m",
                                   cwd=tmp_path))
    assert str(b) in line and fragment in line, line
    assert not (tmp_path / "m").exists()
