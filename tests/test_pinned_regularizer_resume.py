"""Pinned: what `KLTerm` draws each step, and the training loop's checkpoint save/resume.

`tests/test_pinned_kl.py` pins each estimator's value and gradient for the samples a
`KLTerm` happened to draw, but not *which* samples it draws. Its docstring promises that
prompts and online samples come from generators seeded from (seed, step), "so a resumed run
draws exactly what an uninterrupted one would"; the draw is also part of what a spec's
content hash stands for (the same spec must train the same policy). So here the rows the
policy sees are compared, token for token, with an independent re-implementation of that
documented draw:

- prompts: `torch.randint(len(prompts), (prompts_per_step,))` with a generator seeded by
  `seed_from(seed, "reg-prompts", step)`, each prompt repeated `samples_per_prompt` times;
- online samples: `sample_completions(..., max_new_tokens, seed_from(seed, "reg-samples",
  step))` from `policy_for_sampling` (the unwrapped policy in the loop);
- the `reference` estimator's pool: the repeated prompt list sampled from the reference in
  chunks of 64, chunk i seeded by `seed_from(seed, "ref-pool", i)`, indexed
  `pool[prompt * samples_per_prompt + j]`.

The second half unit-tests `trainers.loop._save_checkpoint`, `_latest_checkpoint` and
`_resume` directly on a tiny model with `accelerate.Accelerator(cpu=True)`, instead of
through a whole training run (`tests/test_resume.py` kills the CLI, 40 s).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import trainers.regularizers as regularizers
from harness.hashing import seed_from
from harness.tasks.tiny_models import tiny_llama, word_tokenizer
from tests.conftest import one_torch_thread
from trainers.loop import _latest_checkpoint, _resume, _save_checkpoint
from trainers.regularizers import (
    KLTerm,
    exact_sequence_kl,
    k1_sequence_kl,
    k3_sequence_kl,
    sample_completions,
)
from trainers.tokenize import Encoded, encode_prompt

WORDS = [f"w{i}" for i in range(12)]
PROMPTS = ["w1", "w2 w3", "w4", "w5 w6 w7", "w8"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def models() -> tuple[Any, torch.nn.Module, torch.nn.Module]:
    """(tokenizer, policy, reference): tiny Llamas that differ by a fixed perturbation."""
    tok = word_tokenizer(WORDS)
    kw = dict(hidden_size=16, num_layers=1, num_heads=2, max_positions=32, seed=0)
    ref = tiny_llama(tok, **kw).eval().requires_grad_(False)
    policy = tiny_llama(tok, **kw).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    return tok, policy, ref


class Capture(torch.nn.Module):
    """Wraps a causal LM and records the rows (real tokens only) of every forward."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows: list[list[tuple[int, ...]]] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        self.rows.append([tuple(r[a.bool()].tolist()) for r, a in zip(input_ids, attention_mask)])
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def _rows(samples: list[Encoded]) -> list[tuple[int, ...]]:
    return [tuple(e.prompt_ids + e.completion_ids) for e in samples]


def _picks(seed: int, step: int, n_prompts: int, per_step: int) -> list[int]:
    """The documented prompt draw for (seed, step), written out independently."""
    g = torch.Generator().manual_seed(seed_from(seed, "reg-prompts", step))
    return torch.randint(n_prompts, (per_step,), generator=g).tolist()


# ------------------------------------------------------------------------- KLTerm draws


def test_unknown_estimator_is_rejected_with_the_known_names() -> None:
    """The error a user sees for a typo in `kl_estimator` names the bad value and every
    valid one (sorted), so the spec can be fixed from the message alone."""
    with pytest.raises(ValueError, match=r"^unknown kl_estimator 'k2'; known: "
                                         r"\['exact', 'k1', 'k3', 'reference'\]$"):
        KLTerm(None, None, PROMPTS, seed=0, estimator="k2")


@pytest.mark.parametrize("estimator", ["exact", "k1", "k3"])
def test_online_draw_is_the_documented_function_of_seed_and_step(models, estimator) -> None:
    """Online estimators: the prompts picked and the completions sampled at a step are the
    ones the documented (seed, step) generators give, and the returned value is the
    estimator's mean over exactly those samples.

    Catches the seed, the step or the stream label ("reg-prompts", "reg-samples") dropped
    or changed in either generator (a resumed run would draw other samples, or every step
    the same ones), max_new_tokens not reaching the sampler, and sampling from the wrapped
    policy instead of `policy_for_sampling`. Token ids are compared exactly: both sides run
    the same deterministic CPU sampling from the same seeds. The value is compared at
    rel 1e-6: the same float32 ops on the same inputs (bit-identical in practice).
    """
    tok, policy, ref = models
    seed, step, per_step, spp, new = 11, 4, 5, 2, 3
    fn = {"exact": exact_sequence_kl, "k1": k1_sequence_kl, "k3": k3_sequence_kl}[estimator]
    term = KLTerm(ref, tok, PROMPTS, seed, estimator=estimator, prompts_per_step=per_step,
                  samples_per_prompt=spp, max_new_tokens=new)
    assert term.pool is None
    wrapped = Capture(policy)
    value = term(wrapped, step, policy_for_sampling=policy)

    pick = _picks(seed, step, len(PROMPTS), per_step)
    want = sample_completions(policy, tok, [PROMPTS[i] for i in pick for _ in range(spp)],
                              new, seed_from(seed, "reg-samples", step))
    assert len(wrapped.rows) == 1
    assert wrapped.rows[0] == _rows(want)
    assert max(len(e.completion_ids) for e in want) == new  # the cap is what binds here
    assert float(value) == pytest.approx(float(fn(policy, ref, want, tok.pad_token_id).mean()),
                                         rel=1e-6)
    # and the draw really moves with the step and the seed (not a constant stream)
    assert _picks(seed, step + 1, len(PROMPTS), per_step) != pick
    assert _picks(seed + 1, step, len(PROMPTS), per_step) != pick


def test_kl_log_term_defaults_to_one_exact_sample_per_prompt(models) -> None:
    """The loop's KL log builds `KLTerm(reference, tok, prompts, seed, prompts_per_step=k,
    max_new_tokens=16)`, relying on the defaults: the exact estimator, one sample per
    prompt. Pins that such a term scores exactly k samples (the logged KL averages k
    prompts), drawn as documented; without `policy_for_sampling` it samples from `policy`.
    """
    tok, policy, ref = models
    seed, step, per_step = 3, 7, 4
    term = KLTerm(ref, tok, PROMPTS, seed, prompts_per_step=per_step, max_new_tokens=16)
    with torch.no_grad():
        value = term(policy, step)
    pick = _picks(seed, step, len(PROMPTS), per_step)
    want = sample_completions(policy, tok, [PROMPTS[i] for i in pick], 16,
                              seed_from(seed, "reg-samples", step))
    assert len(want) == per_step
    with torch.no_grad():
        expected = exact_sequence_kl(policy, ref, want, tok.pad_token_id).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-6)
    wrapped = Capture(policy)
    with torch.no_grad():
        term(wrapped, step, policy_for_sampling=policy)
    assert wrapped.rows[0] == _rows(want)


def test_reference_pool_is_sampled_in_seeded_chunks_of_64_and_indexed_per_prompt(models) -> None:
    """The `reference` estimator's pool, for 35 prompts x 2 samples (70 entries, two
    chunks), is exactly the documented chunked draw from the reference, and a step scores
    the pool entries `pool[i * spp + j]` of the prompts it picks.

    Catches the second chunk replacing the first (`=` for `+=`), a chunk size other than
    the 64 the seeds are keyed by (entries dropped or duplicated), the chunk seed losing
    its seed, label or offset, max_new_tokens not reaching the pool sampler, and a wrong
    pool index (`i * spp - j` picks another prompt's sample). Exact token comparison, as
    above: the same deterministic CPU sampling from the same seeds.
    """
    tok, policy, ref = models
    prompts = [f"w{i % 12} w{(5 * i + 3) % 12}" + (" w0" if i >= 12 else "")
               + (" w11" if i >= 24 else "") for i in range(35)]
    assert len(set(prompts)) == len(prompts)
    seed, spp, new, per_step, step = 9, 2, 2, 6, 5
    term = KLTerm(ref, tok, prompts, seed, estimator="reference", prompts_per_step=per_step,
                  samples_per_prompt=spp, max_new_tokens=new)
    repeated = [p for p in prompts for _ in range(spp)]
    want_pool = (sample_completions(ref, tok, repeated[:64], new, seed_from(seed, "ref-pool", 0))
                 + sample_completions(ref, tok, repeated[64:], new,
                                      seed_from(seed, "ref-pool", 64)))
    assert term.pool is not None
    assert len(term.pool) == len(repeated) == 70
    assert [e.prompt_ids for e in term.pool] == [encode_prompt(tok, p) for p in repeated]
    assert _rows(term.pool) == _rows(want_pool)
    assert max(len(e.completion_ids) for e in term.pool) == new

    wrapped = Capture(policy)
    with torch.no_grad():
        value = term(wrapped, step, policy_for_sampling=policy)
    pick = _picks(seed, step, len(prompts), per_step)
    want = [want_pool[i * spp + j] for i in pick for j in range(spp)]
    assert wrapped.rows[0] == _rows(want)
    with torch.no_grad():
        expected = exact_sequence_kl(policy, ref, want, tok.pad_token_id).mean()
    assert float(value) == pytest.approx(float(expected), rel=1e-6)


class _Recorded:
    """Stands in for one batch tensor; records the device it is moved to."""

    def __init__(self, tensor: torch.Tensor, moves: list[Any]) -> None:
        self.tensor, self.moves = tensor, moves

    def to(self, device: Any) -> torch.Tensor:
        self.moves.append(device)
        return self.tensor.to(device)


@pytest.mark.parametrize("fn", [exact_sequence_kl, k1_sequence_kl, k3_sequence_kl])
def test_estimators_move_the_batch_to_the_policys_device(models, monkeypatch, fn) -> None:
    """Each estimator sends every tensor of the padded batch to the device of the policy's
    parameters (on an accelerator the model lives on the GPU; a batch left where it was
    built fails there with a device mismatch). On a CPU-only machine the device a tensor
    is moved to is the only observable, so `pad_batch`'s tensors are wrapped to record
    the `.to(...)` argument; the estimate itself must be unchanged by the wrapping.
    """
    tok, policy, ref = models
    samples = sample_completions(policy, tok, PROMPTS, 3, seed=0)
    with torch.no_grad():
        want = fn(policy, ref, samples, tok.pad_token_id)
    moves: list[Any] = []
    real = regularizers.pad_batch

    def recording_pad_batch(items: list[Encoded], pad_id: int) -> dict[str, Any]:
        return {k: _Recorded(v, moves) for k, v in real(items, pad_id).items()}

    monkeypatch.setattr(regularizers, "pad_batch", recording_pad_batch)
    with torch.no_grad():
        got = fn(policy, ref, samples, tok.pad_token_id)
    assert moves == [next(policy.parameters()).device] * 3  # ids, attention, completion mask
    assert torch.equal(got, want)


# ------------------------------------------------------------------ checkpoint / resume


def _trainable(seed: int = 0) -> tuple[Any, torch.nn.Module, Any, Any]:
    """A tiny Llama with AdamW and a warm-up scheduler, prepared by a CPU Accelerator."""
    from accelerate import Accelerator

    tok = word_tokenizer(WORDS[:6])
    model = tiny_llama(tok, hidden_size=8, num_layers=1, num_heads=2, max_positions=16,
                       seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10))
    accelerator = Accelerator(cpu=True)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    return accelerator, model, optimizer, scheduler


def _step(model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    ids = torch.tensor([[1, 4, 5, 6, 2]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def accelerate_logs_unsilenced() -> Iterator[None]:
    """Accelerate's logger at its default level for the test (a save earlier in this
    process may have silenced it already), restored afterwards."""
    logger = logging.getLogger("accelerate")
    before = logger.level
    logger.setLevel(logging.NOTSET)
    yield
    logger.setLevel(before)


def test_resume_without_a_checkpoint_starts_from_scratch(tmp_path: Path) -> None:
    """No work folder, or one holding only an unfinished `.tmp-step-*` save (a kill during
    the save): the run starts at step 0 with no history, its model untouched."""
    accelerator, model, _, _ = _trainable()
    before = _weights(model)
    assert _resume(accelerator, tmp_path / "missing") == (0, [], [])
    (tmp_path / "work" / ".tmp-step-0000004").mkdir(parents=True)
    assert _latest_checkpoint(tmp_path / "work") is None
    assert _resume(accelerator, tmp_path / "work") == (0, [], [])
    after = _weights(model)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_save_then_resume_restores_step_logs_model_optimizer_scheduler_and_rng(
        tmp_path: Path) -> None:
    """A checkpoint saved after one optimizer step, then the state moved on (another step,
    RNG draws), then `_resume`: it returns the saved step, log history and pending window,
    and puts back the weights, AdamW moments, scheduler position and torch RNG exactly.

    No tolerance: safetensors and torch.save round-trip tensors bit for bit.
    """
    accelerator, model, optimizer, scheduler = _trainable()
    _step(model, optimizer, scheduler)
    history, window = [{"step": 2, "loss": 0.5}], [{"loss": 0.25, "kl": None}]
    work = tmp_path / "work"
    _save_checkpoint(accelerator, work, 3, history, window)
    saved_w = _weights(model)
    saved_opt = {k: v.clone() for k, v in optimizer.state_dict()["state"][0].items()}
    saved_epoch = scheduler.scheduler.last_epoch
    draws_after_save = torch.rand(4)

    _step(model, optimizer, scheduler)
    torch.rand(10)
    assert not torch.equal(_weights(model)["model.embed_tokens.weight"],
                           saved_w["model.embed_tokens.weight"])

    assert _resume(accelerator, work) == (3, history, window)
    got = _weights(model)
    assert all(torch.equal(got[k], v) for k, v in saved_w.items())
    state = optimizer.state_dict()["state"][0]
    assert all(torch.equal(state[k], v) for k, v in saved_opt.items())
    assert scheduler.scheduler.last_epoch == saved_epoch
    assert torch.equal(torch.rand(4), draws_after_save)


def test_save_creates_nested_work_dir_and_keeps_only_the_newest(tmp_path: Path) -> None:
    """The job's work folder may not exist yet, nor its parents: the first save creates
    them. Each save leaves one finished checkpoint (`step-%07d`, so names sort by step)
    and no temporary folder; resume picks it, step 12 after step 9 (zero padding makes
    that the newest by name as well as by number)."""
    accelerator, _, _, _ = _trainable()
    work = tmp_path / "results" / "work" / "spo-run"
    _save_checkpoint(accelerator, work, 9, [], [])
    assert sorted(p.name for p in work.iterdir()) == ["step-0000009"]
    _save_checkpoint(accelerator, work, 12, [{"step": 10}], [])
    assert sorted(p.name for p in work.iterdir()) == ["step-0000012"]
    assert _latest_checkpoint(work) == work / "step-0000012"
    assert _resume(accelerator, work)[0] == 12


def test_save_discards_a_stale_temporary_folder_from_an_interrupted_save(tmp_path: Path) -> None:
    """A kill during a save leaves `.tmp-step-<k>` half written; the next save of step k
    must start from an empty folder, so nothing of the stale attempt ends up in the
    finished checkpoint."""
    accelerator, _, _, _ = _trainable()
    work = tmp_path / "work"
    stale = work / ".tmp-step-0000003"
    stale.mkdir(parents=True)
    (stale / "model_1.safetensors").write_bytes(b"half written")
    _save_checkpoint(accelerator, work, 3, [], [])
    assert sorted(p.name for p in work.iterdir()) == ["step-0000003"]
    assert not (work / "step-0000003" / "model_1.safetensors").exists()
    assert (work / "step-0000003" / "trainer_state.json").exists()


def test_cleanup_of_old_checkpoints_is_best_effort(tmp_path: Path) -> None:
    """Removing older `step-*` entries happens after the new checkpoint is in place, so a
    leftover that cannot be removed (here a plain file named like a checkpoint, which
    `rmtree` refuses) must not make the save, and with it the training run, fail."""
    accelerator, _, _, _ = _trainable()
    work = tmp_path / "work"
    work.mkdir()
    (work / "step-0000001").write_text("not a checkpoint folder")
    _save_checkpoint(accelerator, work, 2, [], [])
    _save_checkpoint(accelerator, work, 4, [], [])
    assert (work / "step-0000004" / "trainer_state.json").exists()
    assert not (work / "step-0000002").exists()
    assert _latest_checkpoint(work) == work / "step-0000004"


def test_save_silences_accelerates_tied_weight_warning_and_nothing_else(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, accelerate_logs_unsilenced) -> None:
    """Accelerate warns on every save that the tied lm_head is dropped from the file (it
    is re-tied on load); the loop silences the `accelerate` logger for that, and only it:
    warnings from other loggers (the harness's own) must still come through afterwards.
    """
    accelerator, _, _, _ = _trainable()
    caplog.set_level(logging.WARNING)
    accelerator.save_state(str(tmp_path / "direct"))  # the warning exists unsilenced
    assert any(r.name.startswith("accelerate") for r in caplog.records)
    caplog.clear()
    _save_checkpoint(accelerator, tmp_path / "work", 1, [], [])
    assert [r for r in caplog.records if r.name.startswith("accelerate")] == []
    logging.getLogger("harness.pipeline").warning("still heard")
    assert [r.getMessage() for r in caplog.records] == ["still heard"]
