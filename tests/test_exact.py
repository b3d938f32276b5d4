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


def _leaky_prompt(rng, text: str, rewards: np.ndarray, leak: float) -> ExactPrompt:
    p = rng.dirichlet(np.ones(len(rewards))) * (1 - leak)
    return ExactPrompt(np.log(p), rewards, None, text, float(rewards.min()) - 1.0)


def test_leaked_mass_counts_as_one_more_answer_at_the_outside_reward():
    """Brute force over the arms plus an 'outside' answer that scores the floor: the sampled
    estimate's target, which renormalising over the arms would overstate."""
    rng = np.random.default_rng(2)
    rewards = [rng.normal(size=4) for _ in range(3)]
    model = [_leaky_prompt(rng, f"x{k}", r, 0.2) for k, r in enumerate(rewards)]
    base = [_leaky_prompt(rng, f"x{k}", r, 0.05) for k, r in enumerate(rewards)]
    per_prompt = []
    for m, b in zip(model, base):
        pm = np.append(np.exp(m.logprobs), 0.2)
        pb = np.append(np.exp(b.logprobs), 0.05)
        r = np.append(m.rewards, m.outside_reward)
        total = sum(pm[i] * pb[j] * (0.5 if i == j else 1 / (1 + math.exp(-(r[i] - r[j]))))
                    for i, j in itertools.product(range(5), range(5)))
        per_prompt.append(total)
    truth = 100 * float(np.mean(per_prompt))
    assert exact_win_rate(model, base, 1.0) == pytest.approx(truth, abs=1e-12)
    renormalised = [[ExactPrompt(e.logprobs, e.rewards, None, e.prompt) for e in es]
                    for es in (model, base)]
    assert exact_win_rate(*renormalised, 1.0) > truth + 1  # the old, biased target


def test_the_exact_win_rate_is_what_the_real_judge_averages_to_on_the_bandit():
    """Monte Carlo with the bandit task's own rewards and the oracle judge, answers drawn
    from leaky distributions (a non-arm answer included): the mean judgment converges to
    exact_win_rate; 200k draws give an SE near 0.1 points, the test allows 5 SE."""
    from evaluators.judges import OracleBTJudge
    from harness.tasks.bandit import BanditOptions, BanditTask

    task = BanditTask(BanditOptions(n_prompts=3, n_arms=4), store=None)
    judge = OracleBTJudge(task)
    rng = np.random.default_rng(3)
    model, base, estimates = [], [], []
    for prompt in task.prompts:
        assert task.outside_reward(prompt) == task.rewards(prompt, ["not-an-arm"])[0]
        m = ExactPrompt(np.log(rng.dirichlet(np.ones(4)) * 0.7), task.true_rewards(prompt),
                        None, prompt, task.outside_reward(prompt))
        b = ExactPrompt(np.log(rng.dirichlet(np.ones(4)) * 0.9), task.true_rewards(prompt),
                        None, prompt, task.outside_reward(prompt))
        answers = [*task.arms, "<leaked>"]
        n = 200_000
        cand, against = (rng.choice(5, size=n, p=np.append(np.exp(e.logprobs),
                                                           1 - np.exp(e.logprobs).sum()))
                         for e in (m, b))
        # judge each distinct (baseline, candidate) pair once, weight by how often it came up
        counts = np.zeros((5, 5))
        np.add.at(counts, (against, cand), 1)
        total = 0.0
        for i, j in zip(*np.nonzero(counts)):
            total += counts[i, j] * judge.judge(prompt, [answers[i]], [answers[j]])[0]
        estimates.append(total / n)
        model.append(m)
        base.append(b)
    sampled = 100 * float(np.mean(estimates))
    assert sampled == pytest.approx(exact_win_rate(model, base, task.bt_scale), abs=5 * 0.1)
