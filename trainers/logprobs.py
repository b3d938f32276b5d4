"""Per-sequence log-probabilities of completions (summed over completion tokens)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceLogps:
    logps: torch.Tensor        # [B] sum of completion-token log-probs
    lengths: torch.Tensor      # [B] completion tokens
    token_entropy: torch.Tensor  # [] mean next-token entropy over completion tokens (no grad)


def completion_logps(model, batch: dict[str, torch.Tensor],
                     return_logits: bool = False) -> tuple[SequenceLogps, torch.Tensor | None]:
    """Forward once; sum log pi(y_t | x, y_<t) over the positions where completion_mask is 1."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    logits = out.logits[:, :-1].float()
    labels = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].to(logits.dtype)
    logp_all = logits.log_softmax(-1)
    token_logps = logp_all.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        ent = -(logp_all.exp() * logp_all).sum(-1)
        token_entropy = (ent * mask).sum() / mask.sum().clamp(min=1)
    result = SequenceLogps((token_logps * mask).sum(-1), mask.sum(-1), token_entropy)
    return result, (logits if return_logits else None)


@torch.no_grad()
def batched_completion_logps(model, encoded: list, pad_id: int, batch_size: int = 64,
                             device: torch.device | str = "cpu") -> torch.Tensor:
    """Summed completion log-probs of many encoded sequences, without gradients."""
    from trainers.tokenize import pad_batch

    values = []
    for i in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in pad_batch(encoded[i:i + batch_size], pad_id).items()}
        values.append(completion_logps(model, batch)[0].logps.double().cpu())
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)


def reference_token_kl(ref_logits: torch.Tensor, policy_logits: torch.Tensor,
                       completion_mask: torch.Tensor) -> torch.Tensor:
    """[B] sum over completion positions of KL(pi_ref(.|x,y_<t) || pi_theta(.|x,y_<t)) (TDPO's D).

    Both logits are already shifted to predict the next token ([B, T-1, V]); the gradient
    flows through the policy's logits only.
    """
    logq = ref_logits.float().log_softmax(-1)
    logp = policy_logits.float().log_softmax(-1)
    kl = (logq.exp() * (logq - logp)).sum(-1)
    return (kl * completion_mask[:, 1:].to(kl.dtype)).sum(-1)
