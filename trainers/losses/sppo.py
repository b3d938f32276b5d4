"""SPPO, Self-Play Preference Optimization (METHODS.md §5): the per-pair loss only.

The iterative outer loop (reference := previous iterate pi_t, fresh samples, win rates from
a judge or scorer) is harness/iterative.py, not the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trainers.losses.base import Pairs, PairwiseLoss, Tensor, check_positive, register_loss

FORMS = ("sppo", "sppo_single")
PREFERENCES = ("scorer", "judge")


@register_loss("sppo")
@dataclass
class SPPOLoss(PairwiseLoss):
    """SPPO as in its code (uclaml/SPPO `sppo/trainer.py`), two forms.

    form "sppo" (the paper's objective, the code's default loss_type):
        ((l_w - (P_w - 1/2)/beta)^2 + (l_l - (P_l - 1/2)/beta)^2) / 2,
    with P_w = P(y_w > pi_t), P_l = P(y_l > pi_t) the estimated win rates of each response
    against the current iterate, given as the extra inputs chosen_win_rate and
    rejected_win_rate (the outer loop computes them from its K samples).
    form "sppo_single":
        ((l_w - (p - 1/2)/beta)^2 + (l_l + (p - 1/2)/beta)^2) / 2,
    with p = P(y_w > y_l), the soft label (hard labels: p = 1); half of TRL's `sppo_hard`.

    l_w = l_w - l_w^ref, l_l = l_l - l_l^ref (the reference is the previous iterate pi_t),
    beta = 1/eta, default 1e-3. Both forms are symmetric under swapping chosen and rejected.
    """

    beta: float = 1e-3
    form: str = "sppo"
    iterations: int = 3            # outer self-play iterations (harness/iterative.py)
    samples_per_prompt: int = 5    # K responses sampled per prompt from each iterate
    preference: str = "scorer"     # win rates from the first scorer (BT) or the first judge
    name: str = field(default="sppo", init=False)
    soft_labels_enter_formula = True
    extra_inputs = ("chosen_win_rate", "rejected_win_rate")
    iterative = True  # the pipeline runs the sample -> judge -> train outer loop

    def __post_init__(self) -> None:
        check_positive(self.name, "beta", self.beta)
        if self.iterations < 1 or self.samples_per_prompt < 2:
            raise ValueError("sppo: iterations must be >= 1 and samples_per_prompt >= 2")
        if self.form not in FORMS:
            raise ValueError(f"sppo: form must be one of {', '.join(FORMS)}, got {self.form!r}")
        if self.preference not in PREFERENCES:
            raise ValueError(f"sppo: preference must be one of {', '.join(PREFERENCES)}, "
                             f"got {self.preference!r}")

    def pair_losses(self, b: Pairs, p: Tensor | None) -> Tensor:
        lw, ll = b.pc - b.rc, b.pr - b.rr
        if self.form == "sppo_single":
            t = (0.5 if p is None else p - 0.5) / self.beta
            return ((lw - t) ** 2 + (ll + t) ** 2) / 2
        if "chosen_win_rate" not in b.extra or "rejected_win_rate" not in b.extra:
            raise ValueError("sppo (form 'sppo') needs chosen_win_rate and rejected_win_rate, "
                             "the responses' win rates against the current iterate; use form "
                             "'sppo_single' for plain preference pairs")
        tw = (b.extra["chosen_win_rate"] - 0.5) / self.beta
        tl = (b.extra["rejected_win_rate"] - 0.5) / self.beta
        return ((lw - tw) ** 2 + (ll - tl) ** 2) / 2

    # No target. Summed over all pairs the sppo_single loss is (1/2) sum_i sum_{j != i}
    # (x_i - t_ij)^2, t_ij = (p_ij - 1/2)/beta, x_i = log pi(i) - log pi_ref(i): unlike
    # DPO-type margins it is not shift-invariant, so the normalisation of pi binds. The
    # minimiser solves the KKT system x_i = m_i - lambda pi_i (m_i = mean_{j != i} t_ij), a
    # Lambert-W equation, not a softmax. The "sppo" form's population loss
    # E_{y ~ pi_t}[(x_y - eta (P(y > pi_t) - 1/2))^2] has the same structure; its minimiser
    # approaches the multiplicative-weights step pi_t exp(eta P(y > pi_t))/Z as eta -> 0,
    # with a log-space gap of O(eta^3) (E_{pi_t} P(y > pi_t) = 1/2), checked in the tests.
