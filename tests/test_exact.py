"""The exact win rate and rating on an enumerable task, against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evaluators.collect import ExactPrompt
from evaluators.exact import exact_bt_ratings, exact_win_rate, oracle_preferences


def _prompt(rng, text: str, rewards: np.ndarray) -> ExactPrompt:
    logits = rng.normal(size=len(rewards))
    # unnormalised on purpose: the mass outside the answers is renormalised away
    return ExactPrompt(logits - 0.3, rewards, None, text)


def _brute_win_rate(model, base, scale) -> float:
    """Enumerate every (model answer, baseline answer) pair and call the judge's rule."""
    per_prompt = []
    for m, b in zip(model, base):
        pm = np.exp(m.logprobs) / np.exp(m.logprobs).sum()
        pb = np.exp(b.logprobs) / np.exp(b.logprobs).sum()
        total = 0.0
        for i, j in itertools.product(range(len(pm)), range(len(pb))):
            # the oracle judge: identical answers tie, otherwise sigmoid(s (r_c - r_b))
            p = 0.5 if i == j else 1 / (1 + math.exp(-scale * (m.rewards[i] - m.rewards[j])))
            total += pm[i] * pb[j] * p
        per_prompt.append(total)
    return 100 * float(np.mean(per_prompt))


def test_exact_win_rate_equals_brute_force_enumeration():
    rng = np.random.default_rng(0)
    rewards = [rng.normal(size=5) for _ in range(3)]
    model = [_prompt(rng, f"x{k}", r) for k, r in enumerate(rewards)]
    base = [_prompt(rng, f"x{k}", r) for k, r in enumerate(rewards)]
    for scale in (0.5, 3.0):
        assert exact_win_rate(model, base, scale) == pytest.approx(
            _brute_win_rate(model, base, scale), abs=1e-12)
    assert exact_win_rate(base, base, 2.0) == pytest.approx(50.0, abs=1e-12)  # symmetric


def test_oracle_preferences_are_a_proper_preference_matrix():
    pref = oracle_preferences(np.array([0.0, 1.0, -2.0]), 2.0)
    np.testing.assert_allclose(pref + pref.T, 1.0)
    assert (np.diag(pref) == 0.5).all()


def test_exact_bt_of_the_baseline_plan_is_the_logit_of_the_exact_win_rate():
    rng = np.random.default_rng(1)
    rewards = [rng.normal(size=4) for _ in range(4)]
    exact = {name: [_prompt(rng, f"x{k}", r) for k, r in enumerate(rewards)]
             for name in ("sft", "a", "b")}
    ratings = exact_bt_ratings(exact, [("sft", "a"), ("sft", "b")], "sft", 1.5)
    assert ratings["sft"] == pytest.approx(1000.0)
    for m in ("a", "b"):
        w = exact_win_rate(exact[m], exact["sft"], 1.5) / 100
        assert ratings[m] == pytest.approx(1000 + 400 * math.log10(w / (1 - w)), abs=1e-6)
