"""Non-finite numbers never become results: a judge's or scorer's NaN is a failed unit
(counted, retried), and every JSON file the harness writes is strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from evaluators.scoring import pairwise_judgments, pointwise_scores
from harness.jsonio import dumps, finite_or_none
from harness.store import Store
from harness.tasks.base import Prompt
from harness.units import Units
from tests.conftest import assert_ok, cli, write_spec

BAD = [math.nan, math.inf, -math.inf, 1.5, -0.1, "0.7", None]


def _strict(text: str):
    """json.loads that refuses NaN / Infinity, as browsers and jq do."""
    def no(c):
        raise ValueError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=no)


class FixedJudge:
    def __init__(self, value):
        self.value = value
        self.fingerprint = {"judge": "fixed", "value": repr(value)}

    def judge(self, prompt, baseline, candidate):
        return [self.value for _ in baseline]


class FixedScorer:
    def __init__(self, value):
        self.value = value
        self.fingerprint = {"scorer": "fixed", "value": repr(value)}

    def score(self, prompt, completions):
        return [self.value for _ in completions]


def _units(tmp_path: Path) -> tuple[Units, list[dict], list[dict]]:
    store = Store(tmp_path)
    units = Units(store, [Prompt("p0", "q0"), Prompt("p1", "q1")], 2, {"t": 1.0}, 0)
    for model in ("base", "cand"):
        store.put_generations([{"key": s.key, "model_key": model, "prompt_id": s.prompt.id,
                                "sample_index": s.index, "prompt": s.prompt.text,
                                "text": f"{model} {s.key}", "token_ids": []}
                               for s in units.slots(model)])
    return units, units.generations("base"), units.generations("cand")


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_unusable_preference_is_stored_failed_and_retried(value, tmp_path):
    units, base, cand = _units(tmp_path)
    assert pairwise_judgments(units, FixedJudge(value), base, cand) == (4, 0)
    judged = units.judgments(FixedJudge(value).fingerprint, base, cand)
    assert all(j.row is not None and j.row["status"].startswith("failed") for j in judged)
    assert all(j.row["preference"] is None for j in judged)
    # a rerun retries every one of them
    assert pairwise_judgments(units, FixedJudge(value), base, cand) == (4, 0)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "x", None], ids=repr)
def test_unusable_score_is_stored_failed(value, tmp_path):
    units, base, _ = _units(tmp_path)
    scorer = FixedScorer(value)
    assert pointwise_scores(units.store, scorer, base) == (4, 0)
    rows = units.scores(scorer.fingerprint, base)
    assert len(rows) == 4 and all(r["status"].startswith("failed") for r in rows.values())
    assert pointwise_scores(units.store, scorer, base) == (4, 0)  # retried


def test_strict_json_helpers():
    obj = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": "nan"}
    assert finite_or_none(obj) == {"a": None, "b": [1.0, None, {"c": None}], "d": "nan"}
    assert _strict(dumps(obj)) == finite_or_none(obj)


def test_nan_reward_model_judge_end_to_end(tmp_path):
    """A reward model with NaN weights as the judge: every judgment failed, counted in
    n_failed, win rates null (not NaN), every JSON written strict."""
    from tests.test_reward_model import _save_rm

    rm = _save_rm(tmp_path / "rm")
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(rm)
    with torch.no_grad():
        model.score.weight.fill_(math.nan)
    model.save_pretrained(rm)
    from tests.conftest import TINY_SPEC

    spec = write_spec(tmp_path / "nan.yaml", TINY_SPEC + f"judges:\n  - name: reward_model\n"
                      f"    params: {{model: {rm}}}\n")
    results = tmp_path / "R"
    assert_ok(cli("run", spec, "--results-dir", results, cwd=tmp_path))
    board = _strict((results / "leaderboard.json").read_text())
    for rec in board:
        if not rec["is_baseline"]:
            assert rec["n_judged"] == 0 and rec["n_failed"] == rec["n_samples"] > 0
            assert rec["win_rate"] is None
    for name in ("judge_quality.json", "run.json", "softness.json"):
        if (results / name).exists():
            _strict((results / name).read_text())
