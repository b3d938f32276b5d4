"""Win rates and their uncertainty, head-to-head tests and the seed x prompt bootstrap.

Bradley-Terry ratings (plain and style-controlled) live in `evaluators.ratings`.

Every interval here is a *prompt* bootstrap drawn through `evaluators.bootstrap.
prompt_weights(n_prompts, rounds, seed)`, prompts in sorted-id order (or the caller's
`prompts` universe): each prompt is one cluster, all judgments of its samples move
together, and two statistics computed with the same (prompts, rounds, seed) see the same
resamples, so their draws can be subtracted round by round (`paired_bootstrap`).
`prompt_weights` draws row by row from one generator, so the first 100 rounds of a
1000-round bootstrap are exactly the rounds of a 100-round one (style control uses fewer).

Anchors (ANCHORS.md §1-2; verbatim copies of Arena-Hard's code in tests/anchors/):
- win rate: AlpacaEval 0.6.6 `get_winrate` (mean preference, plain SEM), plus a
  prompt-clustered SE equal to statsmodels' CR1 cluster-robust SE of the mean;
- Bradley-Terry: Arena-Hard v0.1 `compute_mle_elo` (unpenalised logistic MLE, a tie half a
  win, Elo scale, anchor = 1000), solved by Newton on per-prompt sufficient statistics;
- style control: Arena-Hard v2.0 `fit_pairwise_model` (BCE with soft targets on a one-hot
  model design plus z-scored style features), solved by Newton with the analytic Hessian.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from evaluators.bootstrap import (
    cluster_sums,
    clustered_se,
    percentile_interval,
    prompt_weights,
    t_interval,
)

ALPHA = 0.05  # 95% intervals; one-sided 95% bounds for separated models


def _f(x: Any) -> float | None:
    """A plain float for strict JSON: None for None and for NaN/inf."""
    return None if x is None or not np.isfinite(x) else float(x)


def _order(clusters: Sequence[str], prompts: Sequence[str] | None) -> list[str]:
    """The prompt universe in bootstrap order; every cluster must belong to it."""
    ids = pd.unique(np.asarray(clusters, dtype=object))
    if prompts is None:
        return sorted(ids)
    order = list(prompts)
    unknown = pd.Index(ids).difference(pd.Index(order))
    if len(unknown):
        raise ValueError(f"{len(unknown)} prompt ids are not in `prompts`, e.g. "
                         f"{sorted(map(str, unknown))[:3]}")
    return order


def _weights(n_prompts: int, weights: np.ndarray | None, rounds: int, seed: int) -> np.ndarray:
    """The caller's (rounds, n_prompts) bootstrap counts, or the shared ones for (rounds, seed)."""
    if weights is None:
        return prompt_weights(n_prompts, rounds, seed)
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[1] != n_prompts:
        raise ValueError(f"weights must have shape (rounds, {n_prompts}), got {w.shape}")
    return w


# ------------------------------------------------------------------------------ win rates


def win_rate_draws(preferences: Sequence[float], clusters: Sequence[str],
                   weights: np.ndarray | None = None, rounds: int = 1000, seed: int = 0,
                   prompts: Sequence[str] | None = None) -> np.ndarray:
    """(rounds,) prompt-bootstrap draws of the win rate in %, NaN where a round drew no judgment.

    `weights`: precomputed `prompt_weights` counts with columns in the prompt order (sorted
    cluster ids, or `prompts`); by default drawn from (rounds, seed).
    """
    order = _order(clusters, prompts)
    _, sums, counts = cluster_sums(np.asarray(preferences, dtype=float) * 100, clusters, order)
    w = _weights(len(order), weights, rounds, seed)
    num, den = w @ sums, w @ counts
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def win_rate_stats(preferences: Sequence[float], clusters: Sequence[str],
                   weights: np.ndarray | None = None, rounds: int = 1000, seed: int = 0,
                   prompts: Sequence[str] | None = None) -> dict[str, float | int | None]:
    """Win rate vs the baseline with AlpacaEval's and the prompt-clustered uncertainty.

    preferences: P(candidate wins) per judgment in [0, 1] (tie 0.5); clusters: its prompt.
    - win_rate = mean * 100, win_rate_se_iid = SEM (ddof=1) * 100: AlpacaEval `get_winrate`.
    - win_rate_se: the CR1 cluster-robust SE of the mean, each prompt one cluster
      (statsmodels OLS(y, 1).fit(cov_type="cluster")); with k correlated samples per prompt
      it is up to sqrt(k) times the iid SE, which would pretend the samples are independent.
    - win_rate_ci_low/high: 95% percentile interval of `win_rate_draws`.
    - win_rate_t_ci_low/high: win_rate ± t_{G-1} · win_rate_se (`t_interval`), G = prompts:
      the interval to read below `report.FEW_PROMPTS` prompts, where the bootstrap's is
      too narrow.
    - discrete_win_rate and the counts: AlpacaEval's ZeroOneScoringRule (tie = one half).
    Undefined values are None: SE and interval need two judgments; the clustered SE and the
    interval need two prompts (one prompt's resamples are all the same prompt).
    """
    x = np.asarray(preferences, dtype=float)
    n = int(x.size)
    n_prompts = len(set(clusters))
    out: dict[str, float | int | None] = {
        "win_rate": None, "win_rate_se": None, "win_rate_se_iid": None,
        "win_rate_ci_low": None, "win_rate_ci_high": None, "win_rate_t_ci_low": None,
        "win_rate_t_ci_high": None, "discrete_win_rate": None,
        "n_wins": int((x > 0.5).sum()), "n_draws": int((x == 0.5).sum()),
        "n_losses": int((x < 0.5).sum()), "n_total": n, "n_prompts": n_prompts}
    if n == 0:
        return out
    if len(clusters) != n:
        raise ValueError(f"{n} preferences but {len(clusters)} cluster ids")
    if prompts is not None:
        _order(clusters, prompts)  # a judgment outside the universe is a caller's bug
    out["win_rate"] = float(x.mean() * 100)
    out["discrete_win_rate"] = float((out["n_wins"] + out["n_draws"] / 2) / n * 100)
    if n > 1:
        out["win_rate_se_iid"] = float(x.std(ddof=1) / math.sqrt(n) * 100)
    if n_prompts > 1:
        se = clustered_se(x, clusters)
        out["win_rate_se"] = None if se is None else float(se * 100)
        low, high = percentile_interval(
            win_rate_draws(x, clusters, weights, rounds, seed, prompts), 1 - ALPHA)
        out["win_rate_ci_low"], out["win_rate_ci_high"] = low, high
        out["win_rate_t_ci_low"], out["win_rate_t_ci_high"] = t_interval(
            out["win_rate"], out["win_rate_se"], n_prompts)
    return out


def win_rate(p_candidate_wins: Sequence[float]) -> dict[str, float | int | None]:
    """AlpacaEval's `get_winrate` on independent judgments (legacy keys; iid SEM as the SE)."""
    x = list(p_candidate_wins)
    st = win_rate_stats(x, [str(i) for i in range(len(x))], rounds=0)
    return {"win_rate": st["win_rate"], "win_rate_se": st["win_rate_se_iid"],
            "discrete_win_rate": st["discrete_win_rate"], "n_wins": st["n_wins"],
            "n_draws": st["n_draws"], "n_losses": st["n_losses"], "n_total": st["n_total"]}


# ------------------------------------------------------------------------------ head to head


def paired_bootstrap(draws_a: np.ndarray, draws_b: np.ndarray, point_a: float,
                     point_b: float) -> dict[str, float | int | None]:
    """Difference A - B with a paired-bootstrap interval and two-sided p-value.

    draws_a and draws_b must come from the SAME prompt resamples (same prompts, rounds,
    seed), so d_r = draws_a[r] - draws_b[r] is the difference's bootstrap distribution
    with the prompt-to-prompt variance both share cancelled out. Rounds where either is
    undefined (NaN) are dropped. interval: the 2.5/97.5 percentiles of d; p_value =
    min(1, 2 * min(share(d <= 0), share(d >= 0))), the two-sided percentile-bootstrap test
    of "no difference" (0 means no round crossed zero: p < 1 / n_rounds).
    """
    d = np.asarray(draws_a, dtype=float) - np.asarray(draws_b, dtype=float)
    d = d[np.isfinite(d)]
    low, high = percentile_interval(d, 1 - ALPHA)
    p = None if d.size == 0 else float(min(1.0, 2 * min((d <= 0).mean(), (d >= 0).mean())))
    return {"diff": _f(point_a - point_b), "ci_low": low, "ci_high": high, "p_value": p,
            "n_rounds": int(d.size)}


def sign_test(per_prompt_a: Mapping[str, float],
              per_prompt_b: Mapping[str, float]) -> dict[str, float | int | None]:
    """Sign test over the prompts both models have: which per-prompt mean is higher.

    Ties are dropped (the usual sign-test convention); p_value is the two-sided exact
    binomial test of n_a_better out of n_a_better + n_b_better at 1/2 (scipy binomtest),
    None when every prompt is a tie.
    """
    from scipy.stats import binomtest

    common = sorted(set(per_prompt_a) & set(per_prompt_b))
    diff = np.array([per_prompt_a[p] - per_prompt_b[p] for p in common], dtype=float)
    n_a, n_b = int((diff > 0).sum()), int((diff < 0).sum())
    p = float(binomtest(n_a, n_a + n_b, 0.5).pvalue) if n_a + n_b else None
    return {"n_a_better": n_a, "n_b_better": n_b, "n_ties": len(common) - n_a - n_b,
            "n_prompts": len(common), "p_value": p}


# ------------------------------------------------------------------------------ seeds


def seed_prompt_draws(matrix: np.ndarray, rounds: int = 1000, seed: int = 0) -> np.ndarray:
    """(rounds,) two-stage bootstrap draws of the mean over seeds of per-seed prompt means.

    Round r draws prompt counts `prompt_weights(n_prompts, rounds, seed)[r]`, the same for
    every seed (all seeds answered the same prompts), takes each seed's weighted mean over
    its non-missing prompts, then averages over n_seeds seeds drawn with replacement (from
    a separate generator, so that the prompt resamples are exactly the shared ones).
    """
    x = np.asarray(matrix, dtype=float)
    present = np.isfinite(x)
    w = prompt_weights(x.shape[1], rounds, seed)
    num, den = w @ np.where(present, x, 0.0).T, w @ present.T.astype(float)  # (rounds, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    n_seeds = x.shape[0]
    if n_seeds == 1:
        return per_seed[:, 0]
    pick = np.random.default_rng([seed, 1]).integers(n_seeds, size=(rounds, n_seeds))
    drawn = np.take_along_axis(per_seed, pick, axis=1)
    ok = np.isfinite(drawn)
    n_ok = ok.sum(axis=1)
    return np.where(n_ok > 0, np.where(ok, drawn, 0.0).sum(axis=1) / np.maximum(n_ok, 1), np.nan)


def seed_prompt_bootstrap(matrix: np.ndarray, rounds: int = 1000,
                          seed: int = 0) -> dict[str, float | int | None]:
    """Mean over training seeds with a 95% interval carrying seed AND prompt variance.

    matrix: (n_seeds, n_prompts) per-prompt values of one configuration, NaN where missing.
    mean = the mean over seeds of each seed's mean over its prompts; seed_sd = the SD of
    those per-seed means (ddof=1; None for one seed); ci_low/ci_high = 2.5/97.5 percentiles
    of `seed_prompt_draws`, a two-stage bootstrap resampling seeds and prompts (one prompt
    resample shared by all seeds). With one seed it is the plain prompt bootstrap; with
    identical prompts it is the bootstrap of the seed mean. A seed without any value is
    left out.
    """
    x = np.atleast_2d(np.asarray(matrix, dtype=float))
    x = x[np.isfinite(x).any(axis=1)]
    n_seeds = int(x.shape[0])
    if n_seeds == 0:
        return {"mean": None, "seed_sd": None, "ci_low": None, "ci_high": None, "n_seeds": 0}
    per_seed = np.nanmean(x, axis=1)
    low, high = percentile_interval(seed_prompt_draws(x, rounds, seed), 1 - ALPHA)
    return {"mean": float(per_seed.mean()),
            "seed_sd": float(per_seed.std(ddof=1)) if n_seeds > 1 else None,
            "ci_low": low, "ci_high": high, "n_seeds": n_seeds}
