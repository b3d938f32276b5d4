"""SeqPO, Sequential Preference Optimization (Lou et al., arXiv 2405.12739; METHODS.md §8).

One round per preference dimension, in the spec's order (`data.dimensions`); the outer loop
is harness/sequential.py. Round 1 is DPO on dimension 1 with reference pi_0. Round n starts
from pi_{n-1}, uses it as the reference, and trains on dimension-n pairs with

    L_n = -log sigma( beta h_n - s lam (P(y_w) - P(y_l)) ),
    h_n = [log pi_theta(y_w) - log pi_{n-1}(y_w)] - [log pi_theta(y_l) - log pi_{n-1}(y_l)],

where P(y) = sum_{i<n} R^_i(y) are the earlier dimensions' implicit rewards of the response,
recovered from the chain of stored policies (`prior_rewards`) and precomputed once per pair,
and s = margin_sign. For n = 2, P = beta log pi_1/pi_0 and this is METHODS.md §8's
L_2 = -log sigma(beta[...pi_1...] - lam beta_1[log pi_1(y_w)/pi_0(y_w) - log pi_1(y_l)/pi_0(y_l)]).

What rests on what (README "Methods"): rounds over dimensions, each starting from the last
policy, round 1 = DPO [S]; the constrained round objective and its optimum
pi_n ∝ pi_{n-1} exp((R_n + s lam sum_{i<n} R_i)/beta) [D]; the n = 2 loss [D]; general n
through the chain (below) [D]; the paper's own loss for n > 2, its lam and beta defaults, and
the sign convention [U] (hence `margin_sign`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trainers.losses.base import (
    Pairs,
    PairwiseLoss,
    Tensor,
    check_nonnegative,
    check_positive,
    neg_log_sigmoid,
    register_loss,
    reward_metrics,
)

PRIOR_INPUTS = ("chosen_prior_reward", "rejected_prior_reward")


@register_loss("seqpo", renames={"lambda": "lam"})
@dataclass
class SeqPOLoss(PairwiseLoss):
    """SeqPO's round loss: DPO against the previous round's policy, minus the fixed margin
    s lam (P_w - P_l) of the earlier dimensions' implicit rewards (given per pair as
    chosen_prior_reward, rejected_prior_reward; zero in round 1, where it is DPO).

    With a soft label p it is the expected loss (base.py): swapping the pair swaps P_w and
    P_l, so the margin's sign follows the pair.
    """

    beta: float = 0.1        # every round's beta (round n's KL weight to pi_{n-1}) [U]
    lam: float = 1.0         # lambda_i = lam for every earlier dimension [U]
    margin_sign: int = 1     # 1: keep earlier dimensions (+lam R_i in the optimum); -1: flip
    rounds: int = 0          # train the first N dimensions; 0 = all of them
    name: str = field(default="seqpo", init=False)
    extra_inputs = PRIOR_INPUTS
    row_inputs = PRIOR_INPUTS   # per-pair numbers the rows carry (trainers/objectives.py)
    sequential = True           # the pipeline runs one round per dimension
    dimensional = True          # its optimum needs each dimension's reward (optimal_logprobs)

    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)
        check_nonnegative(self.name, "lambda", self.lam)
        if self.margin_sign not in (1, -1):
            raise ValueError(f"seqpo: margin_sign must be 1 or -1, got {self.margin_sign!r}")
        if self.rounds < 0:
            raise ValueError(f"seqpo: rounds must be >= 0 (0: every dimension), got "
                             f"{self.rounds!r}")

    def _prior(self, b: Pairs) -> tuple[Tensor, Tensor]:
        if any(k not in b.extra for k in PRIOR_INPUTS):
            raise ValueError("seqpo needs chosen_prior_reward and rejected_prior_reward: the "
                             "earlier dimensions' implicit rewards of each response "
                             "(zeros in round 1; harness/sequential.py computes them)")
        return b.extra[PRIOR_INPUTS[0]].detach(), b.extra[PRIOR_INPUTS[1]].detach()

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        pw, pl = self._prior(b)
        return neg_log_sigmoid(self.beta * b.h - self.margin_sign * self.lam * (pw - pl))

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        out = reward_metrics(self.beta * (b.pc - b.rc), self.beta * (b.pr - b.rr), b.pc, b.pr)
        pw, pl = self._prior(b)
        out["prior/margins"] = (self.lam * (pw - pl)).mean()
        return out

    def prior_rewards(self, chain: list[Tensor]) -> Tensor:
        """P(y) = sum_{i<n} R^_i(y) from log pi_0(y), ..., log pi_{n-1}(y) (`chain`, n >= 1).

        Round i's optimum pi_i ∝ pi_{i-1} exp((R_i + s lam sum_{j<i} R_j)/beta) gives,
        up to a constant per prompt (which cancels in P_w - P_l),
            R^_i = beta log(pi_i/pi_{i-1}) - s lam sum_{j<i} R^_j,
        so P is exact wherever the earlier rounds reached their optima. chain = [pi_0]
        (round 1) gives zeros.
        """
        prior = torch.zeros_like(chain[0])
        for before, after in zip(chain, chain[1:]):
            prior = prior + self.beta * (after - before) - self.margin_sign * self.lam * prior
        return prior

    def optimal_logprobs(self, rewards: Tensor, ref_logprobs: Tensor) -> Tensor | None:
        """log pi_n over the K answers after n rounds, from pi_0 = ref_logprobs.

        `rewards` is [D, K] (each dimension's rewards, in the training order) or [K] (one
        dimension). With every pair of dimension k once at p_ij = sigmoid(R_k,i - R_k,j),
        round k's loss is minimised where beta h_ij - s lam (P_i - P_j) = R_k,i - R_k,j, i.e.
        pi_k = pi_{k-1} exp((R_k + s lam sum_{i<k} R_i)/beta)/Z; chained from pi_0. None
        when the rounds outnumber the dimensions given.
        """
        if rewards.dim() == ref_logprobs.dim():
            rewards = rewards.unsqueeze(-2)
        n = self.rounds or rewards.shape[-2]
        if n > rewards.shape[-2]:
            return None
        logp, earlier = ref_logprobs, torch.zeros_like(ref_logprobs)
        for k in range(n):
            r = rewards[..., k, :]
            logp = logp + (r + self.margin_sign * self.lam * earlier) / self.beta
            earlier = earlier + r
        return torch.log_softmax(logp, dim=-1)
