"""Supervised fine-tuning on prompt/completion text: how built-in tasks make their reference.

A short, single-process loop: it runs once per task and its result is cached in the
store as an artifact, so it needs no resume logic of its own.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from trainers.logprobs import completion_logps
from trainers.tokenize import encode, pad_batch


def train_sft(model, tokenizer, examples: list[tuple[str, str]], *, epochs: int,
              batch_size: int, learning_rate: float, max_length: int, seed: int,
              loss_on_prompt: bool = False, add_eos: bool = True,
              desc: str = "sft", show_progress: bool = True) -> list[float]:
    """Token-mean NLL of completions (and prompts if `loss_on_prompt`); returns epoch losses."""
    encoded = [encode(tokenizer, p, c, max_length, add_eos) for p, c in examples]
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * max(0.05, 1 - s / total))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    with tqdm(total=total, desc=desc, leave=False, disable=not show_progress) as bar:
        for _ in range(epochs):
            order = torch.randperm(len(encoded), generator=gen).tolist()
            epoch_loss = 0.0
            for s in range(steps_per_epoch):
                batch = pad_batch([encoded[i] for i in order[s * batch_size:(s + 1) * batch_size]],
                                  tokenizer.pad_token_id)
                if loss_on_prompt:
                    batch["completion_mask"] = batch["attention_mask"].clone()
                    batch["completion_mask"][:, 0] = 0  # the BOS token is never predicted
                seq, _ = completion_logps(model, batch)
                loss = -seq.logps.sum() / seq.lengths.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                epoch_loss += loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
            losses.append(epoch_loss / steps_per_epoch)
    model.eval()
    return losses
