"""DPO and its reference-based relatives (METHODS.md §2, §3), on summed log-probs.

h = (l_w - l_w^ref) - (l_l - l_l^ref); h_bar is the per-token-averaged margin
(l_w - l_w^ref)/|y_w| - (l_l - l_l^ref)/|y_l|. Metrics are TRL's, with implicit rewards
beta * (l - l^ref). Soft labels give the expected loss (trainers/losses/base.py) except for
GDPO/GIPO, whose formula uses p itself.

Theory targets (optimal_logprobs) assume the bandit's data: one-token answers (|y| = 1, so
h_bar = h), every pair of the K answers once with p_ij = sigmoid(r_i - r_j). With x_i =
log pi(i) - log pi_ref(i), h_ij = x_i - x_j. A loss has a closed-form target only where the
minimiser of its summed expected loss can be written down; tests/test_losses.py checks each
one against a numeric minimisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainers.losses.base import (
    Pairs,
    PairwiseLoss,
    Tensor,
    check_label_smoothing,
    check_positive,
    neg_log_sigmoid,
    register_loss,
    win_probabilities,
)


def _dpo_target(rewards: Tensor, ref_logprobs: Tensor, beta: float) -> Tensor:
    return torch.log_softmax(ref_logprobs + rewards / beta, dim=-1)


class _BetaLoss(PairwiseLoss):
    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)  # type: ignore[attr-defined]


@register_loss("dpo")
@dataclass
class DPOLoss(_BetaLoss):
    """DPO (TRL `sigmoid`): -log sigma(beta h).

    With a soft label p the loss is the expected one, -[p log sigma(beta h) +
    (1-p) log sigma(-beta h)], whose optimum is still pi_ref exp(r/beta)/Z.
    """

    beta: float = 0.1
    name: str = field(default="dpo", init=False)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return neg_log_sigmoid(self.beta * b.h)

    def optimal_logprobs(self, rewards, ref_logprobs):
        """pi_ref exp(r/beta)/Z: sigma(beta h_ij) = p_ij holds for every pair at once."""
        return _dpo_target(rewards, ref_logprobs, self.beta)


@register_loss("ipo")
@dataclass
class IPOLoss(_BetaLoss):
    """IPO as TRL's `ipo`: (h_bar - 1/(2 beta))^2 on per-token-averaged log-ratios.

    beta is IPO's tau. TRL normalises by completion length (confirmed with the IPO authors,
    see TRL's dpo_trainer.py), so this loss needs chosen_lengths/rejected_lengths.
    """

    beta: float = 0.1
    name: str = field(default="ipo", init=False)
    requires_lengths = True

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return (b.h_bar - 1 / (2 * self.beta)) ** 2

    def optimal_logprobs(self, rewards, ref_logprobs):
        """pi_ref(i) exp((1/(beta K)) sum_j (p_ij - 1/2)) / Z.

        The expected pair loss is h^2 - h (2p-1)/beta + const, so the summed loss is the least
        squares problem sum_{i<j} (x_i - x_j - (p_ij - 1/2)/beta)^2 on the complete graph,
        solved by x_i = (1/K) sum_j (p_ij - 1/2)/beta (+ const). This is IPO's
        pi_ref exp(tau^-1 E_{y'~mu} P(y > y'))/Z with mu uniform over the K answers.
        """
        p = win_probabilities(rewards)
        x = (p - 0.5).sum(-1) / (self.beta * rewards.shape[-1])
        return torch.log_softmax(ref_logprobs + x, dim=-1)


@register_loss("hinge")
@dataclass
class HingeLoss(_BetaLoss):
    """SLiC hinge (TRL `hinge`): max(0, 1 - beta h)."""

    beta: float = 0.1
    name: str = field(default="hinge", init=False)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return torch.relu(1 - self.beta * b.h)

    # No target: each pair's expected loss is minimised at beta h_ij = sign(2 p_ij - 1), which
    # no x satisfies for K >= 3 (x_1 - x_3 would be 2/beta and 1/beta); the summed loss is a
    # piecewise-linear program without a closed-form minimiser.


@register_loss("cdpo")
@dataclass
class CDPOLoss(_BetaLoss):
    """Conservative DPO: -(1-eps) log sigma(beta h) - eps log sigma(-beta h), eps = label_smoothing.

    TRL's `sigmoid` with label_smoothing up to v0.28. Default eps = 0.1, the value METHODS.md
    calls typical for robust DPO, so that `cdpo` differs from `dpo` out of the box.
    """

    beta: float = 0.1
    label_smoothing: float = 0.1
    name: str = field(default="cdpo", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_label_smoothing(self.name, self.label_smoothing)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        eps, z = self.label_smoothing, self.beta * b.h
        return (1 - eps) * neg_log_sigmoid(z) + eps * neg_log_sigmoid(-z)

    def optimal_logprobs(self, rewards, ref_logprobs):
        """DPO's target when eps = 0, else None.

        With eps > 0 each pair wants sigma(beta h_ij) = eps + (1 - 2 eps) p_ij, whose logit is
        not of the form a_i - a_j: the per-pair optima are inconsistent and the minimiser of the
        sum (a BT fit to smoothed win rates) has no closed form.
        """
        if self.label_smoothing == 0:
            return _dpo_target(rewards, ref_logprobs, self.beta)
        return None


@register_loss("rdpo", "robust")
@dataclass
class RDPOLoss(_BetaLoss):
    """Robust DPO (TRL `robust`): [-(1-eps) log sigma(beta h) + eps log sigma(-beta h)]/(1-2eps).

    eps = label_smoothing in [0, 0.5) is the assumed label flip rate; default 0.1 (METHODS.md:
    typical for robust). Unbiased: its expectation over eps-flipped labels is DPO's loss on the
    clean label.
    """

    beta: float = 0.1
    label_smoothing: float = 0.1
    name: str = field(default="rdpo", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_label_smoothing(self.name, self.label_smoothing)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        eps, z = self.label_smoothing, self.beta * b.h
        return ((1 - eps) * neg_log_sigmoid(z) - eps * neg_log_sigmoid(-z)) / (1 - 2 * eps)

    def optimal_logprobs(self, rewards, ref_logprobs):
        """DPO's target when eps = 0, else None.

        The expected loss with a clean soft label p is DPO's with label (p - eps)/(1 - 2 eps):
        the de-noising sharpens labels that were never noisy. Its logit is not of the form
        a_i - a_j (no closed form), and where p < eps or p > 1 - eps the label leaves [0, 1]
        and the loss is unbounded below (no minimiser at all).
        """
        if self.label_smoothing == 0:
            return _dpo_target(rewards, ref_logprobs, self.beta)
        return None


def _margin_scale(b: Pairs, p: Tensor | None) -> Tensor | float:
    return 1.0 if p is None else 2 * p - 1


@register_loss("gdpo")
@dataclass
class GDPOLoss(_BetaLoss):
    """Geometric-averaging DPO (METHODS.md §3): -log sigma(beta (2p - 1) h), p the soft label.

    Hard labels (p = 1) give DPO. Symmetric: swapping chosen and rejected with p -> 1 - p
    leaves the loss unchanged, so p < 1/2 is accepted.
    """

    beta: float = 0.1
    name: str = field(default="gdpo", init=False)
    soft_labels_enter_formula = True

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return neg_log_sigmoid(self.beta * _margin_scale(b, p) * b.h)

    # No target: with soft labels every pair's loss decreases monotonically in (2p-1) h, so
    # the loss has no minimiser; its infimum 0 is approached only as every h_ij grows with the
    # sign of r_i - r_j, i.e. as pi collapses onto argmax r (KL to that target is infinite for
    # every policy that is not one-hot, so it is not returned). See the bandit test.


@register_loss("gipo")
@dataclass
class GIPOLoss(_BetaLoss):
    """Geometric-averaging IPO (METHODS.md §3): ((2p - 1) h_bar - 1/(2 beta))^2.

    Length-averaged margin h_bar, as our `ipo` (which follows TRL), so that gipo with hard
    labels (p = 1) is exactly `ipo` and beta means the same thing in both. METHODS.md writes
    GIPO with raw h and flags the normalisation as unchecked; on one-token answers the two
    coincide.
    """

    beta: float = 0.1
    name: str = field(default="gipo", init=False)
    requires_lengths = True
    soft_labels_enter_formula = True

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return (_margin_scale(b, p) * b.h_bar - 1 / (2 * self.beta)) ** 2

    def optimal_logprobs(self, rewards, ref_logprobs):
        """log_softmax(ref + x) with x = pinv(L_w) b, the weighted least-squares solution.

        The summed loss is sum_{i<j} w_ij (x_i - x_j - t_ij)^2 + const with w_ij = (2p_ij-1)^2
        and w_ij t_ij = (2p_ij - 1)/(2 beta) (symmetric under swapping i, j). Its normal
        equations are L_w x = b with the weighted graph Laplacian L_w = diag(W 1) - W and
        b_i = sum_j (2p_ij - 1)/(2 beta); x is unique up to a constant when the weighted graph
        is connected (distinct rewards). Unlike IPO's, this is not a softmax of win rates:
        pairs with p near 1/2 get weight ~0 but a large target margin.
        """
        p = win_probabilities(rewards)
        w = (2 * p - 1) ** 2
        lap = torch.diag_embed(w.sum(-1)) - w
        rhs = (2 * p - 1).sum(-1) / (2 * self.beta)
        x = (torch.linalg.pinv(lap) @ rhs.unsqueeze(-1)).squeeze(-1)
        return torch.log_softmax(ref_logprobs + x, dim=-1)
