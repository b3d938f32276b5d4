"""The truth on tasks whose answers can be enumerated (`bandit`): exact win rates and ratings.

Where the report holds every model's exact distribution over a prompt's answers and the
judge's preference function is known (the oracle: P(y beats y') = sigmoid(s (r_y - r_y')),
identical answers a tie), the win rate the sampled estimate targets is a finite sum:

    exact_win_rate = 100 * mean over prompts of  sum_y sum_y' pi(y|x) pi_base(y'|x) P(y > y')

over the enumerable answers plus, where the task scores every answer outside them with one
known value (`Task.outside_reward`: the bandit's floor), one more "answer" holding the mass
the model leaks outside the set (`1 - exact_support_mass`), so the truth is what the sampled
estimate converges to; where no such value is known the distributions are renormalised over
the set. The exact Bradley-Terry rating is the BT fit
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


def answer_distribution(e: ExactPrompt) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, rewards) of one prompt's answers as a sampler meets them.

    With a known outside reward the leaked mass is one extra answer scored with it (two
    leaked answers meet at reward difference 0, which the oracle scores 1/2 whether they are
    identical or not); without one, the set's distribution is renormalised.
    """
    lp = np.asarray(e.logprobs, dtype=float)
    rewards = np.asarray(e.rewards, dtype=float)
    if e.outside_reward is None:
        return normalised(lp), rewards
    p = np.exp(lp)
    leaked = max(0.0, 1.0 - float(p.sum()))
    return np.append(p, leaked), np.append(rewards, e.outside_reward)


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
            p_second, rewards = answer_distribution(e)
            p_first, _ = answer_distribution(by_prompt[e.prompt])
            out[e.prompt] = float(p_second @ oracle_preferences(rewards, scale) @ p_first)
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
