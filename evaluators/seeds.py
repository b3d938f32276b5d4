"""Multi-seed experiments: one row per configuration (method + hyperparameters).

A configuration trained with S seeds has S models that all answered the same prompts. Its
row reports, per metric, the mean over seeds, the across-seed standard deviation and a 95%
interval from a two-stage bootstrap (`stats.seed_prompt_bootstrap`): each round resamples
the seeds with replacement and the prompts with replacement (the same prompts for every
seed, because every seed answered the same ones), so the interval carries both the
training-seed variance and the prompt variance. With one seed it is the prompt bootstrap.
Written as `leaderboard_by_config.{md,csv,json}`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.collect import ModelResults
from harness.jsonio import dumps, write_text_atomic

METRICS = ("win_rate", "mean_reward", "entropy", "kl_to_ref")


def per_prompt_values(m: ModelResults, metric: str, judge: str | None) -> dict[str, float]:
    """prompt id -> the model's mean of `metric` over that prompt's samples or judgments."""
    acc: dict[str, list[float]] = defaultdict(list)
    if metric == "win_rate":
        for j in m.judged.get(judge, []) if judge else []:
            if j.ok:
                acc[j.candidate["prompt_id"]].append(100.0 * float(j.row["preference"]))
    else:
        for s in m.samples:
            if metric == "mean_reward":
                v = s["reward"]
            elif metric == "entropy":
                v = None if s["logp"] is None else -s["logp"]
            else:  # kl_to_ref
                v = None if s["logp"] is None or s["ref_logp"] is None \
                    else s["logp"] - s["ref_logp"]
            if v is not None:
                acc[s["prompt_id"]].append(float(v))
    return {p: float(np.mean(v)) for p, v in acc.items()}


def config_rows(results: list[ModelResults], judge: str | None, rounds: int,
                seed: int) -> list[dict[str, Any]]:
    """One row per configuration of the runs (the baseline is not a configuration)."""
    from evaluators.stats import seed_prompt_bootstrap

    prompts = sorted({s["prompt_id"] for m in results for s in m.samples})
    index = {p: i for i, p in enumerate(prompts)}
    groups: dict[str, list[ModelResults]] = defaultdict(list)
    for m in results:
        if not m.is_baseline:
            groups[json.dumps([m.method, m.params], sort_keys=True)].append(m)
    rows = []
    for key, runs in groups.items():
        method, params = json.loads(key)
        row: dict[str, Any] = {"method": method, "params": params,
                               "seeds": sorted(r.seed for r in runs if r.seed is not None),
                               "labels": [r.label for r in runs]}
        for metric in METRICS:
            matrix = np.full((len(runs), len(prompts)), np.nan)
            for i, r in enumerate(runs):
                for p, v in per_prompt_values(r, metric, judge).items():
                    matrix[i, index[p]] = v
            if np.isnan(matrix).all():
                row.update({metric: None, f"{metric}_seed_sd": None,
                            f"{metric}_ci_low": None, f"{metric}_ci_high": None})
                continue
            st = seed_prompt_bootstrap(matrix, rounds=rounds, seed=seed)
            row.update({metric: st["mean"], f"{metric}_seed_sd": st["seed_sd"],
                        f"{metric}_ci_low": st["ci_low"], f"{metric}_ci_high": st["ci_high"]})
        row["n_seeds"] = len(runs)
        rows.append(row)
    return sorted(rows, key=lambda r: -(r["win_rate"] if r["win_rate"] is not None else -1))


def write_by_config(results: list[ModelResults], records: list[dict[str, Any]], out_dir: Path,
                    settings: Any) -> list[dict[str, Any]]:
    import pandas as pd

    judge = records[0].get("primary_judge") if records else None
    rows = config_rows(results, judge, settings.rounds, settings.seed)
    if not rows:
        return rows
    write_text_atomic(out_dir / "leaderboard_by_config.json", dumps(rows, indent=2))
    frame = pd.DataFrame([{**r, "params": json.dumps(r["params"], sort_keys=True),
                           "seeds": " ".join(map(str, r["seeds"])),
                           "labels": " ".join(r["labels"])} for r in rows])
    write_text_atomic(out_dir / "leaderboard_by_config.csv", frame.to_csv(index=False))
    lines = ["# Leaderboard by configuration", "",
             f"Judge: `{judge}`. Each metric: mean over seeds, across-seed SD in parentheses, "
             "and a 95% interval from a bootstrap that resamples both seeds and prompts.", "",
             "| method | params | seeds | " + " | ".join(METRICS) + " |",
             "|" + "---|" * (3 + len(METRICS))]
    for r in rows:
        cells = []
        for m in METRICS:
            if r[m] is None:
                cells.append("–")
                continue
            sd = f" ({r[f'{m}_seed_sd']:.3g})" if r[f"{m}_seed_sd"] is not None else ""
            lo, hi = r[f"{m}_ci_low"], r[f"{m}_ci_high"]
            ci = f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else ""
            cells.append(f"{r[m]:.4g}{sd}{ci}")
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {r['method']} | {params} | {len(r['seeds'])} | " + " | ".join(cells)
                     + " |")
    write_text_atomic(out_dir / "leaderboard_by_config.md", "\n".join(lines) + "\n")
    return rows

