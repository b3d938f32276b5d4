"""DPO with a target margin: -log sigmoid(beta * h - margin). A plugin example."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F

from trainers.losses import LossOutput, PreferenceLoss


@dataclass
class MarginDPO(PreferenceLoss):
    beta: float = 0.1
    margin: float = 0.5
    name: str = field(default="margin_dpo", init=False)

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError("beta must be positive")

    def __call__(self, *, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps=None,
                 ref_rejected_logps=None, chosen_lengths=None, rejected_lengths=None,
                 soft_labels=None) -> LossOutput:
        chosen = self.beta * (policy_chosen_logps - ref_chosen_logps)
        rejected = self.beta * (policy_rejected_logps - ref_rejected_logps)
        losses = F.softplus(-(chosen - rejected - self.margin))
        return LossOutput(losses, {"rewards/margins": (chosen - rejected).detach().mean()})
