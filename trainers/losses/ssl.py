"""Self-supervised Preference Optimization (Li et al., arXiv 2409.17791; METHODS.md §4, §8)
as a wrapper on any pairwise loss: L = L_align + weight * L_SS.

What is known [V abstract; S review]: L_SS is a self-supervised "preference degree" loss
on graded variants of each response, made by removing increasing amounts of its key content
(found by RAKE), added to the alignment loss of DPO or another PO method. What is not
[U: the paper body was unreadable, its code repository is empty]: the degree loss itself,
the number of degrees, the removal fractions, the weight. This module's degree loss is our
reconstruction [D], built from the policy's own sequence log-probs so that it needs no new
parameters (no classification head) and shares DPO's implicit reward:

    z_k = beta * (log pi_theta(y_k | x) - log pi_ref(y_k | x)),   k = 0 .. K-1,

y_0 the least degraded variant (the response itself when fractions start at 0), y_k with
a larger share of its key content removed as k grows. Two K-way cross-entropies:

- target "first": classify which variant is undegraded, -log softmax(z)_0;
- target "ordinal" (default): classify every degree in turn, the Plackett-Luce likelihood
  of the order y_0 > y_1 > ... > y_{K-1}:  sum_k [logsumexp_{j >= k} z_j - z_k].
  Its k = 0 term is "first".

Variants whose text equals a less degraded one's (a short response has fewer key phrases
than degrees) are left out of the softmax (`mask`), so a response without key content adds
nothing. The per-pair degree loss is the mean over its responses (chosen and rejected, or
chosen alone). At init the policy is the reference, every z_k = 0, and the loss is log of
the number of variants (first) or the sum of log(K - k) (ordinal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from trainers.losses.base import LossOutput, PreferenceLoss, Tensor

TARGETS = ("ordinal", "first")
RESPONSES = ("both", "chosen")
# What an excluded variant's logit becomes: far enough below every kept one that exp()
# underflows to exactly 0 in float32 and float64 (exp(-1e4)), so sums are those without it.
_EXCLUDED = 1e4


def degree_losses(policy: Tensor, ref: Tensor, mask: Tensor, beta: float,
                  target: str = "ordinal") -> Tensor:
    """[B] degree loss per pair from [B, R, K] variant log-probs (R responses, K degrees).

    `mask[..., k]` says whether variant k takes part (its text differs from variant k-1's);
    variant 0 always does.
    """
    if target not in TARGETS:
        raise ValueError(f"ssl target must be one of {', '.join(TARGETS)}, got {target!r}")
    z = beta * (policy - ref)
    floor = torch.where(mask, z, torch.inf).amin(-1, keepdim=True).detach() - _EXCLUDED
    z = torch.where(mask, z, floor)
    if target == "first":
        per_response = torch.logsumexp(z, -1) - z[..., 0]
    else:
        tail = torch.logcumsumexp(z.flip(-1), -1).flip(-1)  # logsumexp_{j >= k} z_j
        per_response = torch.where(mask, tail - z, torch.zeros_like(z)).sum(-1)
    return per_response.mean(-1)


def degree_accuracy(policy: Tensor, ref: Tensor, mask: Tensor) -> Tensor:
    """Share of responses (with 2+ variants) whose undegraded variant has the top logit."""
    z = torch.where(mask, policy - ref, -torch.inf)
    graded = mask.sum(-1) > 1
    top = (z[..., :1] > z[..., 1:]).all(-1)
    return (top & graded).sum() / graded.sum()   # NaN when no response has two variants


@dataclass
class SelfSupervisedLoss(PreferenceLoss):
    """`base` + weight * degree loss. Delegates what the loop asks of a loss to `base`.

    Called like `base`, plus the variants' log-probs: `variant_policy_logps`,
    `variant_ref_logps` ([B, R, K]) and `variant_mask` ([B, R, K] bool). Without them, or
    at weight 0, the base loss comes back untouched.
    """

    base: PreferenceLoss
    weight: float = 0.1
    beta: float = 0.1
    target: str = "ordinal"
    responses: str = "both"
    name: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if not getattr(self.base, "paired", True):
            raise ValueError(f"ssl needs a pairwise loss; {self.base.name} trains on unpaired "
                             "completions")
        if getattr(self.base, "iterative", False):
            raise ValueError(f"ssl needs fixed preference pairs; {self.base.name} samples new "
                             "ones at every iteration")
        if getattr(self.base, "sequential", False):
            raise ValueError(f"ssl needs one set of preference pairs; {self.base.name} trains "
                             "one round per preference dimension")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"ssl: weight must be >= 0 (and finite), got {self.weight!r}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"ssl: beta must be positive (finite, > 0), got {self.beta!r}")
        if self.target not in TARGETS:
            raise ValueError(f"ssl: target must be one of {', '.join(TARGETS)}, "
                             f"got {self.target!r}")
        if self.responses not in RESPONSES:
            raise ValueError(f"ssl: responses must be one of {', '.join(RESPONSES)}, "
                             f"got {self.responses!r}")
        self.name = f"{self.base.name}+ssl"

    # what the training loop reads of a loss: the base loss's answers
    requires_reference = property(lambda self: self.base.requires_reference)  # type: ignore
    requires_lengths = property(lambda self: self.base.requires_lengths)  # type: ignore
    requires_token_kl = property(lambda self: self.base.requires_token_kl)  # type: ignore
    regularizer = property(lambda self: self.base.regularizer)  # type: ignore

    def __call__(self, *, variant_policy_logps: Tensor | None = None,
                 variant_ref_logps: Tensor | None = None, variant_mask: Tensor | None = None,
                 **inputs: Any) -> LossOutput:
        out = self.base(**inputs)
        if variant_policy_logps is None:
            return out
        if variant_ref_logps is None or variant_mask is None:
            raise ValueError("ssl needs variant_ref_logps and variant_mask with "
                             "variant_policy_logps")
        return self.combine(out, variant_policy_logps, variant_ref_logps, variant_mask)

    def combine(self, out: LossOutput, policy: Tensor, ref: Tensor, mask: Tensor) -> LossOutput:
        """The base output with the weighted degree loss added (untouched at weight 0)."""
        degree = degree_losses(policy, ref, mask, self.beta, self.target)
        losses = out.losses if self.weight == 0 else out.losses + self.weight * degree
        metrics = {**out.metrics, "ssl/degree_loss": degree.detach().mean(),
                   "ssl/accuracy": degree_accuracy(policy.detach(), ref, mask)}
        return LossOutput(losses, metrics)

    def optimal_logprobs(self, rewards: Tensor, ref_logprobs: Tensor) -> Tensor | None:
        """The base loss's target at weight 0; unknown with the degree term."""
        return self.base.optimal_logprobs(rewards, ref_logprobs) if self.weight == 0 else None
