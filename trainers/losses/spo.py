"""SPO, Soft Preference Optimization (METHODS.md §1): pairwise, weighted and list forms.

Preference term (reference-free): P(y1 > y2) = sigmoid(alpha (l_1 - l_2)), loss
(1/alpha) softplus(-alpha (l_w - l_l)); the reference enters only through the online KL
regularizer lambda * KL(pi_theta || pi_ref) that the training loop adds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from trainers.losses.base import (
    KLRegularizer,
    LossOutput,
    Pairs,
    PairwiseLoss,
    Tensor,
    check_nonnegative,
    check_positive,
    neg_log_sigmoid,
    register_loss,
    reward_metrics,
)

KL_ESTIMATORS = ("exact", "k1", "k3", "reference")
WEIGHTS = ("none", "gamma")

WeightFn = Callable[..., Tensor]  # (pc, pr, chosen_lengths | None, rejected_lengths | None) -> [B]


def spo_list_loss(logps: Tensor, alpha: float, ranked: bool = True) -> Tensor:
    """[B] Plackett-Luce SPO loss of lists `logps` [B, n] sorted best -> worst (§1.3, §1.4).

    ranked=True:  -(1/alpha) sum_{k<n} log( pi_k^alpha / sum_{j>=k} pi_j^alpha );
    ranked=False: best-of-n, -(1/alpha) log( pi_1^alpha / sum_j pi_j^alpha ).
    n = 2 is the pairwise loss (1/alpha) softplus(-alpha (l_1 - l_2)).
    """
    if logps.dim() != 2 or logps.shape[1] < 2:
        raise ValueError(f"logps must be [batch, n] with n >= 2, got shape {tuple(logps.shape)}")
    s = alpha * logps
    if not ranked:
        return -(s[:, 0] - s.logsumexp(1)) / alpha
    tail = torch.logcumsumexp(s.flip(1), 1).flip(1)  # tail[:, k] = logsumexp_{j>=k} s_j
    return -(s[:, :-1] - tail[:, :-1]).sum(1) / alpha


def gamma_weights(pc: Tensor, pr: Tensor, lc: Tensor, lr: Tensor, gamma: float) -> Tensor:
    """[U] placeholder mu = exp(gamma (m - mean_batch m)), m = (l_w/|y_w| + l_l/|y_l|)/2.

    METHODS.md §1.2: the paper's mu is computed from the model's own probabilities with a
    sharpness gamma and "subtracting the average in a batch"; this exact formula is our
    reconstruction, not the paper's. Pairs whose responses the model finds unlikely (per
    token) get less weight. Detached.
    """
    m = (pc / lc + pr / lr) / 2
    return torch.exp(gamma * (m - m.mean())).detach()


@register_loss("spo", renames={"lambda": "kl_weight"})
@dataclass
class SPOLoss(PairwiseLoss):
    """Soft Preference Optimization: (1/alpha) softplus(-alpha (l_w - l_l)), reference-free.

    With soft label p the loss is the expected one, p softplus(-alpha D)/alpha +
    (1-p) softplus(alpha D)/alpha. `lambda` weights the regularizer KL(pi_theta || pi_ref)
    estimated on online samples (`kl_estimator`: exact | k1 | k3 | reference, implemented in
    trainers/regularizers.py). Weighted SPO (§1.2): `weight="gamma"` multiplies each pair's
    loss by the detached gamma_weights() ([U] reconstruction); in Python any
    `weight_fn(pc, pr, chosen_lengths, rejected_lengths) -> [B]` can be passed instead; it is
    called under no_grad and must return finite weights >= 0.
    """

    alpha: float = 1.0
    kl_weight: float = 0.0
    kl_estimator: str = "exact"
    reg_prompts_per_step: int = 8
    reg_samples_per_prompt: int = 1
    reg_max_new_tokens: int = 16
    weight: str = "none"
    gamma: float = 1.0
    weight_fn: WeightFn | None = None
    name: str = field(default="spo", init=False)
    requires_reference = False  # the preference term never looks at the reference

    def __post_init__(self) -> None:
        check_positive("spo", "alpha", self.alpha)
        check_nonnegative("spo", "lambda", self.kl_weight)
        check_nonnegative("spo", "gamma", self.gamma)
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"spo: kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, "
                             f"got {self.kl_estimator!r}")
        if self.weight not in WEIGHTS:
            raise ValueError(f"spo: weight must be one of {', '.join(WEIGHTS)}, "
                             f"got {self.weight!r}")
        if self.weight_fn is not None and not callable(self.weight_fn):
            raise ValueError("spo: weight_fn must be callable(pc, pr, len_w, len_l) -> Tensor")
        if self.weight_fn is not None and self.weight != "none":
            raise ValueError("spo: give either weight='gamma' or a weight_fn, not both")
        for n in ("reg_prompts_per_step", "reg_samples_per_prompt", "reg_max_new_tokens"):
            if getattr(self, n) <= 0:
                raise ValueError(f"spo: {n} must be positive")
        self.requires_lengths = self.weight == "gamma"
        self.regularizer = (KLRegularizer(self.kl_weight, self.kl_estimator,
                                          self.reg_prompts_per_step, self.reg_samples_per_prompt,
                                          self.reg_max_new_tokens)
                            if self.kl_weight > 0 else None)

    @property
    def weighted(self) -> bool:
        return self.weight_fn is not None or self.weight != "none"

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        return neg_log_sigmoid(self.alpha * (b.pc - b.pr)) / self.alpha

    def pair_weights(self, b: Pairs) -> Tensor | None:
        if not self.weighted:
            return None
        with torch.no_grad():
            if self.weight_fn is not None:
                mu = self.weight_fn(b.pc.detach(), b.pr.detach(), b.lc, b.lr)
            else:
                mu = gamma_weights(b.pc, b.pr, b.lc, b.lr, self.gamma)
        mu = torch.as_tensor(mu, dtype=b.pc.dtype, device=b.pc.device).detach()
        if mu.shape != b.pc.shape:
            raise ValueError(f"spo: weights must have shape {tuple(b.pc.shape)}, "
                             f"got {tuple(mu.shape)}")
        if not bool((torch.isfinite(mu) & (mu >= 0)).all()):
            raise ValueError("spo: weights must be finite and >= 0")
        return mu

    def metrics(self, b: Pairs) -> dict[str, Tensor]:
        # SPO's preference model sigmoid(alpha (l1 - l2)): implied reward alpha * l
        a = self.alpha
        return reward_metrics(a * b.pc, a * b.pr, b.pc, b.pr)

    def list_loss(self, logps: Tensor, ranked: bool = True) -> LossOutput:
        """Plackett-Luce SPO on lists `logps` [B, n] (summed log-probs) sorted best -> worst.

        Metrics: rewards/chosen = alpha * l of the best, rewards/rejected = alpha * l of the
        others (mean), accuracies = fraction of lists whose best has the highest log-prob.
        """
        if self.weighted:
            raise ValueError("spo: weighted SPO (weight / weight_fn) is defined for pairs; "
                             "list_loss takes no weight")
        losses = spo_list_loss(logps, self.alpha, ranked)
        lp = logps.detach()
        a = self.alpha
        metrics = {
            "rewards/chosen": (a * lp[:, 0]).mean(),
            "rewards/rejected": (a * lp[:, 1:]).mean(),
            "rewards/margins": (a * (lp[:, 0] - lp[:, 1:].mean(1))).mean(),
            "rewards/accuracies": (lp.argmax(1) == 0).to(lp.dtype).mean(),
            "logps/chosen": lp[:, 0].mean(),
            "logps/rejected": lp[:, 1:].mean(),
        }
        return LossOutput(losses, metrics)

    def optimal_logprobs(self, rewards, ref_logprobs):
        """softmax(r / alpha) (§1.6), independent of pi_ref; None with the regularizer.

        Under BT with all pairs covered, alpha (l_i - l_j) = r_i - r_j minimises every pair's
        expected loss at once, so it also minimises any weighted sum with weights > 0: weighted
        SPO has the same optimum (a fixed point of the detached-weight gradient). lambda > 0
        moves the optimum towards pi_ref, with no closed form claimed.
        """
        if self.kl_weight > 0:
            return None
        return torch.log_softmax(rewards / self.alpha, dim=-1)
