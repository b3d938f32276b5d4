"""The judge quality report on a hand-made table of judgments, checked against hand-computed
values (counts, oracle agreement and kappa, |P - P_oracle|, flip rate, longer-answer wins,
self-preference, cost) and against sklearn / statsmodels (kappa, the length-bias regression)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaluators.collect import ModelResults
from evaluators.judge_quality import judge_quality_stats, write_judge_quality
from evaluators.judges import OracleBTJudge
from evaluators.scoring import pairwise_judgments
from harness.store import Store
from harness.tasks.base import Prompt
from harness.units import Units


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


class WordsTask:
    """Oracle reward = #"good" - #"bad" words, Bradley-Terry scale 1."""

    name, bt_scale, options = "words", 1.0, SimpleNamespace()

    def rewards(self, prompt: str, completions: list[str]) -> list[float]:
        return [c.split().count("good") - c.split().count("bad") for c in completions]


# pair id: (model, baseline text, candidate text, judge P, info)
TABLE = {
    1: ("m1", "bad", "good good answer", 0.8,
        {"calls": 2, "prompt_tokens": 100, "completion_tokens": 2, "flipped": False}),
    2: ("m1", "good answer here", "bad", 0.6,
        {"calls": 2, "prompt_tokens": 90, "completion_tokens": 2, "flipped": True}),
    3: ("m1", "fine", "fine", 0.5, {"calls": 0}),
    4: ("m1", "answer", "good", None,
        {"calls": 2, "prompt_tokens": 80, "completion_tokens": 2, "error": "judge down"}),
    5: ("m2", "a", "a good", 0.5,
        {"calls": 1, "prompt_tokens": 50, "completion_tokens": 1, "flipped": None}),
    6: ("m2", "good good", "bad", 0.1,
        {"calls": 1, "prompt_tokens": 40, "completion_tokens": 1}),
}
LATE = {7: ("m2", "x", "y")}  # generated after the judge stage ran: never judged


class TableJudge:
    fingerprint = {"judge": "table"}

    def judge_pairs(self, pairs):
        by_texts = {(b, c): (p, info) for _, b, c, p, info in TABLE.values()}
        return [by_texts[(b, c)] for _, b, c in pairs]


PROMPTS = [Prompt(f"p{i}", f"prompt {i}") for i in sorted({**TABLE, **LATE})]


def _put(store: Store, units: Units, model: str, texts: dict[int, str]) -> None:
    """Store `model`'s sample 0 of prompt i as texts[i], under the key the spec implies."""
    slots = {int(s.prompt.id[1:]): s for s in units.slots(model)}
    store.put_generations([{"key": slots[i].key, "model_key": model,
                            "prompt_id": slots[i].prompt.id, "sample_index": 0,
                            "prompt": slots[i].prompt.text, "text": t, "token_ids": []}
                           for i, t in texts.items()])


def _results(tmp_path: Path):
    store = Store(tmp_path)
    units = Units(store, PROMPTS, n_samples=1, sampling={"temperature": 1.0}, seed=0)
    task = WordsTask()
    rows = {**{i: r[:3] for i, r in TABLE.items()}, **LATE}
    _put(store, units, "sft", {i: b for i, (_, b, _) in rows.items()})
    judges = {"table": TableJudge(), "oracle": OracleBTJudge(task)}
    for m in ("m1", "m2"):
        _put(store, units, m, {i: c for i, (mm, _, c, *_) in TABLE.items() if mm == m})
        for judge in judges.values():
            pairwise_judgments(units, judge, units.generations("sft"), units.generations(m))
    _put(store, units, "m2", {i: c for i, (_, _, c) in LATE.items()})  # never judged
    base = units.generations("sft")
    results = [ModelResults("sft", "sft", {}, None, True, samples=[])]
    results += [ModelResults(m, "dpo", {}, 0, False, samples=[], judged={
        name: units.judgments(j.fingerprint, base, units.generations(m))
        for name, j in judges.items()}) for m in ("m1", "m2")]
    meta = [{"name": "table", "display": "table", "params": {"v": 1},
             "fingerprint": judges["table"].fingerprint},
            {"name": "oracle", "display": "oracle", "params": {},
             "fingerprint": judges["oracle"].fingerprint}]
    return results, meta, OracleBTJudge(task)


def test_report_matches_hand_computed_values(tmp_path: Path):
    results, meta, oracle_judge = _results(tmp_path)
    report = write_judge_quality(results, meta, oracle_judge, "hand", tmp_path)
    table, oracle = report["judges"]
    o = table["overall"]
    assert (o["n_pairs"], o["n_judged"], o["n_failed"], o["n_missing"]) == (7, 5, 1, 1)
    # decided by both (ties excluded): pairs 1 (agree), 2 (disagree), 6 (agree)
    assert o["oracle_agreement"] == pytest.approx(2 / 3) and o["n_oracle_decided"] == 3
    diffs = [abs(0.8 - sig(3)), abs(0.6 - sig(-2)), 0.0, abs(0.5 - sig(1)), abs(0.1 - sig(-3))]
    assert o["oracle_mean_abs_diff"] == pytest.approx(sum(diffs) / 5)
    assert o["flip_rate"] == pytest.approx(1 / 2) and o["n_flip_checked"] == 2
    # decided and of unequal length: 1 (longer candidate wins), 2 (shorter wins), 6 (longer)
    assert o["longer_win_share"] == pytest.approx(2 / 3) and o["n_length_decided"] == 3
    assert (o["calls"], o["prompt_tokens"], o["completion_tokens"]) == (8, 360, 8)

    m1, m2 = table["by_model"]["m1"], table["by_model"]["m2"]
    assert (m1["n_pairs"], m1["n_judged"], m1["n_failed"], m1["n_missing"]) == (4, 3, 1, 0)
    assert m1["oracle_agreement"] == pytest.approx(1 / 2) and m1["calls"] == 6
    assert (m2["n_pairs"], m2["n_missing"], m2["oracle_agreement"]) == (3, 1, 1.0)
    assert m2["flip_rate"] is None and m2["longer_win_share"] == 1.0

    # the oracle against itself: full agreement, no cost information
    oo = oracle["overall"]
    assert oo["oracle_agreement"] == 1.0 and oo["oracle_mean_abs_diff"] == 0.0
    assert (oo["n_judged"], oo["n_missing"], oo["calls"]) == (6, 1, None)

    saved = json.loads((tmp_path / "judge_quality.json").read_text())
    assert saved["judges"][0]["overall"] == o
    md = (tmp_path / "judge_quality.md").read_text()
    assert '| table {"v": 1} | 7 | 5 | 1 | 1 | 0.667 |' in md
    assert "## oracle" in md and "| m2 | 3 |" in md


def test_stats_of_nothing_are_empty_not_errors():
    s = judge_quality_stats([])
    assert s["n_pairs"] == 0 and s["oracle_agreement"] is None and s["calls"] is None
    s = judge_quality_stats([{"status": "ok", "preference": 0.7, "oracle": None,
                              "longer": "equal", "info": {}}])
    assert s["n_judged"] == 1 and s["oracle_mean_abs_diff"] is None
    assert s["longer_win_share"] is None and s["flip_rate"] is None


# ---------------------------------------------------------------------------- sharper measures

def _table_fit_data():
    """Pairs 1, 2, 5, 6 of TABLE (pair 3's answers are identical: left out of the length fit):
    normalized character differences, the judge's P and the oracle's P."""
    x = [13 / 19, -13 / 19, 5 / 7, -0.5]
    return x, [0.8, 0.6, 0.5, 0.1], [sig(3), sig(-2), sig(1), sig(-3)]


def _statsmodels_fit(x, p, how="freq"):
    sm = pytest.importorskip("statsmodels.api")
    import numpy as np

    x, p = np.asarray(x, float), np.asarray(p, float)
    if how == "freq":  # each pair twice: y=1 with weight p, y=0 with weight 1 - p
        exog = sm.add_constant(np.concatenate([x, x]))
        res = sm.GLM(np.concatenate([np.ones_like(x), np.zeros_like(x)]), exog,
                     family=sm.families.Binomial(),
                     freq_weights=np.concatenate([p, 1 - p])).fit(tol=1e-14)
    else:  # the soft preference itself as the response, unit variance weights
        res = sm.GLM(p, sm.add_constant(x), family=sm.families.Binomial(),
                     var_weights=np.ones_like(x)).fit(tol=1e-14)
    return res


def test_kappa_and_length_bias_in_the_report(tmp_path: Path):
    from sklearn.metrics import cohen_kappa_score

    results, meta, oracle_judge = _results(tmp_path)
    o = write_judge_quality(results, meta, oracle_judge, "hand", tmp_path)["judges"][0]["overall"]
    # decided pairs 1, 2, 6: judge (win, win, loss), oracle (win, loss, loss): p_o = 2/3,
    # p_e = 2/3 * 1/3 + 1/3 * 2/3 = 4/9, kappa = (2/3 - 4/9) / (1 - 4/9) = 0.4
    assert o["oracle_kappa"] == pytest.approx(0.4, abs=1e-12)
    assert o["oracle_kappa"] == pytest.approx(cohen_kappa_score([1, 1, 0], [1, 0, 0]), abs=1e-12)
    # with ties, pairs 1, 2, 3, 5, 6: judge (W, W, T, T, L), oracle (W, L, T, W, L); linear
    # weights: observed disagreement (2 + 1) / 5 = 0.6, expected 0.92, kappa = 1 - 0.6 / 0.92
    assert o["oracle_kappa_3way"] == pytest.approx(8 / 23, abs=1e-12)
    assert o["oracle_kappa_3way"] == pytest.approx(cohen_kappa_score(
        [2, 2, 1, 1, 0], [2, 0, 1, 2, 0], weights="linear"), abs=1e-12)

    x, p, q = _table_fit_data()
    judge, oracle = _statsmodels_fit(x, p), _statsmodels_fit(x, q)
    assert o["n_length_fit"] == 4 and o["length_bias_note"] is None
    assert o["length_bias_coef"] == pytest.approx(judge.params[1], abs=1e-6)
    assert o["length_bias_se"] == pytest.approx(judge.bse[1], abs=1e-6)
    assert o["length_bias_p"] == pytest.approx(judge.pvalues[1], abs=1e-6)
    assert o["length_bias_ci"] == pytest.approx(list(judge.conf_int()[1]), abs=1e-6)
    assert o["oracle_length_bias_coef"] == pytest.approx(oracle.params[1], abs=1e-6)
    assert o["length_bias_excess"] == pytest.approx(judge.params[1] - oracle.params[1],
                                                    abs=1e-6)
    md = (tmp_path / "judge_quality.md").read_text()
    assert "- oracle_kappa:" in md and "- length_bias_excess:" in md and "- cost:" in md


@pytest.mark.parametrize("soft", [True, False])
def test_length_bias_slope_matches_statsmodels_glm(soft: bool):
    import numpy as np

    from evaluators.judge_quality import length_bias_fit

    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, 300)
    truth = 1 / (1 + np.exp(-(0.3 + 1.7 * x)))
    p = rng.beta(4 * truth, 4 * (1 - truth)) if soft else (rng.random(300) < truth) * 1.0
    fit = length_bias_fit(list(x), list(p))
    for how in ("freq", "var"):
        ref = _statsmodels_fit(x, p, how)
        assert fit["coef"] == pytest.approx(ref.params[1], abs=1e-6)
        assert fit["intercept"] == pytest.approx(ref.params[0], abs=1e-6)
        assert fit["se"] == pytest.approx(ref.bse[1], abs=1e-6)
        assert fit["p"] == pytest.approx(ref.pvalues[1], abs=1e-6)
    assert fit["coef"] > 0 and fit["ci"][0] < 1.7 < fit["ci"][1]


def test_length_bias_is_none_when_the_slope_does_not_exist():
    from evaluators.judge_quality import length_bias_fit

    for x, p in [([], []), ([0.3], [0.7]), ([0.1, 0.2], [1.0, 1.0]),
                 ([-0.5, -0.1, 0.2, 0.6], [0.0, 0.0, 1.0, 1.0]),  # longer always wins
                 ([-0.5, 0.0, 0.6], [1.0, 0.4, 0.0]), ([0.2, 0.2, 0.2], [0.3, 0.6, 0.9])]:
        fit = length_bias_fit(x, p)
        assert fit["coef"] is None and fit["se"] is None and fit["p"] is None, (x, p)
        assert fit["note"].startswith("no fit")


def test_kappa_matches_sklearn_on_random_verdicts():
    import numpy as np
    from sklearn.metrics import cohen_kappa_score

    from evaluators.judge_quality import oracle_kappas

    rng = np.random.default_rng(3)
    judge = list(rng.choice([0.1, 0.5, 0.8, 0.95], 200))
    oracle = list(np.clip(np.asarray(judge) + rng.normal(0, 0.3, 200), 0.01, 0.99))
    oracle[:10] = [0.5] * 10
    k2, k3 = oracle_kappas(judge, oracle)

    def v(p: float) -> int:
        return 0 if p == 0.5 else 1 if p > 0.5 else -1

    both = [(v(a), v(b)) for a, b in zip(judge, oracle) if v(a) and v(b)]
    assert k2 == pytest.approx(cohen_kappa_score(*zip(*both)), abs=1e-12)
    assert k3 == pytest.approx(cohen_kappa_score([v(a) for a in judge], [v(b) for b in oracle],
                                                 weights="linear"), abs=1e-12)
    # one and the same verdict throughout: chance agreement 1, kappa undefined, not NaN
    assert oracle_kappas([0.9, 0.8], [0.7, 0.6]) == (None, None)
    assert oracle_kappas([], []) == (None, None)


def test_judge_model_identity_reads_llm_and_reward_model_fingerprints():
    from evaluators.judge_quality import judge_model_identity

    assert judge_model_identity({"judge": "llm", "backend": "hf",
                                 "model": {"content": "0123abcd"}}) == "0123abcd"
    assert judge_model_identity({"judge": "llm", "backend": "openai",
                                 "model": "gpt-4o-mini"}) == "gpt-4o-mini"
    assert judge_model_identity({"judge": "reward_model", "model": "feedbeef"}) == "feedbeef"
    assert judge_model_identity({"judge": "oracle-bt", "task": "words"}) is None
    assert judge_model_identity({"scorer": "reward_model", "model": "feedbeef"}) is None


# ---------------------------------------------------------------------------- self-preference

BASE = ["good", "bad", "ok", "good bad"]                 # oracle rewards 1, -1, 0, 0
CANDS = {"m1": ["bad", "good", "good good", "ok"],       # -1, 1, 2, 0
         "m2": ["good good", "bad bad", "fine", "good"]}
VERDICTS = {"llm": {"m1": [0.9, 0.9, 0.9, 0.9], "m2": [0.7, 0.2, 0.5, 0.6]},
            "rm": {"m1": [0.3, 0.8, 0.9, 0.5], "m2": [0.6, 0.4, 0.5, 0.5]}}
LLM_INFO = {"calls": 2, "prompt_tokens": 100, "completion_tokens": 3, "flipped": False}


def _direct_results():
    """Results built straight from Judged rows (no store): judge 'llm' is model J's judge."""
    from harness.units import Judged

    def gen(model: str, i: int, text: str) -> dict:
        return {"key": f"{model}-{i}", "text": text, "prompt_id": f"p{i}",
                "prompt": f"prompt {i}", "sample_index": 0}

    results = [ModelResults("sft", "sft", {}, None, True, samples=[])]
    for m, texts in CANDS.items():
        judged = {name: [Judged(gen("sft", i, BASE[i]), gen(m, i, t), f"{name}-{m}-{i}",
                                {"preference": by_model[m][i], "status": "ok",
                                 "info": dict(LLM_INFO) if name == "llm" else {}})
                         for i, t in enumerate(texts)]
                  for name, by_model in VERDICTS.items()}
        results.append(ModelResults(m, "dpo", {}, 0, False, samples=[], judged=judged))
    return results


def _meta(prices=None):
    return [{"name": "llm", "display": "llm", "params": {}, "model_identity": "J",
             "fingerprint": {"judge": "llm", "model": {"content": "J"}}, "prices": prices},
            {"name": "rm", "display": "rm", "params": {},
             "fingerprint": {"judge": "reward_model", "model": "R"},
             "prices": {"prompt_per_1k": 1.0, "completion_per_1k": 1.0}}]


MODELS = {"m1": {"identity": "J", "base_identity": "B"},
          "m2": {"identity": "K", "base_identity": "B"}}


def test_self_preference_against_the_oracle(tmp_path: Path):
    report = write_judge_quality(_direct_results(), _meta(), OracleBTJudge(WordsTask()), "self",
                                 tmp_path, models=MODELS)
    llm, rm = report["judges"]
    oracle_m1 = [sig(-2), sig(2), sig(2), 0.5]
    expected = 0.9 - sum(oracle_m1) / 4
    assert llm["model_identity"] == "J" and rm["model_identity"] == "R"  # read from fingerprint
    for stats in (llm["overall"], llm["by_model"]["m1"]):
        assert stats["self_preference"] == pytest.approx(expected, abs=1e-12)
        assert stats["self_preference_judge"] == pytest.approx(0.9)
        assert stats["self_preference_against"] == "oracle" and stats["n_self_pairs"] == 4
    assert expected > 0.1  # the fixture's judge favours its own model
    m2 = llm["by_model"]["m2"]
    assert m2["self_preference"] is None and "exactly one side" in m2["self_preference_note"]
    assert rm["overall"]["self_preference"] is None and rm["overall"]["n_self_pairs"] == 0
    assert "self_preference: " in (tmp_path / "judge_quality.md").read_text()
    json.dumps(report, allow_nan=False)


def test_self_preference_without_an_oracle_uses_the_other_judges(tmp_path: Path):
    report = write_judge_quality(_direct_results(), _meta(), None, "self", tmp_path,
                                 models=MODELS)
    o = report["judges"][0]["overall"]
    assert o["self_preference"] == pytest.approx(0.9 - (0.3 + 0.8 + 0.9 + 0.5) / 4, abs=1e-12)
    assert o["self_preference_against"] == "other judges"
    # a second judge of the same model is no reference: it would share the bias
    meta = _meta()
    meta[1]["model_identity"] = "J"
    o = write_judge_quality(_direct_results(), meta, None, "self", tmp_path,
                            models=MODELS)["judges"][0]["overall"]
    assert o["self_preference"] is None and "no oracle" in o["self_preference_note"]


def test_self_preference_counts_the_side_closest_to_the_judge(tmp_path: Path):
    # the baseline IS the judge's model, m1 was only tuned from it: the baseline is its own
    # side on m1's pairs; m2 is unrelated, so the baseline is its own side there too
    models = {"sft": {"identity": "J", "base_identity": None},
              "m1": {"identity": "X", "base_identity": "J"}, "m2": MODELS["m2"]}
    o = write_judge_quality(_direct_results(), _meta(), OracleBTJudge(WordsTask()), "self",
                            tmp_path, models=models)["judges"][0]["overall"]
    judge = [1 - p for m in ("m1", "m2") for p in VERDICTS["llm"][m]]
    oracle = [1 - p for p in [sig(-2), sig(2), sig(2), 0.5, sig(1), sig(-1), 0.5, sig(1)]]
    assert o["n_self_pairs"] == 8
    assert o["self_preference"] == pytest.approx((sum(judge) - sum(oracle)) / 8, abs=1e-12)
    # every model tuned from the judge's model (SFT baseline, DPO candidates): no pair says
    # anything about self-preference
    models = {"sft": {"identity": "S", "base_identity": "J"},
              "m1": {"identity": "X", "base_identity": "J"},
              "m2": {"identity": "K", "base_identity": "J"}}
    o = write_judge_quality(_direct_results(), _meta(), OracleBTJudge(WordsTask()), "self",
                            tmp_path, models=models)["judges"][0]["overall"]
    assert o["self_preference"] is None and o["n_self_pairs"] == 0


def test_self_preference_needs_identities(tmp_path: Path):
    o = write_judge_quality(_direct_results(), _meta(), OracleBTJudge(WordsTask()), "self",
                            tmp_path)["judges"][0]["overall"]
    assert o["self_preference"] is None and o["self_preference_note"] == \
        "no model identities given"


# ---------------------------------------------------------------------------- cost

def test_cost_from_prices_and_tokens(tmp_path: Path):
    from harness.spec import PricesSpec

    for prices in ({"prompt_per_1k": 0.5, "completion_per_1k": 2.0}, PricesSpec(0.5, 2.0)):
        report = write_judge_quality(_direct_results(), _meta(prices), None, "cost", tmp_path)
        llm, rm = report["judges"]
        # 8 judgments of 100 prompt + 3 completion tokens: 0.8 * 0.5 + 0.024 * 2.0
        assert llm["overall"]["cost"] == pytest.approx(0.8 * 0.5 + 0.024 * 2.0, abs=1e-12)
        assert llm["by_model"]["m1"]["cost"] == pytest.approx(0.224, abs=1e-12)
        assert llm["prices"] == {"prompt_per_1k": 0.5, "completion_per_1k": 2.0}
        assert rm["overall"]["cost"] is None  # prices, but no token counts stored
    llm = write_judge_quality(_direct_results(), _meta(None), None, "cost",
                              tmp_path)["judges"][0]
    assert llm["overall"]["prompt_tokens"] == 800 and llm["overall"]["cost"] is None
    assert llm["prices"] is None


# ---------------------------------------------------------------------------- degenerate input

def test_new_columns_are_none_not_errors_without_oracle_or_verdicts(tmp_path: Path):
    from evaluators.judge_quality import COLUMNS

    report = write_judge_quality(_direct_results(), _meta(), None, "none", tmp_path)
    o = report["judges"][0]["overall"]
    assert o["oracle_kappa"] is None and o["oracle_kappa_3way"] is None
    assert o["length_bias_excess"] is None and o["oracle_length_bias_coef"] is None
    assert o["length_bias_coef"] is not None  # needs no oracle
    json.dumps(report, allow_nan=False)

    ties = [{"status": "ok", "preference": 0.5, "oracle": q, "longer": "candidate",
             "length_diff": d, "info": {}} for q, d in ((0.9, 0.2), (0.2, -0.3))]
    one = [{"status": "ok", "preference": 0.7, "oracle": 0.6, "longer": "candidate",
            "length_diff": 0.4, "info": {"calls": 1}}]
    for rows in ([], ties, one, [{**one[0], "status": "failed: x", "preference": None}]):
        s = judge_quality_stats(rows, {"prompt_per_1k": 1.0, "completion_per_1k": 1.0})
        assert set(COLUMNS) <= set(s)
        assert s["oracle_kappa"] is None and s["self_preference"] is None
        json.dumps(s, allow_nan=False)
    s = judge_quality_stats(one)
    assert s["length_bias_coef"] is None and s["length_bias_excess"] is None
    assert s["oracle_kappa_3way"] is None and s["cost"] is None
    # all judge ties against a mixed oracle: kappa 0 with ties kept (chance level), no fit
    s = judge_quality_stats(ties)
    assert s["oracle_kappa_3way"] == pytest.approx(0.0) and s["n_oracle_decided"] == 0
    assert s["length_bias_coef"] == pytest.approx(0.0, abs=1e-9)  # ties: length is no matter
