"""Bradley-Terry ratings over any battle plan, plain and style-controlled, with intervals.

Every interval is the report's shared prompt bootstrap (`evaluators.bootstrap.prompt_weights`,
prompts in sorted-id order or the caller's `prompts` universe), so ratings and win rates of
one report see the same resamples.

Anchors (ANCHORS.md §2; verbatim copies of Arena-Hard's code in tests/anchors/):
- Bradley-Terry: Arena-Hard v0.1 `compute_mle_elo` (unpenalised logistic MLE, a tie half a
  win, Elo scale, anchor = 1000), solved by Newton on per-prompt sufficient statistics;
- style control: Arena-Hard v2.0 `fit_pairwise_model` (BCE with soft targets on a one-hot
  model design plus z-scored style features), solved by Newton with the analytic Hessian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.special import expit, log_expit

from evaluators.bootstrap import percentile_interval, prompt_weights
from evaluators.stats import ALPHA, _f, _order

ELO = 400.0 / math.log(10.0)  # Elo points per nat of Bradley-Terry strength
INIT = 1000.0  # the anchor's rating
BATTLE_COLUMNS = ("prompt_id", "model_a", "model_b", "p_b")


# ------------------------------------------------------------------------------ battles


@dataclass
class _Battles:
    """Battles encoded as indices: models in the caller's order, prompts in bootstrap order."""

    models: list[str]
    prompts: list[str]
    prompt: np.ndarray  # (n,) prompt index of each battle
    a: np.ndarray  # (n,) model_a index
    b: np.ndarray  # (n,) model_b index
    p_b: np.ndarray  # (n,) P(model_b beats model_a)


def _encode(battles: pd.DataFrame, models: Sequence[str], anchor: str,
            prompts: Sequence[str] | None) -> _Battles:
    missing = [c for c in BATTLE_COLUMNS if c not in battles.columns]
    if missing:
        raise ValueError(f"battles lack the columns {missing}; need {list(BATTLE_COLUMNS)}")
    models = list(models)
    if anchor not in models:
        raise ValueError(f"anchor '{anchor}' is not one of the models {models}")
    index = pd.Index(models)
    a, b = index.get_indexer(battles["model_a"]), index.get_indexer(battles["model_b"])
    if (a < 0).any() or (b < 0).any():
        unknown = set(battles["model_a"][a < 0]) | set(battles["model_b"][b < 0])
        raise ValueError(f"battles name models not in `models`: {sorted(map(str, unknown))}")
    if (a == b).any():
        raise ValueError("a battle of a model against itself carries no information")
    p_b = battles["p_b"].to_numpy(dtype=float)
    if not np.all((p_b >= 0) & (p_b <= 1)):
        raise ValueError("p_b must be a probability in [0, 1] (tie 0.5), never NaN")
    order = _order(battles["prompt_id"].to_numpy(dtype=object), prompts)
    prompt = pd.Index(order).get_indexer(battles["prompt_id"])
    return _Battles(models, order, prompt, a, b, p_b)


@dataclass
class _WinMass:
    """Per-prompt win mass W[prompt, i, j] = sum of P(i beats j), stored on the nonzero cells.

    The Bradley-Terry likelihood depends on the battles only through W (with N = W + W^T
    battles between i and j), so a bootstrap round is the weighted sum `weights @ mass`.
    """

    n_models: int
    cells: np.ndarray  # (K,) flat index i * M + j of the cells with positive mass
    mass: np.ndarray | csr_matrix  # (P, K)

    def total(self, weights: np.ndarray | None = None) -> np.ndarray:
        """(M, M) win mass of all prompts, or (R, M, M) for (R, P) bootstrap weights."""
        m = self.n_models
        if weights is None:
            agg = np.asarray(self.mass.sum(axis=0)).reshape(1, -1)
        elif isinstance(self.mass, np.ndarray):
            agg = weights @ self.mass
        else:
            agg = np.asarray((self.mass.T @ weights.T).T)
        out = np.zeros((agg.shape[0], m * m))
        out[:, self.cells] = agg
        out = out.reshape(-1, m, m)
        return out[0] if weights is None else out


def _win_mass(bt: _Battles) -> _WinMass:
    m, n_p = len(bt.models), len(bt.prompts)
    key = np.concatenate([(bt.prompt * m + bt.b) * m + bt.a, (bt.prompt * m + bt.a) * m + bt.b])
    val = np.concatenate([bt.p_b, 1.0 - bt.p_b])
    keep = val > 0
    uniq, inv = np.unique(key[keep], return_inverse=True)
    sums = np.bincount(inv, weights=val[keep])
    cells, col = np.unique(uniq % (m * m), return_inverse=True)
    row = uniq // (m * m)
    if n_p * len(cells) <= 5_000_000:  # dense: one BLAS product per bootstrap
        mass: np.ndarray | csr_matrix = np.zeros((n_p, len(cells)))
        mass[row, col] = sums
    else:
        mass = csr_matrix((sums, (row, col)), shape=(n_p, len(cells)))
    return _WinMass(m, cells, mass)


# ------------------------------------------------------------------------------ Bradley-Terry


def _anchor_component(w: np.ndarray, anchor: int) -> np.ndarray:
    """Models strongly connected to the anchor in the 'has beaten with positive mass' graph.

    Zermelo/Ford: the MLE is finite exactly on such a set; a model outside it can be moved
    to +-inf without ever losing likelihood.
    """
    _, labels = connected_components(csr_matrix(w > 0), directed=True, connection="strong")
    return labels == labels[anchor]


def _bt_loglik(w: np.ndarray, theta: np.ndarray) -> float:
    return float(np.sum(w * log_expit(theta[:, None] - theta[None, :])))


def _bt_newton(w: np.ndarray, theta: np.ndarray, tol: float = 1e-10,
               max_iter: int = 200) -> np.ndarray:
    """Maximise sum_ij W_ij log sigma(theta_i - theta_j) with theta[0] pinned at 0.

    Newton on the aggregated likelihood (strictly concave on a strongly connected set),
    halving a step that would lower it. Gradient g_i = sum_j W_ij - N_ij s_ij and Hessian
    N_ij s_ij (1 - s_ij), with s_ij = sigma(theta_i - theta_j) and N = W + W^T.
    """
    n = w + w.T
    ll = _bt_loglik(w, theta)
    for _ in range(max_iter):
        s = expit(theta[:, None] - theta[None, :])
        g = (w - n * s).sum(axis=1)
        h = n * s * (1.0 - s)
        hess = np.diag(h.sum(axis=1)) - h
        try:
            step = np.linalg.solve(hess[1:, 1:], g[1:])
        except np.linalg.LinAlgError:  # underflowed weights (win mass ~1e-300): least squares
            step = np.linalg.lstsq(hess[1:, 1:], g[1:], rcond=None)[0]
        t = 1.0
        while True:
            new = theta.copy()
            new[1:] += t * step
            ll_new = _bt_loglik(w, new)
            if ll_new >= ll - 1e-12 * max(1.0, abs(ll)) or t < 1e-8:
                break
            t /= 2
        theta, ll = new, ll_new
        if np.abs(t * step).max() < tol:
            break
    return theta


def _bt_fit(w: np.ndarray, anchor: int, start: np.ndarray | None = None) -> np.ndarray:
    """(M,) Elo ratings, NaN outside the anchor's strongly connected component."""
    comp = np.flatnonzero(_anchor_component(w, anchor))
    comp = np.concatenate([[anchor], comp[comp != anchor]])  # the anchor first: pinned
    theta0 = np.zeros(len(comp)) if start is None else np.nan_to_num(
        (start[comp] - INIT) / ELO)
    theta0[0] = 0.0
    out = np.full(w.shape[0], np.nan)
    out[comp] = INIT + ELO * _bt_newton(w[np.ix_(comp, comp)], theta0) if len(comp) > 1 \
        else INIT
    return out


def _direction(w: np.ndarray, anchor: int, comp: np.ndarray) -> list[str | None]:
    """'+inf' for models above the anchor's component in the condensation DAG, '-inf' below.

    Above: it reaches the anchor along 'has beaten' edges (so it beat the component, at
    least through others, and the component never beat it back). Models neither above nor
    below (incomparable, or never judged) get None.
    """
    graph = csr_matrix(w > 0)
    below = np.zeros(len(w), bool)
    below[breadth_first_order(graph, anchor, directed=True, return_predecessors=False)] = True
    above = np.zeros(len(w), bool)
    above[breadth_first_order(graph.T.tocsr(), anchor, directed=True,
                              return_predecessors=False)] = True
    return [None if c else "+inf" if up and not down else "-inf" if down and not up else None
            for c, up, down in zip(comp, above, below)]


def _one_sided_bound(n_prompts: int) -> float | None:
    """Elo of the one-sided 95% Clopper-Pearson lower bound after n wins in n prompts.

    All n wins: P(win) >= q = 0.05 ** (1 / n); rating >= 1000 + 400 log10(q / (1 - q)).
    """
    if n_prompts == 0:
        return None
    q = ALPHA ** (1.0 / n_prompts)
    return INIT + 400.0 * math.log10(q / (1.0 - q))


def _bt_bootstrap(mass: _WinMass, anchor: int, n_prompts: int, rounds: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    point = _bt_fit(mass.total(), anchor)
    draws = np.full((rounds, mass.n_models), np.nan)
    if rounds:
        for r, w in enumerate(mass.total(prompt_weights(n_prompts, rounds, seed))):
            draws[r] = _bt_fit(w, anchor, start=point)
    return point, draws


def bradley_terry_draws(battles: pd.DataFrame, models: Sequence[str], anchor: str,
                        rounds: int = 1000, seed: int = 0,
                        prompts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(point (M,), draws (rounds, M)) Elo ratings in the order of `models`, NaN where undefined.

    The same fit and resamples as `bradley_terry_ratings`; the draws of two models (or of two
    statistics with the same prompts, rounds and seed) can be subtracted round by round.
    """
    bt = _encode(battles, models, anchor, prompts)
    return _bt_bootstrap(_win_mass(bt), list(models).index(anchor), len(bt.prompts), rounds,
                         seed)


def _prompts_met(bt: _Battles, i: int, k: int) -> int:
    """On how many prompts models i and k were judged against each other."""
    pair = ((bt.a == i) & (bt.b == k)) | ((bt.a == k) & (bt.b == i))
    return int(len(np.unique(bt.prompt[pair])))


def bradley_terry_ratings(battles: pd.DataFrame, models: list[str], anchor: str,
                          rounds: int = 1000, seed: int = 0,
                          prompts: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Bradley-Terry ratings on the Elo scale (anchor = 1000) with 95% prompt-bootstrap intervals.

    battles: columns prompt_id, model_a, model_b, p_b = P(model_b beats model_a) (soft; tie
    0.5), one row per judgment, any pairs. The fit is the unpenalised maximum-likelihood BT
    of Arena-Hard's `compute_mle_elo` (a tie counts half a win; soft p counts p of a win),
    rating = 1000 + 400/ln10 * (theta - theta_anchor), from per-prompt win masses: a
    bootstrap round reweights prompts by `prompt_weights(len(prompts), rounds, seed)`
    (prompts sorted, or `prompts`) and refits on the M x M aggregate.

    Separation. The MLE is finite only on the anchor's strongly connected component of the
    'has beaten with positive mass' graph (Zermelo 1929, Ford 1957). Every other model that
    was judged gets bt_separated=True, bt_rating=None and bt_direction '+inf' if it lies
    above the anchor's component (it beat it, directly or through others, and never lost to
    it), '-inf' if below, None if incomparable. Instead of an invented number a separated
    model gets a one-sided bound: for '+inf' bt_ci_high=None and bt_ci_low = the Elo of the
    one-sided 95% Clopper-Pearson lower bound on its win probability against the anchor,
    counting each prompt where they met as one trial (conservative: samples of one prompt
    are not independent), 1000 + 400 log10(q / (1 - q)) with q = 0.05 ** (1 / n_prompts);
    '-inf' mirrors it as bt_ci_high; None when it never met the anchor directly.

    In a bootstrap round a model is undefined when it is absent from the resample or
    separated in it; its interval is the 2.5/97.5 percentiles over the rounds where it is
    defined (never filled in with 1000), and bt_boot_missing counts the others. Rounds
    lost to separation are the extreme ones, so many of them make the interval too narrow.
    """
    bt = _encode(battles, models, anchor, prompts)
    k = list(models).index(anchor)
    mass = _win_mass(bt)
    point, draws = _bt_bootstrap(mass, k, len(bt.prompts), rounds, seed)
    w = mass.total()
    comp = np.isfinite(point)
    directions = _direction(w, k, comp)
    judged = (w + w.T).sum(axis=1) > 0
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(models):
        low, high = percentile_interval(draws[:, i], 1 - ALPHA) if comp[i] else (None, None)
        if directions[i] is not None:
            bound = _one_sided_bound(_prompts_met(bt, i, k))
            if bound is not None and directions[i] == "+inf":
                low = bound
            elif bound is not None:
                high = 2 * INIT - bound  # the mirror image: an upper bound
        out[name] = {"bt_rating": _f(point[i]), "bt_ci_low": low, "bt_ci_high": high,
                     "bt_separated": bool(judged[i] and not comp[i]),
                     "bt_boot_missing": int(np.isnan(draws[:, i]).sum()),
                     "bt_direction": directions[i]}
    return out


# ------------------------------------------------------------------------------ style control


class _StyleDesign:
    """Rows of the style-controlled BT, logit = beta_b - beta_a + gamma @ F, sorted by pair.

    Sorting by (model_a, model_b) turns the per-pair sums that the model block of the
    gradient and Hessian needs into `np.add.reduceat`; the design is only M + K wide, so a
    Newton step is a dozen vectorised passes over the rows plus an (M + K)-square solve.
    Features are stored transposed, (K, n), so that every pass is contiguous.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, y: np.ndarray, ft: np.ndarray,
                 n_models: int) -> None:
        self.a, self.b, self.y, self.ft = a, b, y, ft
        self.m, self.k = n_models, ft.shape[0]
        pair = a * n_models + b
        self.starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]]) if len(a) else a
        self.pa, self.pb = a[self.starts], b[self.starts]

    @classmethod
    def build(cls, a: np.ndarray, b: np.ndarray, y: np.ndarray, feats: np.ndarray,
              n_models: int) -> tuple[_StyleDesign, np.ndarray]:
        """The design and the row order it sorted the battles into."""
        order = np.argsort(a * n_models + b, kind="stable")
        ft = np.ascontiguousarray(feats[order].T)
        return cls(a[order], b[order], y[order], ft, n_models), order

    def subset(self, keep: np.ndarray) -> _StyleDesign:
        """The rows where `keep` is True (still sorted): a bootstrap round drops the ~37% of
        rows whose prompt it did not draw, instead of carrying them with weight 0."""
        return _StyleDesign(self.a[keep], self.b[keep], self.y[keep],
                            np.ascontiguousarray(self.ft[:, keep]), self.m)

    def evaluate(self, beta: np.ndarray, gamma: np.ndarray,
                 c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Weighted log-likelihood, its gradient and minus its Hessian in (beta, gamma).

        The log-likelihood is minus Arena-Hard's `bt_loss` (summed BCE-with-logits on the
        soft target p_b), each row weighted by c.
        """
        m, k = self.m, self.k
        z = beta[self.b] - beta[self.a] + gamma @ self.ft
        e = np.exp(-np.abs(z))
        softplus = np.maximum(z, 0.0) + np.log1p(e)  # log(1 + e^z), stable
        ll = float(c @ (self.y * z - softplus))
        p = expit(z)
        r = c * (self.y - p)
        w = c * p * (1.0 - p)
        wf = self.ft * w
        pr = np.add.reduceat(r, self.starts)  # per-pair sums
        pw = np.add.reduceat(w, self.starts)
        pf = np.add.reduceat(wf, self.starts, axis=1)
        grad = np.empty(m + k)
        grad[:m] = np.bincount(self.pb, pr, m) - np.bincount(self.pa, pr, m)
        grad[m:] = self.ft @ r
        hess = np.zeros((m + k, m + k))
        off = np.zeros((m, m))
        np.add.at(off, (self.pa, self.pb), pw)
        hess[:m, :m] = np.diag(off.sum(axis=0) + off.sum(axis=1)) - off - off.T
        hbg = np.zeros((m, k))
        np.add.at(hbg, self.pb, pf.T)
        np.add.at(hbg, self.pa, -pf.T)
        hess[:m, m:], hess[m:, :m] = hbg, hbg.T
        hess[m:, m:] = wf @ self.ft.T
        return ll, grad, hess


def _style_newton(design: _StyleDesign, c: np.ndarray, active: np.ndarray, beta: np.ndarray,
                  gamma: np.ndarray, tol: float = 1e-10,
                  max_iter: int = 50) -> tuple[np.ndarray, np.ndarray] | None:
    """Newton with step halving; model 0 (the anchor) and inactive models stay fixed at 0.

    Stops after a step that moves no parameter by more than `tol` logits: convergence is
    quadratic, so the error left is of the order of tol squared (bootstrap rounds, which
    start at the full-data optimum, use tol = 1e-4: error ~1e-8 logit, ~1e-6 Elo). None when it does not converge (a near-separated resample) or the Hessian is
    singular (a feature collinear with the models).
    """
    if len(design.a) == 0:
        return None
    free = np.flatnonzero(active)
    free = free[free != 0]
    idx = np.r_[free, design.m + np.arange(design.k)]
    beta, gamma = np.where(active, beta, 0.0), gamma.copy()
    ll, grad, hess = design.evaluate(beta, gamma, c)
    for _ in range(max_iter):
        try:
            step = np.linalg.solve(hess[np.ix_(idx, idx)], grad[idx])
        except np.linalg.LinAlgError:
            return None
        t = 1.0
        while True:
            nb, ng = beta.copy(), gamma + t * step[len(free):]
            nb[free] += t * step[:len(free)]
            if np.abs(t * step).max() < tol:
                return nb, ng
            ll_new, g_new, h_new = design.evaluate(nb, ng, c)
            if ll_new >= ll - 1e-12 * max(1.0, abs(ll)) or t < 1e-8:
                break
            t /= 2
        beta, gamma, ll, grad, hess = nb, ng, ll_new, g_new, h_new
    return None


def _zscore(x: np.ndarray, centering: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature columns divided by their unbiased SD (torch.std's default, as Arena-Hard v2).

    centering "mean": minus the column mean, exactly Arena-Hard's z-score. "symmetric": the
    mean and SD of the battles counted in both orientations, (a, b, x) and (b, a, -x), so the
    mean is 0 and the SD is sqrt(2 sum x^2 / (2n - 1)): nothing depends on which model of a
    pair is called a. Returns the kept columns and their mask; a column without spread (all
    equal for "mean", all zero for "symmetric") has no SD and is dropped.
    """
    n = len(x)
    if centering == "mean":
        centre = x.mean(axis=0) if n else np.zeros(x.shape[1])
        sd = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1])
    elif centering == "symmetric":
        centre = np.zeros(x.shape[1])
        sd = np.sqrt(2 * (x ** 2).sum(axis=0) / (2 * n - 1)) if n else np.zeros(x.shape[1])
    else:
        raise ValueError(f"centering must be 'symmetric' or 'mean', got {centering!r}")
    keep = np.isfinite(sd) & (sd > 1e-12 * np.maximum(1.0, np.abs(centre)))
    return (x[:, keep] - centre[keep]) / sd[keep], keep


def style_controlled_ratings(battles: pd.DataFrame, models: list[str], anchor: str,
                             feature_columns: list[str], rounds: int = 100, seed: int = 0,
                             prompts: list[str] | None = None, centering: str = "symmetric"
                             ) -> tuple[dict[str, dict[str, float | None]],
                                        dict[str, float | None]]:
    """Style-controlled BT ratings (Elo, anchor = 1000), as Arena-Hard v2.0's style control.

    battles: the columns of `bradley_terry_ratings` plus `feature_columns`, each a style
    difference of model_b's answer over model_a's (`evaluators.style.style_features`).
    As Arena-Hard's `print_leaderboard_with_style_features` + `fit_pairwise_model`: features
    z-scored once on all battles (unbiased SD), design = one-hot (+1 model_b, -1 model_a)
    plus the features, loss = summed binary cross-entropy with the soft target p_b, no
    penalty; rating = 1000 + 400/ln10 * (beta - beta_anchor). It is solved by Newton with the
    analytic Hessian instead of their torch L-BFGS (lr 0.1, 50 iterations, which can stop
    0.2-1 Elo short of the optimum; run to convergence it gives the same ratings).

    Centering. Arena-Hard subtracts each feature's mean (`centering="mean"`, which
    reproduces it to 1e-2 Elo). There every battle is model vs baseline, so the baseline's
    -1 column is an intercept that absorbs the shift: a rating is the model's strength at
    the *average* style difference from the baseline, not at equal style. With battles
    among all models in a fixed orientation there is no intercept, and the shift biases
    the ratings by an amount that depends on which model of each pair is model_a (a verbose
    model that is always model_b keeps most of its length bonus). The default
    `centering="symmetric"` counts every battle in both orientations, so the features have
    mean exactly 0: ratings are strengths at equal style and do not depend on orientation.
    For battles all against the baseline it differs from Arena-Hard only by one common
    shift of every model relative to the baseline (rating differences between models, and
    the feature coefficients up to the SD's scale, are the same).

    Differences from Arena-Hard besides centering: battles may be among any models; the
    interval is the 2.5/97.5 percentiles of a prompt bootstrap (per-row weights = the count
    of its prompt in `prompt_weights(len(prompts), rounds, seed)`) rather than their 5/95
    quantiles of a battle bootstrap; the point is the full-data fit, not the bootstrap median.

    Only models in the anchor's strongly connected component (see `bradley_terry_ratings`)
    are fitted, others are None; a round where a model leaves the component, or the fit
    does not converge, leaves it out of that round's percentiles. Returns ({model:
    {bt_rating_sc, bt_sc_ci_low, bt_sc_ci_high}}, {feature: coefficient per SD of the
    feature, in logits; None for a feature without spread}).
    """
    bt = _encode(battles, models, anchor, prompts)
    k = list(models).index(anchor)
    mass = _win_mass(bt)
    comp = np.flatnonzero(_anchor_component(mass.total(), k))
    comp = np.r_[k, comp[comp != k]]  # the anchor is local model 0
    local = np.full(len(models), -1)
    local[comp] = np.arange(len(comp))
    rows = (local[bt.a] >= 0) & (local[bt.b] >= 0)
    raw = battles[feature_columns].to_numpy(dtype=float)[rows]
    if not np.isfinite(raw).all():
        raise ValueError(f"style features {feature_columns} must be finite numbers")
    feats, kept = _zscore(raw, centering)
    empty = {name: {"bt_rating_sc": None, "bt_sc_ci_low": None, "bt_sc_ci_high": None}
             for name in models}
    empty[anchor] = {"bt_rating_sc": INIT, "bt_sc_ci_low": INIT, "bt_sc_ci_high": INIT}
    coefs: dict[str, float | None] = dict.fromkeys(feature_columns)
    if len(comp) < 2:
        return empty, coefs
    design, order = _StyleDesign.build(local[bt.a[rows]], local[bt.b[rows]], bt.p_b[rows],
                                       feats, len(comp))
    prompt = bt.prompt[rows][order]
    fit = _style_newton(design, np.ones(len(prompt)), np.ones(len(comp), bool),
                        np.zeros(len(comp)), np.zeros(design.k))
    if fit is None:
        return empty, coefs
    beta, gamma = fit
    draws = np.full((rounds, len(comp)), np.nan)
    weights = prompt_weights(len(bt.prompts), rounds, seed)
    for r, (w, agg) in enumerate(zip(weights, mass.total(weights) if rounds else [])):
        active = _anchor_component(agg, k)[comp]
        c = w[prompt] * (active[design.a] & active[design.b])
        keep = c > 0
        got = _style_newton(design.subset(keep), c[keep], active, beta, gamma, tol=1e-4)
        if got is not None:
            draws[r, active] = INIT + ELO * got[0][active]
    out = dict(empty)
    for i, g in enumerate(comp):
        low, high = percentile_interval(draws[:, i], 1 - ALPHA)
        out[models[g]] = {"bt_rating_sc": float(INIT + ELO * beta[i]), "bt_sc_ci_low": low,
                          "bt_sc_ci_high": high}
    for name, coef in zip(np.asarray(feature_columns)[kept], gamma):
        coefs[str(name)] = float(coef)
    return out, coefs
