"""The judge quality report on a hand-made table of judgments, checked against hand-computed
values: counts, oracle agreement, |P - P_oracle|, flip rate, longer-answer wins, cost."""

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
    assert saved["judges"][0]["overall"] == pytest.approx(o)
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
