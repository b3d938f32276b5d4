"""Leaderboard numbers pinned to hand-computed values, so that wrong code fails (issue 17).

Part 1 writes a tiny experiment into a real results store (3 models x 4 prompts x 2 samples,
two failed judgments), reads it back through `Units` and `collect_battles` exactly as the
report stage does, and checks every win-rate column, the failure counts and the
Bradley-Terry ratings of `leaderboard_records` against values worked out by hand below.
The preferences are asymmetric (win rates 75% and 29.2%, not 50%), so swapping candidate
and baseline (p -> 1 - p) anywhere on the read side changes the numbers.

Part 2 pins the prompt bootstrap: its interval is the 2.5/97.5 percentiles of a seeded
resampling of whole prompts that this file redoes with its own loop, and with samples that
are perfectly correlated within a prompt it is visibly wider than a bootstrap of samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluators.bootstrap import clustered_se, mean_stats, percentile_interval
from evaluators.collect import ModelResults, collect_battles
from evaluators.report import JUDGE_COLUMNS, ReportSettings, leaderboard_records
from evaluators.stats import win_rate_draws, win_rate_stats
from harness.hashing import content_hash
from harness.store import Store
from harness.tasks.base import Prompt
from harness.units import Units, battle_plan, judgment_key

# Elo points per nat: rating = 1000 + ELO * logit(P(win)) for a model met only by the anchor.
ELO = 400 / math.log(10)

# ------------------------------------------------------------------ the hand-built experiment

# Spec order deliberately not sorted: the bootstrap must resample prompts in sorted-id order.
PROMPT_IDS = ["d-what", "b-who", "c-how", "a-why"]
FAILED = None  # a judgment the judge failed on: preference None, status "failed: ..."

# P(candidate beats the baseline) per (prompt, sample), as stored by the judge stage.
PREFERENCES = {
    "good": {"d-what": [1.0, 0.5], "b-who": [1.0, 0.75], "c-how": [0.0, 1.0],
             "a-why": [FAILED, 1.0]},
    "bad": {"d-what": [0.0, 0.25], "b-who": [0.5, 0.0], "c-how": [1.0, 0.0],
            "a-why": [FAILED, FAILED]},  # every judgment of this prompt failed
}
BASELINE = "sft"
LABELS = [BASELINE, "good", "bad"]
N_SAMPLES = 2
SAMPLING = {"max_new_tokens": 16, "temperature": 1.0, "top_p": 1.0}
JUDGE = "oracle"
SETTINGS = ReportSettings(rounds=300, seed=7, style_control=False)

# The expected values, worked out by hand from PREFERENCES (failed judgments left out).
# good: 7 judgments 1, .5, 1, .75, 0, 1, 1 -> sum 5.25, mean 3/4.
#   residuals per prompt: d (.25, -.25) -> 0; b (.25, 0) -> 1/4; c (-.75, .25) -> -1/2;
#   a (.25) -> 1/4. G = 4 prompts: CR1 SE = sqrt(4/3 * (0 + 1/16 + 1/4 + 1/16)) / 7
#   = sqrt(1/2) / 7. iid SEM: sum of squared residuals 7/8, /(n-1)=6, /n=7 -> sqrt(1/48).
#   discrete: 5 wins (> .5), 1 draw (= .5), 1 loss -> (5 + 1/2) / 7.
# bad: 6 judgments 0, .25, .5, 0, 1, 0 -> sum 7/4, mean 7/24; prompt a-why has none, so
#   G = 3: residual sums d -1/3, b -1/12, c 5/12 -> CR1 SE = sqrt(3/2 * 42/144) / 6
#   = sqrt(7) / 24. iid SEM: sum of squares 21/16 - n mean^2 49/96 = 77/96, / 5 / 6.
#   discrete: 1 win, 1 draw, 4 losses -> (1 + 1/2) / 6.
# Bradley-Terry over the baseline plan (each model met only by the anchor): the
# unpenalised MLE has sigma(theta) = mean p, so rating = 1000 + 400 log10(p / (1 - p)).
EXPECTED = {
    "good": {"win_rate": 75.0, "discrete_win_rate": 100 * 5.5 / 7,
             "win_rate_se": 100 * math.sqrt(0.5) / 7, "win_rate_se_iid": 100 / math.sqrt(48),
             "n_judged": 7, "n_failed": 1, "n_wins": 5, "n_draws": 1, "n_losses": 1,
             "bt_rating": 1000 + 400 * math.log10(3)},
    "bad": {"win_rate": 100 * 7 / 24, "discrete_win_rate": 25.0,
            "win_rate_se": 100 * math.sqrt(7) / 24,
            "win_rate_se_iid": 100 * math.sqrt(77 / 2880),
            "n_judged": 6, "n_failed": 2, "n_wins": 1, "n_draws": 1, "n_losses": 4,
            "bt_rating": 1000 + 400 * math.log10(7 / 17)},
}


class _Judge:
    fingerprint = {"judge": "pinned-hand-table"}


def _text(label: str, pid: str, i: int) -> str:
    # distinct per (model, prompt, sample): the judgment key is content-addressed
    return f"{label} answers {pid} with sample {i} " + "word " * (i + len(label))


def _write_experiment(root) -> tuple[Units, dict[str, list[dict]]]:
    """A real store holding every generation and judgment of PREFERENCES; its `Units`."""
    store = Store(root)
    units = Units(store, [Prompt(p, f"prompt text of {p}") for p in PROMPT_IDS], N_SAMPLES,
                  SAMPLING, 0)
    for label in LABELS:
        store.put_generations([
            {"key": s.key, "model_key": f"model-{label}", "prompt_id": s.prompt.id,
             "sample_index": s.index, "prompt": s.prompt.text,
             "text": _text(label, s.prompt.id, s.index), "token_ids": []}
            for s in units.slots(f"model-{label}")])
    gens = {label: units.generations(f"model-{label}") for label in LABELS}
    base = {(g["prompt_id"], g["sample_index"]): g for g in gens[BASELINE]}
    for label, table in PREFERENCES.items():
        rows = []
        for c in gens[label]:
            b = base[c["prompt_id"], c["sample_index"]]
            p = table[c["prompt_id"]][c["sample_index"]]
            rows.append({"key": judgment_key(_Judge.fingerprint, c["prompt"], b["text"],
                                             c["text"]),
                         "judge": content_hash(_Judge.fingerprint),
                         "prompt_id": c["prompt_id"], "baseline_key": b["key"],
                         "candidate_key": c["key"], "preference": p,
                         "status": "ok" if p is not None else "failed: judge timed out"})
        store.put_judgments(rows)
    return units, gens


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """(records by label, battles) of the hand-built experiment, read back from the store."""
    units, gens = _write_experiment(tmp_path_factory.mktemp("pinned-store"))
    results = []
    for label in LABELS:
        samples = [{"prompt_id": g["prompt_id"], "sample_index": g["sample_index"],
                    "text": g["text"], "rewards": {}, "reward": None, "logp": None,
                    "ref_logp": None} for g in gens[label]]
        # exactly what `collect` stores: the judge's judgments of (baseline i, candidate i)
        judged = {} if label == BASELINE else {
            JUDGE: units.judgments(_Judge.fingerprint, gens[BASELINE], gens[label])}
        results.append(ModelResults(label=label, method="sft" if label == BASELINE else "spo",
                                    params={}, seed=None, is_baseline=label == BASELINE,
                                    samples=samples, judged=judged))
    battles = collect_battles(units, gens, battle_plan(LABELS, BASELINE), {JUDGE: _Judge()})
    records = leaderboard_records(results, battles, JUDGE, SETTINGS)
    units.store.close()
    return {r["label"]: r for r in records}, battles


def _valid(label: str) -> dict[str, list[float]]:
    """prompt id -> the successful preferences of `label` (failed judgments dropped)."""
    return {p: [x for x in v if x is not None] for p, v in PREFERENCES[label].items()}


def _prompt_bootstrap(by_prompt: dict[str, list[float]], universe: list[str], rounds: int,
                      seed: int) -> np.ndarray:
    """This file's own prompt bootstrap: the mean of every value of the drawn prompts.

    The draws replicate `prompt_weights`: one `np.random.default_rng(seed)`, one call
    `integers(n_prompts, size=(rounds, n_prompts))`, column i = the i-th prompt id in sorted
    order. Each round then pools the values of the drawn prompts (with repetition) and
    averages them; a round that drew only prompts without values is NaN.
    """
    order = sorted(universe)
    picks = np.random.default_rng(seed).integers(len(order), size=(rounds, len(order)))
    out = np.full(rounds, np.nan)
    for r in range(rounds):
        pooled = [v for i in picks[r] for v in by_prompt.get(order[i], [])]
        if pooled:
            out[r] = sum(pooled) / len(pooled)
    return out


# ------------------------------------------------------------------ part 1: the leaderboard


@pytest.mark.parametrize("label", ["good", "bad"])
@pytest.mark.parametrize("column", ["win_rate", "discrete_win_rate", "win_rate_se",
                                    "win_rate_se_iid", "n_wins", "n_draws", "n_losses"])
def test_win_rate_columns_equal_the_hand_computed_values(experiment, label, column):
    """Win rate, discrete win rate, CR1 clustered SE and iid SE from the stored judgments.

    Pins the direction of the preference (a candidate/baseline swap turns 75% into 25%),
    that failed judgments are left out (counting them as a loss or a tie moves every
    value), CR1's G/(G-1) factor with G = the prompts that have a judgment (bad: 3 of 4),
    and AlpacaEval's tie = one half. Tolerance 1e-9 on a percentage: the values are sums of
    at most 7 dyadic or /24 fractions, so the code's float arithmetic is off by ~1e-14.
    """
    records, _ = experiment
    expected = EXPECTED[label][column]
    assert records[label][f"{JUDGE}:{column}"] == pytest.approx(expected, abs=1e-9)
    if column in JUDGE_COLUMNS:  # the flat column is the primary judge's
        assert records[label][column] == records[label][f"{JUDGE}:{column}"]


def test_clustered_se_recomputed_with_numpy_equals_the_record(experiment):
    """The CR1 formula written out once more on the table (not via `clustered_se`).

    sqrt(G / (G - 1) * sum_g (sum_{i in g} (y_i - mean))^2) / N over the successful
    judgments; this guards the literal values above against a slip in the hand algebra.
    Tolerance 1e-9 on a percentage (float rounding only, ~1e-14).
    """
    records, _ = experiment
    for label in PREFERENCES:
        groups = [np.array(v) for v in _valid(label).values() if v]
        y = np.concatenate(groups)
        g, n = len(groups), y.size
        se = math.sqrt(g / (g - 1) * sum(float((x - y.mean()).sum()) ** 2 for x in groups)) / n
        assert records[label]["win_rate_se"] == pytest.approx(100 * se, abs=1e-9)
        assert se == pytest.approx(EXPECTED[label]["win_rate_se"] / 100, abs=1e-12)


def test_failed_judgments_are_counted_and_left_out(experiment):
    """n_failed counts the judge's failures; they are in neither n_judged nor the battles.

    good failed once, bad twice (both on a-why, which thereby has no judgment of bad);
    `collect_battles` keeps only the 13 successful judgments and counts the 3 failures.
    Exact integer counts.
    """
    records, battles = experiment
    for label in PREFERENCES:
        assert records[label]["n_failed"] == EXPECTED[label]["n_failed"]
        assert records[label]["n_judged"] == EXPECTED[label]["n_judged"]
        assert records[label][f"{JUDGE}:n_total"] == EXPECTED[label]["n_judged"]
    assert records[BASELINE]["n_failed"] == 0 and records[BASELINE]["win_rate"] is None
    b = battles[JUDGE]
    assert b.n_failed == 3 and len(b.rows) == 13
    assert all(r["model_a"] == BASELINE for r in b.rows)
    # every battle row carries the stored P(candidate wins), not its complement
    stored = sorted(x for t in PREFERENCES.values() for v in t.values() for x in v
                    if x is not None)
    assert sorted(r["p_b"] for r in b.rows) == stored
    assert sum(r["p_b"] for r in b.rows if r["model_b"] == "good") == 5.25  # exact: dyadic


def test_bradley_terry_ratings_and_order_equal_the_closed_form(experiment):
    """BT on the baseline plan: each model met only the anchor, so the MLE is closed-form.

    rating = 1000 + 400 log10(p / (1 - p)) with p = the mean stored preference: good
    1000 + 400 log10 3 ~ 1190.8, bad 1000 + 400 log10(7/17) ~ 845.9, the baseline 1000;
    order good > sft > bad. Inverting p_b mirrors both around 1000 and flips the order.
    Tolerance 1e-6 Elo: Newton stops at a step below 1e-10 nats (x 174 Elo per nat).
    """
    records, _ = experiment
    assert records[BASELINE]["bt_rating"] == pytest.approx(1000, abs=1e-6)
    for label in PREFERENCES:
        assert records[label]["bt_rating"] == pytest.approx(EXPECTED[label]["bt_rating"],
                                                            abs=1e-6)
        assert records[label]["bt_separated"] is False
    order = sorted(records, key=lambda k: -records[k]["bt_rating"])
    assert order == ["good", BASELINE, "bad"]
    # the win-rate order agrees
    assert records["good"]["win_rate"] > 50 > records["bad"]["win_rate"]


def test_leaderboard_interval_is_the_shared_prompt_bootstrap(experiment):
    """win_rate_ci_low/high = 2.5/97.5 percentiles of this file's own prompt bootstrap.

    With the report's (rounds, seed) over the experiment's whole prompt universe (bad
    has no judgment on a-why: that prompt weighs 0 and a round drawing only it is
    dropped). Tolerance 1e-9 on a percentage: the same draws, summed in another order
    (matrix product vs loop), differ by float rounding ~1e-13.
    """
    records, _ = experiment
    for label in PREFERENCES:
        draws = 100 * _prompt_bootstrap(_valid(label), PROMPT_IDS, SETTINGS.rounds,
                                        SETTINGS.seed)
        low, high = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
        assert records[label]["win_rate_ci_low"] == pytest.approx(low, abs=1e-9)
        assert records[label]["win_rate_ci_high"] == pytest.approx(high, abs=1e-9)
        assert low < EXPECTED[label]["win_rate"] < high


# ------------------------------------------------------------------ part 2: the bootstrap


def test_percentile_interval_is_the_2_5_and_97_5_percentiles():
    """The 95% interval's ends are the 2.5th and 97.5th percentiles of the finite draws.

    Draws 0.0, 0.1, ..., 100.0 (1001 values): numpy's linear percentile q lands exactly
    on draw q * 10, so the ends are 2.5 and 97.5 (float rounding only: 1e-12); NaN and
    inf draws (undefined rounds) are ignored.
    """
    draws = np.arange(1001) / 10
    assert percentile_interval(draws) == pytest.approx((2.5, 97.5), abs=1e-12)
    with_undefined = np.concatenate([draws, [np.nan, np.inf, -np.inf]])
    assert percentile_interval(with_undefined, 0.95) == pytest.approx((2.5, 97.5), abs=1e-12)
    assert percentile_interval(draws, 0.9) == pytest.approx((5.0, 95.0), abs=1e-12)
    assert percentile_interval(np.array([np.nan])) == (None, None)


# Prompts with unequal sample counts (so a mean of per-prompt means would differ from the
# pooled mean) and a universe prompt without any value.
TABLE = {"p3": [1.0, 0.75, 1.0], "p0": [0.0], "p4": [0.5, 1.0], "p1": [0.25, 0.0, 0.0, 1.0],
         "p2": [1.0, 1.0]}
UNIVERSE = ["p5", *TABLE]  # p5: no value


def _flat(table: dict[str, list[float]]) -> tuple[list[float], list[str]]:
    values = [v for vs in table.values() for v in vs]
    return values, [p for p, vs in table.items() for _ in vs]


@pytest.mark.parametrize("rounds,seed", [(400, 0), (257, 12345)])
def test_win_rate_draws_and_interval_equal_an_independent_seeded_resampling(rounds, seed):
    """`win_rate_draws` round by round, and the interval, against this file's own loop.

    Pins the generator (default_rng(seed)), the draw (integers(n, size=(rounds, n))), that
    n prompts are drawn each round, that columns are the sorted prompt ids, the pooled
    (ratio-of-sums) mean per round and the 2.5/97.5 percentiles. Tolerance 1e-9 on a
    percentage: identical draws, sums taken in another order (rounding ~1e-13).
    """
    values, clusters = _flat(TABLE)
    ours = 100 * _prompt_bootstrap(TABLE, UNIVERSE, rounds, seed)
    theirs = win_rate_draws(values, clusters, rounds=rounds, seed=seed, prompts=sorted(UNIVERSE))
    assert np.array_equal(np.isnan(theirs), np.isnan(ours))
    assert theirs[np.isfinite(theirs)] == pytest.approx(ours[np.isfinite(ours)], abs=1e-9)
    st = win_rate_stats(values, clusters, rounds=rounds, seed=seed, prompts=sorted(UNIVERSE))
    low, high = np.percentile(ours[np.isfinite(ours)], [2.5, 97.5])
    assert (st["win_rate_ci_low"], st["win_rate_ci_high"]) == pytest.approx((low, high),
                                                                            abs=1e-9)


def test_mean_stats_interval_equals_an_independent_seeded_resampling():
    """The scorers' mean-reward interval (`mean_stats`) is the same prompt bootstrap.

    Same replication as for the win rate, on raw values. Tolerance 1e-11 on values in
    [0, 1]: identical draws, float summation order only (~1e-15).
    """
    values, clusters = _flat(TABLE)
    ours = _prompt_bootstrap(TABLE, UNIVERSE, 300, 5)
    st = mean_stats(values, clusters, rounds=300, seed=5, prompts=sorted(UNIVERSE))
    low, high = np.percentile(ours[np.isfinite(ours)], [2.5, 97.5])
    assert (st["ci_low"], st["ci_high"]) == pytest.approx((low, high), abs=1e-11)
    assert st["mean"] == pytest.approx(np.mean(values), abs=1e-12)


def test_interval_resamples_whole_prompts_not_samples():
    """With samples perfectly correlated within a prompt, the interval has prompt width.

    12 prompts x 4 identical samples (7 prompts won, 5 lost): 12 independent units, not
    48. The prompt bootstrap's width must equal this file's prompt-level resampling and be
    about sqrt(4) = 2 times that of a bootstrap that resamples the 48 samples as if
    independent; asserting > 1.5x leaves room for Monte-Carlo noise (2000 rounds: the
    widths are known to a few %). Equality tolerance 1e-9 on a percentage as above.
    """
    per_prompt = [1.0] * 7 + [0.0] * 5
    # ids inserted out of sorted order: without `prompts`, columns are the sorted ids
    table = {f"q{5 * i % 12:02d}": [v] * 4 for i, v in enumerate(per_prompt)}
    values, clusters = _flat(table)
    rounds, seed = 2000, 3
    st = win_rate_stats(values, clusters, rounds=rounds, seed=seed)
    width = st["win_rate_ci_high"] - st["win_rate_ci_low"]

    prompt_level = 100 * _prompt_bootstrap(table, list(table), rounds, seed)
    lo, hi = np.percentile(prompt_level, [2.5, 97.5])
    assert width == pytest.approx(hi - lo, abs=1e-9)

    as_samples = {str(i): [v] for i, v in enumerate(values)}  # every sample its own unit
    sample_level = 100 * _prompt_bootstrap(as_samples, list(as_samples), rounds, seed)
    lo_s, hi_s = np.percentile(sample_level, [2.5, 97.5])
    assert width > 1.5 * (hi_s - lo_s)
    # and the clustered SE sees the same 12 units: sqrt(G/(G-1)) * sqrt(p(1-p)/G) * 100
    p = 7 / 12
    assert st["win_rate_se"] == pytest.approx(100 * math.sqrt(p * (1 - p) / 11), abs=1e-9)


def test_clustered_se_is_cr1_on_a_hand_table():
    """`clustered_se` on 5 values in 3 clusters, against the CR1 formula done by hand.

    y = (1, 0 | 1, 1 | 0), mean 3/5; cluster residual sums -0.2, 0.8, -0.6; CR1 =
    sqrt(3/2 * 1.04) / 5 = sqrt(1.56) / 5. Without the G/(G-1) factor it would be
    sqrt(1.04) / 5, ~18% smaller. Tolerance 1e-12: a handful of float operations.
    """
    se = clustered_se([1, 0, 1, 1, 0], ["a", "a", "b", "b", "c"])
    assert se == pytest.approx(math.sqrt(1.56) / 5, abs=1e-12)
    assert abs(se - math.sqrt(1.04) / 5) > 0.01
