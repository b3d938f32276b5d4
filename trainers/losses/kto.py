"""KTO, Kahneman-Tversky Optimization (METHODS.md §6; TRL trl/trainer/kto_trainer.py).

Unpaired: each example is one completion labelled desirable or undesirable, so the loss has
its own call signature and `paired = False`; the training loop must build unpaired batches
(e.g. split each pair into a desirable chosen and an undesirable rejected completion) and,
for the reference point, log-probs of mismatched (prompt, completion) pairs (TRL shifts the
completions by one within the batch) under the policy and the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainers.losses.base import (
    LossOutput,
    PreferenceLoss,
    Tensor,
    check_nonnegative,
    check_positive,
    register_loss,
)

_INPUTS = ("policy_logps", "ref_logps", "desirable", "kl_logps_policy", "kl_logps_ref")


@register_loss("kto")
@dataclass
class KTOLoss(PreferenceLoss):
    """KTO: z0 = clamp(mean(kl_logps_policy - kl_logps_ref), min=0), detached; r = l - l^ref.

    desirable:   lambda_D (1 - sigma(beta (r - z0)))
    undesirable: lambda_U (1 - sigma(beta (z0 - r)))
    as TRL's `kto` loss type. Call with policy_logps, ref_logps ([N] summed log-probs of the
    completions), desirable ([N] bool) and kl_logps_policy, kl_logps_ref ([M] summed log-probs
    of the mismatched pairs). `.losses` is per completion, in input order. Metrics:
    rewards/chosen and rewards/rejected are means of beta r over desirable and undesirable
    completions (NaN when a batch has none, as a mean over nothing), rewards/margins their
    difference, kl the reference point z0.
    """

    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    name: str = field(default="kto", init=False)
    paired = False

    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)
        check_nonnegative(self.name, "desirable_weight", self.desirable_weight)
        check_nonnegative(self.name, "undesirable_weight", self.undesirable_weight)

    def __call__(self, *, policy_logps: Tensor | None = None, ref_logps: Tensor | None = None,
                 desirable: Tensor | None = None, kl_logps_policy: Tensor | None = None,
                 kl_logps_ref: Tensor | None = None, **paired_inputs) -> LossOutput:
        if paired_inputs:
            raise TypeError(f"kto is unpaired (paired=False) and got {sorted(paired_inputs)}; "
                            f"call it with {', '.join(_INPUTS)}")
        given = dict(zip(_INPUTS, (policy_logps, ref_logps, desirable, kl_logps_policy,
                                   kl_logps_ref)))
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"kto needs {', '.join(missing)}")
        if desirable.dtype != torch.bool or desirable.shape != policy_logps.shape:
            raise ValueError("kto: desirable must be a bool tensor shaped like policy_logps")
        with torch.no_grad():
            z0 = (kl_logps_policy - kl_logps_ref).mean().clamp(min=0)
        r = policy_logps - ref_logps
        chosen = self.desirable_weight * (1 - torch.sigmoid(self.beta * (r - z0)))
        rejected = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (z0 - r)))
        losses = torch.where(desirable, chosen, rejected)
        rewards = self.beta * r.detach()
        rc, rr = rewards[desirable].mean(), rewards[~desirable].mean()
        metrics = {
            "rewards/chosen": rc, "rewards/rejected": rr, "rewards/margins": rc - rr,
            "logps/chosen": policy_logps.detach()[desirable].mean(),
            "logps/rejected": policy_logps.detach()[~desirable].mean(), "kl": z0,
        }
        return LossOutput(losses, metrics)

    # optimal_logprobs: None (inherited). KTO is not a Bradley-Terry preference loss; its
    # optimum depends on the desirable/undesirable split and on the reference point z0.
