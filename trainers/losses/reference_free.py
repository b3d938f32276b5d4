"""Reference-free baselines: SimPO, ORPO and SFT (METHODS.md §6, TRL `sft`).

All three work on per-token-averaged log-probs l_bar = l/|y| and so need chosen_lengths and
rejected_lengths; none looks at the reference model. Soft labels give the expected loss
(trainers/losses/base.py). Theory targets assume one-token answers (l_bar = l) and every
pair once with p_ij = sigmoid(r_i - r_j), as in trainers/losses/dpo_family.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from trainers.losses.base import (
    Pairs,
    PairwiseLoss,
    Tensor,
    check_nonnegative,
    check_positive,
    neg_log_sigmoid,
    register_loss,
    reward_metrics,
    win_probabilities,
)


@register_loss("simpo")
@dataclass
class SimPOLoss(PairwiseLoss):
    """SimPO: -log sigma(beta (l_w/|y_w| - l_l/|y_l|) - gamma); implicit reward beta * l_bar.

    Equals TRL's CPOTrainer with loss_type="simpo" (trl/experimental/cpo/cpo_trainer.py,
    `cpo_loss`) under CPOConfig(beta=beta, simpo_gamma=gamma, cpo_alpha=0.0,
    label_smoothing=0.0, alpha=0.0): TRL averages log-probs over completion tokens for simpo
    (`average_log_prob=True`), forms logits = (l_bar_w - l_bar_l) - simpo_gamma/beta and takes
    -logsigmoid(beta * logits) = -log sigma(beta (l_bar_w - l_bar_l) - gamma). Set TRL's beta
    explicitly: CPOConfig defaults to beta=0.1 and cpo_alpha=1.0 (which adds an NLL term).
    TRL logs rewards beta * l_bar, as we do. Defaults beta=2.0 (torchtune), gamma=0.5.
    """

    beta: float = 2.0
    gamma: float = 0.5
    name: str = field(default="simpo", init=False)
    requires_reference = False
    requires_lengths = True

    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)
        check_nonnegative(self.name, "gamma", self.gamma)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return neg_log_sigmoid(self.beta * (b.pc / b.lc - b.pr / b.lr) - self.gamma)

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        return reward_metrics(self.beta * b.pc / b.lc, self.beta * b.pr / b.lr, b.pc, b.pr)

    def optimal_logprobs(self, rewards, ref_logprobs):
        """softmax(r / beta) when gamma = 0 (then SimPO is SPO with alpha = beta), else None.

        With gamma > 0 each pair's expected loss is minimised where
        p sigma(gamma - beta d) = (1 - p) sigma(gamma + beta d), d = l_i - l_j, a margin that
        is not of the form a_i - a_j: the per-pair optima are inconsistent, no closed form.
        """
        if self.gamma == 0:
            return torch.log_softmax(rewards / self.beta, dim=-1)
        return None


_LOG_HALF = -math.log(2)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -log 2 (TRL's ORPO uses the same)."""
    return torch.where(x < _LOG_HALF, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def _log_odds(mean_logp: Tensor) -> Tensor:
    return mean_logp - log1mexp(mean_logp)


def _borda_target(rewards: Tensor) -> Tensor:
    """log pi with pi_i proportional to sum_{j != i} sigmoid(r_i - r_j) (expected wins)."""
    wins = win_probabilities(rewards).sum(-1) - 0.5  # drop the diagonal's 1/2
    return torch.log(wins) - torch.log(wins.sum(-1, keepdim=True))


@register_loss("orpo", renames={"lambda": "lam"})
@dataclass
class ORPOLoss(PairwiseLoss):
    """ORPO: -l_bar_w - lambda log sigma(log odds(y_w) - log odds(y_l)).

    odds(y) = P/(1 - P) with P = exp(l_bar), the per-token-averaged probability; log odds are
    computed as l_bar - log1mexp(l_bar), TRL's `odds_ratio_loss` (the odds-ratio term equals
    TRL's per pair; TRL's `beta` is our lambda, default 0.1). The NLL term differs from TRL's
    on purpose: ours is the per-pair token mean over the completion, TRL's is one token mean
    over the whole chosen batch including the prompt tokens. Metrics as TRL: rewards
    lambda * l_bar, nll_loss, log_odds_ratio (mean log sigma(...)), log_odds_chosen.
    """

    lam: float = 0.1
    name: str = field(default="orpo", init=False)
    requires_reference = False
    requires_lengths = True

    def __post_init__(self) -> None:
        check_nonnegative(self.name, "lambda", self.lam)

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        mw, ml = b.pc / b.lc, b.pr / b.lr
        return -mw + self.lam * neg_log_sigmoid(_log_odds(mw) - _log_odds(ml))

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        mw, ml = b.pc.detach() / b.lc, b.pr.detach() / b.lr
        log_odds = _log_odds(mw) - _log_odds(ml)
        out = reward_metrics(self.lam * mw, self.lam * ml, b.pc, b.pr)
        out.update({"nll_loss": (-mw).mean(), "log_odds_ratio": F.logsigmoid(log_odds).mean(),
                    "log_odds_chosen": log_odds.mean()})
        return out

    def optimal_logprobs(self, rewards, ref_logprobs):
        """SFT's target (expected wins) when lambda = 0, else None.

        The NLL part wants pi_i proportional to expected wins, the odds-ratio part wants
        logit(pi_i) - logit(pi_j) = r_i - r_j; their compromise has no closed form.
        """
        return _borda_target(rewards) if self.lam == 0 else None


@register_loss("sft")
@dataclass
class SFTLoss(PairwiseLoss):
    """SFT on the chosen completion: -l_w/|y_w| (token-mean NLL), no hyperparameters.

    Per pair, unlike TRL's DPO `sft` (one token mean over the batch). With a soft label p:
    p NLL(y_w) + (1 - p) NLL(y_l), SFT on the preferred completion in expectation. Implicit
    reward: the token-mean log-prob l_bar.
    """

    name: str = field(default="sft", init=False)
    requires_reference = False
    requires_lengths = True

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return -b.pc / b.lc

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        out = reward_metrics(b.pc / b.lc, b.pr / b.lr, b.pc, b.pr)
        out["nll_loss"] = (-b.pc.detach() / b.lc).mean()
        return out

    def optimal_logprobs(self, rewards, ref_logprobs):
        """pi_i proportional to sum_{j != i} p_ij, the expected number of wins of answer i.

        Summed over all pairs the expected loss is -sum_i w_i log pi_i with
        w_i = sum_{j != i} p_ij, minimised on the simplex by pi = w / sum(w).
        """
        return _borda_target(rewards)
