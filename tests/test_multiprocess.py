"""Data-parallel training (issue 11, item 3): `accelerate launch --multi_gpu --num_processes
2` on a CPU (Accelerate's MULTI_CPU, gloo) trains the same run as one process. `training.batch_size` is the pairs per optimizer
step across processes, so 2 processes x 4 pairs and 1 process x 8 pairs take the same steps:
DDP averages the two shard-mean gradients into the batch's mean gradient, and the logged
metrics are gathered into the batch's means.

Tolerance: the two differ only by float32 re-association (the all-reduce sums two shard
gradients instead of one batch's), the difference `test_training_settings` bounds for
accumulation: under 1e-4 of how far the weights moved over 4 steps for DPO, ~1.1e-4 for SPO
(its online KL samples from the moving policy), so 1e-4 and 5e-4.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
from tests.conftest import REPO

SCRIPT = REPO / "tests" / "ddp_train_script.py"
WORDS = [f"w{i}" for i in range(24)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    rng = random.Random(0)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    root = tmp_path_factory.mktemp("ddp")
    tok = word_tokenizer(WORDS)
    save_model(tiny_llama(tok, hidden_size=16, num_layers=2, num_heads=2, max_positions=16,
                          seed=0), tok, root / "ref")
    pairs = [{"prompt": words(2, 4), "chosen": " " + words(1, 4), "rejected": " " + words(1, 4)}
             for _ in range(16)]
    (root / "pairs.json").write_text(json.dumps(pairs))
    return root / "ref", root / "pairs.json"


def _run(setup, out: Path, processes: int, method: str) -> tuple[dict, list[dict]]:
    ref, pairs = setup
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "GLOO_SOCKET_IFNAME": "lo"}
    args = [str(SCRIPT), str(ref), str(pairs), str(out), "8", method]
    if processes == 1:
        cmd = [sys.executable, *args]
    else:
        accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
        # --multi_gpu on a machine without a GPU is Accelerate's MULTI_CPU (gloo); its
        # --cpu flag would launch one process
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(29500 + random.Random(str(out)).randint(0, 999)),
               *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "processes.txt").read_text() == str(processes)
    return load_file(out / "final.safetensors"), json.loads((out / "history.json").read_text())


@pytest.mark.parametrize("method", ["dpo", "spo"])
def test_two_gloo_processes_train_the_same_run_as_one(setup, tmp_path, method):
    one, h1 = _run(setup, tmp_path / "one", 1, method)
    two, h2 = _run(setup, tmp_path / "two", 2, method)
    init = load_file(setup[0] / "model.safetensors")
    moved = {k: (one[k] - init[k]).abs().max() for k in one}
    assert max(float(m) for m in moved.values()) > 1e-3  # the runs trained
    worst = max(float((two[k] - one[k]).abs().max() / (moved[k] + 1e-12)) for k in one)
    assert worst < (1e-4 if method == "dpo" else 5e-4), worst
    assert [r["step"] for r in h2] == [r["step"] for r in h1] == [1, 2, 3, 4]
    for a, b in zip(h2, h1):
        assert a.keys() == b.keys()
        for k in b:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (k, a[k], b[k])


def test_a_two_process_checkpoint_is_one_folder_with_both_processes_state(setup, tmp_path):
    """Both processes save into one folder, the main process alone renames it into place:
    one complete step-3 checkpoint with each process's RNG state, no leftover temporary."""
    out = tmp_path / "two"
    _run(setup, out, 2, "dpo")
    work = out / "work"
    assert sorted(p.name for p in work.iterdir()) == ["step-0000003"]
    saved = {p.name for p in (work / "step-0000003").iterdir()}
    assert {"trainer_state.json", "random_states_0.pkl", "random_states_1.pkl"} <= saved
