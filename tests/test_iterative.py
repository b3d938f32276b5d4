"""SPPO's outer loop: iterates sampled, judged and trained in turn, each stored."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from tests.conftest import ENV, REPO, TINY_SPEC


def _run(spec, out):
    return subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--results-dir",
                           str(out), "--quiet"], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=600)


def test_sppo_runs_its_iterations_and_resumes_from_stored_iterates(tmp_path):
    spec = tmp_path / "sppo.yaml"
    text = TINY_SPEC.replace(
        "  - name: dpo\n    params: {beta: 1}\n",
        "  - name: sppo\n    params: {beta: 0.1, iterations: 2, samples_per_prompt: 4}\n")
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
    assert iterates == (2,)
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
