"""Win rates and ratings with their uncertainty."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def win_rate(p_candidate_wins: Sequence[float]) -> dict[str, float | int | None]:
    """AlpacaEval's `get_winrate`: preference p in [0, 1] (tie = 0.5), as percentages.

    win_rate = mean(p) * 100, standard_error = sample SEM (ddof=1) * 100, and the
    discrete win rate rounds each judgment to win / tie / loss, ties counting one half.
    """
    x = np.asarray(p_candidate_wins, dtype=float)
    n = len(x)
    if n == 0:
        return {"win_rate": None, "win_rate_se": None, "discrete_win_rate": None,
                "n_wins": 0, "n_draws": 0, "n_losses": 0, "n_total": 0}
    wins, draws, losses = int((x > 0.5).sum()), int((x == 0.5).sum()), int((x < 0.5).sum())
    se = float(x.std(ddof=1) / math.sqrt(n) * 100) if n > 1 else None
    return {"win_rate": float(x.mean() * 100), "win_rate_se": se,
            "discrete_win_rate": (wins + draws / 2) / n * 100,
            "n_wins": wins, "n_draws": draws, "n_losses": losses, "n_total": n}


def bradley_terry(battles: Sequence[tuple[int, int, float]], n_models: int, anchor: int = 0,
                  scale: float = 400.0, base: float = 10.0, init: float = 1000.0,
                  ridge: float = 1e-6, iters: int = 100) -> np.ndarray:
    """Bradley-Terry ratings on an Elo scale from soft battles (a, b, P(a beats b)).

    The maximum-likelihood logistic fit Chatbot Arena and Arena-Hard use, solved by
    Newton's method; model `anchor` is pinned at `init`, a tiny ridge keeps ratings finite
    when a model wins or loses everything.
    """
    theta = np.zeros(n_models)
    free = [m for m in range(n_models) if m != anchor]
    a = np.array([b[0] for b in battles])
    b = np.array([b[1] for b in battles])
    y = np.array([b[2] for b in battles], dtype=float)
    for _ in range(iters):
        z = theta[a] - theta[b]
        p = 1 / (1 + np.exp(-z))
        g = np.zeros(n_models)
        np.add.at(g, a, y - p)
        np.add.at(g, b, -(y - p))
        w = p * (1 - p)
        h = np.zeros((n_models, n_models))
        np.add.at(h, (a, a), w)
        np.add.at(h, (b, b), w)
        np.add.at(h, (a, b), -w)
        np.add.at(h, (b, a), -w)
        g -= ridge * theta
        h += ridge * np.eye(n_models)
        step = np.linalg.solve(h[np.ix_(free, free)], g[free])
        theta[free] += step
        if np.abs(step).max() < 1e-10:
            break
    return init + scale / math.log(base) * theta


def bootstrap_bt(battles: list[tuple[str, int, int, float]], n_models: int, anchor: int = 0,
                 rounds: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ratings and 95% percentile intervals, resampling prompts (battles grouped by prompt id)."""
    groups: dict[str, list[tuple[int, int, float]]] = {}
    for prompt_id, a, b, p in battles:
        groups.setdefault(prompt_id, []).append((a, b, p))
    keys = sorted(groups)
    point = bradley_terry([x for k in keys for x in groups[k]], n_models, anchor)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(rounds):
        pick = rng.integers(len(keys), size=len(keys))
        samples.append(bradley_terry([x for i in pick for x in groups[keys[i]]], n_models, anchor))
    samples = np.array(samples)
    return point, np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
