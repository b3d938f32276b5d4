"""SPPO, Self-Play Preference Optimization (METHODS.md §5): the per-pair loss only.

The iterative outer loop (reference := previous iterate pi_t, fresh samples, PairRM-style
win probabilities) belongs to the training pipeline, not to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainers.losses.base import Pairs, PairwiseLoss, Tensor, check_positive, register_loss


@register_loss("sppo")
@dataclass
class SPPOLoss(PairwiseLoss):
    """SPPO `sppo_single`: ((l_w - (p - 1/2)/beta)^2 + (l_l + (p - 1/2)/beta)^2) / 2.

    l_w = l_w - l_w^ref, l_l = l_l - l_l^ref (the reference is the previous iterate pi_t),
    p = P(y_w > y_l), the soft label (hard labels: p = 1). beta = 1/eta, default 1e-3.
    Symmetric under swapping chosen and rejected with p -> 1 - p. With p = 1 it is half of
    TRL's `sppo_hard`, (l_w - 1/(2 beta))^2 + (l_l + 1/(2 beta))^2.
    """

    beta: float = 1e-3
    iterations: int = 3            # outer self-play iterations (harness/iterative.py)
    samples_per_prompt: int = 5    # K responses sampled per prompt from each iterate
    name: str = field(default="sppo", init=False)
    soft_labels_enter_formula = True
    iterative = True  # the pipeline runs the sample -> judge -> train outer loop

    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)
        if self.iterations < 1 or self.samples_per_prompt < 2:
            raise ValueError("sppo: iterations must be >= 1 and samples_per_prompt >= 2")

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        t = (0.5 if p is None else p - 0.5) / self.beta
        return ((b.pc - b.rc - t) ** 2 + (b.pr - b.rr + t) ** 2) / 2

    # No target. Summed over all pairs the loss is (1/2) sum_i sum_{j != i} (x_i - t_ij)^2,
    # t_ij = (p_ij - 1/2)/beta, x_i = log pi(i) - log pi_ref(i): unlike DPO-type margins it
    # is not shift-invariant, so the normalisation of pi binds. The minimiser solves the KKT
    # system x_i = m_i - lambda pi_i (m_i = mean_{j != i} t_ij), a Lambert-W equation, not a
    # softmax; the multiplicative-weights target pi_ref exp(eta P(y > pi_ref))/Z that SPPO
    # iterates approximate is not the one-step minimiser either (checked in the tests).
