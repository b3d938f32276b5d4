"""Whole-pipeline behaviour through the CLI: idempotence, stage-by-stage commands, order.

Every stored unit is keyed by its content, so rerunning computes nothing, separate stage
commands give what one `run` gives, and a results folder is reusable as it stands.
"""

from __future__ import annotations

import shutil
import sqlite3

from tests.conftest import (
    N_GENERATIONS,
    N_RUNS,
    WORK_STAGES,
    assert_input_error,
    assert_ok,
    cached,
    cli,
    computed,
    describe,
    leaderboard,
    run_json,
    stderr_lines,
    table_counts,
)

BOARD_FILES = ("leaderboard.json", "leaderboard.csv", "leaderboard.md")
FAST = ("--set", "training.epochs=2")  # where only the store's bookkeeping matters


def test_second_run_computes_nothing(reference_run, tmp_path, tiny_spec):
    results = tmp_path / "results"
    assert_ok(cli("run", tiny_spec, "--results-dir", results))
    first = run_json(results)["counts"]
    assert all(first[s]["computed"] > 0 for s in WORK_STAGES), first
    assert first["prepare"]["computed"] == 1
    boards = {f: (results / f).read_bytes() for f in BOARD_FILES}
    counts = table_counts(results)

    assert_ok(cli("run", tiny_spec, "--results-dir", results))
    second = run_json(results)["counts"]
    assert computed(results) == dict.fromkeys(WORK_STAGES, 0), second
    assert second["prepare"] == {"computed": 0, "cached": 1}
    assert cached(results)["train"] == N_RUNS
    assert cached(results)["generate"] == N_GENERATIONS
    assert {f: (results / f).read_bytes() for f in BOARD_FILES} == boards
    assert table_counts(results) == counts
    # ... and a different results folder gives the same leaderboard.
    assert leaderboard(results) == reference_run.leaderboard


def test_stage_commands_match_one_run(reference_run, tmp_path, tiny_spec):
    results = tmp_path / "results"

    def step(command: str) -> dict:
        assert_ok(cli(command, tiny_spec, "--results-dir", results))
        return run_json(results)

    info = step("train")
    assert info["stages"] == ["train"]
    assert table_counts(results) == {"runs": N_RUNS, "generations": 0, "scores": 0,
                                     "judgments": 0}
    assert not (results / "leaderboard.json").exists()

    info = step("generate")
    assert info["stages"] == ["generate"]
    assert info["counts"]["generate"] == {"computed": N_GENERATIONS, "cached": 0}
    assert info["counts"]["train"] == {"computed": 0, "cached": 0}  # not even looked at
    assert table_counts(results)["scores"] == 0

    info = step("judge")
    assert info["stages"] == ["score", "judge"]
    assert info["counts"]["score"]["computed"] > 0 and info["counts"]["judge"]["computed"] > 0
    assert not (results / "leaderboard.json").exists()

    info = step("report")
    assert info["stages"] == ["report"]
    assert leaderboard(results) == reference_run.leaderboard
    assert (results / "leaderboard.md").read_text() == \
        (reference_run.results / "leaderboard.md").read_text()

    # `run` on top of the stages finds everything done.
    step("run")
    assert computed(results) == dict.fromkeys(WORK_STAGES, 0)
    assert leaderboard(results) == reference_run.leaderboard


def test_stages_before_training_exit_2(tmp_path, tiny_spec):
    results = tmp_path / "results"
    proc = cli("generate", tiny_spec, "--results-dir", results)
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr
    last = stderr_lines(proc)[-1]
    assert last.startswith("error: ") and "not trained yet" in last
    assert "spo-harness train" in last and "first" in last
    assert table_counts(results) == {"runs": 0, "generations": 0, "scores": 0, "judgments": 0}
    assert not (results / "run.json").exists()

    # Once the task is built, the same mistake prints exactly the one line.
    for command in ("generate", "judge", "report"):
        line = assert_input_error(cli(command, tiny_spec, "--results-dir", results))
        assert "not trained yet" in line and "spo-harness train" in line
    assert table_counts(results)["generations"] == 0
    assert not (results / "leaderboard.json").exists()


def test_quiet_prints_no_progress_bars(reference_run):
    stderr = reference_run.proc.stderr
    assert "it/s" not in stderr and "%|" not in stderr, stderr[-2000:]


def test_results_folder_can_be_moved(tmp_path, tiny_spec):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    assert_ok(cli("run", tiny_spec, "--results-dir", "res", *FAST, cwd=first))
    shutil.move(first / "res", second / "moved")

    # New samples (another generation seed) need the trained checkpoints themselves.
    proc = cli("run", tiny_spec, "--results-dir", "moved", *FAST,
               "--set", "generation.seed=1", cwd=second)
    assert_ok(proc)
    counts = run_json(second / "moved")["counts"]
    assert counts["prepare"] == {"computed": 0, "cached": 1}, counts
    assert counts["train"]["computed"] == 0, counts
    assert counts["generate"]["computed"] == N_GENERATIONS, counts


def _generations(results):
    con = sqlite3.connect(results / "store.sqlite")
    try:
        return {k: (t, ids) for k, t, ids in
                con.execute("SELECT key, text, token_ids FROM generations")}
    finally:
        con.close()


def test_more_samples_keep_the_stored_ones(tmp_path, tiny_spec):
    results = tmp_path / "results"
    assert_ok(cli("run", tiny_spec, "--results-dir", results, *FAST))
    before = _generations(results)
    assert len(before) == N_GENERATIONS

    assert_ok(cli("run", tiny_spec, "--results-dir", results, *FAST,
                  "--set", "generation.n_samples=5"))
    after = _generations(results)
    assert len(after) == N_GENERATIONS // 4 * 5
    changed = [k for k in before if after[k] != before[k]]
    assert not changed, f"{len(changed)} of {len(before)} stored samples were rewritten"
