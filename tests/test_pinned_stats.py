"""The statistics of evaluators/stats.py and evaluators/bootstrap.py pinned to independent
computations (issue 17): hand-worked values, scipy's t quantile and binomial test, and plain
Python loops that redo each bootstrap round by round from its documented definition.

What these tests pin, beyond tests/test_stats.py:
- the documented defaults (1000 rounds, seed 0: README "report.bootstrap_rounds, default
  1000, seeded by report.bootstrap_seed, default 0") of every bootstrap entry point;
- the edge cases of the ratio-of-sums draws: a round that draws no row is NaN, a round that
  draws exactly one row is that row;
- float32 input (judge or reward outputs straight from torch) is computed in float64, so it
  gives the same numbers as the same values in float64;
- the two-stage seed x prompt bootstrap, missing values included;
- the empty-input results have exactly the keys of a non-empty result;
- the error messages that name the offending input.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import t as student_t

from evaluators.bootstrap import (
    bootstrap_ratio_of_sums,
    clustered_se,
    mean_stats,
    prompt_weights,
    t_interval,
)
from evaluators.stats import (
    seed_prompt_bootstrap,
    seed_prompt_draws,
    sign_test,
    win_rate_draws,
    win_rate_stats,
)

# float32 values whose float64 mean is exact (1e7 + 1.5) but whose float32 mean is not:
# float32 spacing at 1e7 is 1, so a float32 accumulator cannot hold the .5.
BIG32 = np.array([1e7, 1e7 + 1, 1e7 + 2, 1e7 + 3], dtype=np.float32)
BIG_CLUSTERS = ["a", "a", "b", "b"]


def loop_draws(values: list[float], clusters: list[str], order: list[str],
               weights: np.ndarray) -> np.ndarray:
    """Round r: the mean of the rows, each weighted by its prompt's count weights[r, prompt];
    NaN when the round's total weight is 0. A plain loop, no shared code."""
    col = {p: j for j, p in enumerate(order)}
    out = []
    for row in weights:
        num = sum(row[col[c]] * v for v, c in zip(values, clusters, strict=True))
        den = sum(row[col[c]] for c in clusters)
        out.append(num / den if den > 0 else math.nan)
    return np.array(out)


def pct95(draws: np.ndarray) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of the finite draws."""
    finite = draws[np.isfinite(draws)]
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


# --------------------------------------------------------------------------- bootstrap.py


def test_ratio_of_sums_edge_rounds_and_fractional_weights() -> None:
    """Pins sum(w * sums) / sum(w * counts) row by row (the docstring's formula) on the
    rounds where the guards matter: a round drawing only an empty cluster is NaN (not 0),
    a round whose total weight is exactly 1 or a fraction below 1 is still the ratio."""
    sums = np.array([3.0, 10.0, 0.0])
    counts = np.array([1.0, 4.0, 0.0])  # cluster 2 is empty
    weights = np.array([
        [0.0, 0.0, 3.0],   # only the empty cluster: no row drawn -> NaN
        [1.0, 0.0, 0.0],   # one row once: den = 1 -> 3
        [0.5, 0.0, 2.0],   # den = 0.5 -> 1.5 / 0.5 = 3
        [2.0, 1.0, 0.0],   # (6 + 10) / (2 + 4) = 16/6
        [0.25, 0.125, 0.0],  # (0.75 + 1.25) / (0.25 + 0.5) = 8/3
    ])
    got = bootstrap_ratio_of_sums(sums, counts, weights)
    want = [math.nan, 3.0, 3.0, 16 / 6, 8 / 3]
    np.testing.assert_allclose(got, want, rtol=1e-15, equal_nan=True)


def test_clustered_se_of_float32_is_computed_in_float64() -> None:
    """Hand value: mean 1e7 + 1.5, residuals (-1.5, -.5 | .5, 1.5), cluster sums -2 and 2,
    G = 2: sqrt(2/1 * 8) / 4 = 1 exactly. A float32 mean (1e7 + 1) would shift every
    residual and give sqrt(20)/4."""
    assert clustered_se(BIG32, BIG_CLUSTERS) == pytest.approx(1.0, rel=1e-12)


def test_clustered_se_empty_is_none_without_a_warning() -> None:
    """No values -> None, and no 'Mean of empty slice' RuntimeWarning on the way (the early
    return is what keeps a model without scores from spamming the report)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert clustered_se([], []) is None
        assert mean_stats([], [])["se"] is None


@pytest.mark.parametrize(("mean", "se", "g"), [(1.0, None, 5), (None, 1.0, 5), (1.0, 1.0, 1),
                                               (None, None, 5)])
def test_t_interval_undefined_without_mean_se_or_two_clusters(
        mean: float | None, se: float | None, g: int) -> None:
    """Each missing ingredient alone makes the interval undefined (None, None), not an
    error and not NaN (t on 0 degrees of freedom)."""
    assert t_interval(mean, se, g) == (None, None)


def test_t_interval_is_mean_plus_minus_t_quantile_times_se() -> None:
    """mean ± t_{G-1, 0.975} · se against scipy's quantile (4 degrees of freedom: 2.776)."""
    low, high = t_interval(2.0, 0.5, 5)
    half = student_t.ppf(0.975, 4) * 0.5
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half), rel=1e-12)
    assert half == pytest.approx(1.388, abs=1e-3)


def test_mean_stats_defaults_are_1000_rounds_seed_0() -> None:
    """With no rounds/seed given, the interval is the 2.5/97.5 percentiles of the 1000
    rounds drawn by seed 0 (the README's report defaults), redone here with a loop; the
    t interval is mean ± t_{G-1} · CR1 SE."""
    rng = np.random.default_rng(3)
    prompts = ["p0", "p1", "p2", "p3", "p4", "p5"]
    clusters = [p for p in prompts for _ in range(3)]
    values = list(rng.normal(size=len(clusters)) + np.repeat(rng.normal(size=6), 3))
    st = mean_stats(values, clusters)
    draws = loop_draws(values, clusters, prompts, prompt_weights(6, 1000, 0))
    assert (st["ci_low"], st["ci_high"]) == pytest.approx(pct95(draws), rel=1e-12)
    assert st["mean"] == pytest.approx(float(np.mean(values)), rel=1e-12)
    half = student_t.ppf(0.975, 5) * st["se"]
    assert (st["t_ci_low"], st["t_ci_high"]) == pytest.approx(
        (st["mean"] - half, st["mean"] + half), rel=1e-12)


def test_mean_stats_of_float32_is_computed_in_float64() -> None:
    """float32 values give the float64 mean (1e7 + 1.5 exactly) and SE (1, see above)."""
    st = mean_stats(BIG32, BIG_CLUSTERS, rounds=20)
    assert st["mean"] == 1e7 + 1.5
    assert st["se"] == pytest.approx(1.0, rel=1e-12)


def test_mean_stats_empty_has_the_keys_of_a_full_result() -> None:
    """No values: every key of a normal result, each None (the report reads them by name)."""
    full = mean_stats([1.0, 2.0, 4.0], ["a", "b", "c"], rounds=10)
    empty = mean_stats([], [])
    assert set(empty) == set(full)
    assert all(v is None for v in empty.values())


# --------------------------------------------------------------------------- stats.py


def test_order_error_names_three_unknown_prompts() -> None:
    """A judgment whose prompt is outside `prompts`: the message counts all of them and
    lists the first three in sorted order."""
    msg = "4 prompt ids are not in `prompts`, e.g. ['x1', 'x2', 'x3']"
    with pytest.raises(ValueError, match=re.escape(msg) + "$"):
        win_rate_draws([1, 0, 1, 0, 1], ["a", "x4", "x2", "x3", "x1"], rounds=5,
                       prompts=["a", "b"])


def test_prompt_ids_are_compared_exactly() -> None:
    """Prompt ids are opaque strings: "a" and "a\\0" are two prompts (a numpy fixed-width
    string array would strip the trailing NUL and merge or lose them)."""
    clusters = ["a", "a\x00", "a\x00"]
    prefs = [1.0, 0.0, 0.5]
    w = prompt_weights(2, 50, 1)
    got = win_rate_draws(prefs, clusters, rounds=50, seed=1)
    want = loop_draws([p * 100 for p in prefs], clusters, ["a", "a\x00"], w)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize(("weights", "shape"), [(np.ones(3), "(3,)"),
                                                (np.ones((5, 2)), "(5, 2)")])
def test_weights_of_the_wrong_shape_are_rejected(weights: np.ndarray, shape: str) -> None:
    """Caller weights must be (rounds, n_prompts); 1-D or wrong-width ones fail with a
    message giving the expected and the actual shape."""
    msg = f"weights must have shape (rounds, 3), got {shape}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        win_rate_draws([1, 0, 1], ["a", "b", "c"], weights=weights)


def test_win_rate_draws_defaults_are_1000_rounds_seed_0() -> None:
    """Default draws = the loop over prompt_weights(n_prompts, 1000, 0), prompts sorted."""
    prefs = [1.0, 0.25, 0.5, 0.0, 0.75, 1.0, 0.0]
    clusters = ["c", "a", "b", "c", "a", "d", "b"]
    got = win_rate_draws(prefs, clusters)
    want = loop_draws([p * 100 for p in prefs], clusters, ["a", "b", "c", "d"],
                      prompt_weights(4, 1000, 0))
    assert got.shape == (1000,)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_win_rate_draws_edge_rounds_with_caller_weights() -> None:
    """Caller weights over a universe with a prompt that has no judgment ("z"): drawing
    only "z" gives NaN (no judgment drawn); drawing one judgment once gives it (x100);
    fractional weights give the weighted mean, as in bootstrap_ratio_of_sums."""
    prefs, clusters, prompts = [1.0, 0.25, 0.75], ["a", "b", "b"], ["a", "b", "z"]
    weights = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.0, 1.0],
                        [1.0, 1.0, 0.0], [0.0, 0.25, 0.0]])
    got = win_rate_draws(prefs, clusters, weights=weights, prompts=prompts)
    want = [math.nan, 100.0, 100.0, 200 / 3, 50.0]
    np.testing.assert_allclose(got, want, rtol=1e-15, equal_nan=True)
    np.testing.assert_allclose(got, loop_draws([p * 100 for p in prefs], clusters, prompts,
                                               weights), rtol=1e-15, equal_nan=True)


def test_float32_preferences_are_computed_in_float64() -> None:
    """float32 preferences (e.g. a judge's softmax) give the same win rate, SEs and draws
    as the same values in float64: float32 arithmetic would be off by ~1e-6 points."""
    p32 = np.array([0.1, 0.7, 0.3, 0.9, 0.45, 0.3], dtype=np.float32)
    p64 = p32.astype(np.float64)
    clusters = ["a", "a", "b", "b", "c", "c"]
    np.testing.assert_allclose(win_rate_draws(p32, clusters, rounds=200),
                               win_rate_draws(p64, clusters, rounds=200), rtol=1e-14)
    st32 = win_rate_stats(p32, clusters, rounds=200)
    st64 = win_rate_stats(p64, clusters, rounds=200)
    assert st64["win_rate"] == pytest.approx(float(np.mean(p64) * 100), rel=1e-14)
    for key in ("win_rate", "win_rate_se", "win_rate_se_iid", "win_rate_ci_low",
                "win_rate_ci_high"):
        assert st32[key] == pytest.approx(st64[key], rel=1e-14), key


def test_win_rate_stats_defaults_and_caller_weights() -> None:
    """Default interval = percentiles of the 1000 seed-0 rounds; caller weights replace
    them (the report passes its shared resamples), so the interval follows the weights.
    Irregular preferences over 8 prompts, so that the percentiles of other (rounds, seed)
    differ (checked at the end: this data can tell the defaults apart)."""
    rng = np.random.default_rng(5)
    order = [f"p{i}" for i in range(8)]
    clusters = [p for p in order for _ in range(2)]
    prefs = list(rng.random(len(clusters)))
    scaled = [p * 100 for p in prefs]
    st = win_rate_stats(prefs, clusters)
    ci = (st["win_rate_ci_low"], st["win_rate_ci_high"])
    assert ci == pytest.approx(
        pct95(loop_draws(scaled, clusters, order, prompt_weights(8, 1000, 0))), rel=1e-12)
    w = prompt_weights(8, 37, 11)
    st_w = win_rate_stats(prefs, clusters, weights=w)
    ci_w = (st_w["win_rate_ci_low"], st_w["win_rate_ci_high"])
    assert ci_w == pytest.approx(pct95(loop_draws(scaled, clusters, order, w)), rel=1e-12)
    for other in (win_rate_stats(prefs, clusters, rounds=1001, seed=0),
                  win_rate_stats(prefs, clusters, rounds=1000, seed=1), st_w):
        assert ci[0] != other["win_rate_ci_low"] and ci[1] != other["win_rate_ci_high"]


@pytest.mark.parametrize(("prefs", "clusters"), [([], []), ([1.0, 0.0], ["a", "a"])])
def test_win_rate_stats_undefined_cases_keep_every_key(prefs: list[float],
                                                       clusters: list[str]) -> None:
    """No judgment, or one prompt: the same keys as a normal result, with the t interval
    None (it needs two prompts)."""
    full = win_rate_stats([1.0, 0.0, 0.5], ["a", "b", "c"], rounds=10)
    st = win_rate_stats(prefs, clusters, rounds=10)
    assert set(st) == set(full)
    assert st["win_rate_t_ci_low"] is None and st["win_rate_t_ci_high"] is None


def test_win_rate_stats_length_mismatch_message() -> None:
    """Preferences and cluster ids of different lengths: the message gives both counts."""
    with pytest.raises(ValueError, match=re.escape("3 preferences but 2 cluster ids")):
        win_rate_stats([1.0, 0.0, 0.5], ["a", "b"])


def test_sign_test_balanced_split_has_p_one() -> None:
    """2 prompts each way (plus a tie): binomtest(2, 4, 1/2) gives p = 1, not None."""
    a = {"p1": 1.0, "p2": 2.0, "p3": 0.0, "p4": 0.0, "p5": 5.0}
    b = {"p1": 0.0, "p2": 1.0, "p3": 1.0, "p4": 2.0, "p5": 5.0}
    st = sign_test(a, b)
    assert (st["n_a_better"], st["n_b_better"], st["n_ties"]) == (2, 2, 1)
    assert st["p_value"] == pytest.approx(binomtest(2, 4, 0.5).pvalue) == 1.0


def loop_seed_prompt_draws(matrix: np.ndarray, rounds: int, seed: int) -> np.ndarray:
    """The docstring's two-stage bootstrap, one round at a time: prompt counts from
    prompt_weights(n_prompts, rounds, seed)[r], shared by the seeds; each seed's weighted
    mean over its present prompts (undefined if none is drawn); then n_seeds seeds drawn
    from default_rng([seed, 1]) (the separate generator, pinned so that stored intervals
    reproduce), averaged over those that are defined (NaN if none)."""
    n_seeds, n_prompts = matrix.shape
    w = prompt_weights(n_prompts, rounds, seed)
    picks = np.random.default_rng([seed, 1]).integers(n_seeds, size=(rounds, n_seeds))
    out = []
    for r in range(rounds):
        per_seed = []
        for s in range(n_seeds):
            num = sum(w[r, j] * matrix[s, j] for j in range(n_prompts)
                      if not math.isnan(matrix[s, j]))
            den = sum(w[r, j] for j in range(n_prompts) if not math.isnan(matrix[s, j]))
            per_seed.append(num / den if den > 0 else math.nan)
        if n_seeds == 1:
            out.append(per_seed[0])
            continue
        drawn = [per_seed[k] for k in picks[r] if not math.isnan(per_seed[k])]
        out.append(sum(drawn) / len(drawn) if drawn else math.nan)
    return np.array(out)


NAN = math.nan
# seed 1 has only prompt 0, so about (2/3)^3 of the rounds leave it undefined; rounds that
# draw seed 1 twice then have no defined seed at all, and rounds drawing it once have one.
TWO_SEEDS = np.array([[1.0, 4.0, 2.0], [7.0, NAN, NAN]])
THREE_SEEDS = np.array([[1.0, 4.0, 2.0, 0.5], [7.0, NAN, 3.0, NAN], [NAN, NAN, NAN, 9.0]])


@pytest.mark.parametrize("matrix", [TWO_SEEDS, THREE_SEEDS], ids=["2-seeds", "3-seeds"])
def test_seed_prompt_draws_equal_the_two_stage_loop(matrix: np.ndarray) -> None:
    """Default (1000 rounds, seed 0) draws equal the loop, NaN rounds included, and the
    edge rounds the guards handle actually occur (no seed defined; one defined)."""
    got = seed_prompt_draws(matrix)
    want = loop_seed_prompt_draws(matrix, 1000, 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)
    assert np.isnan(want).any() and np.isfinite(want).sum() > 500


def test_seed_prompt_bootstrap_values() -> None:
    """mean = mean over seeds of each seed's mean over its prompts (hand: seed means 7/3,
    7 -> 14/3), seed_sd = their SD ddof 1 (|7 - 7/3| / sqrt 2), interval = percentiles of
    the two-stage rounds."""
    st = seed_prompt_bootstrap(TWO_SEEDS, rounds=300, seed=4)
    assert st["mean"] == pytest.approx(14 / 3, rel=1e-14)
    assert st["seed_sd"] == pytest.approx((7 - 7 / 3) / math.sqrt(2), rel=1e-14)
    assert st["n_seeds"] == 2
    want = pct95(loop_seed_prompt_draws(TWO_SEEDS, 300, 4))
    assert (st["ci_low"], st["ci_high"]) == pytest.approx(want, rel=1e-12)


def test_seed_prompt_bootstrap_defaults_are_1000_rounds_seed_0() -> None:
    """No rounds/seed given: the percentiles of the 1000 seed-0 two-stage rounds. Random
    values over 3 seeds x 8 prompts (one missing), so that other (rounds, seed) give a
    different interval (checked at the end)."""
    matrix = np.random.default_rng(9).normal(size=(3, 8))
    matrix[1, 2] = np.nan
    st = seed_prompt_bootstrap(matrix)
    ci = (st["ci_low"], st["ci_high"])
    assert ci == pytest.approx(pct95(loop_seed_prompt_draws(matrix, 1000, 0)), rel=1e-12)
    for other in (seed_prompt_bootstrap(matrix, rounds=1001, seed=0),
                  seed_prompt_bootstrap(matrix, rounds=1000, seed=1)):
        assert ci[0] != other["ci_low"] and ci[1] != other["ci_high"]


def test_seed_prompt_bootstrap_of_float32_is_computed_in_float64() -> None:
    """A float32 matrix gives the float64 mean (1e7 + 1.5, exact) of its values."""
    st = seed_prompt_bootstrap(BIG32[None, :], rounds=20)
    assert st["mean"] == 1e7 + 1.5


def test_seed_prompt_bootstrap_without_values_keeps_every_key() -> None:
    """A matrix with no value: the keys of a normal result, values None, n_seeds 0."""
    full = seed_prompt_bootstrap(TWO_SEEDS, rounds=10)
    empty = seed_prompt_bootstrap(np.full((2, 3), np.nan), rounds=10)
    assert set(empty) == set(full)
    assert empty == {"mean": None, "seed_sd": None, "ci_low": None, "ci_high": None,
                     "n_seeds": 0}
