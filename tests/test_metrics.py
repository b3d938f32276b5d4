"""Diversity and exact-distribution metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluators.metrics import distinct_n, exact_distribution_metrics, per_prompt_distinct_n

# ---------------------------------------------------------------------------- distinct-n


def test_distinct_1_and_2_hand_example() -> None:
    texts = ["a b a", "a b"]
    # unigrams a b a a b: 2 unique of 5
    assert distinct_n(texts, 1) == pytest.approx(2 / 5)
    # bigrams (a b) (b a) (a b): 2 unique of 3; n-grams never cross texts
    assert distinct_n(texts, 2) == pytest.approx(2 / 3)
    # trigrams: only "a b a"
    assert distinct_n(texts, 3) == pytest.approx(1.0)


def test_distinct_n_splits_on_any_whitespace() -> None:
    assert distinct_n(["x  y\ty\n"], 1) == pytest.approx(2 / 3)


def test_distinct_n_identical_samples_collapse() -> None:
    assert distinct_n(["the cat sat"] * 4, 1) == pytest.approx(3 / 12)
    assert distinct_n(["the cat sat"] * 4, 2) == pytest.approx(2 / 8)


def test_distinct_n_without_ngrams_is_none() -> None:
    assert distinct_n([], 1) is None
    assert distinct_n(["", "   "], 1) is None
    assert distinct_n(["one", "two"], 2) is None
    assert distinct_n(["one", "two words"], 2) == pytest.approx(1.0)


def test_per_prompt_distinct_n_averages_over_prompts() -> None:
    samples = [("p1", "a a"), ("p1", "a a"), ("p2", "x y"), ("p3", "")]
    # p1: 1 unique of 4; p2: 2 of 2; p3 has no unigram and is skipped
    assert per_prompt_distinct_n(samples, 1) == pytest.approx((0.25 + 1.0) / 2)
    # pooled over prompts it would be 3/6: per-prompt is a different number
    assert distinct_n([t for _, t in samples], 1) == pytest.approx(0.5)


def test_per_prompt_distinct_n_groups_interleaved_samples() -> None:
    samples = [("p1", "a"), ("p2", "b"), ("p1", "a"), ("p2", "c")]
    # p1: {a} of 2 -> 0.5; p2: {b, c} of 2 -> 1.0
    assert per_prompt_distinct_n(samples, 1) == pytest.approx(0.75)


def test_per_prompt_distinct_n_empty() -> None:
    assert per_prompt_distinct_n([], 1) is None
    assert per_prompt_distinct_n([("p", "a")], 2) is None


# ---------------------------------------------------------------------------- exact metrics

P = np.array([0.5, 0.25, 0.25])
R = np.array([1.0, 2.0, 3.0])
H = 1.5 * math.log(2)  # -(.5 ln .5 + 2 * .25 ln .25)


def test_exact_metrics_hand_computed() -> None:
    uniform = np.log(np.full(3, 1 / 3))
    out = exact_distribution_metrics(np.log(P), R, uniform)
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-12)
    assert out["exact_expected_reward"] == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 3)
    assert out["exact_support_mass"] == pytest.approx(1.0)
    # KL(p || uniform) = log 3 - H
    assert out["exact_kl_to_target"] == pytest.approx(math.log(3) - H, abs=1e-12)


def test_exact_metrics_kl_to_itself_and_none_target() -> None:
    assert exact_distribution_metrics(np.log(P), R, np.log(P))["exact_kl_to_target"] == \
        pytest.approx(0.0, abs=1e-12)
    assert exact_distribution_metrics(np.log(P), R, None)["exact_kl_to_target"] is None


def test_exact_metrics_kl_direction() -> None:
    """KL(pi || target), not KL(target || pi): the two differ for this pair."""
    q = np.array([0.02, 0.08, 0.9])
    out = exact_distribution_metrics(np.log(P), R, np.log(q))
    forward = float((P * np.log(P / q)).sum())
    reverse = float((q * np.log(q / P)).sum())
    assert abs(forward - reverse) > 0.1
    assert out["exact_kl_to_target"] == pytest.approx(forward, abs=1e-12)


def test_exact_metrics_renormalises_leaked_mass() -> None:
    """Log-probs summing to 0.5 (the model puts half its mass outside the set)."""
    out = exact_distribution_metrics(np.log(P * 0.5), R, np.log(np.full(3, 1 / 3)))
    assert out["exact_support_mass"] == pytest.approx(0.5)
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-12)
    assert out["exact_expected_reward"] == pytest.approx(1.75)
    assert out["exact_kl_to_target"] == pytest.approx(math.log(3) - H, abs=1e-12)


def test_exact_metrics_deterministic_policy_limit() -> None:
    logp = np.log(np.array([1 - 2e-12, 1e-12, 1e-12]))
    out = exact_distribution_metrics(logp, R, None)
    assert out["exact_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert out["exact_expected_reward"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exact_metrics_long_sequences_do_not_underflow() -> None:
    out = exact_distribution_metrics(np.log(P) - 1000.0, R, None)
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-9)
    assert out["exact_expected_reward"] == pytest.approx(1.75, abs=1e-9)
    assert out["exact_support_mass"] == pytest.approx(0.0, abs=1e-300)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exact_metrics_zero_probability_arm() -> None:
    logp = np.array([math.log(0.5), math.log(0.5), -math.inf])
    out = exact_distribution_metrics(logp, R, np.log(np.full(3, 1 / 3)))
    assert out["exact_entropy"] == pytest.approx(math.log(2))
    assert out["exact_expected_reward"] == pytest.approx(1.5)
    assert out["exact_kl_to_target"] == pytest.approx(math.log(3) - math.log(2))


def test_self_bleu_identical_and_disjoint_samples():
    from evaluators.metrics import self_bleu

    same = [("p", "the cat sat on the mat")] * 3
    assert self_bleu(same) == pytest.approx(100.0)
    disjoint = [("p", "alpha beta gamma delta"), ("p", "one two three four"),
                ("p", "red green blue black")]
    assert self_bleu(disjoint) < 5.0
    # averaged per prompt; a prompt with a single sample is skipped
    assert self_bleu(same + [("q", "lonely")]) == pytest.approx(100.0)
    assert self_bleu([("q", "lonely")]) is None
