"""The one training loop every method shares: only the loss object differs.

Runs under Accelerate (one CPU, one GPU, or many with `accelerate launch`); saves a
resumable Accelerate state every `save_every` steps (written under a temporary name and
renamed, so a kill leaves the previous checkpoint intact) and resumes from the newest.
Data order and online sampling are seeded from (seed, epoch) and (seed, step), so a
resumed run takes exactly the same path as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
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
from trainers.regularizers import KLTerm
from trainers.tokenize import encode


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


def compute_reference_logps(reference_dir: Path, pairs: list[dict[str, Any]], max_length: int,
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
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = job.training
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(job.seed)
    tok = AutoTokenizer.from_pretrained(job.reference_dir, local_files_only=True)

    def load():
        return AutoModelForCausalLM.from_pretrained(job.reference_dir, local_files_only=True,
                                                    dtype=torch.float32)

    model = load()
    model.train()
    # A second resident model only where the objective or the KL log needs it.
    reference = None
    needs_token_kl = getattr(loss_fn, "requires_token_kl", False)  # TDPO's per-token KL
    if loss_fn.regularizer is not None or cfg.kl_log_prompts > 0 or needs_token_kl:
        reference = load().to(accelerator.device).eval().requires_grad_(False)

    # Built before any checkpoint is loaded: the untrained policy is the reference here.
    objective = make_objective(loss_fn, tok, job.pairs, job.ref_logps, cfg.max_length,
                               job.add_eos, reference=reference, initial_model=model,
                               seed=seed_from(job.seed, "mismatch"))
    n = objective.n
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    reg = loss_fn.regularizer
    reg_term = kl_log = None
    if reg is not None:
        reg_term = KLTerm(reference, tok, job.reg_prompts, job.seed, estimator=reg.estimator,
                          prompts_per_step=reg.prompts_per_step,
                          samples_per_prompt=reg.samples_per_prompt,
                          max_new_tokens=reg.max_new_tokens)
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
        out, seq = objective(model, idx, accelerator.device)
        loss = out.losses.mean()
        metrics = {k: float(v) for k, v in out.metrics.items()}
        metrics["entropy"] = float(seq.token_entropy)
        if reg_term is not None:
            kl = reg_term(model, step, accelerator.unwrap_model(model))
            loss = loss + reg.weight * kl
            metrics["kl"] = float(kl.detach())
        metrics["loss"] = float(loss.detach())
        accelerator.backward(loss)
        if cfg.max_grad_norm is not None:
            metrics["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(),
                                                                     cfg.max_grad_norm))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
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
            window = []
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        bar.update(1)
        if (step + 1) % cfg.save_every == 0 and not last:
            _save_checkpoint(accelerator, job.work_dir, step + 1, history, window)
    bar.close()
    return accelerator.unwrap_model(model), tok, history


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


def _save_checkpoint(accelerator, work_dir: Path, step: int, history: list[dict],
                     window: list[dict]) -> None:
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = work_dir / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    # Accelerate warns that the tied lm_head is dropped from the file: it is re-tied on load.
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    accelerator.save_state(str(tmp))
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "history": history, "window": window}))
    tmp.rename(work_dir / f"step-{step:07d}")
    for old in sorted(work_dir.glob("step-*"))[:-1]:
        shutil.rmtree(old, ignore_errors=True)
