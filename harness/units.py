"""The keys of every stored unit, and the one read side of the store.

A results folder accumulates units from every spec ever run in it: generations at other
temperatures or sample counts, judgments by judges since removed, scores of old scorers.
Nothing may read "all generations of a model": every stage and report reads exactly the
units whose keys the *current* spec implies. This module is the only place those keys are
derived; the writers (generate, score, judge) and the readers (report, judge quality) both
go through `Units`, so what is written and what is read cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.hashing import content_hash
from harness.store import Store
from harness.tasks.base import Prompt

# ------------------------------------------------------------------ keys


def generation_key(model_key: str, prompt: str, sampling: dict[str, Any], index: int,
                   seed: int) -> str:
    return content_hash({"model": model_key, "prompt": prompt, "sampling": sampling,
                         "sample_index": index, "seed": seed})


def score_key(scorer_fp: dict, generation: str) -> str:
    return content_hash({"scorer": content_hash(scorer_fp), "generation": generation})


def logp_key(model_key: str, generation: str) -> str:
    return content_hash({"logp-under": model_key, "generation": generation})


def exact_key(model_key: str, prompt: str, responses: list[str], eos: bool) -> str:
    return content_hash({"exact-distribution": model_key, "prompt": prompt,
                         "responses": responses, "eos": eos})


def judgment_key(judge_fp: dict, prompt: str, baseline: str, candidate: str) -> str:
    # Content-keyed like AlpacaEval's cache, but with the judge's full fingerprint in the key.
    return content_hash({"judge": content_hash(judge_fp), "prompt": prompt,
                         "baseline": baseline, "candidate": candidate})


def benchmark_key(model_key: str, benchmark_fp: dict) -> str:
    """One lm-eval benchmark of one model (`evaluators.benchmarks`): the fingerprint holds
    the task's YAML text and data hashes, lm-eval's version and the run's options."""
    return content_hash({"benchmark": content_hash(benchmark_fp), "model": model_key})


# ------------------------------------------------------------------ which models meet

def battle_plan(labels: list[str], baseline: str, mode: str = "baseline",
                anchors: int = 0) -> list[tuple[str, str]]:
    """The (first, second) model pairs the judge stage judges, in a fixed order.

    'baseline': every model against the baseline (AlpacaEval, Arena-Hard). 'all': every
    pair, Chatbot-Arena style. 'anchors' (K > 0): each model against the baseline and K
    others, picked by a content hash of the pair so the choice is deterministic and a
    pair's membership does not change when an unrelated model joins the experiment.
    The baseline (or, between two candidates, the model listed first) takes the first
    position; the judges handle position bias themselves (random or both orders).
    """
    others = [m for m in labels if m != baseline]
    plan = [(baseline, m) for m in others]
    if mode == "all":
        plan += [(a, b) for i, a in enumerate(others) for b in others[i + 1:]]
    elif mode == "anchors":
        order = {m: i for i, m in enumerate(others)}
        chosen: set[tuple[str, str]] = set()
        for m in others:
            rivals = sorted((o for o in others if o != m),
                            key=lambda o: content_hash({"anchor-pair": sorted([m, o])}))
            for o in rivals[:anchors]:
                chosen.add((m, o) if order[m] < order[o] else (o, m))
        plan += sorted(chosen, key=lambda ab: (order[ab[0]], order[ab[1]]))
    elif mode != "baseline":
        raise ValueError(f"unknown pairing mode {mode!r}")
    return plan


# ------------------------------------------------------------------ the read side


@dataclass(frozen=True)
class Slot:
    """One generation the spec asks for: sample `index` of `prompt` from a model."""

    prompt: Prompt
    index: int
    key: str


@dataclass
class Judged:
    """One (baseline sample i, candidate sample i) pair and its stored judgment, if any."""

    baseline: dict[str, Any]
    candidate: dict[str, Any]
    key: str
    row: dict[str, Any] | None  # {"preference", "status", "info"}; None = not judged yet

    @property
    def ok(self) -> bool:
        return self.row is not None and self.row["status"] == "ok"


class Units:
    """Exactly the units the current spec names: prompts x samples, sampling, seed."""

    def __init__(self, store: Store, prompts: list[Prompt], n_samples: int,
                 sampling: dict[str, Any], seed: int) -> None:
        self.store, self.prompts, self.n_samples = store, prompts, n_samples
        self.sampling, self.seed = sampling, seed

    def slots(self, model_key: str) -> list[Slot]:
        return [Slot(p, i, generation_key(model_key, p.text, self.sampling, i, self.seed))
                for p in self.prompts for i in range(self.n_samples)]

    def generations(self, model_key: str) -> list[dict[str, Any]]:
        """The stored generations of the spec's slots, in slot order; missing slots skipped.

        Each row's prompt id and index come from the slot, not from the stored row, so a
        prompt renamed in the spec keeps its cached samples under its new id.
        """
        slots = self.slots(model_key)
        stored = self.store.generations_by_key([s.key for s in slots])
        return [{**stored[s.key], "prompt_id": s.prompt.id, "sample_index": s.index,
                 "prompt": s.prompt.text} for s in slots if s.key in stored]

    def scores(self, scorer_fp: dict, gens: list[dict]) -> dict[str, dict[str, Any]]:
        """generation key -> stored score row of this scorer."""
        keys = {g["key"]: score_key(scorer_fp, g["key"]) for g in gens}
        stored = self.store.scores(list(keys.values()))
        return {g: stored[k] for g, k in keys.items() if k in stored}

    def logps(self, model_key: str, gens: list[dict]) -> dict[str, float]:
        """generation key -> log pi(y|x) under the model `model_key`."""
        keys = {g["key"]: logp_key(model_key, g["key"]) for g in gens}
        stored = self.store.scores(list(keys.values()))
        return {g: stored[k]["value"] for g, k in keys.items()
                if k in stored and stored[k]["status"] == "ok"}

    def exact(self, model_key: str, task: Any, eos: bool) -> dict[str, list[float]]:
        """prompt text -> log-probs of every enumerable response (bandit)."""
        keys = {p.text: exact_key(model_key, p.text, task.enumerable_responses(p.text), eos)
                for p in self.prompts}
        stored = self.store.scores(list(keys.values()))
        return {text: stored[k]["info"]["logprobs"] for text, k in keys.items()
                if k in stored and stored[k]["status"] == "ok"}

    def pairs(self, base_gens: list[dict], gens: list[dict]) -> list[tuple[dict, dict]]:
        """(baseline sample i, candidate sample i) of every slot both models have."""
        base = {(g["prompt_id"], g["sample_index"]): g for g in base_gens}
        return [(base[(g["prompt_id"], g["sample_index"])], g) for g in gens
                if (g["prompt_id"], g["sample_index"]) in base]

    def judgments(self, judge_fp: dict, base_gens: list[dict],
                  gens: list[dict]) -> list[Judged]:
        pairs = self.pairs(base_gens, gens)
        keys = [judgment_key(judge_fp, c["prompt"], b["text"], c["text"]) for b, c in pairs]
        stored = self.store.judgments(keys)
        return [Judged(b, c, k, stored.get(k)) for k, (b, c) in zip(keys, pairs)]
