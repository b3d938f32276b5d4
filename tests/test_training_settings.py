"""Training at scale, one setting at a time (issue 11, item 1), on a tiny Llama built here.

* gradient accumulation: 4 micro-batches give the same losses, logged metrics and final
  weights as one batch of the same pairs (float32 re-association only: 1e-6 relative);
* gradient checkpointing: the same gradients as without (non-reentrant recomputation runs
  the same operations: 1e-6);
* bf16 mixed precision on a CPU: the forward really runs in bf16 (the loss moves by more
  than float32 rounding, less than bf16's ~3 significant digits) and the weights stay fp32;
* schedules: `linear` and `cosine` are transformers' (TRL's) closed forms; `constant` is ours;
* optimizers: each is the torch.optim class, and SGD's step is exactly p - lr * g;
* truncation: keep_start / keep_end cut exactly what TRL 1.16's DataCollatorForPreference
  cuts (the same scored tokens), keep_completion is the old rule, max_prompt_length cuts
  prompts from the left;
* at their defaults none of the settings enters a run's content key.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness.spec import TrainingSpec
from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
from tests.conftest import one_torch_thread
from trainers.loop import TrainJob, compute_reference_logps, make_optimizer, make_scheduler, train
from trainers.losses import get_loss
from trainers.tokenize import Truncation, truncate

WORDS = [f"w{i}" for i in range(24)]
MAX_LENGTH = 16


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[dict[str, str]]]:
    rng = random.Random(0)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    tok = word_tokenizer(WORDS)
    folder = tmp_path_factory.mktemp("tiny") / "ref"
    save_model(tiny_llama(tok, hidden_size=16, num_layers=2, num_heads=2,
                          max_positions=MAX_LENGTH, seed=0), tok, folder)
    pairs = [{"prompt": words(2, 4), "chosen": " " + words(1, 4), "rejected": " " + words(1, 4)}
             for _ in range(16)]
    return folder, pairs


def _train(tiny, tmp_path: Path, method: str = "dpo", params: dict | None = None, **settings):
    folder, pairs = tiny
    cfg = TrainingSpec(**{"epochs": 1, "batch_size": 8, "learning_rate": 0.01,
                          "max_length": MAX_LENGTH, "save_every": 100, "log_every": 1,
                          "kl_log_prompts": 0, **settings})
    ref = compute_reference_logps(folder, pairs, cfg.truncation())
    job = TrainJob(label="t", seed=0, reference_dir=folder, pairs=pairs,
                   reg_prompts=[p["prompt"] for p in pairs], training=cfg,
                   work_dir=tmp_path / f"work-{len(list(tmp_path.iterdir()))}", ref_logps=ref)
    model, _, history = train(job, get_loss(method, **(params or {"beta": 0.1})),
                              show_progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def _close(a: dict, b: dict, rel: float) -> float:
    worst = max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-12)) for k in a)
    assert worst < rel, worst
    return worst


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_accumulated_micro_batches_have_the_gradient_of_one_batch(tiny, method):
    """The maths, in float64: 4 micro-batches (uneven: 8 rows as 2+2+2+2, 7 as 2+2+2+1)
    give the one-batch gradient to 1e-12 (float64 re-association) and its metrics to the
    float32 they are computed in."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.loop import _accumulate, make_accelerator
    from trainers.objectives import make_objective

    folder, pairs = tiny
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64)
    ref = compute_reference_logps(folder, pairs, MAX_LENGTH)
    loss = get_loss(method, beta=0.1)
    objective = make_objective(loss, tok, pairs, ref, MAX_LENGTH, True, initial_model=model)
    accelerator = make_accelerator()
    for idx in (torch.arange(8), torch.arange(3, 10)):
        grads, metrics = [], []
        for steps in (1, 4):
            model.zero_grad()
            metrics.append(_accumulate(objective, model, idx, steps, accelerator))
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        for n in grads[0]:
            torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-12, atol=1e-15)
        assert metrics[1].keys() == metrics[0].keys()
        for k, v in metrics[0].items():
            if method == "kto" and k.startswith(("rewards/", "logps/")):
                continue  # KTO's per-class means are weighted by rows, not by class sizes
            # the losses' metrics are float32 (the reference log-probs are): 1e-6
            assert math.isclose(metrics[1][k], v, rel_tol=1e-6, abs_tol=1e-9), k


@pytest.mark.parametrize("method,params", [("dpo", {"beta": 0.1}),
                                           ("spo", {"alpha": 1.0, "lambda": 0.1,
                                                    "reg_prompts_per_step": 2,
                                                    "reg_max_new_tokens": 2})])
def test_accumulated_training_equals_one_batch_training(tiny, tmp_path, method, params):
    """The loop in float32, SPO's KL term included: the same logged losses to 1e-5 and the
    same weights to 1e-4 of how far they moved. float32 gradients of 4 micro-batches differ
    from one batch's by ~6e-7 relative (measured); two clipped steps amplify that to ~3e-5
    of the weight change (DPO) and SPO's online KL term, sampled from the moving policy,
    to ~2e-4 on an AMD EPYC and 5.5e-4 on an Intel Xeon (float kernels differ by CPU); 5e-4
    bounds DPO, 1e-3 SPO. The exact maths is the float64 test above."""
    init = tiny_llama(word_tokenizer(WORDS), hidden_size=16, num_layers=2, num_heads=2,
                      max_positions=MAX_LENGTH, seed=0).state_dict()
    one, h1 = _train(tiny, tmp_path, method, params)
    four, h4 = _train(tiny, tmp_path, method, params, gradient_accumulation_steps=4)
    moved = {k: (one[k] - init[k]).abs().max() for k in one}
    assert max(float(m) for m in moved.values()) > 1e-3  # the models did train
    worst = max(float((four[k] - one[k]).abs().max() / (moved[k] + 1e-12)) for k in one)
    assert worst < (1e-3 if method == "spo" else 5e-4), worst
    assert [set(r) for r in h4] == [set(r) for r in h1] and len(h1) == 2
    for a, b in zip(h4, h1):
        for k in b:
            assert math.isclose(a[k], b[k], rel_tol=1e-5, abs_tol=1e-6), (k, a[k], b[k])


def test_gradient_checkpointing_gives_the_same_training(tiny, tmp_path):
    plain, hp = _train(tiny, tmp_path)
    ckpt, hc = _train(tiny, tmp_path, gradient_checkpointing=True)
    _close(ckpt, plain, 1e-6)
    assert [r["loss"] for r in hc] == pytest.approx([r["loss"] for r in hp], rel=1e-6)


def test_bf16_on_a_cpu_runs_the_forward_in_bf16_and_keeps_fp32_weights(tiny, tmp_path):
    fp32, h32 = _train(tiny, tmp_path)
    bf16, h16 = _train(tiny, tmp_path, precision="bf16")
    assert all(v.dtype == torch.float32 for v in bf16.values())
    # step 1's loss is log 2 - tiny terms in both; bf16 logits move it by more than float32
    # rounding (1e-7) and less than bf16's 8-bit mantissa allows (2^-8 relative)
    diffs = [abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(h16, h32)]
    assert max(diffs) > 1e-6 and max(diffs) < 2 ** -6, diffs
    # the same direction of travel: the weight changes of the two runs are near-parallel
    init = tiny_llama(word_tokenizer(WORDS), hidden_size=16, num_layers=2, num_heads=2,
                      max_positions=MAX_LENGTH, seed=0).state_dict()
    d16, d32 = (torch.cat([(w[k] - init[k]).flatten() for k in w]) for w in (bf16, fp32))
    assert float(torch.nn.functional.cosine_similarity(d16, d32, dim=0)) > 0.9


def test_fp16_without_cuda_is_an_input_error(tiny, tmp_path):
    from harness.errors import InputError

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: fp16 is allowed")
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU"):
        _train(tiny, tmp_path, precision="fp16")


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_schedules_are_the_closed_forms(name):
    w, total, lr = 3, 10, 0.5
    cfg = TrainingSpec(learning_rate=lr, warmup_steps=w, lr_scheduler=name)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = make_optimizer(cfg, [p])
    sched = make_scheduler(cfg, opt, total)
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    if name == "constant":  # ours: warm-up reaches lr/w on the first step
        want = [lr * min(1.0, (s + 1) / w) for s in range(total)]
    elif name == "linear":  # transformers' get_linear_schedule_with_warmup
        want = [lr * (s / w if s < w else (total - s) / (total - w)) for s in range(total)]
    else:  # get_cosine_schedule_with_warmup, half a cycle
        want = [lr * (s / w if s < w else
                      0.5 * (1 + math.cos(math.pi * (s - w) / (total - w))))
                for s in range(total)]
    assert seen == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_optimizers_are_torchs_and_sgd_steps_exactly():
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
             "adafactor": torch.optim.Adafactor}
    for name, cls in kinds.items():
        opt = make_optimizer(TrainingSpec(optimizer=name), [torch.nn.Parameter(torch.ones(2))])
        assert type(opt) is cls
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = make_optimizer(TrainingSpec(optimizer="sgd", learning_rate=0.25), [p])
    (p * torch.tensor([3.0, 5.0])).sum().backward()
    opt.step()
    assert p.detach().tolist() == [1.0 - 0.25 * 3.0, -2.0 - 0.25 * 5.0]


# ---------------------------------------------------------------------------- truncation

def _trl_scored(prompt: list[int], completion: list[int], max_length: int, mode: str):
    """The tokens TRL 1.16 scores: DataCollatorForPreference's truncated sequence and
    completion mask, shifted as its loss shifts them (a sequence's first token is never
    predicted)."""
    trl = pytest.importorskip("trl.trainer.dpo_trainer", reason="TRL is in the dev extra")
    batch = trl.DataCollatorForPreference(pad_token_id=0, max_length=max_length,
                                          truncation_mode=mode)(
        [{"prompt_ids": prompt, "chosen_ids": completion, "rejected_ids": completion}])
    n = int(batch["attention_mask"][0].sum())
    ids, mask = batch["input_ids"][0][:n].tolist(), batch["completion_mask"][0][:n].tolist()
    return ids, [t for t, m in zip(ids[1:], mask[1:]) if m]


CASES = [(list(range(1, 6)), list(range(10, 14)), 7), (list(range(1, 3)), list(range(10, 20)), 6),
         (list(range(1, 4)), list(range(10, 12)), 9), (list(range(1, 9)), [10], 4)]


@pytest.mark.parametrize("prompt,completion,max_length", CASES)
@pytest.mark.parametrize("mode", ["keep_start", "keep_end"])
def test_trl_truncation_modes_score_the_tokens_trl_scores(prompt, completion, max_length, mode):
    ids, scored = _trl_scored(prompt, completion, max_length, mode)
    if mode == "keep_start" and len(prompt) >= max_length:  # TRL drops the row; we refuse it
        with pytest.raises(ValueError, match="no completion token"):
            truncate(prompt, completion, Truncation(max_length, mode))
        return
    e = truncate(prompt, completion, Truncation(max_length, mode))
    assert e.prompt_ids + e.completion_ids == ids and e.completion_ids == scored


def test_keep_completion_is_the_old_rule_and_max_prompt_length_cuts_from_the_left():
    e = truncate(list(range(1, 9)), [10, 11, 12], Truncation(6))
    assert (e.prompt_ids, e.completion_ids) == ([6, 7, 8], [10, 11, 12])
    e = truncate(list(range(1, 9)), list(range(10, 20)), 6)  # an int: the same rule
    assert (e.prompt_ids, e.completion_ids) == ([8], list(range(10, 15)))
    e = truncate(list(range(1, 9)), [10], Truncation(32, max_prompt_length=3))
    assert (e.prompt_ids, e.completion_ids) == ([6, 7, 8], [10])


def test_defaults_stay_out_of_the_run_key_and_a_setting_enters_it():
    plain = TrainingSpec()
    assert set(plain.key()) == {"epochs", "batch_size", "learning_rate", "weight_decay",
                                "warmup_steps", "max_grad_norm", "max_length", "save_every",
                                "log_every", "kl_log_prompts"}
    assert Truncation(128).key() == 128  # the ref-logps key of the default stays the int
    for setting, value in [("precision", "bf16"), ("gradient_accumulation_steps", 2),
                           ("gradient_checkpointing", True), ("lr_scheduler", "linear"),
                           ("optimizer", "sgd"), ("truncation_mode", "keep_end"),
                           ("max_prompt_length", 64)]:
        key = TrainingSpec(**{setting: value}).key()
        assert key[setting] == value and len(key) == len(plain.key()) + 1
