"""lm-eval benchmarks (evaluators/benchmarks.py): the shipped tasks run offline on a tiny
model through the real CLI, their numbers equal lm-eval's own CLI on the same checkpoint,
a rerun takes every unit from the store, and the leaderboard carries the columns with
their change against the reference. A task of lm-eval itself is accepted where its data
is in the local datasets cache (a cache built here, offline).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from evaluators.benchmark_tasks import SHIPPED_DIR
from tests.conftest import ENV, REPO, assert_ok, cli, leaderboard, run_json, write_spec

SPEC = """\
name: bench
task: bandit
task_options: {n_prompts: 3, n_arms: 4, sft_samples_per_prompt: 32, sft_epochs: 1}
methods:
  - name: dpo
    params: {beta: 1}
seeds: [0]
training: {epochs: 1, batch_size: 8, kl_log_prompts: 0}
generation: {n_samples: 1, max_new_tokens: 1, batch_size: 8}
report: {embedding_diversity: false, bootstrap_rounds: 10, style_control: false}
benchmarks:
  - {task: bandit_best_answer, batch_size: 1}
  - {task: shakespeare_cloze, limit: 40, batch_size: 1}
"""
LIMIT = 40
METRICS = {"bandit_best_answer": ("acc", "brier_score"), "shakespeare_cloze": ("acc", "acc_norm")}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("bench")
    spec, results = write_spec(root / "bench.yaml", SPEC), root / "results"
    first = cli("run", spec, "--results-dir", results)
    assert_ok(first)
    counts_first = run_json(results)["counts"]
    second = cli("judge", spec, "--results-dir", results)  # score, benchmark, judge again
    assert_ok(second)
    return {"spec": spec, "results": results, "first": counts_first, "second": second,
            "counts_second": run_json(results)["counts"]}


def test_benchmarks_are_stored_units_and_a_rerun_computes_none(bench: dict) -> None:
    # 2 models (sft, dpo) x 2 tasks
    assert bench["first"]["benchmark"] == {"computed": 4, "cached": 0}
    assert bench["counts_second"]["benchmark"] == {"computed": 0, "cached": 4}
    assert "benchmark computed      0   from store      4" in bench["second"].stdout
    con = sqlite3.connect(bench["results"] / "store.sqlite")
    try:
        rows = con.execute("SELECT info FROM scores WHERE scorer = 'lm-eval'").fetchall()
    finally:
        con.close()
    assert len(rows) == 4
    assert {json.loads(r[0])["lm_eval_version"] for r in rows} == {"0.4.13"}


def test_leaderboard_columns_with_stderr_and_delta_against_the_reference(bench: dict) -> None:
    board = {r["label"]: r for r in leaderboard(bench["results"])}
    assert set(board) == {"sft", "dpo(beta=1)"}
    ref, run = board["sft"], board["dpo(beta=1)"]
    for task, metrics in METRICS.items():
        for m in metrics:
            col = f"lm:{task}:{m}"
            assert isinstance(run[col], float) and isinstance(ref[col], float), col
            assert f"{col}_stderr" in run and ref[f"{col}_delta"] == 0.0
            assert run[f"{col}_delta"] == run[col] - ref[col]
    assert run["lm:shakespeare_cloze:acc_stderr"] > 0  # a mean: lm-eval's closed form
    assert run["lm:bandit_best_answer:brier_score_stderr"] is None  # lm-eval: N/A
    md = (bench["results"] / "leaderboard.md").read_text()
    assert "## Benchmarks (lm-eval)" in md and "shakespeare_cloze:acc_norm" in md


def test_numbers_equal_lm_eval_own_cli_on_the_same_checkpoint(bench: dict,
                                                            tmp_path: Path) -> None:
    con = sqlite3.connect(bench["results"] / "store.sqlite")
    try:
        (checkpoint,) = con.execute("SELECT checkpoint FROM runs").fetchone()
    finally:
        con.close()
    checkpoint = bench["results"] / checkpoint
    script = Path(sys.executable).parent / "lm_eval"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "lm_eval"]
    # lm-eval's CLI reads the YAML's data_files relative to its working directory
    proc = subprocess.run(
        [*command, "run", "--model", "hf", "--model_args",
         f"pretrained={checkpoint},add_bos_token=True,dtype=float32", "--tasks",
         *METRICS, "--include_path", str(SHIPPED_DIR), "--batch_size", "1", "--limit",
         str(LIMIT), "--device", "cpu", "--output_path", str(tmp_path / "out")],
        cwd=SHIPPED_DIR, env={**ENV, "HF_DATASETS_CACHE": str(tmp_path / "cache")},
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = list((tmp_path / "out").rglob("results_*.json"))
    theirs = json.loads(found.read_text())["results"]
    ours = {r["label"]: r for r in leaderboard(bench["results"])}["dpo(beta=1)"]
    for task, metrics in METRICS.items():
        for m in metrics:
            assert ours[f"lm:{task}:{m}"] == theirs[task][f"{m},none"], (task, m)
            se = theirs[task][f"{m}_stderr,none"]
            assert ours[f"lm:{task}:{m}_stderr"] == (None if se == "N/A" else se), (task, m)
    assert json.loads(found.read_text())["n-samples"]["shakespeare_cloze"]["effective"] == LIMIT


def test_shipped_task_data_is_what_the_script_makes() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_benchmark_data.py"),
                           "--check"], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(s) for s in (SHIPPED_DIR / "shakespeare_cloze.jsonl").open()]
    assert len(rows) == 500 and all(len(r["choices"]) == 4 for r in rows)
    assert {r["label"] for r in rows} == {0, 1, 2, 3}
    # held out: no line of the sentiment task's quickstart or default splits
    import numpy as np

    from harness.tasks.corpus import verse_lines

    lines = verse_lines(min_words=6)
    order = np.random.default_rng(0).permutation(len(lines))
    used = {lines[i] for i in order[:13_088]}
    for r in rows:
        assert r["context"] + " " + r["choices"][r["label"]] not in used


def _fake_cached_dataset(cache: Path, tmp: Path) -> None:
    """EleutherAI/lambada_openai (config default, split test) in a datasets cache, built
    offline from a local file in the layout `datasets` reads a cached hub dataset from."""
    import datasets

    src = tmp / "lambada.jsonl"
    src.write_text("".join(json.dumps({"text": f"the king and the queen walk {w}"}) + "\n"
                           for w in ("home", "away", "out", "in", "on", "there")))
    builder = datasets.load_dataset_builder("json", data_files={"test": str(src)},
                                            cache_dir=str(tmp / "build"))
    builder.download_and_prepare()
    built = Path(builder.cache_dir)
    target = cache / "EleutherAI___lambada_openai" / "default" / "0.0.0" / built.name
    target.mkdir(parents=True)
    for f in built.iterdir():
        (target / f.name.replace("json-", "lambada_openai-")).write_bytes(f.read_bytes())
    info = json.loads((target / "dataset_info.json").read_text())
    (target / "dataset_info.json").write_text(json.dumps({**info, "config_name": "default"}))


def test_an_lm_eval_task_whose_data_is_in_the_local_cache_runs_offline(
        bench: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config

    from evaluators import benchmark_tasks
    from evaluators.benchmarks import Benchmark, evaluate, make_lm
    from harness.errors import InputError

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    benchmark_tasks._find_task.cache_clear()
    with pytest.raises(InputError, match="not in the local datasets cache"):
        benchmark_tasks.find_task("lambada_openai")
    _fake_cached_dataset(tmp_path / "cache", tmp_path)
    benchmark_tasks._find_task.cache_clear()
    source = benchmark_tasks.find_task("lambada_openai")
    assert source.kind == "lm-eval" and source.fingerprint["data"]["lambada_openai"]["test"]
    reference = next((bench["results"] / "artifacts").glob("reference-*"))
    bench_ = Benchmark(source, limit=None, num_fewshot=None, batch_size=8, bootstrap_iters=0,
                       model_args={})
    out = evaluate(make_lm("hf", reference, 8, {}), bench_)
    assert out["n_samples"]["lambada_openai"]["effective"] == 6
    assert 0 <= out["results"]["lambada_openai"]["acc,none"] <= 1
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1"
