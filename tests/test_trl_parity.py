"""Parity with TRL 1.16: first-batch losses and 50-step loss curves on a tiny Llama.

What is compared
----------------
(a) First batch. TRL's `DPOTrainer` (loss_type sigmoid, ipo, hinge, robust) and
    `trl.experimental.cpo.CPOTrainer` (loss_type simpo, cpo_alpha=0) run one optimizer
    step on the whole dataset as one batch (so TRL's sampler order is irrelevant) with
    logging_steps=1; the `loss` TRL logs for step 1 is the loss of that batch before the
    update. Ours is `get_loss(name, ...)` applied to `trainers.logprobs.completion_logps`
    of fresh copies of the same models on `trainers.tokenize.encode` ids. The policy and
    the reference are two differently seeded models: with policy == reference every
    DPO-family loss is a constant at step 0 and would test nothing. The models are
    initialised with a wide weight range (`INIT_RANGE`) so that per-token log-probs
    differ by several nats between tokens, and a misaligned token would move the summed
    log-probs, which are compared too. Tolerance 1e-5 on the loss (fp32; the two sides
    differ only in how the log-softmax is reduced: measured 1.2e-7 to 4.8e-7, one or two
    fp32 ulps at these losses of 1.3 to 5.6).
(b) Curves. Our `trainers.loop.train` and TRL's `DPOTrainer` train the same saved model
    (Llama's default init range, 0.02) for 50 steps (16 pairs, batch 8, 25 epochs) with
    the same optimizer (torch AdamW, not the fused one TRL picks by default:
    `optim="adamw_torch"`), constant learning rate, no warm-up, no weight decay, gradient
    clipping at 1.0, fp32, reference log-probs precomputed from the initial model on both
    sides. Data order: our loop draws each epoch's order as
    `torch.randperm(n, generator=seed_from(seed, "epoch", epoch))`; TRL gets the dataset
    already laid out in that order, epoch after epoch, and reads it with
    `train_sampling_strategy="sequential"`, so step k sees the same 8 pairs on both sides.
    Tolerance `CURVE_TOL` = 1e-5 absolute on every step's loss. Measured: at most 6.6e-7
    (rounding in the log-prob reductions, carried through Adam), while the loss moves by
    up to 0.16 per step and a 1% change of the learning rate alone moves the curve by
    2.5e-3 (dpo) and 4.2e-3 (ipo) at some step (`test_curve_tolerance_is_sensitive`).
    With the wide init of (a) the curves are chaotic (IPO overshoots and oscillates) and
    the same rounding grows to 1.6e-4 by step 49, which is why (b) uses the default init.

How the token sequences are aligned
-----------------------------------
Ours (`encode`): [BOS] + tok(prompt) and tok(completion) + [EOS], each tokenized with
`add_special_tokens=False`. TRL's `DPOTrainer` (standard text format) appends the EOS
*text* to chosen/rejected, tokenizes `prompt` and `prompt + completion` with the
tokenizer's own special tokens, and takes the completion as what follows their common
prefix. `CPOTrainer` tokenizes `prompt` and `prompt + completion` without special tokens
and prepends the BOS id / appends the EOS id where missing. The test tokenizer is the
whitespace word-level one of `harness.tasks.tiny_models.word_tokenizer` plus a
post-processor that prepends BOS (so TRL's `tok(text)` starts with BOS like `encode`);
prompts end on a word and completions start with a space, so tokenizing
`prompt + completion` jointly equals concatenating the separate tokenizations, and the
EOS text is split off as its special token. All three routes thus give identical ids;
the tests assert it row by row before comparing any number. Every sequence is shorter
than `MAX_LENGTH`, so neither side truncates. Both sides then sum log-probs over the
same positions (completion mask shifted by one): TRL through its chunked fused
LM-head kernel, ours through a full log-softmax.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

pytest.importorskip("trl", reason="TRL parity tests need trl (pip install 'trl==1.16.0', "
                                  "part of the dev extra)")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from harness.hashing import seed_from  # noqa: E402
from harness.spec import TrainingSpec  # noqa: E402
from harness.tasks.tiny_models import save_model, word_tokenizer  # noqa: E402
from trainers.logprobs import completion_logps  # noqa: E402
from trainers.loop import TrainJob, compute_reference_logps, train  # noqa: E402
from trainers.losses import get_loss  # noqa: E402
from trainers.tokenize import encode, pad_batch  # noqa: E402

# transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; TRL 1.16
# still sets the old name, so every DPOConfig/CPOConfig warns.
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")

WORDS = [f"w{i}" for i in range(60)]
N_PAIRS = 16
MAX_LENGTH = 64
INIT_RANGE = 0.5          # wide init: per-token log-probs spread over several nats
FIRST_BATCH_TOL = 1e-5
CURVE_TOL = 1e-5
CURVE_STEPS, CURVE_BATCH, CURVE_LR = 50, 8, 1e-3
CURVE_INIT_RANGE = 0.02   # Llama's default: a smooth curve (see the module docstring)

# name: (TRL trainer, TRL config kwargs, our hyperparameters)
CASES = {
    "dpo": ("dpo", {"loss_type": ["sigmoid"], "beta": 0.5}, {"beta": 0.5}),
    "ipo": ("dpo", {"loss_type": ["ipo"], "beta": 0.5}, {"beta": 0.5}),
    "hinge": ("dpo", {"loss_type": ["hinge"], "beta": 0.5}, {"beta": 0.5}),
    "rdpo": ("dpo", {"loss_type": ["robust"], "beta": 0.5, "label_smoothing": 0.1},
             {"beta": 0.5, "label_smoothing": 0.1}),
    "simpo": ("cpo", {"loss_type": "simpo", "beta": 2.0, "simpo_gamma": 0.5, "cpo_alpha": 0.0},
              {"beta": 2.0, "gamma": 0.5}),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine they only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tokenizer():
    from tokenizers.processors import TemplateProcessing

    t = word_tokenizer(WORDS)
    t._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", t.bos_token_id)])
    return t


def _rows() -> list[dict[str, str]]:
    rng = random.Random(0)

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [{"prompt": words(3, 8), "chosen": " " + words(2, 9), "rejected": " " + words(2, 9)}
            for _ in range(N_PAIRS)]


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return _rows()


def _model(tok, seed: int, init_range: float = INIT_RANGE) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=MAX_LENGTH,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, initializer_range=init_range)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class _Logs(TrainerCallback):
    def __init__(self) -> None:
        self.steps: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.steps.append(dict(logs))


def _common_args(tmp_path: Path, **kw):
    return dict(output_dir=str(tmp_path / "trl"), bf16=False, gradient_checkpointing=False,
                report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True,
                dataloader_pin_memory=False, optim="adamw_torch", lr_scheduler_type="constant",
                warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0,
                max_length=MAX_LENGTH, **kw)


def _trl_trainer(kind: str, cfg: dict, tok, rows, tmp_path: Path, model, ref_model, logs,
                 **args):
    if kind == "dpo":
        trainer = DPOTrainer(model, ref_model=ref_model,
                             args=DPOConfig(**_common_args(tmp_path, precompute_ref_log_probs=True,
                                                           **cfg, **args)),
                             train_dataset=Dataset.from_list(rows), processing_class=tok,
                             callbacks=[logs])
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        trainer = CPOTrainer(model, args=CPOConfig(**_common_args(tmp_path, **cfg, **args)),
                             train_dataset=Dataset.from_list(rows), processing_class=tok,
                             callbacks=[logs])
    trainer.remove_callback(PrinterCallback)
    return trainer


def _assert_same_tokens(kind: str, dataset, tok, rows) -> None:
    for i, (row, d) in enumerate(zip(rows, dataset)):
        for side in ("chosen", "rejected"):
            e = encode(tok, row["prompt"], row[side], MAX_LENGTH)
            if kind == "dpo":
                got = (d["prompt_ids"], d[f"{side}_ids"])
            else:
                full, labels = d[f"{side}_input_ids"], d[f"{side}_labels"]
                n_prompt = sum(1 for x in labels if x == -100)
                got = (full[:n_prompt], full[n_prompt:])
            assert got == (e.prompt_ids, e.completion_ids), f"row {i} {side}: TRL {got} vs ours"


@pytest.mark.parametrize("name", list(CASES))
def test_first_batch_loss_matches_trl(name, tok, rows, tmp_path):
    kind, trl_cfg, ours_cfg = CASES[name]
    logs = _Logs()
    trainer = _trl_trainer(kind, trl_cfg, tok, rows, tmp_path, _model(tok, 1),
                           _model(tok, 2) if kind == "dpo" else None, logs,
                           learning_rate=1e-3, max_steps=1, per_device_train_batch_size=N_PAIRS)
    _assert_same_tokens(kind, trainer.train_dataset, tok, rows)
    trainer.train()
    trl_log = logs.steps[0]

    dev = trainer.accelerator.device
    enc = [encode(tok, r["prompt"], r[side], MAX_LENGTH)
           for side in ("chosen", "rejected") for r in rows]
    batch = {k: v.to(dev) for k, v in pad_batch(enc, tok.pad_token_id).items()}
    with torch.no_grad():
        pol, _ = completion_logps(_model(tok, 1).to(dev), batch)
        ref, _ = completion_logps(_model(tok, 2).to(dev), batch)
    pc, pr = pol.logps.split(N_PAIRS)
    rc, rr = ref.logps.split(N_PAIRS)
    lc, lr_ = pol.lengths.split(N_PAIRS)
    out = get_loss(name, **ours_cfg)(
        policy_chosen_logps=pc, policy_rejected_logps=pr, ref_chosen_logps=rc,
        ref_rejected_logps=rr, chosen_lengths=lc, rejected_lengths=lr_)

    # TRL logs batch means of summed log-probs (DPOTrainer) or of per-token means (CPO,
    # which averages for simpo): equal here means the same tokens were scored.
    norm_c, norm_r = (lc, lr_) if kind == "cpo" else (1, 1)
    assert trl_log["logps/chosen"] == pytest.approx(float((pc / norm_c).mean()), rel=1e-5)
    assert trl_log["logps/rejected"] == pytest.approx(float((pr / norm_r).mean()), rel=1e-5)
    # The batch must straddle the margins (hinge's kink at 1, the sign of the logit),
    # or a wrong branch of a loss could pass unnoticed.
    beta = ours_cfg["beta"]
    z = (beta * (pc - rc - pr + rr) if kind == "dpo"
         else beta * (pc / lc - pr / lr_) - ours_cfg["gamma"])
    assert bool((z < 0).any()) and bool((z > 1).any()), z
    ours = float(out.losses.mean())
    assert abs(trl_log["loss"] - ours) <= FIRST_BATCH_TOL, (name, trl_log["loss"], ours)


# ------------------------------------------------------------------------ curves


@pytest.fixture(scope="module")
def saved_model(tok, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "ref"
    save_model(_model(tok, 0, CURVE_INIT_RANGE), tok, folder)
    return folder


def _our_curve(name: str, saved_model: Path, rows, work: Path, lr: float) -> list[float]:
    spec = TrainingSpec(epochs=CURVE_STEPS * CURVE_BATCH // N_PAIRS, batch_size=CURVE_BATCH,
                        learning_rate=lr, weight_decay=0.0, warmup_steps=0, max_grad_norm=1.0,
                        max_length=MAX_LENGTH, save_every=10**9, log_every=1, kl_log_prompts=0)
    job = TrainJob(label=name, seed=0, reference_dir=saved_model, pairs=rows, reg_prompts=[],
                   training=spec, work_dir=work,
                   ref_logps=compute_reference_logps(saved_model, rows, MAX_LENGTH))
    _, _, history = train(job, get_loss(name, **CASES[name][2]), show_progress=False)
    assert [h["step"] for h in history] == list(range(1, CURVE_STEPS + 1))
    return [h["loss"] for h in history]


def _trl_curve(name: str, saved_model: Path, tok, rows, tmp_path: Path) -> list[float]:
    epochs = CURVE_STEPS * CURVE_BATCH // N_PAIRS
    ordered = []
    for epoch in range(epochs):  # our loop's order (trainers/loop.py), laid out in advance
        g = torch.Generator().manual_seed(seed_from(0, "epoch", epoch))
        ordered += [rows[i] for i in torch.randperm(N_PAIRS, generator=g).tolist()]
    logs = _Logs()
    trainer = _trl_trainer("dpo", CASES[name][1], tok, ordered, tmp_path, str(saved_model), None,
                           logs, learning_rate=CURVE_LR, max_steps=CURVE_STEPS,
                           per_device_train_batch_size=CURVE_BATCH,
                           train_sampling_strategy="sequential")
    trainer.train()
    return [s["loss"] for s in logs.steps]


@pytest.mark.parametrize("name", ["dpo", "ipo"])
def test_loss_curve_matches_trl(name, saved_model, tok, rows, tmp_path):
    ours = _our_curve(name, saved_model, rows, tmp_path / "work", CURVE_LR)
    theirs = _trl_curve(name, saved_model, tok, rows, tmp_path)
    assert len(theirs) == CURVE_STEPS
    assert ours[-1] < ours[0] - 0.05, "the curve must move for the comparison to mean anything"
    diffs = [abs(a - b) for a, b in zip(ours, theirs)]
    worst = max(range(CURVE_STEPS), key=diffs.__getitem__)
    assert diffs[worst] <= CURVE_TOL, (
        f"step {worst + 1}: ours {ours[worst]:.7f} vs TRL {theirs[worst]:.7f}")


def test_curve_tolerance_is_sensitive(saved_model, rows, tmp_path):
    """A 1% learning-rate change moves the curve by more than CURVE_TOL: the bound has teeth."""
    base = _our_curve("dpo", saved_model, rows, tmp_path / "a", CURVE_LR)
    nudged = _our_curve("dpo", saved_model, rows, tmp_path / "b", CURVE_LR * 1.01)
    assert max(abs(a - b) for a, b in zip(base, nudged)) > CURVE_TOL
