"""`kill -9` at three points of a run, then resume: the result is the uninterrupted one.

Each kill waits for a phase to show in the store (a training checkpoint on disk, the
first stored generation, the first stored score), then sleeps a seeded random delay
drawn from that phase's duration in the uninterrupted run, and sends SIGKILL.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.conftest import (
    CLI,
    ENV,
    N_GENERATIONS,
    N_RUNS,
    REPO,
    WORK_STAGES,
    assert_ok,
    cached,
    cli,
    computed,
    leaderboard,
    store_contents,
    table_counts,
)

SEED = 20240611


def phase_seconds(results: Path) -> dict[str, float]:
    """Durations of the phases of a finished run, from the store's commit timestamps."""
    con = sqlite3.connect(results / "store.sqlite")
    try:
        def span(sql: str) -> float:
            lo, hi = con.execute(sql).fetchone()
            return float(hi - lo)

        first_run = con.execute("SELECT metadata FROM runs ORDER BY created").fetchone()[0]
        return {
            "train_run": float(json.loads(first_run)["train_seconds"]),
            "generate": span("SELECT min(created), max(created) FROM generations"),
            "score+judge": span("SELECT (SELECT min(created) FROM scores), "
                                "(SELECT max(created) FROM judgments)"),
        }
    finally:
        con.close()


def start(spec: Path, results: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([*CLI, "run", str(spec), "--results-dir", str(results), "--quiet"],
                                cwd=REPO, env=ENV, stdout=f, stderr=subprocess.STDOUT)


def wait_for(proc: subprocess.Popen, ready, what: str, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}:\n"
                                 + log.read_text()[-3000:])
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def kill9(proc: subprocess.Popen, delay: float, what: str) -> None:
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (
        f"the kill {what} came too late: the run had already exited with {proc.returncode}")


def test_kill9_at_three_points_then_resume_matches_uninterrupted(reference_run, tmp_path):
    rng = random.Random(SEED)
    a = reference_run.results
    phases = phase_seconds(a)
    spec, results, log = reference_run.spec, tmp_path / "B", tmp_path / "B.log"
    states = []

    # 1. During training: after the first resumable checkpoint of the first run.
    proc = start(spec, results, log)
    wait_for(proc, lambda: any(results.glob("work/run-*/step-*")), "a training checkpoint", log)
    kill9(proc, rng.uniform(0, 0.5) * min(phases["train_run"], 2.0), "during training")
    states.append(table_counts(results))
    assert states[-1]["runs"] < N_RUNS, states
    assert any(results.glob("work/run-*/step-*")), "no checkpoint left to resume from"

    # 2. During generation: training (resumed from the checkpoint) has finished.
    proc = start(spec, results, log)
    wait_for(proc, lambda: table_counts(results)["generations"] > 0, "a stored generation", log)
    kill9(proc, rng.uniform(0, 0.5) * phases["generate"], "during generation")
    states.append(table_counts(results))
    assert states[-1]["runs"] == N_RUNS, states

    # 3. During scoring and judging: every sample is stored by then.
    proc = start(spec, results, log)
    wait_for(proc, lambda: table_counts(results)["scores"] > 0, "a stored score", log)
    kill9(proc, rng.uniform(0, 0.5) * phases["score+judge"], "during scoring/judging")
    states.append(table_counts(results))
    assert states[-1]["generations"] == N_GENERATIONS, states
    assert 0 < states[-1]["scores"], states

    # Run to completion: the finished units of the killed attempts are taken from the store.
    assert_ok(cli("run", spec, "--results-dir", results))
    took = cached(results)
    assert took["train"] == N_RUNS, took            # both runs trained before kill 3
    assert took["generate"] == N_GENERATIONS, took  # all sampled before kill 3
    assert took["score"] > 0, took
    assert computed(results)["train"] == 0 and computed(results)["generate"] == 0

    # Same leaderboard, and the very same stored units, as the uninterrupted run.
    assert leaderboard(results) == reference_run.leaderboard
    assert store_contents(results) == store_contents(a)
    assert not list((results / "artifacts").glob(".tmp-*"))
    assert not list((results / "work").glob("run-*")), "a run's work folder was left behind"

    # One more run computes nothing and changes nothing.
    assert_ok(cli("run", spec, "--results-dir", results))
    assert computed(results) == dict.fromkeys(WORK_STAGES, 0)
    assert leaderboard(results) == reference_run.leaderboard
