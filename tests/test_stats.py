"""Win rates (AlpacaEval semantics, ANCHORS.md §1) and Bradley-Terry ratings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from evaluators.stats import bootstrap_bt, bradley_terry, win_rate

ELO = 400.0 / math.log(10.0)  # Elo points per nat of BT strength


# ---------------------------------------------------------------------------- win_rate


@pytest.mark.parametrize("seed,n", [(0, 2), (1, 17), (2, 500)])
def test_win_rate_matches_pandas(seed: int, n: int) -> None:
    x = np.random.default_rng(seed).uniform(0.0, 1.0, size=n)
    out = win_rate(list(x))
    s = pd.Series(x)
    assert out["win_rate"] == pytest.approx(s.mean() * 100, abs=1e-9)
    assert out["win_rate_se"] == pytest.approx(s.sem() * 100, abs=1e-9)  # ddof=1
    assert out["n_total"] == n
    assert out["n_wins"] == int((x > 0.5).sum())
    assert out["n_losses"] == int((x < 0.5).sum())
    assert out["n_wins"] + out["n_losses"] + out["n_draws"] == n


def test_win_rate_hand_example_with_ties() -> None:
    prefs = [1.0, 0.0, 0.5, 0.5, 0.9, 0.2]
    out = win_rate(prefs)
    assert out["win_rate"] == pytest.approx(sum(prefs) / 6 * 100)
    assert (out["n_wins"], out["n_draws"], out["n_losses"]) == (2, 2, 2)
    # discrete: 0.9 -> win, 0.2 -> loss, each 0.5 counts one half
    assert out["discrete_win_rate"] == pytest.approx((2 + 2 / 2) / 6 * 100)


def test_win_rate_all_ties_is_fifty() -> None:
    out = win_rate([0.5] * 4)
    assert out["win_rate"] == pytest.approx(50.0)
    assert out["discrete_win_rate"] == pytest.approx(50.0)
    assert out["win_rate_se"] == pytest.approx(0.0)
    assert out["n_draws"] == 4


def test_discrete_differs_from_soft() -> None:
    out = win_rate([0.6, 0.6, 0.6])
    assert out["win_rate"] == pytest.approx(60.0)
    assert out["discrete_win_rate"] == pytest.approx(100.0)


def test_win_rate_single_judgment_has_no_se() -> None:
    out = win_rate([0.7])
    assert out["win_rate"] == pytest.approx(70.0)
    assert out["win_rate_se"] is None
    assert out["n_total"] == 1


def test_win_rate_empty() -> None:
    out = win_rate([])
    assert out["win_rate"] is None
    assert out["win_rate_se"] is None
    assert out["discrete_win_rate"] is None
    assert out["n_total"] == 0 and out["n_wins"] == 0


# ---------------------------------------------------------------------------- Bradley-Terry


def test_bt_two_models_p_three_quarters() -> None:
    """P(1 beats 0) = 0.75 means odds 3, i.e. 400 log10(3) Elo above the anchor."""
    ratings = bradley_terry([(1, 0, 0.75)], n_models=2, anchor=0, ridge=0.0)
    assert ratings[0] == pytest.approx(1000.0, abs=1e-9)
    assert ratings[1] == pytest.approx(1000.0 + 400.0 * math.log10(3.0), abs=1e-6)


def test_bt_two_models_default_ridge_is_negligible_with_many_battles() -> None:
    battles = [(1, 0, 0.75)] * 500 + [(0, 1, 0.25)] * 500
    ratings = bradley_terry(battles, n_models=2)
    assert ratings[1] == pytest.approx(1000.0 + 400.0 * math.log10(3.0), abs=1e-3)


def _synthetic(theta: np.ndarray, repeats: int = 1) -> list[tuple[int, int, float]]:
    """Every ordered pair, labelled with its exact BT probability."""
    out = []
    for _ in range(repeats):
        for a, b in itertools.permutations(range(len(theta)), 2):
            out.append((a, b, 1.0 / (1.0 + math.exp(-(theta[a] - theta[b])))))
    return out


@pytest.mark.parametrize("anchor", [0, 2])
def test_bt_recovers_known_ratings(anchor: int) -> None:
    theta = np.array([0.0, 0.8, -0.6])
    truth = 1000.0 + ELO * (theta - theta[anchor])
    ratings = bradley_terry(_synthetic(theta), n_models=3, anchor=anchor, ridge=0.0)
    np.testing.assert_allclose(ratings, truth, rtol=0, atol=1e-6)
    assert ratings[anchor] == 1000.0


def test_bt_default_ridge_bias_is_small() -> None:
    theta = np.array([0.0, 0.8, -0.6])
    ratings = bradley_terry(_synthetic(theta, repeats=50), n_models=3)
    np.testing.assert_allclose(ratings, 1000.0 + ELO * theta, rtol=0, atol=1e-2)


def test_bt_scale_and_init() -> None:
    ratings = bradley_terry([(1, 0, 0.75)], n_models=2, ridge=0.0, scale=1.0,
                            base=math.e, init=0.0)
    np.testing.assert_allclose(ratings, [0.0, math.log(3.0)], atol=1e-9)


def test_bt_clean_sweep_stays_finite() -> None:
    """A model that wins every battle has an infinite MLE; the ridge keeps it finite."""
    ratings = bradley_terry([(1, 0, 1.0)] * 3, n_models=2)
    assert np.isfinite(ratings).all()
    assert ratings[1] > ratings[0] + 400


def _prompt_battles(seed: int = 0, n_prompts: int = 40) -> list[tuple[str, int, int, float]]:
    rng = np.random.default_rng(seed)
    theta = np.array([0.0, 0.5, -0.3])
    out = []
    for k in range(n_prompts):
        for m in (1, 2):
            p = 1 / (1 + math.exp(-(theta[m] - theta[0])))
            out.append((f"p{k:03d}", m, 0, float(rng.random() < p)))
    return out


def test_bootstrap_bt_interval_contains_point_and_is_deterministic() -> None:
    battles = _prompt_battles()
    point, low, high = bootstrap_bt(battles, n_models=3, anchor=0, rounds=100, seed=3)
    assert point.shape == low.shape == high.shape == (3,)
    assert np.all(low <= point + 1e-9) and np.all(point <= high + 1e-9)
    assert np.all(high[1:] - low[1:] > 1.0)  # real uncertainty with 40 hard labels
    # the anchor is pinned in every resample
    assert low[0] == pytest.approx(1000.0) and high[0] == pytest.approx(1000.0)
    # the point estimate is the plain fit on all battles
    flat = [(a, b, p) for _, a, b, p in battles]
    np.testing.assert_allclose(point, bradley_terry(flat, 3, 0))
    again = bootstrap_bt(battles, n_models=3, anchor=0, rounds=100, seed=3)
    for x, y in zip((point, low, high), again, strict=True):
        np.testing.assert_array_equal(x, y)
    other = bootstrap_bt(battles, n_models=3, anchor=0, rounds=100, seed=4)
    assert not np.array_equal(low, other[1]) or not np.array_equal(high, other[2])


def test_bootstrap_bt_independent_of_battle_order() -> None:
    battles = _prompt_battles(seed=1)
    a = bootstrap_bt(battles, n_models=3, rounds=30, seed=0)
    b = bootstrap_bt(list(reversed(battles)), n_models=3, rounds=30, seed=0)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-8)
