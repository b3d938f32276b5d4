"""Aggregate the store into leaderboard records and write them as .md, .csv and .json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.collect import ExactPrompt, ModelResults
from evaluators.metrics import exact_distribution_metrics, per_prompt_distinct_n, self_bleu
from evaluators.stats import bootstrap_bt, win_rate
from harness.jsonio import dumps, write_text_atomic

COLUMNS = ["label", "method", "params", "seed", "is_baseline", "win_rate", "win_rate_se",
           "discrete_win_rate", "lc_win_rate", "bt_rating", "bt_ci_low", "bt_ci_high",
           "mean_reward", "distinct_1", "distinct_2", "self_bleu", "entropy", "kl_to_ref",
           "n_prompts", "n_samples", "n_scored", "n_judged", "n_failed"]
EXACT = ["exact_kl_to_target", "exact_entropy", "exact_expected_reward", "exact_support_mass"]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def leaderboard_records(results: list[ModelResults], judge: str | None = None
                        ) -> list[dict[str, Any]]:
    """One record per model (the SFT reference and each run) from plain results.

    `judge` names the judge whose verdicts give the win rates (default: the first one).
    """
    base = next(i for i, m in enumerate(results) if m.is_baseline)
    records, battles = [], []
    for idx, m in enumerate(results):
        rec: dict[str, Any] = {
            "label": m.label, "method": m.method, "params": m.params, "seed": m.seed,
            "is_baseline": m.is_baseline, "lc_win_rate": None,
            "n_prompts": len({s["prompt_id"] for s in m.samples}), "n_samples": len(m.samples),
        }
        rec.update(_sample_metrics(m.samples))
        prefs, n_pairs = [], 0
        if not m.is_baseline and m.judged:
            pairs = m.judged[judge] if judge is not None else next(iter(m.judged.values()))
            judged = [(j.candidate["prompt_id"], j.row["preference"]) for j in pairs if j.ok]
            prefs, n_pairs = [p for _, p in judged], len(pairs)
            battles += [(prompt_id, idx, base, p) for prompt_id, p in judged]
        rec.update(win_rate(prefs), n_judged=len(prefs), n_failed=n_pairs - len(prefs))
        if m.exact is not None:
            rec.update(_exact_metrics(m.exact))
        records.append(rec)

    if battles:
        point, low, high = bootstrap_bt(battles, len(results), anchor=base)
        for rec, p, lo, hi in zip(records, point, low, high):
            rec.update(bt_rating=round(float(p), 2), bt_ci_low=round(float(lo), 2),
                       bt_ci_high=round(float(hi), 2))
    return records


def _sample_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Reward, diversity, sequence entropy and Monte-Carlo KL over a model's own samples."""
    rewards = [s["reward"] for s in samples if s["reward"] is not None]
    lp_own = [s["logp"] for s in samples if s["logp"] is not None]
    kl = [s["logp"] - s["ref_logp"] for s in samples
          if s["logp"] is not None and s["ref_logp"] is not None]
    texts = [(s["prompt_id"], s["text"]) for s in samples]
    return {"mean_reward": _mean(rewards), "n_scored": len(rewards),
            "distinct_1": per_prompt_distinct_n(texts, 1),
            "distinct_2": per_prompt_distinct_n(texts, 2), "self_bleu": self_bleu(texts),
            "entropy": _mean([-v for v in lp_own]), "kl_to_ref": _mean(kl)}


def _exact_metrics(exact: list[ExactPrompt]) -> dict[str, float | None]:
    per_prompt = [exact_distribution_metrics(e.logprobs, e.rewards, e.target) for e in exact]
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
    write_text_atomic(out_dir / "leaderboard.json", dumps(rows, indent=2))
    frame = pd.DataFrame([{**r, "params": json.dumps(r["params"], sort_keys=True)} for r in rows],
                         columns=cols)
    write_text_atomic(out_dir / "leaderboard.csv", frame.to_csv(index=False))
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
    write_text_atomic(out_dir / "leaderboard.md", "\n".join(lines) + "\n")
