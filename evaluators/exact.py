"""The truth on tasks whose answers can be enumerated (`bandit`): exact win rates and ratings.

Where the report holds every model's exact distribution over a prompt's answers and the
judge's preference function is known (the oracle: P(y beats y') = sigmoid(s (r_y - r_y')),
identical answers a tie), the win rate the sampled estimate targets is a finite sum:

    exact_win_rate = 100 * mean over prompts of  sum_y sum_y' pi(y|x) pi_base(y'|x) P(y > y')

with each distribution renormalised over the enumerable answers (the mass a model leaks
outside them is `exact_support_mass`). The exact Bradley-Terry rating is the BT fit
(`evaluators.ratings`) on the expected win masses of every pair in the battle plan: what the
plain BT estimate converges to with infinitely many samples. These are the values a
coverage study checks the leaderboard's intervals against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from evaluators.collect import ExactPrompt
from harness.numeric import sigmoid


def normalised(logprobs: np.ndarray) -> np.ndarray:
    """A distribution over the enumerable answers from their sequence log-probs."""
    lp = np.asarray(logprobs, dtype=float)
    return np.exp(lp - np.logaddexp.reduce(lp))


def oracle_preferences(rewards: np.ndarray, scale: float) -> np.ndarray:
    """P[i, j] = P(answer i beats answer j) for the oracle judge: sigmoid(s (r_i - r_j)).

    The diagonal is 1/2, which is how the judge scores identical answers (a tie).
    """
    r = np.asarray(rewards, dtype=float)
    pref = np.vectorize(sigmoid)(scale * (r[:, None] - r[None, :]))
    np.fill_diagonal(pref, 0.5)
    return pref


def exact_win_probabilities(first: Sequence[ExactPrompt], second: Sequence[ExactPrompt],
                            scale: float) -> dict[str, float]:
    """prompt -> P(a sample of `second` beats a sample of `first`), prompts both have."""
    by_prompt = {e.prompt: e for e in first}
    out = {}
    for e in second:
        if e.prompt in by_prompt:
            pref = oracle_preferences(e.rewards, scale)
            out[e.prompt] = float(normalised(e.logprobs) @ pref
                                  @ normalised(by_prompt[e.prompt].logprobs))
    return out


def exact_win_rate(model: Sequence[ExactPrompt], baseline: Sequence[ExactPrompt],
                   scale: float) -> float | None:
    """100 x the mean over prompts of P(model's sample beats the baseline's)."""
    probs = exact_win_probabilities(baseline, model, scale)
    return 100.0 * float(np.mean(list(probs.values()))) if probs else None


def exact_bt_ratings(exact: dict[str, Sequence[ExactPrompt]], pairs: Sequence[tuple[str, str]],
                     anchor: str, scale: float) -> dict[str, float | None]:
    """The BT ratings (Elo, anchor = 1000) fitted on the expected win masses of `pairs`.

    Every pair meets on every prompt with equal weight, as the judge stage's plan has it;
    a model outside the anchor's strongly connected component gets None.
    """
    from evaluators.ratings import _bt_fit

    labels = list(exact)
    index = {m: i for i, m in enumerate(labels)}
    w = np.zeros((len(labels), len(labels)))
    for a, b in pairs:
        if a not in index or b not in index:
            continue
        probs = exact_win_probabilities(exact[a], exact[b], scale)  # P(b beats a)
        w[index[b], index[a]] += sum(probs.values())
        w[index[a], index[b]] += sum(1 - p for p in probs.values())
    ratings = _bt_fit(w, index[anchor])
    return {m: (None if not np.isfinite(ratings[i]) else float(ratings[i]))
            for m, i in index.items()}
