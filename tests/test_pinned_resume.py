"""Pinned: resuming really resumes, both inside one training run and across SPPO iterates.

`tests/test_resume.py` kills the whole CLI and compares the final leaderboard; a loop that
silently restarted from step 0 (deterministically) would pass it, only slower. These tests
count the work a resumed run does, in process:

* the training loop (`trainers.loop.train`), interrupted after a step-k checkpoint, runs
  exactly the remaining optimizer steps on resume, from the newest checkpoint, and ends with
  bit-identical weights and history to an uninterrupted run;
* SPPO (`harness.iterative.train_sppo`) never trains an iterate the store already holds:
  a rerun after an interruption trains only the missing iterate, starting from the stored
  one, and a rerun with every iterate stored trains nothing. The existing
  `test_sppo_runs_its_iterations_and_resumes_from_stored_iterates` only compares weights,
  which a deterministic retrain reproduces; here the training calls are counted.

Interruptions are simulated by raising from a hook (an optimizer step hook, or a wrapper
around `trainers.loop.train`), which leaves the work folder and the store exactly as a kill
at that point would.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

import trainers.loop as loop
from harness.lock import release_results_dir
from harness.spec import TrainingSpec, load_spec
from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
from tests.conftest import TINY_SPEC, one_torch_thread
from trainers.loop import TrainJob, compute_reference_logps
from trainers.losses import get_loss

WORDS = [f"w{i}" for i in range(24)]
N_PAIRS = 8
MAX_LENGTH = 16
# 8 pairs in batches of 4: 2 steps per epoch, 8 steps in all. Checkpoints at steps 3 and 6;
# a log line every 2 steps, so a checkpoint's pending log window (step 3) must be restored
# too. Warm-up spans the whole run, so a scheduler that is not restored changes the lr.
TRAINING = TrainingSpec(epochs=4, batch_size=4, learning_rate=0.01, weight_decay=0.0,
                        warmup_steps=8, max_grad_norm=1.0, max_length=MAX_LENGTH,
                        save_every=3, log_every=2, kl_log_prompts=0)
TOTAL_STEPS = 8
# SPO with its online KL term: each step samples from the policy with a (seed, step)
# generator, so a resumed run only matches if it resumes at the right step index.
LOSS_PARAMS = {"alpha": 1.0, "lambda": 0.1, "reg_prompts_per_step": 2, "reg_max_new_tokens": 2}

SPPO_METHOD = "  - name: sppo\n    params: {beta: 0.1, iterations: 2, samples_per_prompt: 4}\n"
SPPO_LABEL = "sppo(beta=0.1,iterations=2,samples_per_prompt=4)"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


class Interrupted(Exception):
    """Stands in for a kill: raised from a hook, it unwinds the run at a chosen point."""


@contextmanager
def counting_optimizer_steps(stop_after: int | None = None) -> Iterator[list[int]]:
    """Count every optimizer step taken in the block; raise Interrupted after `stop_after`.

    The hook runs right after `optimizer.step()`, before the loop could save a checkpoint
    for that step, so the steps since the last checkpoint are lost as in a kill.
    """
    count = [0]

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        count[0] += 1
        if stop_after is not None and count[0] == stop_after:
            raise Interrupted(f"interrupted after optimizer step {count[0]}")

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


@dataclass
class Tiny:
    reference_dir: Path
    pairs: list[dict[str, str]]
    reg_prompts: list[str]
    ref_logps: tuple[torch.Tensor, torch.Tensor]


@dataclass
class Finished:
    state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    steps: int


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """A tiny Llama saved in Hugging Face format, with random pairs over its vocabulary."""
    rng = random.Random(0)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    tok = word_tokenizer(WORDS)
    folder = tmp_path_factory.mktemp("tiny") / "ref"
    save_model(tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2,
                          max_positions=MAX_LENGTH, seed=0), tok, folder)
    pairs = [{"prompt": words(2, 4), "chosen": " " + words(1, 3),
              "rejected": " " + words(1, 3)} for _ in range(N_PAIRS)]
    return Tiny(folder, pairs, [words(2, 4) for _ in range(4)],
                compute_reference_logps(folder, pairs, MAX_LENGTH))


def run_training(tiny: Tiny, work_dir: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """One call of the shared training loop on the tiny setup; (final weights, history)."""
    job = TrainJob(label="resume", seed=0, reference_dir=tiny.reference_dir, pairs=tiny.pairs,
                   reg_prompts=tiny.reg_prompts, training=TRAINING, work_dir=work_dir,
                   ref_logps=tiny.ref_logps)
    model, _, history = loop.train(job, get_loss("spo", **LOSS_PARAMS), show_progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def interrupt_training(tiny: Tiny, work_dir: Path, stop_after: int) -> None:
    """Run the loop until it is interrupted after its `stop_after`-th optimizer step."""
    with counting_optimizer_steps(stop_after), pytest.raises(Interrupted):
        run_training(tiny, work_dir)


def checkpoints(work_dir: Path) -> list[str]:
    return sorted(p.name for p in work_dir.glob("step-*"))


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    differ = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differ, f"{len(differ)} of {len(want)} tensors differ, e.g. {differ[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """The same run in one go: the weights and history every resumed run must reproduce."""
    with counting_optimizer_steps() as steps:
        state, history = run_training(tiny, tmp_path_factory.mktemp("uninterrupted"))
    assert steps[0] == TOTAL_STEPS
    assert [h["step"] for h in history] == [2, 4, 6, 8]
    start = load_file(tiny.reference_dir / "model.safetensors")
    assert any(not torch.equal(state[k], v) for k, v in start.items()), "training moved nothing"
    return Finished(state, history, steps[0])


def test_resume_from_a_step_k_checkpoint_runs_only_the_remaining_steps(tiny, uninterrupted,
                                                                        tmp_path):
    """Catches a loop that ignores the checkpoint (restarts at step 0: 8 steps), resumes one
    step late or early (4 or 6 steps; different weights), or restores the weights but not
    the optimizer, scheduler or pending log window (same count, different weights/history).

    No tolerance: on one CPU process every step is a deterministic function of the state
    that Accelerate saved exactly (safetensors and torch.save round-trip float32 bit for
    bit), so a faithful resume gives bit-identical weights; torch.equal is the right test.
    """
    work = tmp_path / "work"
    interrupt_training(tiny, work, stop_after=5)  # steps 4 and 5 are lost with the process
    assert checkpoints(work) == ["step-0000003"]

    with counting_optimizer_steps() as steps:
        state, history = run_training(tiny, work)
    assert steps[0] == TOTAL_STEPS - 3, f"resuming from step 3 took {steps[0]} optimizer steps"
    assert_same_weights(state, uninterrupted.state)
    assert history == uninterrupted.history


def test_resume_picks_the_newest_checkpoint_after_two_interruptions(tiny, uninterrupted,
                                                                     tmp_path):
    """Catches resuming from the oldest checkpoint in the folder (a kill between a save's
    rename and its clean-up leaves two): that would retrain steps 4-6 (5 steps, not 2).
    Also pins that a resumed run can itself be interrupted and resumed again.

    No tolerance, for the reason given in the test above.
    """
    work, stale = tmp_path / "work", tmp_path / "stale-step-3"
    interrupt_training(tiny, work, stop_after=4)
    assert checkpoints(work) == ["step-0000003"]
    shutil.copytree(work / "step-0000003", stale)

    with counting_optimizer_steps(stop_after=4) as steps, pytest.raises(Interrupted):
        run_training(tiny, work)  # resumes at step 3; killed after step 7
    assert steps[0] == 4
    assert checkpoints(work) == ["step-0000006"]
    # as left by a kill after step 6's checkpoint was renamed, before step 3's was removed
    shutil.copytree(stale, work / "step-0000003")

    with counting_optimizer_steps() as steps:
        state, history = run_training(tiny, work)
    assert steps[0] == TOTAL_STEPS - 6, f"resuming from step 6 took {steps[0]} optimizer steps"
    assert_same_weights(state, uninterrupted.state)
    assert history == uninterrupted.history


# ------------------------------------------------------------------------------- SPPO


@dataclass
class TrainCall:
    label: str
    reference_dir: Path


@contextmanager
def counting_train_calls(monkeypatch: pytest.MonkeyPatch,
                         interrupt_at: int | None = None) -> Iterator[list[TrainCall]]:
    """Record every `trainers.loop.train` call (SPPO looks it up there at each run); raise
    Interrupted instead of making call number `interrupt_at` (1-based)."""
    calls: list[TrainCall] = []
    real: Callable[..., Any] = loop.train

    def train(job: TrainJob, loss_fn: Any, **kwargs: Any) -> Any:
        calls.append(TrainCall(job.label, Path(job.reference_dir)))
        if len(calls) == interrupt_at:
            raise Interrupted(f"interrupted before {job.label}")
        return real(job, loss_fn, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(loop, "train", train)
        yield calls


def train_stage(spec_path: Path, results: Path) -> None:
    """The pipeline's train stage, in process, as `spo-harness train` runs it."""
    from harness.pipeline import Experiment

    exp = Experiment(load_spec(spec_path), results, show_progress=False)
    try:
        exp.train()
    finally:
        exp.store.close()
        release_results_dir(exp.results_dir)


def prepare_stage(spec_path: Path, results: Path) -> None:
    """Build the task (the bandit's SFT reference) into `results`, training nothing."""
    from harness.pipeline import Experiment

    exp = Experiment(load_spec(spec_path), results, show_progress=False)
    try:
        exp.assets  # noqa: B018 - the property builds and stores the task's assets
    finally:
        exp.store.close()
        release_results_dir(exp.results_dir)


def sppo_iterates(results: Path) -> list[Path]:
    with sqlite3.connect(results / "store.sqlite") as db:
        rows = db.execute("SELECT path FROM artifacts WHERE kind='sppo-iterate'").fetchall()
    return sorted(results / "artifacts" / Path(p).name for (p,) in rows)


def final_weights(results: Path) -> dict[str, torch.Tensor]:
    """The stored checkpoint of the SPPO run (its last iterate, as the pipeline saves it)."""
    with sqlite3.connect(results / "store.sqlite") as db:
        (path,) = db.execute("SELECT checkpoint FROM runs WHERE label=?",
                             (SPPO_LABEL,)).fetchone()
    return load_file(results / "artifacts" / Path(path).name / "model.safetensors")


def test_sppo_trains_only_the_iterates_the_store_does_not_hold(tmp_path, monkeypatch, capfd):
    """Catches SPPO retraining an iterate it finds in the store (e.g. ignoring the lookup,
    or reusing all but the last), and resuming without building on the stored iterate
    (iteration 2 trained from the SFT reference instead of iterate 1).

    A deterministic retrain reproduces the same weights, so only counting the training calls
    (and checking what each one starts from) tells the two apart. Weights are compared with
    torch.equal: the resumed iteration starts from the very files the uninterrupted one
    starts from, so nothing may differ by even a rounding.
    """
    spec = tmp_path / "sppo.yaml"
    text = TINY_SPEC.replace("  - name: dpo\n    params: {beta: 1}\n", "")
    text = text.replace("  - name: spo\n    params: {alpha: 1, lambda: 0.1, "
                        "reg_prompts_per_step: 2, reg_max_new_tokens: 2}\n", SPPO_METHOD)
    text = text.replace("epochs: 12", "epochs: 2")  # only the bookkeeping matters here
    assert SPPO_METHOD in text and "name: dpo" not in text and "name: spo\n" not in text
    spec.write_text(text)
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    prepare_stage(spec, uninterrupted)
    shutil.copytree(uninterrupted, resumed)  # the same SFT reference, built once

    capfd.readouterr()
    with counting_train_calls(monkeypatch) as calls:
        train_stage(spec, uninterrupted)
    assert [c.label for c in calls] == [f"{SPPO_LABEL} iter 1/2", f"{SPPO_LABEL} iter 2/2"]
    # show_progress=False silences the self-play sampling bar too
    assert "sppo samples" not in capfd.readouterr().err
    want = final_weights(uninterrupted)

    # Interrupted before iteration 2: the store holds iterate 1 only.
    with counting_train_calls(monkeypatch, interrupt_at=2) as calls, pytest.raises(Interrupted):
        train_stage(spec, resumed)
    assert len(calls) == 2
    (iterate_1,) = sppo_iterates(resumed)

    # The rerun trains iteration 2 alone, from the stored iterate 1.
    with counting_train_calls(monkeypatch) as calls:
        train_stage(spec, resumed)
    assert calls == [TrainCall(f"{SPPO_LABEL} iter 2/2", iterate_1)], calls
    assert len(sppo_iterates(resumed)) == 2
    assert_same_weights(final_weights(resumed), want)
    start = load_file(iterate_1 / "model.safetensors")
    assert any(not torch.equal(want[k], v) for k, v in start.items()), "iteration 2 moved nothing"

    # Every iterate stored, the finished run dropped: nothing is trained again.
    with sqlite3.connect(resumed / "store.sqlite") as db:
        db.execute("DELETE FROM runs WHERE label=?", (SPPO_LABEL,))
    with counting_train_calls(monkeypatch) as calls:
        train_stage(spec, resumed)
    assert calls == [], f"stored iterates were trained again: {[c.label for c in calls]}"
    assert_same_weights(final_weights(resumed), want)
