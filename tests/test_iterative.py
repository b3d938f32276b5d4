"""SPPO's outer loop: iterates sampled, judged and trained in turn, each stored."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys

import pytest

from harness.iterative import pair_from_win_matrix, win_matrix_from_judge, win_matrix_from_scores
from tests.conftest import ENV, REPO, TINY_SPEC


class TableJudge:
    """P(candidate > baseline) from a fixed table of answer strengths; None for 'broken'."""

    def __init__(self, strength: dict[str, float]) -> None:
        self.strength, self.calls = strength, []

    def judge(self, prompt, baseline, candidate):
        self.calls.append(list(zip(baseline, candidate)))
        return [None if "broken" in (b, c) else
                1 / (1 + math.exp(self.strength[b] - self.strength[c]))
                for b, c in zip(baseline, candidate)]


def test_judge_win_matrix_asks_each_unordered_pair_once_and_matches_scores():
    strength = {"a": 0.3, "b": -1.0, "c": 2.0, "d": 0.0}
    judge = TableJudge(strength)
    texts = list(strength)
    m = win_matrix_from_judge(judge, "x", texts)
    assert len(judge.calls) == 1 and len(judge.calls[0]) == 6  # K(K-1)/2, one batch
    expected = win_matrix_from_scores([strength[t] for t in texts], 1.0)
    for row, want in zip(m, expected):
        assert row == pytest.approx(want, abs=1e-12)
    assert all(m[i][i] == 0.5 for i in range(4))
    assert win_matrix_from_judge(judge, "x", ["a", "broken", "c"]) is None


def test_pair_carries_both_sppo_labels():
    scores = [0.3, -1.0, 2.0, 0.0]
    m = win_matrix_from_scores(scores, 2.0)
    row = pair_from_win_matrix("x", ["a", "b", "c", "d"], m)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    win = [sum(sig(2.0 * (a - b)) for b in scores) / 4 for a in scores]  # diagonal gives 1/2
    assert (row["chosen"], row["rejected"]) == ("c", "b")
    assert row["soft_label"] == pytest.approx(sig(2.0 * 3.0))
    assert row["chosen_win_rate"] == pytest.approx(win[2])
    assert row["rejected_win_rate"] == pytest.approx(win[1])
    assert pair_from_win_matrix("x", ["a", "a"], win_matrix_from_scores([1.0, 1.0], 1.0)) is None


def _run(spec, out):
    return subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--results-dir",
                           str(out), "--quiet"], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=600)


def test_sppo_runs_its_iterations_and_resumes_from_stored_iterates(tmp_path):
    spec = tmp_path / "sppo.yaml"
    text = TINY_SPEC.replace(
        "  - name: dpo\n    params: {beta: 1}\n",
        "  - name: sppo\n    params: {beta: 0.1, iterations: 2, samples_per_prompt: 4}\n"
        "  - name: sppo\n    params: {beta: 0.1, iterations: 1, samples_per_prompt: 3,"
        " preference: judge, form: sppo_single}\n")
    assert "sppo" in text
    spec.write_text(text)
    out = tmp_path / "out"
    proc = _run(spec, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = {r["label"]: r for r in json.loads((out / "leaderboard.json").read_text())}
    label = "sppo(beta=0.1,iterations=2,samples_per_prompt=4)"
    assert board[label]["n_judged"] > 0
    with sqlite3.connect(out / "store.sqlite") as db:
        iterates = db.execute("SELECT COUNT(*) FROM artifacts WHERE kind='sppo-iterate'").fetchone()
        (meta,) = db.execute("SELECT metadata FROM runs WHERE label=?", (label,)).fetchone()
    assert iterates == (3,)
    judged = "sppo(beta=0.1,form=sppo_single,iterations=1,preference=judge,samples_per_prompt=3)"
    assert board[judged]["n_judged"] > 0
    history = json.loads(meta)["history"]
    assert {h["iteration"] for h in history} == {1, 2} and all(h["n_pairs"] > 0 for h in history)
    # drop the finished run (not its iterates): the rerun takes both iterates from the store
    # and commits the same weights again
    ckpt = out / "artifacts" / f"checkpoint-{json.loads(meta)['run_key']}"
    weights = (ckpt / "model.safetensors").read_bytes()
    with sqlite3.connect(out / "store.sqlite") as db:
        db.execute("DELETE FROM runs WHERE label=?", (label,))
    again = _run(spec, out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (ckpt / "model.safetensors").read_bytes() == weights
    with sqlite3.connect(out / "store.sqlite") as db:
        (meta2,) = db.execute("SELECT metadata FROM runs WHERE label=?", (label,)).fetchone()
    assert json.loads(meta2)["history"] == history
