"""Store-backed units of the score and judge stages.

Each function computes only what the store lacks and returns (computed, taken from store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.hashing import content_hash
from harness.store import Store

BATCH = 64


def pointwise_scores(store: Store, scorer: Any, gens: list[dict]) -> tuple[int, int]:
    """One score per generation, keyed by (scorer fingerprint, generation key)."""
    fp = content_hash(scorer.fingerprint)
    keys = {g["key"]: score_key(scorer.fingerprint, g["key"]) for g in gens}
    done = {k for k, v in store.scores(list(keys.values())).items() if v["status"] == "ok"}
    todo = [g for g in gens if keys[g["key"]] not in done]
    for i in range(0, len(todo), BATCH):
        chunk = todo[i:i + BATCH]
        by_prompt: dict[str, list[dict]] = {}
        for g in chunk:  # one call per prompt: model-based scorers batch its completions
            by_prompt.setdefault(g["prompt"], []).append(g)
        rows = []
        for prompt, group in by_prompt.items():
            try:
                values = [float(v) for v in scorer.score(prompt, [g["text"] for g in group])]
                statuses = ["ok"] * len(group)
            except Exception as exc:  # a scorer failure is recorded, counted and retried
                values = [None] * len(group)
                statuses = [f"failed: {type(exc).__name__}: {exc}"[:500]] * len(group)
            rows += [{"key": keys[g["key"]], "scorer": fp, "generation_key": g["key"],
                      "value": v, "status": st, "info": {"name": scorer.fingerprint.get("scorer")}}
                     for g, v, st in zip(group, values, statuses)]
        store.put_scores(rows)
    return len(todo), len(gens) - len(todo)


def score_key(scorer_fp: dict, generation_key: str) -> str:
    return content_hash({"scorer": content_hash(scorer_fp), "generation": generation_key})


def logp_key(model_key: str, generation_key: str) -> str:
    return content_hash({"logp-under": model_key, "generation": generation_key})


def _load(path: Path):
    from harness.base_models import load_causal_lm, load_tokenizer

    return load_causal_lm(path).eval(), load_tokenizer(path)


def logp_scores(store: Store, model_key: str, model_path: Path, gens: list[dict]) -> tuple[int, int]:
    """log pi(y|x) of each sampled completion (EOS included when sampled) under a model."""
    from trainers.logprobs import batched_completion_logps
    from trainers.tokenize import Encoded, encode_prompt

    keys = {g["key"]: logp_key(model_key, g["key"]) for g in gens}
    done = set(store.scores(list(keys.values())))
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
                               "generation_key": g["key"], "value": v, "status": "ok"}
                              for g, v in zip(chunk, values)])
    return len(todo), len(gens) - len(todo)


def exact_key(model_key: str, prompt: str, responses: list[str], eos: bool) -> str:
    return content_hash({"exact-distribution": model_key, "prompt": prompt,
                         "responses": responses, "eos": eos})


def exact_distributions(store: Store, task: Any, model_key: str, model_path: Path,
                        prompts: list, add_eos: bool = True) -> tuple[int, int]:
    """Sequence log-probs of every enumerable response (bandit), one unit per prompt."""
    from trainers.logprobs import batched_completion_logps
    from trainers.tokenize import encode

    keys = {p.id: exact_key(model_key, p.text, task.enumerable_responses(p.text), add_eos)
            for p in prompts}
    done = set(store.scores(list(keys.values())))
    todo = [p for p in prompts if keys[p.id] not in done]
    if todo:
        model, tok = _load(model_path)
        rows = []
        for p in todo:
            responses = task.enumerable_responses(p.text)
            enc = [encode(tok, p.text, r, 512, add_eos) for r in responses]
            logps = batched_completion_logps(model, enc, tok.pad_token_id).tolist()
            rows.append({"key": keys[p.id], "scorer": f"exact:{model_key}", "generation_key": p.id,
                         "value": None, "status": "ok",
                         "info": {"responses": responses, "logprobs": logps}})
        store.put_scores(rows)
    return len(todo), len(prompts) - len(todo)


def judgment_key(judge_fp: dict, prompt: str, baseline: str, candidate: str) -> str:
    # Content-keyed like AlpacaEval's cache, but with the judge's full fingerprint in the key.
    return content_hash({"judge": content_hash(judge_fp), "prompt": prompt,
                         "baseline": baseline, "candidate": candidate})


def pairwise_judgments(store: Store, judge: Any, base_gens: list[dict],
                       cand_gens: list[dict]) -> tuple[int, int]:
    """Judge sample i of each prompt against the baseline's sample i; failures retried later.

    A judge with `judge_pairs` (LLM and reward-model judges) gets a whole batch of pairs at
    once, across prompts, and returns an info dict per judgment (calls, tokens, raw verdicts,
    position flips) that is stored beside it; other judges are asked one pair at a time.
    """
    base = {(g["prompt_id"], g["sample_index"]): g for g in base_gens}
    pairs = [(base[(g["prompt_id"], g["sample_index"])], g) for g in cand_gens
             if (g["prompt_id"], g["sample_index"]) in base]
    keys = [judgment_key(judge.fingerprint, c["prompt"], b["text"], c["text"]) for b, c in pairs]
    stored = store.judgments(keys)
    todo = [(k, b, c) for k, (b, c) in zip(keys, pairs)
            if k not in stored or stored[k]["status"] != "ok"]
    seen: set[str] = set()
    unique = []
    for k, b, c in todo:
        if k not in seen:
            seen.add(k)
            unique.append((k, b, c))
    for i in range(0, len(unique), BATCH):
        chunk = unique[i:i + BATCH]
        results = _judge_chunk(judge, [(c["prompt"], b["text"], c["text"]) for _, b, c in chunk])
        store.put_judgments([
            {"key": k, "judge": content_hash(judge.fingerprint), "prompt_id": c["prompt_id"],
             "baseline_key": b["key"], "candidate_key": c["key"], "preference": p,
             "status": status, "info": info}
            for (k, b, c), (p, status, info) in zip(chunk, results)])
    return len(todo), len(pairs) - len(todo)


def _judge_chunk(judge: Any, items: list[tuple[str, str, str]]) -> list[tuple[Any, str, dict]]:
    """(preference, status, info) per (prompt, baseline, candidate); never raises."""
    def failed(exc: Exception) -> str:
        return f"failed: {type(exc).__name__}: {exc}"[:500]

    def status(p: Any, info: dict) -> str:
        if p is not None:
            return "ok"
        return f"failed: {info['error']}"[:500] if info.get("error") else "failed: no verdict"

    if hasattr(judge, "judge_pairs"):
        try:
            results = judge.judge_pairs(items)
        except Exception as exc:  # the whole batch is recorded as failed and retried
            return [(None, failed(exc), {}) for _ in items]
        return [(p, status(p, info), info) for p, info in results]
    out = []
    for prompt, b, c in items:
        try:
            if hasattr(judge, "judge_detailed"):
                ((p, info),) = judge.judge_detailed(prompt, [b], [c])
            else:
                (p,), info = judge.judge(prompt, [b], [c]), {}
            out.append((p, status(p, info), info))
        except Exception as exc:
            out.append((None, failed(exc), {}))
    return out
