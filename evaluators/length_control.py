"""Length-controlled win rate, offline: AlpacaEval 2's GLM refitted on this experiment's judgments.

`lc_win_rate` reproduces `alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate`
(alpaca_eval 0.6.6) without the Hugging Face Hub: the instruction difficulty and the gamed
baselines' judgments that AlpacaEval downloads in `df_gamed.csv` are passed in instead, and
`instruction_difficulty` estimates the difficulty from our own judgments the way AlpacaEval's
`notebooks/instruction_difficulty.ipynb` did from its leaderboard.

The GLM (one fit per model, against one baseline), in patsy notation and with AlpacaEval's names:

    preference ~ np.tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline - 1

`preference` = P(model beats baseline) as a soft label, `std_delta_len` = (baseline length -
model length) / std, `not_gamed_baseline` = 1 for the model's rows and 0 for the gamed
baselines' rows (which thus only inform the length slope and the difficulty weight). The LC
win rate is the mean over the model's rows of the fitted probability with `std_delta_len` = 0:
what the judge would prefer if the model answered at the baseline's length.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import make_scorer
from sklearn.model_selection import GroupKFold

__all__ = ["N_SPLITS", "VARIANTS", "instruction_difficulty", "lc_win_rate"]

# alpaca_eval's GLM_INFO[...]["kwargs"]["n_splits"] for every variant.
N_SPLITS = 5
# Our variant name -> (uses instruction difficulty, uses the gamed-baseline regularisation).
# The first three are AlpacaEval's GLM_INFO keys with their exact meaning; AlpacaEval has no
# difficulty-free variant with regularisation, so that combination gets a suffix (it is
# AlpacaEval's minimal formula run with regularize_to_baseline_lambda, via its glm_info).
VARIANTS = {
    "length_controlled_v1": (True, True),
    "length_controlled_noreg": (True, False),
    "length_controlled_minimal": (False, False),
    "length_controlled_minimal_reg": (False, True),
}
# Column names of AlpacaEval's patsy design matrix, kept so the coefficients read the same.
_LEN, _DIFF, _NOT_GAMED = (
    "np.tanh(std_delta_len)", "instruction_difficulty", "not_gamed_baseline.astype(float)")
_ROW_COLUMNS = ("prompt_id", "baseline_text_len", "model_text_len", "preference")


def _l1_kwargs() -> dict[str, Any]:
    """`penalty="l1"` spelled for the installed scikit-learn.

    scikit-learn 1.8 deprecated `penalty` in favour of `l1_ratios=(1,)` (same L1 path, same
    liblinear call) and 1.9 added `use_legacy_attributes`; older releases need `penalty="l1"`
    (there `l1_ratios` would be ignored and the default L2 used).
    """
    params = inspect.signature(LogisticRegressionCV).parameters
    kwargs: dict[str, Any] = {}
    if params["penalty"].default == "deprecated":
        kwargs["l1_ratios"] = (1.0,)
    else:
        kwargs["penalty"] = "l1"
    if "use_legacy_attributes" in params:
        kwargs["use_legacy_attributes"] = False
    return kwargs


def _continuous_logloss(y_true: np.ndarray, y_pred: np.ndarray, true_prob: np.ndarray,
                        true_sample_weight: np.ndarray | None = None) -> float:
    """AlpacaEval's CV scorer (`logloss_continuous`): log-loss against the soft label.

    Each duplicated row carries the soft label it came from (`true_prob` is p for the y=1 copy
    and 1-p for the y=0 copy), so both copies score -[p log q + (1-p) log(1-q)]; the weighted
    version multiplies by the row weight and still divides by the row count (np.mean), as
    AlpacaEval does, because the chosen C depends on exactly this number.
    """
    p = np.where(np.asarray(y_true) == 1, true_prob, 1 - np.asarray(true_prob))
    q = np.clip(y_pred, 1e-15, 1 - 1e-15)
    loss = p * np.log(q) + (1 - p) * np.log(1 - q)
    if true_sample_weight is not None:
        loss = loss * true_sample_weight
    return float(-np.mean(loss))


def _fit_soft_l1_cv(X: np.ndarray | sp.spmatrix, p: np.ndarray,
                    weight: np.ndarray | None) -> LogisticRegressionCV:
    """AlpacaEval's `fit_LogisticRegressionCV(..., is_ytrue_proba=True)`, without global state.

    Soft labels: every row appears twice, as (y=1, weight w*p) and (y=0, weight w*(1-p)), so
    the weighted binary log-likelihood equals the soft-label one. L1, liblinear, no intercept,
    random_state=123, the default grid Cs=10, and GroupKFold(5) whose groups are the original
    rows (a row and its copy stay in one fold). Metadata routing carries the weights to the
    scorer; it is switched on only inside this call (AlpacaEval sets it globally).
    """
    n = len(p)
    X_dup = sp.vstack([X, X], format="csr") if sp.issparse(X) else np.vstack([X, X])
    y_dup = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    true_prob = np.concatenate([p, 1 - p])
    groups = np.concatenate([np.arange(n), np.arange(n)])
    true_weight = None if weight is None else np.concatenate([weight, weight])
    sample_weight = true_prob if true_weight is None else true_prob * true_weight
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_scorer(_continuous_logloss, response_method="predict_proba",
                             greater_is_better=False)
        scorer = scorer.set_score_request(true_prob=True, true_sample_weight=True)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=N_SPLITS), scoring=scorer,
                                     solver="liblinear", fit_intercept=False, dual=False,
                                     random_state=123, **_l1_kwargs())
        model.set_fit_request(sample_weight=True)
        with warnings.catch_warnings():
            # liblinear at the grid's largest C (1e4) often stops at max_iter; AlpacaEval runs
            # with the same settings and lives with it, so do we (exactness over silence).
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_dup, y_dup, sample_weight=sample_weight, groups=groups,
                      true_prob=true_prob, true_sample_weight=true_weight)
    return model


def _std_delta_len(baseline_len: pd.Series, other_len: pd.Series) -> np.ndarray:
    """(baseline - other) / std(ddof=1) over these rows, in characters, as AlpacaEval does.

    A zero std (every row has the same length gap) would be x/0 in AlpacaEval; we take the
    limit tanh(+-inf) = +-1 (gap 0 -> 0): the length term then becomes a constant the fit
    cannot separate from the model's strength, which is the honest reading of such data.
    """
    delta = (baseline_len.astype(float) - other_len.astype(float)).to_numpy()
    std = float(np.std(delta, ddof=1)) if len(delta) > 1 else float("nan")
    if not np.isfinite(std) or std == 0:
        return np.where(delta > 0, np.inf, np.where(delta < 0, -np.inf, 0.0))
    return delta / std


def _lookup(difficulty: Mapping[str, float], ids: pd.Series, what: str) -> np.ndarray:
    missing = sorted({str(i) for i in ids if i not in difficulty})
    if missing:
        raise ValueError(f"no instruction difficulty for {len(missing)} {what} prompt(s), "
                         f"e.g. {missing[:3]}")
    return np.array([float(difficulty[i]) for i in ids], dtype=float)


def _result(lc: float | None, se: float | None, variant: str, note: str | None,
            coef: dict[str, float] | None = None) -> dict[str, Any]:
    return {"lc_win_rate": lc, "lc_standard_error": se, "lc_variant": variant,
            "lc_note": note, "lc_coefficients": coef}


def lc_win_rate(rows: pd.DataFrame, difficulty: Mapping[str, float] | None = None,
                gamed: pd.DataFrame | None = None, lam: float = 0.2) -> dict[str, Any]:
    """Length-controlled win rate of one model against the baseline, as AlpacaEval 2 fits it.

    `rows`: the model's judgments against the baseline, columns `prompt_id`,
    `baseline_text_len`, `model_text_len` (characters) and `preference` = P(model wins) in
    [0, 1] (NaN = unjudged). `difficulty`: prompt_id -> instruction difficulty (e.g. from
    `instruction_difficulty`); None drops the term (AlpacaEval's minimal formula). `gamed`:
    the judgments of the baseline's gamed rewrites against the baseline, same columns plus
    `kind` ('concise' | 'verbose'); None (or lam falsy, as in AlpacaEval) fits without them.

    The variant is chosen from what is given: difficulty + gamed -> `length_controlled_v1`
    (AlpacaEval's default), difficulty only -> `length_controlled_noreg`, neither ->
    `length_controlled_minimal` (AlpacaEval's minimal GLM has no regularisation), gamed only ->
    `length_controlled_minimal_reg` (AlpacaEval's minimal formula with its regulariser).

    Fit, exactly as alpaca_eval 0.6.6: `std_delta_len` = (baseline len - model len) / std
    (ddof=1) over the model's rows (unjudged rows included, like AlpacaEval's); each gamed
    kind is standardised by its own std, as AlpacaEval's `make_data` built `df_gamed.csv`
    (per generator). Training rows = gamed rows (kinds in the given order, then) + the model's
    judged rows; gamed rows get `not_gamed_baseline` = 0 and weight lam/2 each (AlpacaEval
    halves lam for its two gamed baselines whatever their row count), model rows weight 1.
    See `_fit_soft_l1_cv` for the estimator.
    LC = 100 * mean over the model's rows of the prediction at std_delta_len = 0;
    `lc_standard_error` = 100 * sem of those predictions (their spread over prompts, as
    AlpacaEval reports it, not a sampling error of the LC).

    Returns `{lc_win_rate, lc_standard_error, lc_variant, lc_note, lc_coefficients}`;
    `lc_note` is None unless something unusual happened:
    - fewer than 5 judged model rows (GroupKFold(5) needs 5 groups; AlpacaEval would fit on
      the gamed rows plus a handful of the model's, or crash): LC and SE are None;
    - outputs identical to the baseline's (every length gap 0, every preference 0.5, which
      is what AlpacaEval forces for identical outputs): LC = 50 and SE = 0 by construction,
      as AlpacaEval returns for the baseline against itself;
    - every preference identical, or every length gap identical (std 0, see
      `_std_delta_len`): the GLM is still fitted like AlpacaEval's and the note says so
      (with every gap 0 AlpacaEval crashes on 0/0; we fit with a zero length column);
    - every training preference 0, or every one 1 (gamed rows included): LC = 0 or 100 and
      SE = 0, unfitted (liblinear drops the empty class, and AlpacaEval then returns 50
      for a model that always loses).
    `lc_coefficients` are the GLM weights under AlpacaEval's column names (None if unfitted).
    """
    missing = [c for c in _ROW_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}")
    use_gamed = gamed is not None and bool(lam)
    variant = next(k for k, v in VARIANTS.items() if v == (difficulty is not None, use_gamed))
    rows = rows.reset_index(drop=True)
    pref = rows["preference"].astype(float).to_numpy()
    judged = ~np.isnan(pref)
    if judged.sum() < N_SPLITS:
        return _result(None, None, variant,
                       f"{int(judged.sum())} judged rows: GroupKFold({N_SPLITS}) needs at "
                       f"least {N_SPLITS}, no LC fitted")
    if ((rows["baseline_text_len"] == rows["model_text_len"]).all()
            and np.all(pref[judged] == 0.5)):
        return _result(50.0, 0.0, variant, "outputs identical to the baseline: LC = 50 by "
                       "construction")
    notes = []
    if np.all(pref[judged] == pref[judged][0]):
        notes.append("every preference is identical: the GLM has nothing to explain")

    std_len = _std_delta_len(rows["baseline_text_len"], rows["model_text_len"])
    if np.isinf(std_len).any() or np.all(std_len == 0):
        notes.append("every length gap is identical (std 0): the length term is constant")
    cols = [_LEN] + ([_DIFF] if difficulty is not None else []) + [_NOT_GAMED]
    model_X = {_LEN: np.tanh(std_len), _NOT_GAMED: np.ones(len(rows))}
    test_X = {_LEN: np.zeros(len(rows)), _NOT_GAMED: np.ones(len(rows))}
    if difficulty is not None:
        model_X[_DIFF] = test_X[_DIFF] = _lookup(difficulty, rows["prompt_id"], "model")
    X = np.column_stack([model_X[c] for c in cols])[judged]
    X_test = np.column_stack([test_X[c] for c in cols])
    p, weight = pref[judged], None

    if use_gamed:
        g_X, g_p = _gamed_design(gamed, difficulty, cols)
        X, p = np.vstack([g_X, X]), np.concatenate([g_p, p])
        weight = np.concatenate([np.full(len(g_p), lam / 2), np.ones(int(judged.sum()))])

    if np.all(p == 0) or np.all(p == 1):
        # One class has zero weight in the whole training set: liblinear then drops it and
        # AlpacaEval reports 50 for a model that always loses (100 - 1e-3 if it always
        # wins). Nothing can be length-controlled, so the LC is the raw 0 or 100.
        notes.append("every training preference is 0 or every one is 1: LC = raw, unfitted")
        return _result(float(p[0] * 100), 0.0, variant, "; ".join(notes))
    if use_gamed and lam != 0.2:
        notes.append(f"lam={lam:g} (AlpacaEval's {variant} uses 0.2)")
    model = _fit_soft_l1_cv(X, p, weight)
    pred = model.predict_proba(X_test)[:, 1]
    coef = {c: float(w) for c, w in zip(cols, model.coef_[0])}
    return _result(float(pred.mean() * 100), float(pd.Series(pred).sem() * 100), variant,
                   "; ".join(notes) or None, coef)


def _gamed_design(gamed: pd.DataFrame, difficulty: Mapping[str, float] | None,
                  cols: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Design rows of the gamed baselines (AlpacaEval's `df_gamed.csv`), judged rows only.

    Each kind is standardised by its own std (AlpacaEval's `make_data` groups by generator),
    and rows keep the order they were given in, since the CV folds depend on row order.
    """
    need = [*_ROW_COLUMNS, "kind"]
    missing = [c for c in need if c not in gamed.columns]
    if missing:
        raise ValueError(f"gamed lacks column(s) {missing}")
    gamed = gamed.reset_index(drop=True)
    std_len = np.empty(len(gamed))
    for _, idx in gamed.groupby("kind", sort=False).indices.items():
        part = gamed.iloc[idx]
        std_len[idx] = _std_delta_len(part["baseline_text_len"], part["model_text_len"])
    feats = {_LEN: np.tanh(std_len), _NOT_GAMED: np.zeros(len(gamed))}
    if difficulty is not None:
        feats[_DIFF] = _lookup(difficulty, gamed["prompt_id"], "gamed")
    pref = gamed["preference"].astype(float).to_numpy()
    keep = ~np.isnan(pref)
    return np.column_stack([feats[c] for c in cols])[keep], pref[keep]


def instruction_difficulty(judgments: pd.DataFrame) -> dict[str, float]:
    """Per-prompt difficulty from this experiment's own judgments, AlpacaEval's way.

    AlpacaEval's `instruction_difficulty` (`notebooks/instruction_difficulty.ipynb`, issue
    tatsu-lab/alpaca_eval#346) is the per-instruction coefficient of one joint GLM over all
    leaderboard models against the baseline, fitted with the same estimator as the LC GLM:

        preference ~ C(model):np.tanh(std_delta_len) + C(model) + C(prompt) - 1

    i.e. a logistic regression of the soft preference P(model beats baseline) on a bias and a
    length slope per model plus a one-hot prompt effect, the prompt weight shared by all
    models (AlpacaEval's psi_m - psi_b fixed to 1 so that the problem stays convex). We fit
    exactly that with `_fit_soft_l1_cv`: soft labels as duplicated rows, L1 penalty, liblinear,
    no intercept, C picked from the default 10-point grid by GroupKFold(5) (groups = rows)
    on the soft log-loss. Columns: `prompt_id`, `model`, `preference` (several samples per
    prompt are fine: each is a row); if `baseline_text_len` and `model_text_len` are present
    the per-model length term is included (standardised per model, ddof=1, as AlpacaEval's
    `make_data`), so that a prompt on which long answers win is not mistaken for an easy one.

    Three deliberate differences from the notebook, all about identifiability, none about
    the kind of quantity: (1) the prompt effect is one-hot over every prompt instead of
    treatment-coded against instruction 0 -- with L1 the penalty then shrinks each prompt
    toward the typical prompt rather than toward an arbitrary first one; (2) the result is
    centred to mean 0 over prompts (the shift is otherwise absorbed by the model biases and
    fixed only by the penalty), so difficulty 0 = an average prompt; (3) the sign is flipped:
    AlpacaEval's coefficient raises P(model wins), ours is larger when the prompt is harder
    for the models (the baseline wins more). The sign is immaterial to the LC: the GLM gives
    each model its own difficulty weight and L1 is symmetric, so negating the feature negates
    that weight and leaves every prediction unchanged. No `not_gamed_baseline` term: gamed
    rewrites, if included here as models, already get their own bias. Measured on the test
    fixture: equal to the notebook's procedure (patsy + alpaca_eval's fit_LogisticRegressionCV)
    negated and centred, to 3e-4 at 120 prompts and 9e-5 at 800 prompts x 4 samples.
    """
    missing = [c for c in ("prompt_id", "model", "preference") if c not in judgments.columns]
    if missing:
        raise ValueError(f"judgments lack column(s) {missing}")
    df = judgments.reset_index(drop=True)
    df = df[df["preference"].notna()].reset_index(drop=True)
    if len(df) < N_SPLITS:
        raise ValueError(f"{len(df)} judged rows: need at least {N_SPLITS} to fit the difficulty")
    models, m_idx = np.unique(df["model"].astype(str).to_numpy(), return_inverse=True)
    prompts, x_idx = np.unique(df["prompt_id"].astype(str).to_numpy(), return_inverse=True)
    n, n_m = len(df), len(models)
    blocks = [sp.csr_matrix((np.ones(n), (np.arange(n), m_idx)), shape=(n, n_m))]
    if {"baseline_text_len", "model_text_len"} <= set(df.columns):
        tanh_len = np.empty(n)
        for k in range(n_m):
            sel = m_idx == k
            tanh_len[sel] = np.tanh(_std_delta_len(df.loc[sel, "baseline_text_len"],
                                                   df.loc[sel, "model_text_len"]))
        blocks.append(sp.csr_matrix((tanh_len, (np.arange(n), m_idx)), shape=(n, n_m)))
    blocks.append(sp.csr_matrix((np.ones(n), (np.arange(n), x_idx)), shape=(n, len(prompts))))
    model = _fit_soft_l1_cv(sp.hstack(blocks, format="csr"),
                            df["preference"].astype(float).to_numpy(), None)
    coef = -model.coef_[0][-len(prompts):]
    coef = coef - coef.mean()
    # Map back to the caller's ids (np.unique sorted their string forms). A prompt with no
    # judged row gets 0, the average prompt: lc_win_rate still needs a value for it, because
    # unjudged rows count in its mean prediction as they do in AlpacaEval's.
    by_str = dict(zip(prompts, coef))
    return {pid: float(by_str.get(str(pid), 0.0))
            for pid in dict.fromkeys(judgments["prompt_id"])}
