"""Store-backed units of the score and judge stages.

Each function computes only what the store lacks and returns (computed, taken from store).
The generations they take come from `harness.units.Units` (the spec's slots only), and every
key comes from `harness.units`, the module the readers use too.

A value that is not a finite number (a reward model's NaN, a judge's probability outside
[0, 1]) is never stored as `ok`: it would turn every mean, SE and rating into NaN. It is
stored as failed, counted in `n_failed` and retried on the next run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.errors import ServiceError
from harness.hashing import canonical_json, content_hash
from harness.store import Store
from harness.units import Units, exact_key, judgment_key, logp_key, score_key

__all__ = ["exact_key", "judgment_key", "logp_key", "score_key", "pointwise_scores",
           "logp_scores", "exact_distributions", "pairwise_judgments"]

BATCH = 64


def _bad_number(value: Any, low: float = -math.inf, high: float = math.inf) -> str | None:
    """Why `value` is not a usable number in [low, high], or None if it is."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"not a number ({type(value).__name__})"
    if not math.isfinite(value):
        return f"non-finite value {value}"
    if not low <= value <= high:
        return f"value {value} outside [{low:g}, {high:g}]"
    return None


def pointwise_scores(store: Store, scorer: Any, gens: list[dict]) -> tuple[int, int]:
    """One score per generation, keyed by (scorer fingerprint, generation key)."""
    fp = content_hash(scorer.fingerprint)
    keys = {g["key"]: score_key(scorer.fingerprint, g["key"]) for g in gens}
    done = {k for k, v in store.scores(list(keys.values())).items() if v["status"] == "ok"}
    todo = [g for g in gens if keys[g["key"]] not in done]
    for i in range(0, len(todo), BATCH):
        chunk = todo[i:i + BATCH]
        by_prompt: dict[str, list[dict]] = {}  # by its content: a prompt may be messages
        for g in chunk:  # one call per prompt: model-based scorers batch its completions
            by_prompt.setdefault(canonical_json(g["prompt"]), []).append(g)
        rows = []
        for group in by_prompt.values():
            prompt = group[0]["prompt"]
            try:
                raw = list(scorer.score(prompt, [g["text"] for g in group]))
                if len(raw) != len(group):
                    raise ValueError(f"{len(raw)} scores for {len(group)} completions")
                problems = [_bad_number(v) for v in raw]
                values = [None if bad else float(v) for v, bad in zip(raw, problems)]
                statuses = [f"failed: {bad}" if bad else "ok" for bad in problems]
            except Exception as exc:  # a scorer failure is recorded, counted and retried
                values = [None] * len(group)
                statuses = [f"failed: {type(exc).__name__}: {exc}"[:500]] * len(group)
            rows += [{"key": keys[g["key"]], "scorer": fp, "generation_key": g["key"],
                      "value": v, "status": st, "info": {"name": scorer.fingerprint.get("scorer")}}
                     for g, v, st in zip(group, values, statuses)]
        store.put_scores(rows)
    return len(todo), len(gens) - len(todo)


def _load(path: Path):
    from harness.base_models import load_causal_lm, load_tokenizer

    return load_causal_lm(path).eval(), load_tokenizer(path)


def logp_scores(store: Store, model_key: str, model_path: Path, gens: list[dict]) -> tuple[int, int]:
    """log pi(y|x) of each sampled completion (EOS included when sampled) under a model."""
    from trainers.logprobs import batched_completion_logps
    from trainers.tokenize import Encoded, encode_prompt

    keys = {g["key"]: logp_key(model_key, g["key"]) for g in gens}
    done = {k for k, v in store.scores(list(keys.values())).items() if v["status"] == "ok"}
    todo = [g for g in gens if keys[g["key"]] not in done]
    if todo:
        model, tok = _load(model_path)
        for i in range(0, len(todo), BATCH):
            chunk = todo[i:i + BATCH]
            enc = [Encoded(encode_prompt(tok, g["prompt"]),
                           g["token_ids"] + ([tok.eos_token_id] if g["info"].get("finished") else []))
                   for g in chunk]
            values = batched_completion_logps(model, enc, tok.pad_token_id, BATCH).tolist()
            store.put_scores([{"key": keys[g["key"]], "scorer": f"logp:{model_key}",
                               "generation_key": g["key"],
                               "value": None if _bad_number(v) else v,
                               "status": f"failed: {_bad_number(v)}" if _bad_number(v) else "ok"}
                              for g, v in zip(chunk, values)])
    return len(todo), len(gens) - len(todo)


def exact_distributions(store: Store, task: Any, model_key: str, model_path: Path,
                        prompts: list, add_eos: bool = True) -> tuple[int, int]:
    """Sequence log-probs of every enumerable response (bandit), one unit per prompt."""
    from trainers.logprobs import batched_completion_logps
    from trainers.tokenize import encode

    keys = {p.id: exact_key(model_key, p.text, task.enumerable_responses(p.text), add_eos)
            for p in prompts}
    done = {k for k, v in store.scores(list(keys.values())).items() if v["status"] == "ok"}
    todo = [p for p in prompts if keys[p.id] not in done]
    if todo:
        model, tok = _load(model_path)
        rows = []
        for p in todo:
            responses = task.enumerable_responses(p.text)
            enc = [encode(tok, p.text, r, 512, add_eos) for r in responses]
            logps = batched_completion_logps(model, enc, tok.pad_token_id).tolist()
            bad = next((b for b in map(_bad_number, logps) if b), None)
            rows.append({"key": keys[p.id], "scorer": f"exact:{model_key}", "generation_key": p.id,
                         "value": None, "status": f"failed: {bad}" if bad else "ok",
                         "info": {"responses": responses, "logprobs": logps}})
        store.put_scores(rows)
    return len(todo), len(prompts) - len(todo)


def pairwise_judgments(units: Units, judge: Any, base_gens: list[dict],
                       cand_gens: list[dict]) -> tuple[int, int]:
    """Judge sample i of each prompt against the baseline's sample i; failures retried later.

    A judge with `judge_pairs` (LLM and reward-model judges) gets a whole batch of pairs at
    once, across prompts, and returns an info dict per judgment (calls, tokens, raw verdicts,
    position flips) that is stored beside it; other judges are asked one pair at a time.
    """
    judged = units.judgments(judge.fingerprint, base_gens, cand_gens)
    todo = [(j.key, j.baseline, j.candidate) for j in judged if not j.ok]
    seen: set[str] = set()
    unique = []
    for k, b, c in todo:
        if k not in seen:
            seen.add(k)
            unique.append((k, b, c))
    for i in range(0, len(unique), BATCH):
        chunk = unique[i:i + BATCH]
        results = _judge_chunk(judge, [(c["prompt"], b["text"], c["text"]) for _, b, c in chunk])
        units.store.put_judgments([
            {"key": k, "judge": content_hash(judge.fingerprint), "prompt_id": c["prompt_id"],
             "baseline_key": b["key"], "candidate_key": c["key"], "preference": p,
             "status": status, "info": info}
            for (k, b, c), (p, status, info) in zip(chunk, results)])
    return len(todo), len(judged) - len(todo)


def _judge_chunk(judge: Any, items: list[tuple[str, str, str]]) -> list[tuple[Any, str, dict]]:
    """(preference, status, info) per (prompt, baseline, candidate); never raises."""
    def failed(exc: Exception) -> str:
        return f"failed: {type(exc).__name__}: {exc}"[:500]

    def status(p: Any, info: dict) -> str:
        if p is not None:
            bad = _bad_number(p, 0.0, 1.0)
            return f"failed: preference {bad}" if bad else "ok"
        return f"failed: {info['error']}"[:500] if info.get("error") else "failed: no verdict"

    def value(p: Any) -> float | None:  # only a usable probability is stored
        return float(p) if p is not None and _bad_number(p, 0.0, 1.0) is None else None

    if hasattr(judge, "judge_pairs"):
        try:
            results = judge.judge_pairs(items)
        except ServiceError:  # the judge's server keeps failing: stop (exit 1), rerun resumes
            raise
        except Exception as exc:  # the whole batch is recorded as failed and retried
            return [(None, failed(exc), {}) for _ in items]
        if len(results) != len(items):
            return [(None, f"failed: {len(results)} verdicts for {len(items)} pairs", {})
                    for _ in items]
        return [(value(p), status(p, info), info) for p, info in results]
    out = []
    for prompt, b, c in items:
        try:
            if hasattr(judge, "judge_detailed"):
                ((p, info),) = judge.judge_detailed(prompt, [b], [c])
            else:
                (p,), info = judge.judge(prompt, [b], [c]), {}
            out.append((value(p), status(p, info), info))
        except ServiceError:
            raise
        except Exception as exc:
            out.append((None, failed(exc), {}))
    return out
