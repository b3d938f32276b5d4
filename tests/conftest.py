"""Shared helpers for the integration tests: a tiny bandit spec and a CLI runner.

Every test drives the real command line (`python -m harness ...`) in a subprocess and
inspects what it leaves behind: exit code, stderr, run.json, leaderboard.json and the
SQLite store. One full run of the tiny spec takes a few seconds on a CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Offline, and one BLAS thread: the models are tiny, so threads only add contention
# (these tests may share a small machine with other jobs) without making anything faster.
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
}

CLI = [sys.executable, "-m", "harness"]
WORK_STAGES = ("train", "generate", "score", "judge")
TABLES = ("runs", "generations", "scores", "judgments")

# 3 prompts x 4 arms -> 18 soft-labelled pairs, 3 steps per epoch, 36 steps per run, a
# resumable checkpoint every 3 steps. SPO with lambda > 0 samples online at every step
# and DPO logs a sampled KL, so a resumed run only matches if the RNG state is restored.
# Generation: 3 models x 3 prompts x 4 samples = 36 samples in 9 batches of 4.
TINY_BASE = """\
name: tiny
task: bandit
task_options: {n_prompts: 3, n_arms: 4, sft_samples_per_prompt: 64, sft_epochs: 2}
methods:
  - name: spo
    params: {alpha: 1, lambda: 0.1, reg_prompts_per_step: 2, reg_max_new_tokens: 2}
  - name: dpo
    params: {beta: 1}
seeds: [0]
training:
  epochs: 12
  batch_size: 8
  learning_rate: 0.003
  save_every: 3
  log_every: 3
  kl_log_prompts: 2
generation:
  n_samples: 4
  max_new_tokens: 2
  batch_size: 4
"""
# The bandit's answers are single tokens: sentence embeddings of them say nothing, and
# loading MiniLM would add seconds to every CLI run of the suite.
TINY_SPEC = TINY_BASE + "report: {embedding_diversity: false}\n"
N_RUNS = 2
N_MODELS = N_RUNS + 1          # the runs and the SFT baseline
N_GENERATIONS = N_MODELS * 3 * 4


def write_spec(path: Path, text: str = TINY_SPEC) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based line number of the first line of `text` containing `fragment`."""
    for n, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return n
    raise AssertionError(f"{fragment!r} not in spec text")


def cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300,
        quiet: bool = True) -> subprocess.CompletedProcess:
    cmd = [*CLI, *map(str, args)] + (["--quiet"] if quiet else [])
    return subprocess.run(cmd, cwd=cwd or REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def stderr_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """Non-empty lines of stderr (progress bars' carriage returns split lines too)."""
    return [line for line in proc.stderr.splitlines() if line.strip()]


def describe(proc: subprocess.CompletedProcess) -> str:
    return (f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}"
            f"\n--- stderr\n{proc.stderr[-3000:]}")


def assert_ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, describe(proc)


def assert_input_error(proc: subprocess.CompletedProcess) -> str:
    """Exit code 2, exactly one non-empty stderr line, no traceback; returns that line."""
    lines = stderr_lines(proc)
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert len(lines) == 1, describe(proc)
    return lines[0]


def run_json(results: Path) -> dict:
    return json.loads((results / "run.json").read_text())


def leaderboard(results: Path) -> list[dict]:
    return json.loads((results / "leaderboard.json").read_text())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def table_counts(results: Path) -> dict[str, int]:
    """Row counts of the unit tables; 0 for a store (or table) that does not exist yet."""
    db = results / "store.sqlite"
    out = dict.fromkeys(TABLES, 0)
    if not db.exists():
        return out
    con = sqlite3.connect(db, timeout=30)
    try:
        for t in TABLES:
            try:
                out[t] = con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            except sqlite3.OperationalError:  # schema not created yet
                pass
    finally:
        con.close()
    return out


def store_contents(results: Path) -> dict[str, dict]:
    """Every stored unit by key, without timestamps or paths (comparable across dirs)."""
    con = sqlite3.connect(results / "store.sqlite", timeout=30)
    try:
        return {
            "runs": {r[0]: r[1:] for r in con.execute(
                "SELECT key, label, method, params, seed FROM runs")},
            "generations": {r[0]: r[1:] for r in con.execute(
                "SELECT key, model_key, prompt_id, sample_index, text, token_ids FROM generations")},
            "scores": {r[0]: r[1:] for r in con.execute(
                "SELECT key, scorer, generation_key, value, status, info FROM scores")},
            "judgments": {r[0]: r[1:] for r in con.execute(
                "SELECT key, judge, baseline_key, candidate_key, preference, status FROM judgments")},
        }
    finally:
        con.close()


def computed(results: Path) -> dict[str, int]:
    counts = run_json(results)["counts"]
    return {s: counts[s]["computed"] for s in WORK_STAGES}


def cached(results: Path) -> dict[str, int]:
    counts = run_json(results)["counts"]
    return {s: counts[s]["cached"] for s in WORK_STAGES}


def one_torch_thread() -> Iterator[None]:
    """Body of a fixture that runs its tests on one torch thread: tiny models gain nothing
    from threads, and on a shared small machine they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_spec(tmp_path: Path) -> Path:
    """The tiny bandit spec, written into this test's tmp_path."""
    return write_spec(tmp_path / "tiny.yaml")


@dataclass
class CompletedRun:
    spec: Path
    cwd: Path
    results: Path
    proc: subprocess.CompletedProcess
    leaderboard: list[dict]
    leaderboard_digest: str


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory: pytest.TempPathFactory) -> CompletedRun:
    """One uninterrupted `run` of the tiny spec, shared read-only by the tests.

    Tests compare their own results against it and never write into its folder.
    """
    root = tmp_path_factory.mktemp("reference")
    spec = write_spec(root / "tiny.yaml")
    proc = cli("run", spec, "--results-dir", "A", cwd=root)
    assert_ok(proc)
    results = root / "A"
    return CompletedRun(spec, root, results, proc, leaderboard(results),
                        digest(results / "leaderboard.json"))


def edited_copy(run: CompletedRun, folder: Path, answer_of: str, text: str) -> sqlite3.Connection:
    """Copy `run`'s results to `folder`, replace one candidate answer of prompt `answer_of`
    (the first non-baseline generation by key) with `text`, and return the open store for
    further edits; the caller closes it and reports the copy again."""
    import shutil

    shutil.copytree(run.results, folder)
    base_key = json.loads((folder / "report.json").read_text())["baseline"]["key"]
    con = sqlite3.connect(folder / "store.sqlite")
    with con:
        key, = con.execute("SELECT key FROM generations WHERE model_key != ? AND prompt_id = ? "
                           "ORDER BY key LIMIT 1", (base_key, answer_of)).fetchone()
        con.execute("UPDATE generations SET text = ? WHERE key = ?", (text, key))
    return con
