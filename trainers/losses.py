"""Preference losses as small registered objects (not a branch chain in the trainer).

    from trainers.losses import get_loss
    out = get_loss("spo", alpha=1.0)(policy_chosen_logps=..., policy_rejected_logps=...,
                                      ref_chosen_logps=..., ref_rejected_logps=...,
                                      chosen_lengths=..., rejected_lengths=..., soft_labels=None)
    out.losses   # one value per pair
    out.metrics  # TRL-style names: rewards/chosen, rewards/margins, ...

Log-probs are sums over completion tokens (METHODS.md §0). Each loss also declares what
the training loop must provide (reference log-probs, an online KL regularizer) and, where
theory gives one, the optimal policy over an enumerable response set (used on `bandit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from harness.registry import Registry


@dataclass
class LossOutput:
    losses: torch.Tensor                 # [B]
    metrics: dict[str, torch.Tensor]     # scalar tensors, detached


@dataclass(frozen=True)
class KLRegularizer:
    """lambda * KL(pi_theta || pi_ref) on online policy samples over the regularization prompts."""

    weight: float
    estimator: str = "exact"          # exact per-token KL over the vocabulary on policy samples
    prompts_per_step: int = 8
    samples_per_prompt: int = 1
    max_new_tokens: int = 16


class PreferenceLoss:
    name: str = ""
    requires_reference: bool = True
    regularizer: KLRegularizer | None = None

    def __call__(self, *, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                 ref_chosen_logps: torch.Tensor | None = None,
                 ref_rejected_logps: torch.Tensor | None = None,
                 chosen_lengths: torch.Tensor | None = None,
                 rejected_lengths: torch.Tensor | None = None,
                 soft_labels: torch.Tensor | None = None) -> LossOutput:
        raise NotImplementedError

    def optimal_logprobs(self, rewards: torch.Tensor,
                         ref_logprobs: torch.Tensor) -> torch.Tensor | None:
        """log pi* over an enumerable response set under Bradley-Terry, or None if unknown."""
        return None


LOSSES: Registry[Callable[..., PreferenceLoss]] = Registry("method", "spo_harness.methods")


def get_loss(name: str, **hyperparams: Any) -> PreferenceLoss:
    """Build a registered loss; unknown hyperparameters raise TypeError naming them."""
    return LOSSES.get(name)(**hyperparams)


def _check_soft_labels(soft_labels: torch.Tensor | None) -> None:
    if soft_labels is not None and ((soft_labels < 0) | (soft_labels > 1)).any():
        raise ValueError("soft_labels must lie in [0, 1]")


def _reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor, pc: torch.Tensor,
                    pr: torch.Tensor) -> dict[str, torch.Tensor]:
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "rewards/chosen": chosen.mean(),
        "rewards/rejected": rejected.mean(),
        "rewards/margins": (chosen - rejected).mean(),
        "rewards/accuracies": (chosen > rejected).float().mean(),
        "logps/chosen": pc.detach().mean(),
        "logps/rejected": pr.detach().mean(),
    }


def _binary_ce(z: torch.Tensor, p: torch.Tensor | None) -> torch.Tensor:
    """-[p log sigma(z) + (1-p) log sigma(-z)]; p = None means hard labels (p = 1)."""
    if p is None:
        return F.softplus(-z)
    p = p.to(z.dtype)
    return p * F.softplus(-z) + (1 - p) * F.softplus(z)


# ---------------------------------------------------------------- SPO (METHODS.md §1)


@dataclass
class SPOLoss(PreferenceLoss):
    """Soft Preference Optimization: (1/alpha) softplus(-alpha (l_w - l_l)), reference-free.

    With soft label p (probability that chosen is preferred) the loss is the expected one,
    p softplus(-alpha D)/alpha + (1-p) softplus(alpha D)/alpha. `lambda` weights the KL
    regularizer KL(pi_theta || pi_ref) estimated on online samples from the policy.
    """

    alpha: float = 1.0
    kl_weight: float = 0.0
    kl_estimator: str = "exact"
    reg_prompts_per_step: int = 8
    reg_samples_per_prompt: int = 1
    reg_max_new_tokens: int = 16
    name: str = field(default="spo", init=False)

    def __post_init__(self) -> None:
        if not self.alpha > 0:  # also rejects NaN
            raise ValueError("alpha must be positive")
        if not self.kl_weight >= 0:
            raise ValueError("lambda must be >= 0")
        if self.kl_estimator != "exact":
            raise ValueError("kl_estimator must be 'exact' (per-token KL over the vocabulary)")
        for n in ("reg_prompts_per_step", "reg_samples_per_prompt", "reg_max_new_tokens"):
            if getattr(self, n) <= 0:
                raise ValueError(f"{n} must be positive")
        self.requires_reference = False  # the preference term never looks at the reference
        self.regularizer = (KLRegularizer(self.kl_weight, self.kl_estimator,
                                          self.reg_prompts_per_step, self.reg_samples_per_prompt,
                                          self.reg_max_new_tokens)
                            if self.kl_weight > 0 else None)

    def __call__(self, *, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
                 ref_rejected_logps=None, chosen_lengths=None, rejected_lengths=None,
                 soft_labels=None) -> LossOutput:
        _check_soft_labels(soft_labels)
        a = self.alpha
        delta = policy_chosen_logps - policy_rejected_logps
        losses = _binary_ce(a * delta, soft_labels) / a
        # SPO's preference model P(y1 > y2) = sigmoid(alpha (l1 - l2)): implied reward alpha * l
        metrics = _reward_metrics(a * policy_chosen_logps, a * policy_rejected_logps,
                                  policy_chosen_logps, policy_rejected_logps)
        return LossOutput(losses, metrics)

    def optimal_logprobs(self, rewards, ref_logprobs):
        # Under BT the minimiser of the preference loss is softmax(r / alpha) (§1.6);
        # the regularizer (lambda > 0) moves the optimum, so no closed form is claimed then.
        if self.kl_weight > 0:
            return None
        return torch.log_softmax(rewards / self.alpha, dim=-1)


@LOSSES.register("spo")
def _spo(alpha: float = 1.0, weight_fn: None = None, **kw: Any) -> SPOLoss:
    allowed = {"lambda": "kl_weight", "kl_estimator": "kl_estimator",
               "reg_prompts_per_step": "reg_prompts_per_step",
               "reg_samples_per_prompt": "reg_samples_per_prompt",
               "reg_max_new_tokens": "reg_max_new_tokens"}
    if weight_fn is not None:
        raise ValueError("spo: weight_fn (weighted SPO, METHODS.md §1.2) is not implemented")
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(f"spo got unknown hyperparameters {unknown}; known: "
                        f"alpha, {', '.join(allowed)}")
    return SPOLoss(alpha=float(alpha), **{allowed[k]: v for k, v in kw.items()})


# ---------------------------------------------------------------- DPO (METHODS.md §2)


@dataclass
class DPOLoss(PreferenceLoss):
    """DPO (TRL `sigmoid`): -log sigma(beta h), h = (l_w - l_w^ref) - (l_l - l_l^ref).

    With a soft label p the loss is the expected one, -[p log sigma(beta h) +
    (1-p) log sigma(-beta h)], whose optimum is still pi_ref exp(r/beta)/Z.
    """

    beta: float = 0.1
    name: str = field(default="dpo", init=False)

    def __post_init__(self) -> None:
        if not self.beta > 0:  # also rejects NaN
            raise ValueError("beta must be positive")

    def __call__(self, *, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
                 ref_rejected_logps=None, chosen_lengths=None, rejected_lengths=None,
                 soft_labels=None) -> LossOutput:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("dpo needs ref_chosen_logps and ref_rejected_logps")
        _check_soft_labels(soft_labels)
        chosen = self.beta * (policy_chosen_logps - ref_chosen_logps)
        rejected = self.beta * (policy_rejected_logps - ref_rejected_logps)
        losses = _binary_ce(chosen - rejected, soft_labels)
        return LossOutput(losses, _reward_metrics(chosen, rejected, policy_chosen_logps,
                                                  policy_rejected_logps))

    def optimal_logprobs(self, rewards, ref_logprobs):
        return torch.log_softmax(ref_logprobs + rewards / self.beta, dim=-1)


@LOSSES.register("dpo")
def _dpo(beta: float = 0.1) -> DPOLoss:
    return DPOLoss(beta=float(beta))
