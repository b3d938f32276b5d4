"""The one training loop every method shares: only the loss object differs.

Runs under Accelerate (one CPU, one GPU, or many with `accelerate launch`); saves a
resumable Accelerate state every `save_every` steps (written under a temporary name and
renamed, so a kill leaves the previous checkpoint intact) and resumes from the newest.
Data order and online sampling are seeded from (seed, epoch) and (seed, step), so a
resumed run takes exactly the same path as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.hashing import seed_from
from harness.spec import TrainingSpec
from trainers.logprobs import batched_completion_logps
from trainers.losses import PreferenceLoss
from trainers.objectives import make_objective
from trainers.regularizers import ESTIMATORS, KLTerm
from trainers.tokenize import Truncation, encode
from trainers.trackers import open_trackers


@dataclass
class TrainJob:
    label: str
    seed: int
    reference_dir: Path
    pairs: list[dict[str, Any]]
    reg_prompts: list[str]
    training: TrainingSpec
    work_dir: Path                     # resumable checkpoints live here until the run is done
    ref_logps: tuple[torch.Tensor, torch.Tensor]  # cached reference log-probs (chosen, rejected)
    add_eos: bool = True               # completions end with EOS (see TaskAssets.completion_eos)
    ssl: Any = None                    # Self-supervised PO's variants (trainers.self_supervised.SSLData)


def compute_reference_logps(reference_dir: Path, pairs: list[dict[str, Any]], max_length: int | Truncation,
                            add_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of chosen and rejected completions under the reference, once.

    Unpaired rows {prompt, completion, label} (KTO): (their completions' log-probs, an empty
    tensor), so that the two concatenated line up with the rows as they do for pairs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reference_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(reference_dir, local_files_only=True,
                                                 dtype=torch.float32).eval()
    if pairs and "completion" in pairs[0]:
        items = [encode(tok, r["prompt"], r["completion"], max_length, add_eos) for r in pairs]
        return batched_completion_logps(model, items, tok.pad_token_id), torch.zeros(0)
    chosen = [encode(tok, r["prompt"], r["chosen"], max_length, add_eos) for r in pairs]
    rejected = [encode(tok, r["prompt"], r["rejected"], max_length, add_eos) for r in pairs]
    return (batched_completion_logps(model, chosen, tok.pad_token_id),
            batched_completion_logps(model, rejected, tok.pad_token_id))


def _latest_checkpoint(work_dir: Path) -> Path | None:
    done = sorted(work_dir.glob("step-*"))
    return done[-1] if done else None


def train(job: TrainJob, loss_fn: PreferenceLoss, *, show_progress: bool = True):
    """Train a policy initialised from the reference; returns (model, tokenizer, history)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = job.training
    if job.ssl is not None:  # Self-supervised PO: the run's loss plus the degree loss
        loss_fn = job.ssl.wrap(loss_fn)
    accelerator = make_accelerator(cfg.precision)
    trackers = open_trackers(job)  # training.report_to (trainers/trackers.py)
    torch.manual_seed(job.seed)
    tok = AutoTokenizer.from_pretrained(job.reference_dir, local_files_only=True)

    def load():
        return AutoModelForCausalLM.from_pretrained(job.reference_dir, local_files_only=True,
                                                    dtype=torch.float32)

    model = load()
    model.train()
    if cfg.gradient_checkpointing:  # non-reentrant: exact gradients, works with autocast
        model.config.use_cache = False
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.peft is not None:
        model = add_lora(model, cfg.peft)
    # A reference model only where the objective or the KL log needs it: with LoRA the
    # policy itself with its adapters disabled (no second copy, as TRL does), else a copy.
    reference = None
    needs_token_kl = getattr(loss_fn, "requires_token_kl", False)  # TDPO's per-token KL
    if loss_fn.regularizer is not None or cfg.kl_log_prompts > 0 or needs_token_kl:
        reference = (AdaptersDisabled(model) if cfg.peft is not None else
                     load().to(accelerator.device).eval().requires_grad_(False))

    # Built before any checkpoint is loaded: the untrained policy is the reference here.
    objective = make_objective(loss_fn, tok, job.pairs, job.ref_logps, cfg.truncation(),
                               job.add_eos, reference=reference, initial_model=model,
                               seed=seed_from(job.seed, "mismatch"), ssl=job.ssl)
    n = objective.n
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    optimizer = make_optimizer(cfg, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(cfg, optimizer, total)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    reg = loss_fn.regularizer
    reg_term = kl_log = sampler = None
    if reg is not None:
        if not ESTIMATORS[reg.estimator][1]:  # samples the policy: hf, or a synced engine
            sampler = _online_sampler(cfg, job.reference_dir, tok, accelerator)
        reg_term = KLTerm(reference, tok, job.reg_prompts, job.seed, estimator=reg.estimator,
                          prompts_per_step=reg.prompts_per_step,
                          samples_per_prompt=reg.samples_per_prompt,
                          max_new_tokens=reg.max_new_tokens, sampler=sampler)
    elif cfg.kl_log_prompts > 0:
        kl_log = KLTerm(reference, tok, job.reg_prompts, job.seed,
                        prompts_per_step=cfg.kl_log_prompts, max_new_tokens=16)

    start, history, window = _resume(accelerator, job.work_dir)

    bar = tqdm(total=total, initial=start, desc=f"train {job.label}", leave=False,
               disable=not show_progress)
    for step in range(start, total):
        epoch, s = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            seed_from(job.seed, "epoch", epoch)))
        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        idx = idx[accelerator.process_index::accelerator.num_processes]
        extra = None
        if reg_term is not None:  # once per optimizer step, whatever the micro-batches
            def extra(step=step):
                kl = reg_term(model, step, accelerator.unwrap_model(model))
                return reg.weight * kl, {"kl": float(kl.detach())}
        metrics = _accumulate(objective, model, idx, cfg.gradient_accumulation_steps,
                              accelerator, extra)
        if cfg.max_grad_norm is not None:
            metrics["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(),
                                                                     cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if accelerator.num_processes > 1:  # each process saw its shard: the batch's mean
            metrics = _mean_over_processes(accelerator, metrics)
        window.append(metrics)

        last = step + 1 == total
        if (step + 1) % cfg.log_every == 0 or last:
            # nan-aware: KTO's rewards/chosen is NaN on a batch without desirable examples
            record = {k: _nanmean([m[k] for m in window]) for k in window[0]}
            if reg_term is None and kl_log is not None:
                with torch.no_grad():
                    record["kl"] = float(kl_log(model, step, accelerator.unwrap_model(model)))
            record.update(step=step + 1, epoch=round((step + 1) / steps_per_epoch, 3))
            history.append(record)
            trackers.log(record)
            window = []
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        bar.update(1)
        if (step + 1) % cfg.save_every == 0 and not last:
            _save_checkpoint(accelerator, job.work_dir, step + 1, history, window)
    bar.close()
    trackers.close()
    if sampler is not None:
        sampler.close()
    return accelerator.unwrap_model(model), tok, history


def _online_sampler(cfg: TrainingSpec, model_dir: Path, tok, accelerator):
    """The regularizer's sampler of `training.online_backend` (trainers/online.py); None
    for hf, the policy's own generate."""
    if cfg.online_backend == "hf":
        return None
    from harness.errors import InputError
    from trainers.online import make_online_sampler

    if accelerator.num_processes > 1:  # an engine per process, each claiming the devices
        raise InputError("training.online_backend vllm runs in one process; with "
                         f"{accelerator.num_processes} processes use online_backend hf",
                         field="training.online_backend")
    return make_online_sampler(cfg.online_backend, model_dir, tok, cfg.sync_every)


def add_lora(model, peft_spec) -> Any:
    """The model with LoRA adapters (PEFT): only the adapters require gradients. B starts
    at zero, so the untrained policy is exactly the model."""
    from peft import LoraConfig, get_peft_model

    from harness.errors import InputError

    config = LoraConfig(r=peft_spec.r, lora_alpha=peft_spec.lora_alpha,
                        lora_dropout=peft_spec.lora_dropout,
                        target_modules=peft_spec.target_modules, task_type="CAUSAL_LM")
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear)})
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # PEFT's NoMatchingPeftModuleError: no such module
        raise InputError(f"{str(exc).splitlines()[0]} (this model's linear modules: "
                         f"{', '.join(linear)})", field="training.peft.target_modules") from None


class AdaptersDisabled:
    """The reference of a LoRA policy: the policy's own forward and `generate` with its
    adapters switched off (PEFT's `disable_adapter`), without gradients. The frozen base
    weights are the reference model's, so no second copy is loaded."""

    def __init__(self, peft_model) -> None:
        self.model = peft_model

    def __call__(self, *args, **kwargs):
        with torch.no_grad(), self.model.disable_adapter():
            return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        with torch.no_grad(), self.model.disable_adapter():
            return self.model.generate(*args, **kwargs)

    def parameters(self):
        return self.model.parameters()

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def eval(self):
        return self.train(False)


PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # ours -> Accelerate's


def make_accelerator(precision: str = "fp32"):
    """Accelerate with the spec's mixed precision: the prepared model's forward runs under
    autocast (bf16 also on a CPU), its weights, gradients and optimizer state stay fp32;
    fp16 adds Accelerate's loss scaling and needs CUDA."""
    from accelerate import Accelerator

    from harness.errors import InputError

    cuda = torch.cuda.is_available()
    if precision == "fp16" and not cuda:
        raise InputError("training.precision fp16 needs a CUDA GPU (its loss scaling is CUDA's); "
                         "on a CPU use bf16", field="training.precision")
    # Accelerate keeps one AcceleratorState per process and refuses a second precision in
    # it; each run sets its own (the distributed PartialState is kept).
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=PRECISIONS[precision])


def make_optimizer(cfg: TrainingSpec, params) -> torch.optim.Optimizer:
    """The spec's torch.optim optimizer at its learning rate and weight decay."""
    kinds = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
             "adafactor": torch.optim.Adafactor}
    return kinds[cfg.optimizer](params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainingSpec, optimizer, total_steps: int):
    """The learning-rate schedule. `constant` is ours: warm-up reaches lr/w on the first
    step (no step at lr 0), then lr; `linear` and `cosine` are transformers' schedules,
    which TRL uses, warm-up from 0 included."""
    if cfg.lr_scheduler == "constant":
        w = cfg.warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / w) if w else 1.0)
    from transformers import get_scheduler

    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=total_steps)


def _accumulate(objective, model, idx: torch.Tensor, steps: int, accelerator,
                extra: Callable[[], tuple[torch.Tensor, dict[str, float]]] | None = None
                ) -> dict[str, float]:
    """Forward and backward `idx` in `steps` micro-batches, each mean loss weighted by its
    share of the rows, so the gradient is the whole batch's mean-loss gradient. `extra`
    (SPO's KL term) is added once, to the last micro-batch's loss. The metrics are combined
    the same way: rows weight the loss's batch means (exact for means over all rows; KTO's
    per-class means are weighted by rows too), completion tokens weight the entropy.
    One micro-batch is exactly the plain step (same operations, same numbers)."""
    parts = [p for p in torch.tensor_split(idx, min(steps, max(1, len(idx)))) if len(p)]
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    tokens = entropy = loss_sum = 0.0
    extra_metrics: dict[str, float] = {}
    extra_value = 0.0
    for i, part in enumerate(parts):
        share = len(part) / len(idx)
        last = i == len(parts) - 1
        # data-parallel processes all-reduce the gradients once, after the last micro-batch
        with contextlib.nullcontext() if last else accelerator.no_sync(model):
            out, seq = objective(model, part, accelerator.device)
            loss = out.losses.mean()
            total = loss if len(parts) == 1 else loss * share
            if last and extra is not None:
                term, extra_metrics = extra()
                total = total + term
                extra_value = float(term.detach())
            accelerator.backward(total)
        if len(parts) == 1:
            metrics = {k: float(v) for k, v in out.metrics.items()}
            metrics["entropy"] = float(seq.token_entropy)
            return {**metrics, **extra_metrics, "loss": float(total.detach())}
        for k, v in ((k, float(v)) for k, v in out.metrics.items()):
            weights.setdefault(k, 0.0)
            sums.setdefault(k, 0.0)
            if not math.isnan(v):  # KTO's class means are NaN on a micro-batch without one
                sums[k] += v * share
                weights[k] += share
        loss_sum += float(loss.detach()) * share
        n_tok = float(seq.lengths.sum())
        tokens, entropy = tokens + n_tok, entropy + float(seq.token_entropy) * n_tok
    metrics = {k: sums[k] / weights[k] if weights[k] else math.nan for k in sums}
    metrics["entropy"] = entropy / tokens if tokens else 0.0
    return {**metrics, **extra_metrics, "loss": loss_sum + extra_value}


def _resume(accelerator, work_dir: Path) -> tuple[int, list[dict], list[dict]]:
    """(first step to run, log history, metrics since the last log line) from the newest
    checkpoint in work_dir, its model, optimizer, scheduler and RNG state loaded into
    accelerator's objects; (0, [], []) when there is none."""
    ckpt = _latest_checkpoint(work_dir)
    if ckpt is None:
        return 0, [], []
    accelerator.load_state(str(ckpt))
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return state["step"], state["history"], state["window"]


def _nanmean(values: list[float]) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


def _mean_over_processes(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Per-process metrics (means over each shard of the batch) as the whole batch's means
    (equal shards: the mean of the shard means; a NaN shard mean is left out)."""
    keys = sorted(metrics)
    local = torch.tensor([[metrics[k] for k in keys]], dtype=torch.float64,
                         device=accelerator.device)
    every = accelerator.gather(local)  # [processes, metrics]
    finite = ~torch.isnan(every)
    means = torch.where(finite, every, 0).sum(0) / finite.sum(0)
    return {k: float(means[keys.index(k)]) for k in metrics}  # in the loop's key order


def _save_checkpoint(accelerator, work_dir: Path, step: int, history: list[dict],
                     window: list[dict]) -> None:
    """Every process saves its part of the Accelerate state (its RNG) into one folder; the
    main process alone writes the trainer state and renames the folder into place."""
    tmp = work_dir / f".tmp-step-{step:07d}"
    if accelerator.is_main_process:
        work_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    # Accelerate warns that the tied lm_head is dropped from the file: it is re-tied on load.
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(
            json.dumps({"step": step, "history": history, "window": window}))
        tmp.rename(work_dir / f"step-{step:07d}")
        for old in sorted(work_dir.glob("step-*"))[:-1]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
