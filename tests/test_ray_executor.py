"""`--executor ray` (issue 11): a sweep's runs trained as Ray tasks, the later stages local.

One local Ray cluster (2 CPUs), started by this module, serves the tests; the command
line connects to it with `--address`. A 4-run sweep of the tiny spec runs once with the
local executor and once on Ray, where one training worker is killed (`kill -9`) as soon as
a run has written its first resumable checkpoint. Ray runs the task again (it resumes from
that checkpoint), and the Ray run ends with the local run's store and leaderboard, digit
for digit: each task trains with the same seed, data and one torch thread as the local
run, and the driver alone commits.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import (
    CLI,
    ENV,
    TINY_BASE,
    describe,
    digest,
    leaderboard,
    run_json,
    store_contents,
    write_spec,
)

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install "
                                        "'spo-harness[ray]'")

# 4 runs; a short report (the bootstrap is not what is tested here)
SWEEP = (TINY_BASE.replace("alpha: 1,", "alpha: [1, 2],").replace("{beta: 1}", "{beta: [1, 2]}")
         + "report: {embedding_diversity: false, bootstrap_rounds: 100, style_control: false}\n")
N_SWEEP = 4


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local Ray cluster for this module; its address. Token authentication is Ray's
    default for a local cluster, and a driver given an address sends the token only when
    RAY_AUTH_MODE=token says so."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def training_workers() -> list[int]:
    """Pids of Ray workers running a training task (their title is ray::<function>)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(
                    b"ray::train_run"):
                pids.append(int(proc.name))
        except OSError:  # ended meanwhile
            continue
    return pids


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cluster) -> dict:
    root = tmp_path_factory.mktemp("ray")
    spec = write_spec(root / "sweep.yaml", SWEEP)
    # both at once: the Ray workers mostly wait for their imports, and the suite for them
    local = subprocess.Popen([*CLI, "run", str(spec), "--results-dir", str(root / "local"),
                              "--quiet"], cwd=root, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    results = root / "ray"
    env = {**ENV, "RAY_AUTH_MODE": "token"}
    proc = subprocess.Popen([*CLI, "run", str(spec), "--results-dir", str(results),
                             "--executor", "ray", "--address", cluster, "--quiet"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    killed = None
    while killed is None and proc.poll() is None:
        if any(results.glob("work/run-*/step-*")):  # a run is mid-way, resumable
            for pid in training_workers():
                os.kill(pid, signal.SIGKILL)
                killed = pid
                break
        time.sleep(0.005)
    for p in (proc, local):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, describe(subprocess.CompletedProcess(p.args, p.returncode,
                                                                      out, err))
    return {"local": root / "local", "ray": results, "killed": killed}


def test_a_ray_sweep_gives_the_local_leaderboard_digit_for_digit(sweep):
    local, on_ray = sweep["local"], sweep["ray"]
    assert digest(on_ray / "leaderboard.json") == digest(local / "leaderboard.json")
    assert len(leaderboard(on_ray)) == N_SWEEP + 1
    assert store_contents(on_ray) == store_contents(local)
    for ckpt in (local / "artifacts").glob("checkpoint-*"):
        weights = (on_ray / "artifacts" / ckpt.name / "model.safetensors").read_bytes()
        assert weights == (ckpt / "model.safetensors").read_bytes(), ckpt.name


def test_a_worker_killed_mid_run_is_retried_and_nothing_is_lost(sweep):
    on_ray = sweep["ray"]
    assert sweep["killed"] is not None, "no training worker was seen to kill"
    counts = run_json(on_ray)["counts"]["train"]
    assert counts == {"computed": N_SWEEP + 1, "cached": 0}  # the runs + the ref log-probs
    runs = {json.loads((p / "spo_harness_run.json").read_text())["label"]
            for p in (on_ray / "artifacts").glob("checkpoint-*")}
    assert len(runs) == N_SWEEP
    assert not list((on_ray / "artifacts").glob(".tmp-*"))
    assert not list((on_ray / "work").glob("run-*"))
