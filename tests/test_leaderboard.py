"""The leaderboard's plumbing on hand-built results: battle plans, the shared prompt
bootstrap, every judge and scorer in the records, head to head, seeds per configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluators.bootstrap import clustered_se, mean_stats, prompt_weights, t_interval
from evaluators.collect import Battles, ModelResults
from evaluators.compare import head_to_head, holm
from evaluators.generation import SamplingParams, length_steered
from evaluators.report import (
    FEW_PROMPTS,
    ReportSettings,
    _markdown,
    few_prompts_note,
    leaderboard_records,
)
from evaluators.seeds import config_rows
from evaluators.stats import win_rate_stats
from harness.units import Judged, battle_plan

# ------------------------------------------------------------------ battle plans


def test_baseline_plan_is_every_model_against_the_baseline():
    assert battle_plan(["sft", "a", "b"], "sft") == [("sft", "a"), ("sft", "b")]
    # a run as the baseline: the SFT model is then a candidate like any other
    assert battle_plan(["sft", "a", "b"], "a") == [("a", "sft"), ("a", "b")]


def test_all_plan_is_every_unordered_pair_once():
    labels = ["sft", "a", "b", "c"]
    plan = battle_plan(labels, "sft", "all")
    assert len(plan) == len(set(plan)) == math.comb(4, 2)
    assert {frozenset(p) for p in plan} == {frozenset((x, y)) for i, x in enumerate(labels)
                                            for y in labels[i + 1:]}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_anchor_plan_gives_each_model_k_rivals_deterministically(k):
    labels = ["sft"] + [f"m{i}" for i in range(6)]
    plan = battle_plan(labels, "sft", "anchors", k)
    assert plan == battle_plan(labels, "sft", "anchors", k)  # deterministic
    assert all(("sft", m) in plan for m in labels[1:])
    for m in labels[1:]:
        rivals = {b if a == m else a for a, b in plan if m in (a, b) and "sft" not in (a, b)}
        assert len(rivals) >= k
    # a pair chosen for two existing models stays chosen when an unrelated model joins,
    # as long as neither gains a closer rival: hashing pairs, not positions
    bigger = battle_plan(labels + ["m6"], "sft", "anchors", k)
    kept = [p for p in plan if p in bigger]
    assert len(kept) >= len(plan) - 2 * k


def test_unknown_plan_is_refused():
    with pytest.raises(ValueError):
        battle_plan(["sft", "a"], "sft", "everything")


# ------------------------------------------------------------------ gamed sampling


def test_length_steering_keeps_unsteered_keys_and_steers_both_ways():
    p = SamplingParams(max_new_tokens=32)
    assert p.as_dict() == {"max_new_tokens": 32, "temperature": 1.0, "top_p": 1.0}
    assert length_steered(p, "concise").max_new_tokens == 8
    verbose = length_steered(p, "verbose")
    assert verbose.min_new_tokens == 32 and verbose.as_dict()["min_new_tokens"] == 32
    assert length_steered(SamplingParams(max_new_tokens=2), "concise").max_new_tokens == 1


# ------------------------------------------------------------------ the shared bootstrap


def _clustered(n_prompts: int, per: int, prompt_sd: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_prompts), per)
    y = rng.normal(0, prompt_sd, n_prompts)[g] + rng.normal(0, 1, g.size)
    return y, [f"p{i:03d}" for i in g]


@pytest.mark.parametrize("n_prompts,per", [(2, 1), (7, 3), (60, 4), (25, 1)])
def test_clustered_se_equals_statsmodels_cluster_robust_ols(n_prompts, per):
    sm = pytest.importorskip("statsmodels.api")
    y, ids = _clustered(n_prompts, per, 1.0)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": ids})
    assert clustered_se(y, ids) == pytest.approx(float(fit.bse[0]), rel=1e-10)


@pytest.mark.parametrize("n_prompts,per", [(2, 1), (7, 3), (60, 4)])
def test_t_interval_equals_statsmodels_cluster_robust_ols_with_t(n_prompts, per):
    """The t interval is statsmodels' cluster-robust OLS interval with use_t (df = G - 1).

    An independent implementation: statsmodels takes G - 1 inference degrees of freedom for
    cluster covariance. Also through `win_rate_stats` and `mean_stats` on values in [0, 1].
    Tolerance rel 1e-9: the same closed form, float rounding only.
    """
    sm = pytest.importorskip("statsmodels.api")
    y, ids = _clustered(n_prompts, per, 1.0)
    y = 1 / (1 + np.exp(-y))  # preferences in (0, 1)
    fit = sm.OLS(y, np.ones_like(y)).fit(cov_type="cluster", cov_kwds={"groups": ids},
                                         use_t=True)
    low, high = (float(v) for v in fit.conf_int(alpha=0.05)[0])
    assert t_interval(float(y.mean()), clustered_se(y, ids), n_prompts) == pytest.approx(
        (low, high), rel=1e-9)
    st = win_rate_stats(list(y), ids, rounds=10)
    assert (st["win_rate_t_ci_low"], st["win_rate_t_ci_high"]) == pytest.approx(
        (100 * low, 100 * high), rel=1e-9)
    ms = mean_stats(list(y), ids, rounds=10)
    assert (ms["t_ci_low"], ms["t_ci_high"]) == pytest.approx((low, high), rel=1e-9)
    # wider than the normal-quantile interval by the t/z ratio (2.57 / 1.96 at 6 df)
    z_half = 1.959963984540054 * clustered_se(y, ids)
    assert (high - low) / 2 > z_half


def test_clustered_se_is_undefined_with_one_cluster():
    assert clustered_se([0.1, 0.9, 0.4], ["p", "p", "p"]) is None
    assert mean_stats([], [])["mean"] is None


def test_bootstrap_interval_tracks_the_clustered_se():
    y, ids = _clustered(300, 4, 1.5)
    st = mean_stats(y, ids, rounds=2000, seed=1)
    width = (st["ci_high"] - st["ci_low"]) / (2 * 1.96)
    assert width == pytest.approx(st["se"], rel=0.1)  # 2000 rounds: ~2% Monte-Carlo error


def test_prompt_weights_are_a_resample_of_every_prompt():
    w = prompt_weights(50, 20, seed=3)
    assert w.shape == (20, 50) and (w.sum(axis=1) == 50).all()
    assert (prompt_weights(50, 20, seed=3) == w).all()


# ------------------------------------------------------------------ records


def _results(strengths: dict[str, float], n_prompts: int = 40, n_samples: int = 2,
             seed: int = 0, judges=("oracle", "llm")) -> list[ModelResults]:
    rng = np.random.default_rng(seed)
    out = []
    for i, (label, s) in enumerate(strengths.items()):
        samples = [{"prompt_id": f"p{p:03d}", "sample_index": k,
                    "text": "word " * int(rng.integers(1, 9)),
                    "reward": float(s + rng.normal()), "logp": float(-rng.gamma(4, 2)),
                    "ref_logp": float(-rng.gamma(4, 2))}
                   for p in range(n_prompts) for k in range(n_samples)]
        for smp in samples:
            smp["rewards"] = {"oracle": smp["reward"], "vader": smp["reward"] / 2}
        judged = {}
        if i:
            for j, name in enumerate(judges):
                judged[name] = [
                    Judged({"prompt_id": x["prompt_id"], "sample_index": x["sample_index"],
                            "text": "base " * 4}, x, "",
                           {"preference": float(1 / (1 + np.exp(-(s + 0.3 * j)
                                                              + rng.normal(0, 0.3)))),
                            "status": "ok"})
                    for x in samples]
        out.append(ModelResults(label=label, method="sft" if i == 0 else "spo",
                                params={} if i == 0 else {"alpha": float(i)},
                                seed=None if i == 0 else 0, is_baseline=i == 0,
                                samples=samples, judged=judged))
    return out


def _battles(results: list[ModelResults], name: str) -> Battles:
    rows = [{"prompt_id": j.candidate["prompt_id"], "sample_index": j.candidate["sample_index"],
             "model_a": results[0].label, "model_b": m.label, "p_b": j.row["preference"],
             "text_a": j.baseline["text"], "text_b": j.candidate["text"]}
            for m in results[1:] for j in m.judged[name]]
    return Battles(rows, 0, [])


def test_every_judge_and_scorer_has_its_columns_and_primary_fills_the_flat_ones():
    results = _results({"sft": 0.0, "good": 1.0, "bad": -1.0})
    battles = {n: _battles(results, n) for n in ("oracle", "llm")}
    settings = ReportSettings(rounds=50, style_control=False)
    recs = {r["label"]: r for r in leaderboard_records(results, battles, "llm", settings)}
    good = recs["good"]
    for judge in ("oracle", "llm"):
        for col in ("win_rate", "win_rate_se", "win_rate_ci_low", "lc_win_rate", "bt_rating"):
            assert f"{judge}:{col}" in good
    assert good["primary_judge"] == "llm" and good["win_rate"] == good["llm:win_rate"]
    assert good["llm:win_rate"] > good["oracle:win_rate"]  # the llm judge is biased by +0.3
    assert good["oracle:mean_reward"] == pytest.approx(2 * good["vader:mean_reward"])
    assert good["win_rate"] > 50 > recs["bad"]["win_rate"]
    assert recs["sft"]["win_rate"] is None and recs["sft"]["bt_rating"] == pytest.approx(1000)
    se = good["oracle:mean_reward_se"]
    assert se is not None and 0 < se < 1


@pytest.mark.parametrize("n_prompts,warned", [(FEW_PROMPTS - 1, True), (FEW_PROMPTS, False)])
def test_few_prompts_are_warned_about_in_the_leaderboard(n_prompts, warned):
    """Below FEW_PROMPTS judged prompts the leaderboard says its intervals are too narrow.

    The coverage study measured the prompt-bootstrap interval under-covering at 8-16 prompts;
    the note names the count, and disappears at the threshold.
    """
    results = _results({"sft": 0.0, "good": 1.0}, n_prompts=n_prompts, judges=("oracle",))
    battles = {"oracle": _battles(results, "oracle")}
    records = leaderboard_records(results, battles, "oracle",
                                  ReportSettings(rounds=20, style_control=False))
    note = few_prompts_note(records)
    assert (note is not None) == warned
    assert ("**Warning: only" in _markdown(records, "x")) == warned
    good = next(r for r in records if r["label"] == "good")
    # the table's interval: Student's t on few prompts, the bootstrap's otherwise
    ci = "win_rate_t_ci" if warned else "win_rate_ci"
    cell = f"[{good[ci + '_low']:.1f}, {good[ci + '_high']:.1f}]"
    assert cell in _markdown(records, "x")
    assert good["win_rate_t_ci_high"] - good["win_rate_t_ci_low"] > 0
    if warned:
        assert note.startswith(f"only {n_prompts} prompts")


def test_few_prompts_counts_the_judged_prompts_not_the_answered_ones():
    """A model answered 40 prompts but its judge succeeded on 5: the intervals rest on 5."""
    results = _results({"sft": 0.0, "good": 1.0}, n_prompts=40, judges=("oracle",))
    keep = {f"p{p:03d}" for p in range(5)}
    for j in results[1].judged["oracle"]:
        if j.candidate["prompt_id"] not in keep:
            j.row["status"] = "failed: timeout"
    records = leaderboard_records(results, {}, "oracle",
                                  ReportSettings(rounds=20, style_control=False))
    assert few_prompts_note(records).startswith("only 5 prompts")


# ------------------------------------------------------------------ head to head


def test_holm_equals_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = [0.01, 0.04, 0.03, 0.2, None, 0.001]
    ours = holm(p)
    ref = multitest.multipletests([x for x in p if x is not None], method="holm")[1]
    assert [x for x in ours if x is not None] == pytest.approx(list(ref))
    assert ours[4] is None


def test_head_to_head_finds_a_real_difference_and_no_phantom_one():
    results = _results({"sft": 0.0, "good": 1.0, "bad": -1.0, "bad2": -1.0}, n_prompts=60)
    rows = {r["metric"]: r for r in head_to_head(results, "good", "bad", "oracle",
                                                 rounds=300, with_lc=False)}
    wr = rows["win_rate"]
    assert wr["diff"] == pytest.approx(wr["value_a"] - wr["value_b"])
    assert wr["diff"] > 20 and wr["ci_low"] > 0 and wr["p_value"] < 0.01
    assert wr["sign_n_a_better"] > wr["sign_n_b_better"] and wr["sign_p_value"] < 0.01
    same = {r["metric"]: r for r in head_to_head(results, "bad", "bad2", "oracle",
                                                 rounds=300, with_lc=False)}
    assert same["win_rate"]["ci_low"] < 0 < same["win_rate"]["ci_high"]
    assert same["win_rate"]["p_value"] > 0.01


def test_head_to_head_refuses_unknown_or_equal_labels():
    from harness.errors import InputError

    results = _results({"sft": 0.0, "good": 1.0})
    with pytest.raises(InputError, match="no model 'nope'"):
        head_to_head(results, "good", "nope", "oracle", rounds=10)
    with pytest.raises(InputError, match="two different"):
        head_to_head(results, "good", "good", "oracle", rounds=10)


# ------------------------------------------------------------------ seeds


def test_configurations_pool_their_seeds():
    results = _results({"sft": 0.0, "a0": 1.0, "a1": 1.2, "b": -1.0})
    results[1].params = results[2].params = {"alpha": 1.0}
    results[2].seed = 1
    rows = {json_key(r): r for r in config_rows(results, "oracle", rounds=200, seed=0)}
    pooled = rows[("spo", 1.0)]
    assert pooled["n_seeds"] == 2 and pooled["seeds"] == [0, 1]
    assert pooled["win_rate_seed_sd"] is not None and pooled["win_rate_seed_sd"] > 0
    single = rows[("spo", 3.0)]
    assert single["n_seeds"] == 1 and single["win_rate_seed_sd"] is None
    assert single["win_rate_ci_low"] < single["win_rate"] < single["win_rate_ci_high"]


def json_key(row):
    return (row["method"], row["params"]["alpha"])
