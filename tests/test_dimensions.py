"""Preference dimensions (harness/dimensions.py): the bandit's K reward tables, rows with
per-dimension labels or one dataset per dimension, the spec's rules, and the leaderboard's
per-dimension columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.data import load_slot, load_train
from harness.errors import InputError
from harness.hashing import content_hash
from harness.numeric import sigmoid
from harness.spec import load_spec
from harness.tasks.bandit import BanditOptions, BanditTask

# ---------------------------------------------------------------- the bandit

# Computed by the code before dimensions existed (commit de2788e) for
# BanditOptions(labels=L, n_prompts=3, n_arms=4): content_hash of the pairs, of the oracle
# scorer's and judge's fingerprints, of the reward table.
BEFORE = {
    "soft": ["1d3b1502f7152736", "ac8565e3800bfccb", "3cf8a931cb9778c1", "35b088c1e774eb00"],
    "sampled": ["eb33bf959033f263", "3d36f7ff55800802", "65e104f3b301bccd", "35b088c1e774eb00"],
    "ranked": ["3a2e39b7cd350714", "430f2d4d68582e89", "2e26bf829c3cf9ee", "35b088c1e774eb00"],
}


@pytest.mark.parametrize("labels", sorted(BEFORE))
def test_one_dimension_leaves_every_key_unchanged(labels: str) -> None:
    from evaluators.judges import OracleBTJudge
    from evaluators.scorers import OracleRewardScorer

    t = BanditTask(BanditOptions(labels=labels, n_prompts=3, n_arms=4), None)
    assert [content_hash(t._pairs()), content_hash(OracleRewardScorer(t).fingerprint),
            content_hash(OracleBTJudge(t).fingerprint),
            content_hash(t.reward_table.tolist())] == BEFORE[labels]
    assert t.dimensions == [] and all("dimension" not in r for r in t._pairs())


def test_two_dimensions_label_each_pair_by_its_table() -> None:
    one = BanditTask(BanditOptions(n_prompts=3, n_arms=4), None)
    two = BanditTask(BanditOptions(n_prompts=3, n_arms=4, dimensions=2), None)
    assert two.dimensions == ["dim1", "dim2"]
    rows = two._pairs()
    assert len(rows) == 2 * len(one._pairs())
    first = [r for r in rows if r["dimension"] == "dim1"]
    assert [{k: v for k, v in r.items() if k != "dimension"} for r in first] == one._pairs()
    table = two.dimension_tables[1]
    for r in (r for r in rows if r["dimension"] == "dim2"):
        p = two.prompts.index(r["prompt"])
        rw, rl = table[p][two.arms.index(r["chosen"])], table[p][two.arms.index(r["rejected"])]
        assert rw >= rl and r["soft_label"] == pytest.approx(sigmoid(rw - rl))
    np.testing.assert_allclose(two.reward_table, one.reward_table + table)  # the oracle's: sum
    q = two.prompts[1]
    assert two.dimension_rewards(q, ["a0", "zz"])["dim2"] == [table[1][0], table[1].min() - 1]
    np.testing.assert_array_equal(two.true_dimension_rewards(q)["dim1"], one.true_rewards(q))


def test_sampled_labels_per_dimension_and_correlation() -> None:
    one = BanditTask(BanditOptions(labels="sampled", n_prompts=3, n_arms=4), None)
    two = BanditTask(BanditOptions(labels="sampled", n_prompts=3, n_arms=4, dimensions=2,
                                   dimension_correlation=1.0), None)
    rows = two._pairs()
    first = [{k: v for k, v in r.items() if k != "dimension"} for r in rows
             if r["dimension"] == "dim1"]
    assert first == one._pairs()
    np.testing.assert_allclose(two.dimension_tables[1], two.dimension_tables[0])
    with pytest.raises(InputError, match="ranked"):
        BanditTask(BanditOptions(labels="ranked", dimensions=2), None)


# ---------------------------------------------------------------- rows


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"prompt": "p1", "chosen": "a", "rejected": "b", "labels": {"helpful": 1,
                                                                     "harmless": 0.25}},
        {"prompt": "p2", "chosen": "c", "rejected": "d", "labels": {"harmless": 0,
                                                                     "helpful": 0.5}}]


def test_labels_become_one_row_per_dimension_in_the_spec_order(tmp_path) -> None:
    path = _jsonl(tmp_path / "d.jsonl", ROWS)
    loaded = load_train(path, dimensions=["harmless", "helpful"])
    assert loaded.rows == [
        {"prompt": "p1", "chosen": "a", "rejected": "b", "soft_label": 0.25,
         "dimension": "harmless"},
        {"prompt": "p1", "chosen": "a", "rejected": "b", "soft_label": 1.0,
         "dimension": "helpful"},
        {"prompt": "p2", "chosen": "c", "rejected": "d", "soft_label": 0.0,
         "dimension": "harmless"},
        {"prompt": "p2", "chosen": "c", "rejected": "d", "soft_label": 0.5,
         "dimension": "helpful"}]
    assert [w.line for w in loaded.where] == [1, 1, 2, 2] and loaded.unused == []


@pytest.mark.parametrize("rows,dims,line,field,fragment", [
    ([{**ROWS[0], "labels": {"helpful": 1}}], ["helpful", "harmless"], 1, "labels.harmless",
     "missing label for dimension 'harmless'"),
    ([ROWS[0], {**ROWS[1], "labels": {"helpful": 1, "harmless": None}}],
     ["helpful", "harmless"], 2, "labels.harmless", "missing label"),
    ([{**ROWS[0], "labels": {"helpful": 1, "harmless": 0, "honest": 1}}],
     ["helpful", "harmless"], 1, "labels.honest", "not one of data.dimensions"),
    ([{**ROWS[0], "labels": {"helpful": 1.5, "harmless": 0}}], ["helpful", "harmless"], 1,
     "labels.helpful", "outside [0, 1]"),
    ([{**ROWS[0], "labels": {"helpful": "yes", "harmless": 0}}], ["helpful", "harmless"], 1,
     "labels.helpful", "finite number"),
    ([{**ROWS[0], "labels": {"helpful": True, "harmless": 0}}], ["helpful", "harmless"], 1,
     "labels.helpful", "finite number"),
    ([{**ROWS[0], "labels": [1, 0]}], ["helpful", "harmless"], 1, "labels", "mapping"),
    ([ROWS[0]], None, 1, "labels", "data.dimensions"),
    ([{**ROWS[0], "soft_label": 0.3}], ["helpful", "harmless"], 1, "labels", "not both"),
    ([ROWS[0], {"prompt": "p2", "chosen": "c", "rejected": "d"}], ["helpful", "harmless"], 2,
     "labels", "every row or on none"),
    ([{"prompt": "p2", "chosen": "c", "rejected": "d"}, ROWS[0]], ["helpful", "harmless"], 2,
     "labels", "every row or on none"),
], ids=["missing", "null", "extra", "range", "text", "bool", "list", "no-dimensions",
        "with-soft-label", "labels-then-none", "none-then-labels"])
def test_bad_labels_name_the_row_and_field(tmp_path, rows, dims, line, field, fragment):
    path = _jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(InputError) as exc:
        load_train(path, dimensions=dims)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}: '{field}': ") and fragment in msg, msg


def test_labels_from_parquet_equal_jsonl(tmp_path) -> None:
    import datasets

    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "d.parquet"))
    dims = ["helpful", "harmless"]
    assert (load_train(tmp_path / "d.parquet", dimensions=dims).rows
            == load_train(_jsonl(tmp_path / "d.jsonl", ROWS), dimensions=dims).rows)


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


BANDIT = """\
name: d
task: bandit
task_options: {n_prompts: 2, n_arms: 3}
methods: [{name: seqpo}]
"""


def test_one_dataset_per_dimension(tmp_path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", [{"prompt": "q0", "chosen": "a0", "rejected": "a1"}])
    b = _jsonl(tmp_path / "b.jsonl", [{"prompt": "q1", "chosen": "a2", "rejected": "a0",
                                       "soft_label": 0.7}])
    spec = load_spec(_spec(tmp_path, BANDIT + f"data:\n  dimensions: [second, first]\n"
                           f"  train_by_dimension: {{first: {a}, second: {{path: {b}}}}}\n"))
    loaded = load_slot("train", spec.data.source("train"), spec.data.dimensions)
    assert loaded.rows == [
        {"prompt": "q1", "chosen": "a2", "rejected": "a0", "soft_label": 0.7,
         "dimension": "second"},
        {"prompt": "q0", "chosen": "a0", "rejected": "a1", "dimension": "first"}]
    from harness.dimensions import spec_dimensions

    assert spec_dimensions(spec, []) == ["second", "first"]


@pytest.mark.parametrize("extra,field,fragment", [
    ("", "methods.0.name", "has none"),
    ("data: {dimensions: [helpful]}\n", "data.dimensions", "one unnamed reward"),
    ("task_options: {dimensions: 2}\ndata: {dimensions: [dim1, dim3]}\n", "data.dimensions",
     "has dimensions [dim1, dim2]"),
    ("task_options: {dimensions: 2}\ndata: {dimensions: [dim1, dim1]}\n", "data.dimensions.1",
     "twice"),
    ("task_options: {dimensions: 2}\nmethods: [{name: seqpo, params: {rounds: 3}}]\n",
     "methods.0.params.rounds", "only 2 dimensions"),
    ("task_options: {dimensions: 2}\nscorers: [{name: oracle, params: {dimension: dim7}}]\n",
     "scorers.0.params.dimension", "no dimension 'dim7'"),
    ("task_options: {dimensions: 2}\njudges: [{name: oracle, params: {dimension: dim3}}]\n",
     "judges.0.params.dimension", "no dimension 'dim3'"),
    ("data: {dimensions: ['bad:name']}\n", "data.dimensions.0", "must be a name"),
], ids=["seqpo-without", "task-has-none", "mismatch", "twice", "rounds", "scorer", "judge",
        "name"])
def test_spec_rules(tmp_path, extra, field, fragment) -> None:
    text = BANDIT
    for line in extra.splitlines(keepends=True):  # a key given again replaces the base's
        key = line.split(":")[0]
        text = "".join(x for x in text.splitlines(keepends=True)
                       if not x.startswith(key + ":")) + line
    with pytest.raises(InputError) as exc:
        load_spec(_spec(tmp_path, text))
    assert exc.value.field == field and fragment in str(exc.value), str(exc.value)


def test_spec_rules_against_user_data(tmp_path) -> None:
    plain = _jsonl(tmp_path / "p.jsonl", [{"prompt": "q0", "chosen": "a0", "rejected": "a1"}])
    with pytest.raises(InputError) as exc:
        load_spec(_spec(tmp_path, BANDIT + f"data: {{train: {plain}, dimensions: [x, y]}}\n"))
    assert exc.value.field == "data.dimensions" and "carry no 'labels'" in str(exc.value)
    with pytest.raises(InputError) as exc:
        load_spec(_spec(tmp_path, BANDIT + f"data: {{dimensions: [x, y], "
                        f"train_by_dimension: {{x: {plain}, z: {plain}}}}}\n"))
    assert exc.value.field == "data.dimensions" and "datasets for [x, z]" in str(exc.value)
    with pytest.raises(InputError) as exc:
        load_spec(_spec(tmp_path, BANDIT + f"data: {{train: {plain}, "
                        f"train_by_dimension: {{x: {plain}}}}}\n"))
    assert exc.value.field == "data.train_by_dimension"
    labelled = _jsonl(tmp_path / "l.jsonl", [{**ROWS[0], "prompt": "q0"}])
    spec = load_spec(_spec(tmp_path, BANDIT + f"data: {{train: {labelled}, "
                           f"dimensions: [helpful, harmless]}}\n"))
    assert spec.data.dimensions == ["helpful", "harmless"]


# ---------------------------------------------------------------- the leaderboard


def test_exact_per_dimension_columns() -> None:
    from evaluators.collect import ExactPrompt
    from evaluators.report import _exact_metrics

    lp = np.log(np.array([0.5, 0.3, 0.1]))  # 0.1 leaks outside: renormalised over the set
    e = ExactPrompt(lp, np.array([1.0, 0.0, -1.0]), None, "q",
                    dimension_rewards={"dim1": np.array([1.0, 0.0, -1.0]),
                                       "dim2": np.array([0.0, 2.0, 1.0])})
    out = _exact_metrics([e, e])
    assert out["oracle.dim1:exact_expected_reward"] == pytest.approx((0.5 - 0.1) / 0.9)
    assert out["oracle.dim2:exact_expected_reward"] == pytest.approx((0.6 + 0.1) / 0.9)


# ---------------------------------------------------------------- sentiment: sentiment and brevity

# Computed by the code before sentiment had dimensions (commit 65b6b01): content_hash of the
# oracle scorer's and judge's fingerprints of SentimentTask(SentimentOptions(labels=L)).
SENTIMENT_BEFORE = {"soft": ["e71a260f804927f1", "8ff74848d9256d0a"],
                    "sampled": ["7fed11f868798da6", "7f010b6d4bc9f51b"]}


@pytest.mark.parametrize("labels", sorted(SENTIMENT_BEFORE))
def test_sentiment_at_one_dimension_keeps_its_keys(labels: str) -> None:
    from evaluators.judges import OracleBTJudge
    from evaluators.scorers import OracleRewardScorer
    from harness.tasks.sentiment import SentimentOptions, SentimentTask

    t = SentimentTask(SentimentOptions(labels=labels), None)
    assert t.dimensions == [] and t.dimension_rewards("p", ["a"]) == {}
    assert [content_hash(OracleRewardScorer(t).fingerprint),
            content_hash(OracleBTJudge(t).fingerprint)] == SENTIMENT_BEFORE[labels]


def test_brevity_reward_is_one_minus_words_over_ten_clipped() -> None:
    from harness.tasks.sentiment import brevity_reward

    cases = {"": 1.0, "  ": 1.0, "one": 0.9, "a b c d e": 0.5, " ".join("w" * 10): 0.0,
             " ".join("w" * 15): -0.5, " ".join("w" * 20): -1.0, " ".join("w" * 33): -1.0}
    for text, want in cases.items():
        assert brevity_reward(text) == pytest.approx(want, abs=1e-12), text


def test_sentiment_with_two_dimensions_sums_vader_and_brevity() -> None:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from harness.tasks.sentiment import SentimentOptions, SentimentTask

    t = SentimentTask(SentimentOptions(dimensions=2), None)
    texts = [" a happy and wonderful day for all of us here", " sad", " the"]
    vader = [SentimentIntensityAnalyzer().polarity_scores(c)["compound"] for c in texts]
    brevity = [0.0, 0.9, 0.9]
    assert t.dimensions == ["sentiment", "brevity"]
    by = t.dimension_rewards("p", texts)
    assert by["sentiment"] == vader and by["brevity"] == pytest.approx(brevity)
    assert t.rewards("p", texts) == pytest.approx([v + b for v, b in zip(vader, brevity)])
    assert vader[0] > vader[2] > vader[1]  # the conflict: the longest is the most positive


@pytest.mark.parametrize("labels", ["soft", "sampled"])
def test_sentiment_pairs_one_per_dimension_best_against_worst(monkeypatch, labels) -> None:
    """Each prompt's candidates give one pair per dimension, best against worst by that
    dimension's reward, its label sigmoid(bt_scale * gap) (soft) or a draw of it (sampled);
    rows come dimension by dimension."""
    import evaluators.generation as generation
    from harness.tasks.sentiment import SentimentOptions, SentimentTask

    cands = {"p0": [" a happy and wonderful day for all of us here", " sad", " the", " ok"],
             "p1": [" joy", " joy", " joy", " joy"]}  # no signal on either dimension

    class Backend:
        def __init__(self, path):
            pass

        def generate(self, requests, params, **kw):
            return [type("C", (), {"text": cands[p][i]}) for p, i in requests]

    monkeypatch.setattr(generation, "HFBackend", Backend)
    t = SentimentTask(SentimentOptions(dimensions=2, labels=labels, bt_scale=5.0), None)
    rows = t._build_pairs("unused", ["p0", "p1"])
    assert [r["dimension"] for r in rows] == ["sentiment", "brevity"]
    by = t.dimension_rewards("p0", cands["p0"])
    for row in rows:
        r = by[row["dimension"]]
        hi, lo = int(np.argmax(r)), int(np.argmin(r))
        assert {row["chosen"], row["rejected"]} == {cands["p0"][hi], cands["p0"][lo]}
        if labels == "soft":
            assert row["chosen"] == cands["p0"][hi]
            assert row["soft_label"] == pytest.approx(sigmoid(5.0 * (r[hi] - r[lo])))
        else:
            assert "soft_label" not in row
    if labels == "soft":
        assert rows[0]["chosen"] == cands["p0"][0] and rows[1]["rejected"] == cands["p0"][0]


def test_oracle_judge_of_one_dimension_compares_that_dimensions_reward() -> None:
    """P(candidate wins) = sigmoid(scale (R_d(cand) - R_d(base))) on dimension d's table; its
    fingerprint names the dimension (the task's own judge keeps its key: pinned above); the
    spec shows it as oracle.<dimension>."""
    from evaluators.judges import OracleBTJudge
    from harness.spec import ComponentSpec

    t = BanditTask(BanditOptions(labels="soft", n_prompts=3, n_arms=4, dimensions=2), None)
    base, cand = ["a0", "a1", "a2", "a3"], ["a3", "a2", "a1", "a1"]
    for d, name in enumerate(["dim1", "dim2"]):
        judge = OracleBTJudge(t, dimension=name)
        row = t.dimension_tables[d][1]
        want = [0.5 if b == c else float(sigmoid(row[int(c[1])] - row[int(b[1])]))
                for b, c in zip(base, cand)]
        assert judge.judge("q1", base, cand) == pytest.approx(want, abs=1e-12)
        assert judge.fingerprint["dimension"] == name
    whole = OracleBTJudge(t).judge("q1", base, cand)
    assert whole != OracleBTJudge(t, dimension="dim1").judge("q1", base, cand)
    with pytest.raises(InputError, match="no dimension 'dim9'"):
        OracleBTJudge(t, dimension="dim9")
    assert ComponentSpec("oracle", {"dimension": "dim2"}).display_name() == "oracle.dim2"
    assert ComponentSpec("oracle", {"scale": 2.0}).display_name() == "oracle"
    assert ComponentSpec("llm", {"dimension": "dim2"}).display_name() == "llm"
