"""The report's aggregation pinned to independent computations (issue 17).

`leaderboard_records` and `collect_battles` are plumbing: they route a hand-built experiment
into the statistics and name the results. Every test below builds the experiment by hand
and recomputes what the record must hold without the report's code: the prompt bootstrap
as a loop over seeded draws, Bradley-Terry in closed form (each model met only the
anchor, or a chain of pairs: a tree, whose MLE fits every edge exactly), style control as
a statsmodels logistic regression, the exact columns by enumerating every pair of answers,
sorting and the few-prompts warning on literal records, and `collect_battles` against a
fake `Units` that hands out a table of judgments.

Every test calls the function under test itself (no shared fixture of results), so that a
wrong line fails the test that checks it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from evaluators.collect import Battles, ExactPrompt, ModelResults, collect_battles
from evaluators.length_control import instruction_difficulty, lc_win_rate
from evaluators.report import (
    EXACT,
    FEW_PROMPTS,
    JUDGE_COLUMNS,
    SAMPLE_COLUMNS,
    ReportSettings,
    few_prompts_note,
    leaderboard_records,
    sort_key,
)
from harness.units import Judged
from tests.test_pinned_leaderboard import _prompt_bootstrap

ELO = 400 / math.log(10)  # Elo points per nat
ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ the hand-built experiment

BASE = "sft"
PROMPTS = [f"p{i}" for i in range(7)]
JUDGE = "oracle"
# P(candidate beats the baseline) per prompt and sample. b never answered p5; every
# judgment of p6 failed (None). All strictly inside (0, 1): no resample is separated.
PREF: dict[str, dict[str, list[float | None]]] = {
    "a": {"p0": [0.9, 0.6], "p1": [0.7, 0.8], "p2": [0.4, 0.95], "p3": [0.85, 0.5],
          "p4": [0.65, 0.75], "p5": [0.3, 0.9], "p6": [None, None]},
    "b": {"p0": [0.2, 0.45], "p1": [0.6, 0.1], "p2": [0.35, 0.25], "p3": [0.05, 0.5],
          "p4": [0.7, 0.3], "p6": [None, None]},
}
ANSWERED = {BASE: PROMPTS, "a": PROMPTS, "b": [p for p in PROMPTS if p != "p5"]}
BASE_LEN = {BASE: 6, "a": 10, "b": 3}
BOLD = "**key point** "


def _text(label: str, pid: str, k: int) -> str:
    """Lengths vary within a model (so length is not collinear with the model dummies);
    a's sample 0 and the baseline's sample 1 carry one bold span, in every prompt."""
    i = int(pid[1:])
    words = "word " * (BASE_LEN[label] + (3 * i + 5 * k) % 7)
    bold = BOLD if (label, k) in {("a", 0), (BASE, 1)} else ""
    return f"{label} on {pid} #{k}: {bold}{words}".strip()


def _reward(label: str, pid: str, k: int) -> float | None:
    """The scorer `rm`; two samples not scored (None)."""
    if (label, pid, k) in {("a", "p2", 1), (BASE, "p0", 0)}:
        return None
    i = int(pid[1:])
    return {BASE: 0.0, "a": 1.0, "b": -0.5}[label] + ((7 * i + 3 * k) % 5) / 4


def _samples(label: str) -> list[dict[str, Any]]:
    out = []
    for pid in ANSWERED[label]:
        for k in range(2):
            i = int(pid[1:])
            rm = _reward(label, pid, k)
            out.append({"prompt_id": pid, "sample_index": k, "text": _text(label, pid, k),
                        "prompt": f"prompt {pid}", "rewards": {"rm": rm, "half": 0.5},
                        "reward": rm, "logp": -1.0 - ((5 * i + k) % 4) / 2 - len(label),
                        "ref_logp": -2.0 - ((3 * i + 2 * k) % 3) / 2})
    return out


def _judged(label: str, samples: dict[str, list[dict]]) -> list[Judged]:
    base = {(s["prompt_id"], s["sample_index"]): s for s in samples[BASE]}
    out = []
    for c in samples[label]:
        p = PREF[label][c["prompt_id"]][c["sample_index"]]
        row = ({"preference": p, "status": "ok"} if p is not None
               else {"preference": None, "status": "failed: judge timed out"})
        out.append(Judged(base[c["prompt_id"], c["sample_index"]], c, "", row))
    return out


GAMED_KINDS = {"concise": -4, "verbose": 6}


def _gamed_rows(samples: list[dict]) -> list[dict[str, Any]]:
    """The baseline's length-steered answers judged against the baseline (LC regulariser)."""
    rows = []
    for kind, extra in GAMED_KINDS.items():
        for s in samples:
            if s["prompt_id"] in ("p0", "p1", "p2", "p3"):
                i = int(s["prompt_id"][1:])
                rows.append({"prompt_id": s["prompt_id"], "kind": kind,
                             "baseline_text_len": len(s["text"]),
                             "model_text_len": len(s["text"]) + 5 * extra + i,
                             "preference": 0.35 + 0.05 * i if extra < 0 else 0.6 - 0.05 * i})
    return rows


def _experiment(judges: bool = True) -> tuple[list[ModelResults], dict[str, Battles]]:
    """(results, battles) of the baseline plan; `judges=False`: judgments only as battles."""
    samples = {m: _samples(m) for m in (BASE, "a", "b")}
    results, rows = [], []
    for m in (BASE, "a", "b"):
        judged = [] if m == BASE else _judged(m, samples)
        rows += [{"prompt_id": j.candidate["prompt_id"],
                  "sample_index": j.candidate["sample_index"], "model_a": BASE, "model_b": m,
                  "p_b": j.row["preference"], "text_a": j.baseline["text"],
                  "text_b": j.candidate["text"]} for j in judged if j.ok]
        results.append(ModelResults(
            label=m, method="sft" if m == BASE else "spo",
            params={} if m == BASE else {"alpha": 0.5 if m == "a" else 2.0},
            seed=None if m == BASE else {"a": 3, "b": 4}[m], is_baseline=m == BASE,
            samples=samples[m], judged={JUDGE: judged} if judges and m != BASE else {}))
    n_failed = sum(x is None for t in PREF.values() for v in t.values() for x in v)
    return results, {JUDGE: Battles(rows, n_failed, _gamed_rows(samples[BASE]))}


def _by_label(records: list[dict]) -> dict[str, dict]:
    return {r["label"]: r for r in records}


# ------------------------------------------------------------------ independent bootstrap


def _interval(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
    return float(low), float(high)


def _values(label: str, key: str) -> dict[str, list[float]]:
    """prompt id -> the non-None values of one sample field (or scorer) of `label`."""
    out: dict[str, list[float]] = {}
    for s in _samples(label):
        v = s["rewards"][key] if key in s["rewards"] else (
            -s["logp"] if key == "entropy" else s[key])
        if v is not None:
            out.setdefault(s["prompt_id"], []).append(v)
    return out


def _ok_prefs(label: str) -> dict[str, list[float]]:
    return {p: [x for x in v if x is not None] for p, v in PREF[label].items()
            if any(x is not None for x in v)}


def _logit(p: np.ndarray | float) -> np.ndarray | float:
    return np.log(p) - np.log1p(-np.asarray(p))


# ------------------------------------------------------------------ identity and samples


def test_identity_and_count_columns_without_any_judge():
    """Each record names its model and counts its prompts and samples; no judge: no
    primary judge and every flat judge column None (not a KeyError, not another judge's).

    b answered 6 of the 7 prompts, 2 samples each. Exact equality: literals.
    """
    results, _ = _experiment(judges=False)
    recs = _by_label(leaderboard_records(results, None, None,
                                         ReportSettings(rounds=20, style_control=False)))
    assert list(recs) == [BASE, "a", "b"]
    b = recs["b"]
    assert (b["label"], b["method"], b["params"], b["seed"], b["is_baseline"]) == (
        "b", "spo", {"alpha": 2.0}, 4, False)
    assert (recs[BASE]["method"], recs[BASE]["seed"], recs[BASE]["is_baseline"]) == (
        "sft", None, True)
    assert (b["n_prompts"], b["n_samples"]) == (6, 12)
    assert (recs["a"]["n_prompts"], recs["a"]["n_samples"]) == (7, 14)
    for r in recs.values():
        assert r["primary_judge"] is None
        assert all(r[k] is None for k in JUDGE_COLUMNS)
        assert not any(k.startswith(f"{JUDGE}:") for k in r)


def test_default_settings_are_the_documented_defaults():
    """Without `settings` the report uses ReportSettings(): 1000 rounds, seed 0.

    The mean-reward interval equals this file's prompt bootstrap with (1000, 0) over the
    experiment's 7 prompts. Tolerance 1e-12 on rewards of order 1: identical draws, float
    summation order only.
    """
    results, _ = _experiment(judges=False)
    rec = _by_label(leaderboard_records(results))["b"]
    low, high = _interval(_prompt_bootstrap(_values("b", "rm"), PROMPTS, 1000, 0))
    assert (rec["mean_reward_ci_low"], rec["mean_reward_ci_high"]) == pytest.approx(
        (low, high), abs=1e-12)


@pytest.mark.parametrize("key", ["mean_reward", "rm:mean_reward", "half:mean_reward",
                                 "entropy"])
def test_sample_and_scorer_intervals_resample_every_prompt_of_the_experiment(key):
    """Intervals of b (who never answered p5) use the report's (rounds, seed) and the
    experiment's 7-prompt universe, not b's own 6 prompts.

    Drawing from 6 prompts, with another seed or with 1000 rounds would give other
    percentiles. Point = the plain mean of the scored samples (None rewards left out);
    n_scored counts them. Tolerance 1e-12: identical draws, summation order only.
    """
    results, _ = _experiment(judges=False)
    settings = ReportSettings(rounds=157, seed=11, style_control=False)
    rec = _by_label(leaderboard_records(results, None, None, settings))["b"]
    field = {"mean_reward": "rm", "rm:mean_reward": "rm", "half:mean_reward": "half",
             "entropy": "entropy"}[key]
    values = _values("b", field)
    flat = [v for vs in values.values() for v in vs]
    low, high = _interval(_prompt_bootstrap(values, PROMPTS, settings.rounds, settings.seed))
    assert rec[key] == pytest.approx(np.mean(flat), abs=1e-12)
    assert (rec[f"{key}_ci_low"], rec[f"{key}_ci_high"]) == pytest.approx((low, high),
                                                                          abs=1e-12)
    if key.endswith(":mean_reward"):
        assert rec[key.replace("mean_reward", "n_scored")] == len(flat) == 12
    # a's rm: one sample unscored
    a = _by_label(leaderboard_records(results, None, None, settings))["a"]
    assert a["rm:n_scored"] == a["n_scored"] == 13


def _kirk_ead(texts: list[str], vocab: int) -> float:
    """Kirk et al.'s EAD averaged over n = 1..5, written out: words split on ' ' after
    dropping '.' and newlines; n-grams never cross texts; an empty order counts 0."""
    words = [[w for w in t.replace(".", "").replace("\n", "").split(" ") if w] for t in texts]
    per_n = []
    for n in range(1, 6):
        grams = [tuple(w[i:i + n]) for w in words for i in range(len(w) - n + 1)]
        total = len(grams)
        per_n.append(len(set(grams)) / (vocab * (1 - ((vocab - 1) / vocab) ** total))
                     if total else 0.0)
    return float(np.mean(per_n))


def test_ead_uses_the_settings_vocabulary_size():
    """`ead` is Kirk's EAD with V = settings.vocab_size (here 1000, not GPT-2's 50257),
    averaged over prompts. Tolerance rel 1e-12: the same closed form."""
    results, _ = _experiment(judges=False)
    rec = _by_label(leaderboard_records(
        results, None, None, ReportSettings(rounds=10, style_control=False,
                                            vocab_size=1000)))["a"]
    texts: dict[str, list[str]] = {}
    for s in _samples("a"):
        texts.setdefault(s["prompt_id"], []).append(s["text"])
    expected = np.mean([_kirk_ead(t, 1000) for t in texts.values()])
    assert rec["ead"] == pytest.approx(expected, rel=1e-12)
    assert rec["ead"] != pytest.approx(np.mean([_kirk_ead(t, 50257) for t in texts.values()]),
                                       rel=1e-3)


class _VectorEmbedder:
    """Maps a text to a fixed 2-d direction: angle = `angle(text)` radians."""

    def __init__(self, angle) -> None:
        self.angle = angle

    def encode(self, texts, **_: Any) -> np.ndarray:
        a = np.array([self.angle(t) for t in texts])
        return np.column_stack([np.cos(a), np.sin(a)])


def test_a_models_stored_embeddings_take_precedence_over_the_shared_embedder():
    """settings.embedders[label] embeds that model's answers; others use settings.embedder.

    With 2 samples a prompt, embedding diversity = mean over prompts of 1 - cos(angle
    difference): the shared embedder puts sample k at angle k (1 - cos 1), a's own at
    angle 0.5 k (1 - cos 0.5). Tolerance 1e-12: a few float operations.
    """
    shared = _VectorEmbedder(lambda t: float(t.split("#")[1][0]))
    own = _VectorEmbedder(lambda t: 0.5 * float(t.split("#")[1][0]))
    results, _ = _experiment(judges=False)
    recs = _by_label(leaderboard_records(results, None, None, ReportSettings(
        rounds=10, style_control=False, embedder=shared, embedders={"a": own})))
    assert recs["a"]["embedding_diversity"] == pytest.approx(1 - math.cos(0.5), abs=1e-12)
    assert recs["b"]["embedding_diversity"] == pytest.approx(1 - math.cos(1.0), abs=1e-12)
    assert recs[BASE]["embedding_diversity"] == pytest.approx(1 - math.cos(1.0), abs=1e-12)


def test_scorer_columns_need_rewards_and_work_with_one_sample():
    """Samples without a `rewards` dict give no scorer columns; a model with a single
    sample still gets its scorer's mean (that sample's value) and n_scored 1."""
    one = {"prompt_id": "p0", "sample_index": 0, "text": "only answer", "reward": 0.25,
           "rewards": {"rm": 0.25}, "logp": None, "ref_logp": None}
    bare = [{k: v for k, v in one.items() if k != "rewards"} | {"sample_index": i}
            for i in range(2)]
    results = [ModelResults(BASE, "sft", {}, None, True, bare),
               ModelResults("a", "spo", {}, 0, False, [one])]
    recs = _by_label(leaderboard_records(results, None, None,
                                         ReportSettings(rounds=10, style_control=False)))
    assert not any(":" in k for k in recs[BASE])
    assert recs[BASE]["mean_reward"] == 0.25  # from the sample's `reward`
    assert recs["a"]["rm:mean_reward"] == 0.25 and recs["a"]["rm:n_scored"] == 1


# ------------------------------------------------------------------ the judge's columns


def test_win_rate_and_bradley_terry_columns_equal_independent_computations():
    """The primary judge's win rate, BT rating and their intervals from the hand table.

    Win rate: 100 x the pooled mean of the successful judgments; its interval the
    percentiles of this file's bootstrap over all 7 prompts (p6, every judgment failed,
    weighs nothing but is drawn). BT: each model met only the anchor, so the MLE and every
    bootstrap round are closed-form, 1000 + ELO logit(pooled mean p); a model is undefined
    in a round that drew none of its prompts (bt_boot_missing, here 0). Counts: a failed 2 and
    b 2 judgments (p6). Tolerances: 1e-9 on percentages (summation order); 1e-6 Elo for
    BT (Newton stops at a step below 1e-10 nats, x 174 Elo per nat).
    """
    results, battles = _experiment()
    settings = ReportSettings(rounds=123, seed=5, style_control=False)
    recs = _by_label(leaderboard_records(results, battles, None, settings))
    for m in ("a", "b"):
        r = recs[m]
        prefs = _ok_prefs(m)
        flat = [x for v in prefs.values() for x in v]
        assert r["primary_judge"] == JUDGE
        assert r["win_rate"] == r[f"{JUDGE}:win_rate"] == pytest.approx(
            100 * np.mean(flat), abs=1e-9)
        draws = _prompt_bootstrap(prefs, PROMPTS, settings.rounds, settings.seed)
        assert (r["win_rate_ci_low"], r["win_rate_ci_high"]) == pytest.approx(
            tuple(100 * x for x in _interval(draws)), abs=1e-9)
        assert (r["n_judged"], r["n_failed"]) == (len(flat), 2)
        assert (r[f"{JUDGE}:n_judged"], r[f"{JUDGE}:n_failed"]) == (len(flat), 2)
        assert r["bt_rating"] == pytest.approx(1000 + ELO * _logit(np.mean(flat)), abs=1e-6)
        bt_draws = 1000 + ELO * _logit(draws)
        assert (r["bt_ci_low"], r["bt_ci_high"]) == pytest.approx(_interval(bt_draws),
                                                                  abs=1e-6)
        assert r["bt_boot_missing"] == int(np.isnan(draws).sum())
    base = recs[BASE]
    assert base["win_rate"] is None and base["bt_rating"] == pytest.approx(1000, abs=1e-9)
    assert (base["n_judged"], base["n_failed"]) == (0, 0)
    # the baseline has the judge's full set of columns, the LC ones None
    for k in ("lc_win_rate", "lc_standard_error", "lc_variant"):
        assert f"{JUDGE}:{k}" in base and base[f"{JUDGE}:{k}"] is None


def test_lc_is_alpaca_evals_glm_with_the_experiments_difficulty_and_gamed_rows():
    """LC of each model = `lc_win_rate` on its successful judgments against the baseline,
    with the instruction difficulty fitted on every model's judgments together and the
    gamed baseline rows (variant length_controlled_v1: difficulty + regularisation).

    The variant name is what `lc_win_rate` documents for that combination; the value is
    recomputed here from the hand table (same rows in the same order: identical CV folds,
    so equal to 1e-9 on a percentage).
    """
    results, battles = _experiment()
    recs = _by_label(leaderboard_records(results, battles, None,
                                         ReportSettings(rounds=10, style_control=False)))
    samples = {m: _samples(m) for m in (BASE, "a", "b")}
    rows = {m: [{"prompt_id": j.candidate["prompt_id"], "model": m,
                 "preference": float(j.row["preference"]),
                 "baseline_text_len": len(j.baseline["text"]),
                 "model_text_len": len(j.candidate["text"])}
                for j in _judged(m, samples) if j.ok] for m in ("a", "b")}
    every = pd.DataFrame(rows["a"] + rows["b"])
    difficulty = instruction_difficulty(every[["prompt_id", "model", "preference"]])
    gamed = pd.DataFrame(_gamed_rows(samples[BASE]))
    for m in ("a", "b"):
        want = lc_win_rate(pd.DataFrame(rows[m]), difficulty, gamed)
        assert recs[m]["lc_variant"] == "length_controlled_v1"
        assert want["lc_win_rate"] is not None
        assert recs[m]["lc_win_rate"] == pytest.approx(want["lc_win_rate"], abs=1e-9)
        assert recs[m]["lc_standard_error"] == pytest.approx(want["lc_standard_error"],
                                                             abs=1e-9)
    assert recs[BASE]["lc_win_rate"] is None


def _style_design(rows: list[dict], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Arena-Hard's style design written out: +1 model_b, -1 model_a (anchor column
    dropped), then length (L_b - L_a) / (L_b + L_a) and the bold density difference
    (d_b - d_a) / (d_b + d_a + 1), d = bold spans / (length + 1). Headers and lists: none
    in these texts, so those features have no spread and are dropped."""
    x = np.zeros((len(rows), len(labels) - 1 + 2))
    for i, r in enumerate(rows):
        for j, m in enumerate(labels[1:]):
            x[i, j] = (r["model_b"] == m) - (r["model_a"] == m)
        la, lb = len(r["text_a"]), len(r["text_b"])
        x[i, -2] = (lb - la) / (lb + la)
        da, db = r["text_a"].count("**") / 2 / (la + 1), r["text_b"].count("**") / 2 / (lb + 1)
        x[i, -1] = (db - da) / (db + da + 1)
    return x, np.array([r["p_b"] for r in rows])


def _glm_ratings(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    sm = pytest.importorskip("statsmodels.api")
    fit = sm.GLM(y, x, family=sm.families.Binomial(), freq_weights=w).fit(tol=1e-13,
                                                                          maxiter=200)
    return 1000 + ELO * np.asarray(fit.params[:2])


def test_style_controlled_ratings_equal_a_statsmodels_logistic_fit():
    """bt_rating_sc = the unpenalised soft-label logistic regression on the model design
    plus the style features of the battle texts, refitted in every prompt-bootstrap round.

    The rounds are settings.style_rounds (17, not the 40 of the other intervals) with
    the report's seed over all 7 prompts; a round weighs each battle by its prompt's
    count. z-scoring rescales the feature coefficients only, so the model ratings of the
    raw design are the same. Tolerances: 1e-6 Elo on the point (both converge to ~1e-10
    logit), 1e-3 Elo on the interval (bootstrap rounds stop at a 1e-4 logit step,
    quadratic convergence: ~1e-6 Elo).
    """
    results, battles = _experiment(judges=False)
    settings = ReportSettings(rounds=40, seed=9, style_rounds=17)
    recs = _by_label(leaderboard_records(results, battles, JUDGE, settings))
    rows = battles[JUDGE].rows
    x, y = _style_design(rows, [BASE, "a", "b"])
    point = _glm_ratings(x, y, np.ones(len(y)))
    weights = np.zeros((17, len(PROMPTS)))
    picks = np.random.default_rng(9).integers(len(PROMPTS), size=(17, len(PROMPTS)))
    for r in range(17):
        np.add.at(weights[r], picks[r], 1)
    index = {p: i for i, p in enumerate(sorted(PROMPTS))}
    row_prompt = np.array([index[r["prompt_id"]] for r in rows])
    draws = []
    for w in weights:
        c = w[row_prompt]
        keep = c > 0
        draws.append(_glm_ratings(x[keep], y[keep], c[keep]))
    draws = np.array(draws)
    for i, m in enumerate(("a", "b")):
        assert recs[m]["bt_rating_sc"] == pytest.approx(point[i], abs=1e-6)
        low, high = _interval(draws[:, i])
        assert (recs[m]["bt_sc_ci_low"], recs[m]["bt_sc_ci_high"]) == pytest.approx(
            (low, high), abs=1e-3)
    assert recs[BASE]["bt_rating_sc"] == 1000
    # style control moves the ratings: a writes longer and bolder answers
    assert abs(recs["a"]["bt_rating_sc"] - recs["a"]["bt_rating"]) > 1


def test_judges_default_primary_and_failures_per_judge():
    """Two judges, nothing judged successfully: the first judge of `battles` is primary,
    each judge counts its own failures, and a model without a judge's judgments gets
    n_judged 0, n_failed 0 and no win rate for it (not an error); the judge's LC columns
    exist for every model (None without judgments), so every judge has its full set."""
    results, _ = _experiment(judges=False)
    a, b = results[1], results[2]
    fail = {"preference": None, "status": "failed: parse"}
    a.judged = {"j1": [Judged(s, s, "", dict(fail)) for s in a.samples[:3]],
                "j2": [Judged(s, s, "", dict(fail)) for s in a.samples[:5]]}
    b.judged = {"j1": [Judged(s, s, "", dict(fail)) for s in b.samples[:1]]}
    battles = {"j1": Battles([], 4, []), "j2": Battles([], 5, [])}
    recs = _by_label(leaderboard_records(results, battles, None,
                                         ReportSettings(rounds=10, style_control=False)))
    assert recs["a"]["primary_judge"] == "j1"
    assert (recs["a"]["n_failed"], recs["a"]["j1:n_failed"], recs["a"]["j2:n_failed"]) == (
        3, 3, 5)
    assert (recs["b"]["j1:n_failed"], recs["b"]["j2:n_failed"], recs["b"]["j2:n_judged"]) == (
        1, 0, 0)
    assert recs["b"]["j2:win_rate"] is None and recs["a"]["win_rate"] is None
    # without a successful judgment the judge's LC columns are still there, None
    for label, judge in (("a", "j1"), ("a", "j2"), ("b", "j2")):
        for k in ("lc_win_rate", "lc_standard_error", "lc_variant"):
            assert f"{judge}:{k}" in recs[label] and recs[label][f"{judge}:{k}"] is None


@pytest.mark.parametrize("n", [1, 4, 5])
def test_a_tiny_experiment_reports_its_win_rate_without_lc(n: int):
    """n prompts x 1 sample: n successful judgments. Below AlpacaEval's 5 folds no
    instruction difficulty can be fitted and `lc_win_rate` documents LC None; the win rate
    (70%) is well defined, so the leaderboard shows it with LC None (it used to crash). At
    5 the LC is fitted."""
    samples = {m: [{"prompt_id": f"p{i}", "sample_index": 0, "text": f"{m} {i}" + " x" * i,
                    "rewards": {}, "reward": None, "logp": None, "ref_logp": None}
                   for i in range(n)] for m in (BASE, "a")}
    judged = [Judged(b, c, "", {"preference": 0.7, "status": "ok"})
              for b, c in zip(samples[BASE], samples["a"])]
    results = [ModelResults(BASE, "sft", {}, None, True, samples[BASE]),
               ModelResults("a", "spo", {}, 0, False, samples["a"], {JUDGE: judged})]
    rec = _by_label(leaderboard_records(results, {}, JUDGE,
                                        ReportSettings(rounds=10, style_control=False)))["a"]
    assert rec["win_rate"] == pytest.approx(70.0)
    if n < 5:
        assert rec["lc_win_rate"] is None and rec["lc_variant"] is None
    else:
        assert rec["lc_win_rate"] is not None and rec["lc_variant"] == "length_controlled_noreg"


# ------------------------------------------------------------------ exact columns (bandit)

SCALE = 2.0
EX_PROMPTS = ["x0", "x1"]
EX_REWARDS = {"x0": [1.0, 0.2, -0.5], "x1": [0.8, 0.0, 0.3]}
EX_OUTSIDE = {"x0": -1.0, "x1": None}  # x0 scores a leaked answer -1; x1 renormalises
EX_PROBS = {BASE: {"x0": [0.3, 0.3, 0.3], "x1": [0.2, 0.5, 0.3]},
            "a": {"x0": [0.6, 0.2, 0.1], "x1": [0.5, 0.2, 0.2]},
            "b": {"x0": [0.7, 0.25, 0.04], "x1": [0.6, 0.1, 0.3]}}
EX_TARGET = {BASE: {"x0": None, "x1": None}, "a": {"x0": [0.5, 0.3, 0.2], "x1": None},
             "b": {"x0": [0.6, 0.3, 0.1], "x1": [0.4, 0.4, 0.2]}}


def _exact_prompts(label: str) -> list[ExactPrompt]:
    return [ExactPrompt(np.log(EX_PROBS[label][x]), np.array(EX_REWARDS[x]),
                        None if EX_TARGET[label][x] is None else np.log(EX_TARGET[label][x]),
                        f"prompt {x}", EX_OUTSIDE[x]) for x in EX_PROMPTS]


def _exact_results(failed_judgments: bool = False) -> list[ModelResults]:
    out = []
    for m in (BASE, "a", "b"):
        samples = [{"prompt_id": x, "sample_index": 0, "text": f"{m} {x}", "rewards": {},
                    "reward": None, "logp": None, "ref_logp": None} for x in EX_PROMPTS]
        judged = {JUDGE: [Judged(s, s, "", {"preference": None, "status": "failed"})
                          for s in samples]} if failed_judgments and m != BASE else {}
        out.append(ModelResults(m, "spo", {}, None, m == BASE, samples, judged,
                                _exact_prompts(m)))
    return out


def _answers(label: str, x: str) -> list[tuple[float, float]]:
    """(probability, reward) of every answer a sampler meets, the leak as one answer."""
    p = np.array(EX_PROBS[label][x])
    if EX_OUTSIDE[x] is None:
        return list(zip(p / p.sum(), EX_REWARDS[x]))
    return [*zip(p, EX_REWARDS[x]), (1 - p.sum(), EX_OUTSIDE[x])]


def _p_beats(first: str, second: str, x: str) -> float:
    """P(a sample of `second` beats one of `first`), enumerating every pair of answers:
    identical answers tie (1/2), otherwise sigmoid(SCALE (r_second - r_first))."""
    total = 0.0
    for i, (p2, r2) in enumerate(_answers(second, x)):
        for j, (p1, r1) in enumerate(_answers(first, x)):
            win = 0.5 if i == j else 1 / (1 + math.exp(-SCALE * (r2 - r1)))
            total += p2 * p1 * win
    return total


def _mean_win(first: str, second: str) -> float:
    return float(np.mean([_p_beats(first, second, x) for x in EX_PROMPTS]))


def _chain_battles() -> dict[str, Battles]:
    rows = [{"prompt_id": x, "sample_index": 0, "model_a": a, "model_b": b, "p_b": p,
             "text_a": f"{a} {x}", "text_b": f"{b} {x}"}
            for (a, b), ps in {(BASE, "a"): (0.7, 0.6), ("a", "b"): (0.55, 0.4)}.items()
            for x, p in zip(EX_PROMPTS, ps)]
    return {JUDGE: Battles(rows, 0, [])}


def test_exact_columns_on_a_chain_plan_equal_brute_force_enumeration():
    """exact_win_rate = 100 x mean over prompts of the enumerated P(model beats baseline);
    exact_bt_rating is the BT fit on the expected win masses of the pairs the battles hold.

    The battles are sft-a and a-b (a tree), so the fit reproduces each edge: a = 1000 +
    ELO logit(mean P(a > sft)), b = a + ELO logit(mean P(b > a)), not the baseline plan's
    1000 + ELO logit(mean P(b > sft)). Tolerances: 1e-10 on a percentage (a dozen float
    products), 1e-6 Elo (Newton's 1e-10 nat step).
    """
    recs = _by_label(leaderboard_records(_exact_results(), _chain_battles(), JUDGE,
                                         ReportSettings(rounds=10, style_control=False,
                                                        oracle_scales={JUDGE: SCALE})))
    for m in ("a", "b"):
        assert recs[m]["exact_win_rate"] == recs[m][f"{JUDGE}:exact_win_rate"]
        assert recs[m]["exact_win_rate"] == pytest.approx(100 * _mean_win(BASE, m), abs=1e-10)
    assert recs[BASE]["exact_win_rate"] is None
    rating_a = 1000 + ELO * _logit(_mean_win(BASE, "a"))
    rating_b = rating_a + ELO * _logit(_mean_win("a", "b"))
    assert recs[BASE]["exact_bt_rating"] == pytest.approx(1000, abs=1e-9)
    assert recs["a"]["exact_bt_rating"] == pytest.approx(rating_a, abs=1e-6)
    assert recs["b"]["exact_bt_rating"] == pytest.approx(rating_b, abs=1e-6)
    assert abs(rating_b - (1000 + ELO * _logit(_mean_win(BASE, "b")))) > 1


@pytest.mark.parametrize("how", ["empty battles", "no battles"])
def test_exact_ratings_fall_back_to_the_baseline_plan(how):
    """Without battle rows (none stored, or the judge only in the models' judgments) the
    exact BT rating is fitted on the baseline plan: 1000 + ELO logit(exact win rate)."""
    battles = {JUDGE: Battles([], 0, [])} if how == "empty battles" else None
    results = _exact_results(failed_judgments=how == "no battles")
    recs = _by_label(leaderboard_records(results, battles, None, ReportSettings(
        rounds=10, style_control=False, oracle_scales={JUDGE: SCALE})))
    for m in ("a", "b"):
        assert recs[m]["exact_win_rate"] == pytest.approx(100 * _mean_win(BASE, m),
                                                          abs=1e-10)
        assert recs[m]["exact_bt_rating"] == pytest.approx(
            1000 + ELO * _logit(_mean_win(BASE, m)), abs=1e-6)
    assert recs[BASE]["exact_bt_rating"] == pytest.approx(1000, abs=1e-9)


@pytest.mark.parametrize("missing", ["oracle scale", "one model's exact"])
def test_exact_columns_need_the_judges_scale_and_every_models_distribution(missing):
    """The exact win rate needs the judge's known preference function (its oracle scale)
    and every model's exact distribution; without either the columns are None."""
    results = _exact_results()
    scales = {"another judge": SCALE}
    if missing == "one model's exact":
        results[2].exact = None
        scales = {JUDGE: SCALE}
    recs = _by_label(leaderboard_records(results, _chain_battles(), JUDGE, ReportSettings(
        rounds=10, style_control=False, oracle_scales=scales)))
    for r in recs.values():
        assert r["exact_win_rate"] is None and r["exact_bt_rating"] is None


def test_exact_distribution_metrics_are_averaged_over_the_prompts_that_have_them():
    """The exact_* sample columns: per prompt entropy, expected reward and KL to the target
    of the distribution renormalised over the answers, the support mass, and the mean
    reward with the leaked mass at the outside reward; each averaged over the prompts
    where it is defined (a's KL only on x0, which has a target; the mean reward only on
    x0, whose outside reward is known), None where no prompt defines it (sft's KL).
    Tolerance 1e-12: a handful of float operations.
    """
    recs = _by_label(leaderboard_records(_exact_results(), None, None,
                                         ReportSettings(rounds=10, style_control=False)))
    for m in (BASE, "a", "b"):
        per: dict[str, list[float]] = {k: [] for k in EXACT}
        for x in EX_PROMPTS:
            raw = np.array(EX_PROBS[m][x])
            mass = raw.sum()
            p = raw / mass
            r = np.array(EX_REWARDS[x])
            per["exact_entropy"].append(float(-(p * np.log(p)).sum()))
            per["exact_expected_reward"].append(float(p @ r))
            per["exact_support_mass"].append(float(mass))
            if EX_TARGET[m][x] is not None:
                t = np.log(EX_TARGET[m][x])
                per["exact_kl_to_target"].append(float((p * (np.log(p) - t)).sum()))
            if EX_OUTSIDE[x] is not None:
                per["exact_mean_reward"].append(float(mass * (p @ r)
                                                      + (1 - mass) * EX_OUTSIDE[x]))
        for k in EXACT:
            if per[k]:
                assert recs[m][k] == pytest.approx(float(np.mean(per[k])), abs=1e-12), (m, k)
            else:
                assert recs[m][k] is None, (m, k)
    assert recs[BASE]["exact_kl_to_target"] is None
    assert recs["a"]["exact_support_mass"] == pytest.approx(0.9, abs=1e-12)


# ------------------------------------------------------------------ sorting and the warning


def test_sort_key_puts_the_baseline_first_then_win_rate_descending_then_label():
    """Baseline first, then higher win rates; ties by label; no win rate last (after 0)."""
    recs = [{"label": "none", "is_baseline": False, "win_rate": None},
            {"label": "low", "is_baseline": False, "win_rate": 0.5},
            {"label": "zero", "is_baseline": False, "win_rate": 0.0},
            {"label": "tie-b", "is_baseline": False, "win_rate": 50.0},
            {"label": "top", "is_baseline": False, "win_rate": 80.0},
            {"label": "tie-a", "is_baseline": False, "win_rate": 50.0},
            {"label": "z-base", "is_baseline": True, "win_rate": None}]
    order = [r["label"] for r in sorted(recs, key=sort_key)]
    assert order == ["z-base", "top", "tie-a", "tie-b", "low", "zero", "none"]
    no_judge = [{"label": m, "is_baseline": m == "b"} for m in ("c", "a", "b")]
    assert [r["label"] for r in sorted(no_judge, key=sort_key)] == ["b", "a", "c"]


def _rec(label: str, n_prompts: int, judge: str | None = None,
         judged: int | None = None, baseline: bool = False) -> dict[str, Any]:
    r = {"label": label, "is_baseline": baseline, "n_prompts": n_prompts,
         "primary_judge": judge}
    if judge is not None:
        r[f"{judge}:n_prompts"] = judged
    return r


def test_few_prompts_note_counts_judged_or_answered_prompts_of_the_candidates():
    """The smallest prompt count over the non-baseline models: the primary judge's judged
    prompts, or the answered ones without a judge; the baseline's count is ignored."""
    assert few_prompts_note([_rec("sft", 3, baseline=True), _rec("a", 40)]) is None
    assert few_prompts_note([_rec("sft", 40, baseline=True)]) is None
    note = few_prompts_note([_rec("sft", 40, baseline=True), _rec("a", 12), _rec("b", 35)])
    assert note is not None and note.startswith(f"only 12 prompts: below {FEW_PROMPTS} ")
    judged = few_prompts_note([_rec("sft", 40, baseline=True),
                               _rec("a", 40, "llm", 7), _rec("b", 40, "llm", 31)])
    assert judged is not None and judged.startswith("only 7 prompts")


def test_few_prompts_note_points_at_real_columns_and_the_readme_section():
    """The warning names the README section and the columns a reader should use instead;
    both must exist (the section title verbatim in README.md, the t-interval column
    families in the record columns)."""
    note = few_prompts_note([_rec("sft", 40, baseline=True), _rec("a", 8)])
    section = "Do the intervals cover the truth?"
    readme = ROOT / "README.md"
    if readme.exists():  # mutmut's copy of the tree has no README
        assert f"**{section}**" in readme.read_text()
    assert f"(README '{section}'), so the win-rate interval shown is Student's t on the " \
           "prompts (win_rate_t_ci_*, mean reward: mean_reward_t_ci_*) and the " \
           "Bradley-Terry one is optimistic; evaluate on more prompts" in note
    assert note.endswith("evaluate on more prompts") and "are too narrow (README" in note
    assert {"win_rate_t_ci_low", "win_rate_t_ci_high"} <= set(JUDGE_COLUMNS)
    assert {"mean_reward_t_ci_low", "mean_reward_t_ci_high"} <= set(SAMPLE_COLUMNS)


# ------------------------------------------------------------------ collect_battles


class _Judge:
    def __init__(self, name: str) -> None:
        self.fingerprint = {"judge": name}


class _FakeUnits:
    """`Units.judgments` over a table: (judge, baseline text, candidate text) -> stored row.

    Pairs the two lists' samples by (prompt id, sample index) like `Units.pairs`, and
    refuses anything but a judge's fingerprint and two lists of generations.
    """

    def __init__(self, table: dict[tuple[str, str, str], dict | None]) -> None:
        self.table = table

    def judgments(self, judge_fp: dict, base_gens: list[dict], gens: list[dict]) -> list[Judged]:
        assert isinstance(base_gens, list) and isinstance(gens, list)
        base = {(g["prompt_id"], g["sample_index"]): g for g in base_gens}
        pairs = [(base[c["prompt_id"], c["sample_index"]], c) for c in gens
                 if (c["prompt_id"], c["sample_index"]) in base]
        return [Judged(b, c, "", self.table.get((judge_fp["judge"], b["text"], c["text"])))
                for b, c in pairs]


def _gen(label: str, i: int, text: str | None = None) -> dict[str, Any]:
    return {"prompt_id": f"q{i}", "sample_index": i % 2, "text": text or f"{label}-{i}" * (i + 1)}


def _collect_setup():
    gens = {m: [_gen(m, i) for i in range(4)] for m in ("sft", "a", "b")}
    gamed = {"concise": [_gen("sft", i, "c") for i in range(2)],
             "verbose": [_gen("sft", i, f"verbose answer {i}") for i in range(2)]}
    ok = {"status": "ok"}
    table: dict[tuple[str, str, str], dict | None] = {}
    prefs = {("j1", "sft", "a"): [1, None, 0.25, "fail"], ("j1", "a", "b"): [0.5, 0.0, 1.0, 0.75],
             ("j2", "sft", "a"): [0.0, 0.5, None, 1.0], ("j2", "a", "b"): ["fail"] * 4}
    for (j, x, y), ps in prefs.items():
        for i, p in enumerate(ps):
            key = (j, gens[x][i]["text"], gens[y][i]["text"])
            if p == "fail":
                table[key] = {"preference": None, "status": "failed: judge error"}
            elif p is not None:  # None: never judged (no stored row)
                table[key] = {**ok, "preference": p}
    for kind, steered in gamed.items():
        for i, g in enumerate(steered):
            p = 0.2 + 0.1 * i if kind == "concise" else 0.7
            table[("j1", gens["sft"][i]["text"], g["text"])] = {**ok, "preference": p}
        table[("j2", gens["sft"][0]["text"], steered[0]["text"])] = {
            "preference": None, "status": "failed: judge error"}
    return _FakeUnits(table), gens, gamed, prefs


def test_collect_battles_keeps_successful_judgments_and_counts_the_rest():
    """Per judge and plan pair, one row per successful judgment with P(model_b wins) as a
    float; a failed or missing judgment is counted and skipped (later ones still read).

    Plan sft-a then a-b: the second pair's first model is not the baseline, and the gamed
    rows are judged against the baseline (plan[0][0]), failures there not counted.
    """
    units, gens, gamed, prefs = _collect_setup()
    judges = {"j1": _Judge("j1"), "j2": _Judge("j2")}
    out = collect_battles(units, gens, [("sft", "a"), ("a", "b")], judges, gamed)
    assert list(out) == ["j1", "j2"]
    for name in judges:
        want = []
        for (j, x, y), ps in prefs.items():
            if j != name:
                continue
            for i, p in enumerate(ps):
                if isinstance(p, (int, float)):
                    want.append({"prompt_id": f"q{i}", "sample_index": i % 2, "model_a": x,
                                 "model_b": y, "p_b": float(p), "text_a": gens[x][i]["text"],
                                 "text_b": gens[y][i]["text"]})
        assert out[name].rows == want
        assert all(isinstance(r["p_b"], float) for r in out[name].rows)
    assert (out["j1"].n_failed, out["j2"].n_failed) == (2, 5)
    assert out["j1"].gamed == [
        {"prompt_id": f"q{i}", "kind": kind, "baseline_text_len": len(gens["sft"][i]["text"]),
         "model_text_len": len(gamed[kind][i]["text"]),
         "preference": 0.2 + 0.1 * i if kind == "concise" else 0.7}
        for kind in ("concise", "verbose") for i in range(2)]
    assert out["j2"].gamed == []


def test_collect_battles_without_a_plan_has_empty_battles_for_every_judge():
    """No plan: no battles and no baseline to judge gamed answers against, for each judge."""
    units, gens, gamed, _ = _collect_setup()
    out = collect_battles(units, gens, [], {"j1": _Judge("j1"), "j2": _Judge("j2")}, gamed)
    assert out == {"j1": Battles([], 0, []), "j2": Battles([], 0, [])}
    assert collect_battles(units, gens, [("sft", "a")], {"j1": _Judge("j1")})["j1"].gamed == []
