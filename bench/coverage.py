"""Do the leaderboard's 95% intervals cover the truth? A coverage study on an exact task.

Trains the spec's runs once, then repeats generation, scoring and judging K times with
different sampling seeds (`generation.seed` = base + k: every rerun's units are distinct and
cached by content) and, for every run (and every pair of runs) and every interval the
harness prints, counts the reruns whose interval contains the exact value
(`evaluators.exact`, bandit only):

- win rate, bootstrap: [win_rate_ci_low, win_rate_ci_high] against exact_win_rate;
- win rate, clustered SE: win_rate ± 1.96 · win_rate_se (a Wald interval), and the
  leaderboard's t interval [win_rate_t_ci_low, win_rate_t_ci_high] (Student's t on G - 1
  degrees of freedom, G = prompts), against the same;
- mean reward: the bootstrap's [mean_reward_ci_low, mean_reward_ci_high] and the t interval
  [mean_reward_t_ci_low, mean_reward_t_ci_high] against exact_mean_reward;
- Bradley-Terry: [bt_ci_low, bt_ci_high] against exact_bt_rating;
- paired difference of two runs' win rates (`spo-harness compare`): its paired-bootstrap
  interval against the difference of their exact win rates.

The length-controlled win rate is not studied: its target (the GLM's win rate at zero
length difference) has no closed form on the bandit.

Reports each interval's coverage with its binomial standard error sqrt(c (1 - c) / n) and
its mean width, and ends with `coverage_win_rate=X` (the clustered-SE interval's coverage).

    python bench/coverage.py examples/bandit.yaml --reruns 200 [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Z95 = 1.959963984540054

Case = tuple[float | None, float | None, float | None]  # (low, high, truth)


def _interval(low: str, high: str, truth: str) -> Callable[[dict[str, Any]], Case]:
    return lambda r: (r.get(low), r.get(high), r.get(truth))


def _wald(r: dict[str, Any], quantile: float) -> Case:
    if r.get("win_rate") is None or r.get("win_rate_se") is None:
        return None, None, r.get("exact_win_rate")
    half = quantile * r["win_rate_se"]
    return r["win_rate"] - half, r["win_rate"] + half, r.get("exact_win_rate")


# interval name -> (kind of record it reads, (record -> (low, high, truth)))
INTERVALS: dict[str, tuple[str, Callable[[dict[str, Any]], Case]]] = {
    "win_rate (bootstrap)": ("run", _interval("win_rate_ci_low", "win_rate_ci_high",
                                              "exact_win_rate")),
    "win_rate (clustered SE, z)": ("run", lambda r: _wald(r, Z95)),
    "win_rate (clustered SE, t)": ("run", _interval("win_rate_t_ci_low", "win_rate_t_ci_high",
                                                    "exact_win_rate")),
    "mean_reward (bootstrap)": ("run", _interval("mean_reward_ci_low", "mean_reward_ci_high",
                                                 "exact_mean_reward")),
    "mean_reward (clustered SE, t)": ("run", _interval("mean_reward_t_ci_low",
                                                       "mean_reward_t_ci_high",
                                                       "exact_mean_reward")),
    "bt_rating (bootstrap)": ("run", _interval("bt_ci_low", "bt_ci_high", "exact_bt_rating")),
    "win_rate difference (paired bootstrap)": ("pair", _interval("ci_low", "ci_high",
                                                                 "exact_diff")),
}


def tally(records_by_rerun: list[list[dict[str, Any]]]) -> dict[str, dict[str, float | int]]:
    """Coverage (share of (rerun, case) pairs whose interval holds the truth), its binomial
    SE and the mean width, per interval. A case is a run's leaderboard row (`kind` absent
    or "run"; the baseline is skipped) or a pair's comparison row (`kind` "pair"); cases
    without an interval or a truth are skipped and counted in `n_undefined`.

    The binomial SE sqrt(c (1 - c) / n) treats every case as independent; the runs of one
    rerun share its samples and prompts, so `coverage_se_clustered` (the CR1 SE of the mean
    hit with reruns as clusters) is the honest one where they are correlated.
    """
    out = {}
    for name, (kind, interval) in INTERVALS.items():
        hits, widths, clusters, undefined = [], [], [], 0
        for g, records in enumerate(records_by_rerun):
            for r in records:
                if r.get("kind", "run") != kind or r.get("is_baseline"):
                    continue
                low, high, truth = interval(r)
                if low is None or high is None or truth is None:
                    undefined += 1
                    continue
                hits.append(low <= truth <= high)
                widths.append(high - low)
                clusters.append(g)
        n = len(hits)
        c = sum(hits) / n if n else math.nan
        out[name] = {"coverage": c, "coverage_se": math.sqrt(c * (1 - c) / n) if n else math.nan,
                     "coverage_se_clustered": _clustered_se(hits, clusters, c),
                     "mean_width": sum(widths) / n if n else math.nan, "n": n,
                     "n_undefined": undefined}
    return out


def _clustered_se(hits: list[bool], clusters: list[int], c: float) -> float:
    """CR1 SE of the mean of `hits` with the given clusters: sqrt(G/(G-1) sum_g e_g^2) / n,
    e_g = the cluster's sum of (hit - c)."""
    sums: dict[int, float] = {}
    for h, g in zip(hits, clusters):
        sums[g] = sums.get(g, 0.0) + (h - c)
    n, groups = len(hits), len(sums)
    if groups < 2:
        return math.nan
    return math.sqrt(groups / (groups - 1) * sum(e * e for e in sums.values())) / n


def pair_records(results: list, judge: str, rounds: int, seed: int,
                 records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The paired win-rate difference of every two non-baseline runs, with its truth."""
    from evaluators.compare import compare_all

    exact = {r["label"]: r.get("exact_win_rate") for r in records}
    baselines = {m.label for m in results if m.is_baseline}
    rows = [r for r in compare_all(results, judge, rounds, seed)
            if r["metric"] == "win_rate" and not {r["a"], r["b"]} & baselines]
    for r in rows:
        ta, tb = exact.get(r["a"]), exact.get(r["b"])
        r.update(kind="pair", exact_diff=None if ta is None or tb is None else ta - tb)
    return rows


EXACT_TRUTHS = ("exact_win_rate", "exact_bt_rating", "exact_mean_reward")


def _records(exp: Any, spec: Any, settings: Any, seed: int) -> list[dict[str, Any]]:
    """One rerun: sample, score and judge with `seed`, and the leaderboard's rows plus every
    pair's comparison row."""
    from evaluators.report import leaderboard_records

    g = dataclasses.replace(spec.generation, seed=seed)
    exp.spec = dataclasses.replace(spec, generation=g)  # units follow the spec's seed
    exp.generate()
    exp.score()
    exp.judge()
    results, battles = exp.results()
    records = leaderboard_records(results, battles, spec.report.primary_judge, settings)
    judge = records[0]["primary_judge"]
    return records + pair_records(results, judge, spec.report.bootstrap_rounds,
                                  spec.report.bootstrap_seed, records)


def study(spec_path: str, reruns: int, overrides: list[str], base_seed: int = 1000,
          results_dir: str | None = None, prompts: int | None = None,
          progress: bool = False) -> tuple[dict, list[list[dict]]]:
    """Train once, rerun sampling and judging `reruns` times, return (tally, records).

    `prompts`: each rerun evaluates on a fresh draw of this many of the task's eval prompts
    (without replacement), and every interval is checked against the truth over all of
    them, the population a prompt-bootstrap interval generalises to. None: every rerun uses
    all the prompts, and the truth is over that fixed set (then the prompt-to-prompt
    variance the intervals include is not part of the reruns' spread: they over-cover).
    """
    import numpy as np
    from tqdm import tqdm

    from harness.pipeline import Experiment
    from harness.spec import load_spec

    spec = load_spec(spec_path, [*overrides, "report.embedding_diversity=false"])
    tmp = None if results_dir else tempfile.TemporaryDirectory()
    exp = Experiment(spec, results_dir or tmp.name, show_progress=False)
    exp.prepare()
    exp.train()
    settings = exp.report_settings()
    population = list(exp.assets.eval_prompts)
    truth: dict[str, dict[str, Any]] = {}
    if prompts is not None:
        if not 1 <= prompts <= len(population):
            raise SystemExit(f"--prompts must be in 1..{len(population)} (the task's prompts)")
        truth = {r["label"]: {k: r.get(k) for k in EXACT_TRUTHS}
                 for r in _records(exp, spec, settings, base_seed - 1) if "label" in r}
    draw = np.random.default_rng(base_seed)
    all_records = []
    for k in tqdm(range(reruns), desc="reruns", disable=not progress):
        if prompts is not None:
            # what `data.eval_prompts_file` with these prompts would give, without the file
            pick = np.sort(draw.choice(len(population), size=prompts, replace=False))
            exp.assets.eval_prompts = [population[i] for i in pick]
        records = _records(exp, spec, settings, base_seed + k)
        records.append({"kind": "rerun", "seed": base_seed + k,
                        "prompt_ids": [p.id for p in exp.assets.eval_prompts]})
        for r in records:
            if r.get("kind") == "pair" and truth:
                ta, tb = truth[r["a"]]["exact_win_rate"], truth[r["b"]]["exact_win_rate"]
                r["exact_diff"] = None if ta is None or tb is None else ta - tb
            elif "label" in r and truth:
                r.update(truth[r["label"]])
        all_records.append(records)
    return tally(all_records), all_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--reruns", type=int, default=200)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--prompts", type=int, help="evaluate each rerun on a fresh draw of this "
                    "many of the task's prompts, against the truth over all of them")
    ap.add_argument("--out", help="write the tally and every rerun's records here (JSON)")
    ap.add_argument("--results-dir", help="keep the trained runs and samples here (default: "
                    "a temporary folder); a rerun of the study then reuses them")
    args = ap.parse_args()
    t = time.time()
    result, records = study(args.spec, args.reruns, args.overrides,
                            results_dir=args.results_dir, prompts=args.prompts, progress=True)
    runs = [r for r in records[0] if "label" in r]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; "
          f"{args.reruns} reruns in {time.time() - t:.0f}s; per rerun: {runs[0]['n_prompts']} "
          f"prompts x {runs[0]['n_samples'] // max(1, runs[0]['n_prompts'])} samples, "
          f"{len(runs) - 1} runs against the baseline")
    for name, r in result.items():
        print(f"{name:40s} coverage {r['coverage']:.3f} ± {r['coverage_se']:.3f} "
              f"(clustered by rerun ± {r['coverage_se_clustered']:.3f})  "
              f"mean width {r['mean_width']:.3g}  (n={r['n']}, undefined {r['n_undefined']})")
    if args.out:
        import json

        Path(args.out).write_text(json.dumps({"spec": args.spec, "overrides": args.overrides,
                                              "prompts": args.prompts, "tally": result,
                                              "records": records}, default=str))
    print(f"coverage_win_rate={result['win_rate (clustered SE, z)']['coverage']:.3f}")


if __name__ == "__main__":
    main()
