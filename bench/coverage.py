"""Do the leaderboard's 95% intervals cover the truth? A coverage study on an exact task.

Trains the spec's runs once, then repeats generation, scoring and judging K times with
different sampling seeds (`generation.seed` = base + k: every rerun's units are distinct and
cached by content) and, for every run and every interval the leaderboard prints, counts the
reruns whose interval contains the exact value (`evaluators.exact`, bandit only):

- win rate, bootstrap: [win_rate_ci_low, win_rate_ci_high] against exact_win_rate;
- win rate, clustered SE: win_rate ± 1.96 · win_rate_se (a Wald interval) against the same;
- Bradley-Terry: [bt_ci_low, bt_ci_high] against exact_bt_rating.

Reports each interval's coverage with its binomial standard error sqrt(c (1 - c) / n) and
its mean width, and ends with `coverage_win_rate=X` (the clustered-SE interval's coverage).

    python bench/coverage.py examples/bandit.yaml --reruns 200 [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import tempfile
import time
from typing import Any

Z95 = 1.959963984540054

INTERVALS = {
    "win_rate (bootstrap)": ("exact_win_rate",
                             lambda r: (r.get("win_rate_ci_low"), r.get("win_rate_ci_high"))),
    "win_rate (clustered SE)": ("exact_win_rate", lambda r: _wald(r)),
    "bt_rating (bootstrap)": ("exact_bt_rating", lambda r: (r.get("bt_ci_low"),
                                                            r.get("bt_ci_high"))),
}


def _wald(r: dict[str, Any]) -> tuple[float | None, float | None]:
    if r.get("win_rate") is None or r.get("win_rate_se") is None:
        return None, None
    return r["win_rate"] - Z95 * r["win_rate_se"], r["win_rate"] + Z95 * r["win_rate_se"]


def tally(records_by_rerun: list[list[dict[str, Any]]]) -> dict[str, dict[str, float | int]]:
    """Coverage (share of (rerun, run) cases whose interval holds the truth), its binomial
    SE and the mean width, per interval; cases without an interval or a truth are skipped
    and counted in `n_undefined`."""
    out = {}
    for name, (truth_key, interval) in INTERVALS.items():
        hits, widths, undefined = [], [], 0
        for records in records_by_rerun:
            for r in records:
                if r["is_baseline"]:
                    continue
                low, high = interval(r)
                truth = r.get(truth_key)
                if low is None or high is None or truth is None:
                    undefined += 1
                    continue
                hits.append(low <= truth <= high)
                widths.append(high - low)
        n = len(hits)
        c = sum(hits) / n if n else math.nan
        out[name] = {"coverage": c, "coverage_se": math.sqrt(c * (1 - c) / n) if n else math.nan,
                     "mean_width": sum(widths) / n if n else math.nan, "n": n,
                     "n_undefined": undefined}
    return out


def study(spec_path: str, reruns: int, overrides: list[str], base_seed: int = 1000,
          results_dir: str | None = None) -> tuple[dict, list[list[dict]]]:
    """Train once, rerun sampling and judging `reruns` times, return (tally, records)."""
    from evaluators.report import leaderboard_records
    from harness.pipeline import Experiment
    from harness.spec import load_spec

    spec = load_spec(spec_path, [*overrides, "report.embedding_diversity=false"])
    tmp = None if results_dir else tempfile.TemporaryDirectory()
    exp = Experiment(spec, results_dir or tmp.name, show_progress=False)
    exp.prepare()
    exp.train()
    settings = exp.report_settings()
    all_records = []
    for k in range(reruns):
        g = dataclasses.replace(spec.generation, seed=base_seed + k)
        exp.spec = dataclasses.replace(spec, generation=g)  # units follow the spec's seed
        exp.generate()
        exp.score()
        exp.judge()
        results, battles = exp.results()
        all_records.append(leaderboard_records(results, battles, spec.report.primary_judge,
                                               settings))
    return tally(all_records), all_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--reruns", type=int, default=200)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    t = time.time()
    result, _ = study(args.spec, args.reruns, args.overrides)
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores; "
          f"{args.reruns} reruns in {time.time() - t:.0f}s")
    for name, r in result.items():
        print(f"{name:26s} coverage {r['coverage']:.3f} ± {r['coverage_se']:.3f}  "
              f"mean width {r['mean_width']:.3g}  (n={r['n']}, undefined {r['n_undefined']})")
    print(f"coverage_win_rate={result['win_rate (clustered SE)']['coverage']:.3f}")


if __name__ == "__main__":
    main()
