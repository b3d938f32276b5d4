"""TDPO, token-level DPO (METHODS.md §6; Zeng et al. 2024, official trainers.py).

Needs, besides the usual inputs, D_w and D_l: per-sequence sums over completion positions of
the token-level KL(pi_ref(.|x, y_<t) || pi_theta(.|x, y_<t)) over the vocabulary, passed as
`chosen_token_kl` and `rejected_token_kl` ([B], gradient flowing through pi_theta).
`requires_token_kl = True` tells the training loop to compute them.
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
)


@register_loss("tdpo")
@dataclass
class TDPOLoss(PairwiseLoss):
    """TDPO1: -log sigma(beta [h - (D_l - D_w)]); TDPO2: -log sigma(beta [h - alpha (D_l - sg(D_w))]).

    `tdpo2` defaults to True: the TDPO README calls TDPO2 the recommended run, although the
    official yaml default is `if_tdpo2: false`. alpha (0.5) is used by TDPO2 only; beta 0.1.
    Metrics: TRL's rewards/* with beta (l - l^ref), plus kl/chosen and kl/rejected (means of
    D_w, D_l).
    """

    beta: float = 0.1
    alpha: float = 0.5
    tdpo2: bool = True
    name: str = field(default="tdpo", init=False)
    requires_token_kl = True
    extra_inputs = ("chosen_token_kl", "rejected_token_kl")

    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)
        check_nonnegative(self.name, "alpha", self.alpha)

    def _token_kl(self, b: Pairs) -> tuple[Tensor, Tensor]:
        if "chosen_token_kl" not in b.extra or "rejected_token_kl" not in b.extra:
            raise ValueError("tdpo needs chosen_token_kl and rejected_token_kl: per-sequence "
                             "sums of KL(pi_ref || pi_theta) over completion positions")
        return b.extra["chosen_token_kl"], b.extra["rejected_token_kl"]

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        d_w, d_l = self._token_kl(b)
        if self.tdpo2:
            margin = b.h - self.alpha * (d_l - d_w.detach())
        else:
            margin = b.h - (d_l - d_w)
        return neg_log_sigmoid(self.beta * margin)

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        out = super().metrics(b)
        d_w, d_l = self._token_kl(b)
        out.update({"kl/chosen": d_w.detach().mean(), "kl/rejected": d_l.detach().mean()})
        return out

    def optimal_logprobs(self, rewards, ref_logprobs):
        """TDPO1: DPO's pi_ref exp(r/beta)/Z; TDPO2: None.

        One-token answers share their only prefix (the prompt), so D_w = D_l as functions of
        theta and TDPO1's loss is DPO's. TDPO2's value is DPO's too, but its stop-gradient adds
        alpha beta c_ij grad D (c_ij > 0) to every pair's gradient, pulling pi towards pi_ref:
        its fixed point is not DPO's and has no closed form.
        """
        if self.tdpo2:
            return None
        return torch.log_softmax(ref_logprobs + rewards / self.beta, dim=-1)
