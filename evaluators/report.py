"""Aggregate the store into leaderboard records and write them as .md, .csv and .json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.metrics import exact_distribution_metrics, per_prompt_distinct_n, self_bleu
from evaluators.scoring import exact_key, judgment_key, logp_key, score_key
from evaluators.stats import bootstrap_bt, win_rate

COLUMNS = ["label", "method", "params", "seed", "is_baseline", "win_rate", "win_rate_se",
           "discrete_win_rate", "lc_win_rate", "bt_rating", "bt_ci_low", "bt_ci_high",
           "mean_reward", "distinct_1", "distinct_2", "self_bleu", "entropy", "kl_to_ref",
           "n_prompts", "n_samples", "n_scored", "n_judged", "n_failed"]
EXACT = ["exact_kl_to_target", "exact_entropy", "exact_expected_reward", "exact_support_mass"]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def leaderboard_records(exp) -> list[dict[str, Any]]:
    """One record per model (the SFT reference and each run), read from the store only."""
    from trainers.losses import get_loss

    models, base = exp.models(), exp.baseline()
    exact = exp.task.enumerable_responses(exp.assets.eval_prompts[0].text) is not None
    ref_exact = _exact_logprobs(exp, models[0]) if exact else None
    base_gens = {(g["prompt_id"], g["sample_index"]): g for g in exp.store.generations(base.key)}

    records, battles = [], []
    for idx, model in enumerate(models):
        gens = exp.store.generations(model.key)
        rec: dict[str, Any] = {
            "label": model.label, "method": model.run.method if model.run else "sft",
            "params": model.run.params if model.run else {},
            "seed": model.run.seed if model.run else None, "is_baseline": model.key == base.key,
            "lc_win_rate": None, "n_prompts": len({g["prompt_id"] for g in gens}),
            "n_samples": len(gens),
        }
        rec.update(_sample_metrics(exp, model, models[0], gens))
        prefs, n_pairs = [], 0
        if model.key != base.key:
            judged, n_pairs = _judgments(exp, base_gens, gens)
            prefs = [p for _, p in judged]
            battles += [(prompt_id, idx, models.index(base), p) for prompt_id, p in judged]
        rec.update(win_rate(prefs), n_judged=len(prefs), n_failed=n_pairs - len(prefs))
        if exact:
            loss = get_loss(model.run.method, **model.run.params) if model.run else None
            rec.update(_exact_metrics(exp, model, loss, ref_exact))
        records.append(rec)

    if battles:
        point, low, high = bootstrap_bt(battles, len(models), anchor=models.index(base))
        for rec, p, lo, hi in zip(records, point, low, high):
            rec.update(bt_rating=round(float(p), 2), bt_ci_low=round(float(lo), 2),
                       bt_ci_high=round(float(hi), 2))
    return records


def _sample_metrics(exp, model, reference, gens: list[dict]) -> dict[str, Any]:
    """Reward, diversity, sequence entropy and Monte-Carlo KL over a model's own samples."""
    scorer = exp.scorers()[0]
    scores = exp.store.scores([score_key(scorer.fingerprint, g["key"]) for g in gens])
    rewards = [v["value"] for v in scores.values() if v["status"] == "ok"]
    own = exp.store.scores([logp_key(model.key, g["key"]) for g in gens])
    ref = exp.store.scores([logp_key(reference.key, g["key"]) for g in gens])
    lp_own, kl = [], []
    for g in gens:
        mine = own.get(logp_key(model.key, g["key"]))
        theirs = ref.get(logp_key(reference.key, g["key"]))
        if mine is not None:
            lp_own.append(mine["value"])
            if theirs is not None:
                kl.append(mine["value"] - theirs["value"])
    texts = [(g["prompt_id"], g["text"]) for g in gens]
    return {"mean_reward": _mean(rewards), "n_scored": len(rewards),
            "distinct_1": per_prompt_distinct_n(texts, 1),
            "distinct_2": per_prompt_distinct_n(texts, 2), "self_bleu": self_bleu(texts),
            "entropy": _mean([-v for v in lp_own]), "kl_to_ref": _mean(kl)}


def _judgments(exp, base_gens: dict, gens: list[dict]) -> tuple[list[tuple[str, float]], int]:
    """(prompt id, P(model beats baseline)) of every successful judgment, and the pair count."""
    judge = exp.judges()[0]
    pairs = [(base_gens[(g["prompt_id"], g["sample_index"])], g) for g in gens
             if (g["prompt_id"], g["sample_index"]) in base_gens]
    keys = [judgment_key(judge.fingerprint, c["prompt"], b["text"], c["text"]) for b, c in pairs]
    stored = exp.store.judgments(keys)
    judged = [(c["prompt_id"], stored[k]["preference"]) for k, (_, c) in zip(keys, pairs)
              if k in stored and stored[k]["status"] == "ok"]
    return judged, len(pairs)


def _exact_logprobs(exp, model) -> dict[str, np.ndarray]:
    out = {}
    for p in exp.assets.eval_prompts:
        key = exact_key(model.key, p.text, exp.task.enumerable_responses(p.text),
                        exp.assets.completion_eos)
        row = exp.store.scores([key]).get(key)
        if row is not None:
            out[p.text] = np.array(row["info"]["logprobs"])
    return out


def _exact_metrics(exp, model, loss, ref_exact) -> dict[str, float | None]:
    import torch

    own = _exact_logprobs(exp, model)
    per_prompt = []
    for prompt, logp in own.items():
        r = np.asarray(exp.task.true_rewards(prompt), dtype=float)
        target = None
        if loss is not None and prompt in ref_exact:
            ref = ref_exact[prompt] - np.log(np.exp(ref_exact[prompt]).sum())
            t = loss.optimal_logprobs(torch.tensor(r), torch.tensor(ref))
            target = None if t is None else t.numpy()
        per_prompt.append(exact_distribution_metrics(logp, r, target))
    out: dict[str, float | None] = {}
    for k in EXACT:
        values = [m[k] for m in per_prompt if m[k] is not None]
        out[k] = float(np.mean(values)) if values else None
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def write_leaderboard(records: list[dict[str, Any]], out_dir: Path, name: str) -> None:
    import pandas as pd

    exact = any("exact_entropy" in r for r in records)
    cols = COLUMNS + (EXACT if exact else [])
    ordered = sorted(records, key=lambda r: (not r["is_baseline"],
                                             -(r["win_rate"] if r["win_rate"] is not None else -1)))
    rows = [{c: r.get(c) for c in cols} for r in ordered]
    _atomic_write(out_dir / "leaderboard.json", json.dumps(rows, indent=2))
    frame = pd.DataFrame([{**r, "params": json.dumps(r["params"], sort_keys=True)} for r in rows],
                         columns=cols)
    _atomic_write(out_dir / "leaderboard.csv", frame.to_csv(index=False))
    shown = ["label", "win_rate", "win_rate_se", "bt_rating", "mean_reward", "distinct_1",
             "distinct_2", "self_bleu", "entropy", "kl_to_ref"] + (EXACT[:3] if exact else [])
    lines = [f"# Leaderboard: {name}", "",
             "Win rate (%) against the baseline (a tie counts one half) with its standard error; "
             "BT rating on the Elo scale (baseline = 1000) with its 95% bootstrap interval; "
             "entropy and KL in nats per sequence; self-BLEU 0-100 (higher = less diverse).",
             "", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        label = r["label"] + (" (baseline)" if r["is_baseline"] else "")
        cells = [_fmt(r.get(c)) for c in shown[1:]]
        if r.get("bt_ci_low") is not None and not r["is_baseline"]:
            cells[shown.index("bt_rating") - 1] += f" [{r['bt_ci_low']:.0f}, {r['bt_ci_high']:.0f}]"
        lines.append("| " + " | ".join([label] + cells) + " |")
    _atomic_write(out_dir / "leaderboard.md", "\n".join(lines) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
