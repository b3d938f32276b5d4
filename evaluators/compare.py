"""Head to head: is model A better than model B, beyond the noise of the prompt sample?

Both models answered the same prompts, so their metrics are compared *paired*: every
bootstrap round draws one resample of prompts (`evaluators.bootstrap.prompt_weights`, the
report's resamples) and computes both models' metric on it; the difference's interval and
p-value come from those paired differences (`stats.paired_bootstrap`). Pairing removes the
prompt-difficulty variance the two models share, so it is far tighter than comparing two
independent intervals. A sign test on per-prompt outcomes (`stats.sign_test`) is reported
beside it, free of any distributional assumption. With many pairs (`--all`), p-values are
also Holm-adjusted for the number of comparisons.

LC is refitted on each resample (AlpacaEval's GLM is not a mean over prompts), so its
paired interval uses the first `LC_ROUNDS` resamples only.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.bootstrap import bootstrap_ratio_of_sums, cluster_sums, prompt_weights
from evaluators.collect import ModelResults
from harness.errors import InputError
from harness.jsonio import dumps, write_text_atomic

LC_ROUNDS = 100
METRICS = ("win_rate", "lc_win_rate", "mean_reward", "entropy")


def _values(m: ModelResults, metric: str, judge: str) -> list[tuple[str, float]]:
    """(prompt id, value) of every judgment or sample of `m` that has one."""
    if metric in ("win_rate", "lc_win_rate"):
        if m.is_baseline:  # the baseline against itself: 50 on every prompt
            return [(s["prompt_id"], 50.0) for s in m.samples]
        return [(j.candidate["prompt_id"], 100.0 * float(j.row["preference"]))
                for j in m.judged.get(judge, []) if j.ok]
    if metric == "mean_reward":
        return [(s["prompt_id"], float(s["reward"])) for s in m.samples
                if s["reward"] is not None]
    return [(s["prompt_id"], -float(s["logp"])) for s in m.samples if s["logp"] is not None]


def _draws(values: list[tuple[str, float]], prompts: list[str],
           weights: np.ndarray) -> tuple[float | None, np.ndarray]:
    if not values:
        return None, np.full(len(weights), np.nan)
    _, sums, counts = cluster_sums([v for _, v in values], [p for p, _ in values], prompts)
    return float(np.mean([v for _, v in values])), bootstrap_ratio_of_sums(sums, counts, weights)


def _lc_rows(m: ModelResults, judge: str) -> Any:
    import pandas as pd

    return pd.DataFrame([{"prompt_id": j.candidate["prompt_id"], "model": m.label,
                          "preference": float(j.row["preference"]),
                          "baseline_text_len": len(j.baseline["text"]),
                          "model_text_len": len(j.candidate["text"])}
                         for j in m.judged.get(judge, []) if j.ok])


def _replicate(frame: Any, prompts: list[str], counts: np.ndarray) -> Any:
    """The rows of `frame` as one prompt resample draws them (each prompt `count` times)."""
    import pandas as pd

    if frame is None or frame.empty:
        return frame
    by_prompt = dict(tuple(frame.groupby("prompt_id")))
    parts = [by_prompt[p] for p, k in zip(prompts, counts) if p in by_prompt
             for _ in range(int(k))]
    return pd.concat(parts, ignore_index=True) if parts else frame.iloc[:0]


def _lc_draws(m: ModelResults, judge: str, prompts: list[str], weights: np.ndarray,
              difficulty: dict[str, float] | None,
              gamed: Any = None) -> tuple[float | None, np.ndarray]:
    """LC point and its value on each of the first LC_ROUNDS resamples (rows replicated).

    The gamed baseline rows, when there are any, are resampled with the same prompts, so
    the point is the leaderboard's LC (same variant) and each round refits that GLM.
    """
    from evaluators.length_control import lc_win_rate

    if m.is_baseline:
        return 50.0, np.full(len(weights), 50.0)
    rows = _lc_rows(m, judge)
    if rows.empty:
        return None, np.full(len(weights), np.nan)
    point = lc_win_rate(rows, difficulty, gamed)["lc_win_rate"]
    draws = np.full(len(weights), np.nan)
    for r, w in enumerate(weights[:LC_ROUNDS]):
        sample = _replicate(rows, prompts, w)
        if not sample.empty:
            value = lc_win_rate(sample, difficulty, _replicate(gamed, prompts, w))["lc_win_rate"]
            draws[r] = np.nan if value is None else value
    return point, draws


def _difficulty(results: list[ModelResults], judge: str) -> dict[str, float] | None:
    import pandas as pd

    from evaluators.length_control import instruction_difficulty

    frames = [f for f in (_lc_rows(m, judge) for m in results if not m.is_baseline)
              if not f.empty]
    if not frames:
        return None
    return instruction_difficulty(pd.concat(frames)[["prompt_id", "model", "preference"]])


class _Draws:
    """Each model's point and bootstrap draws per metric, computed once per model."""

    def __init__(self, results: list[ModelResults], judge: str, rounds: int, seed: int,
                 with_lc: bool, gamed: Any = None) -> None:
        self.by_label = {m.label: m for m in results}
        self.judge = judge
        self.prompts = sorted({s["prompt_id"] for m in results for s in m.samples})
        self.weights = prompt_weights(len(self.prompts), rounds, seed)
        self.difficulty = _difficulty(results, judge) if with_lc else None
        self.gamed = gamed
        self.cache: dict[tuple[str, str], tuple[float | None, np.ndarray]] = {}

    def get(self, label: str, metric: str) -> tuple[float | None, np.ndarray]:
        if (label, metric) not in self.cache:
            m = self.by_label[label]
            if metric == "lc_win_rate":
                point, draws = _lc_draws(m, self.judge, self.prompts, self.weights,
                                         self.difficulty, self.gamed)
                draws = draws[:LC_ROUNDS]
            else:
                point, draws = _draws(_values(m, metric, self.judge), self.prompts,
                                      self.weights)
            self.cache[label, metric] = point, draws
        return self.cache[label, metric]


def head_to_head(results: list[ModelResults], a: str, b: str, judge: str, rounds: int = 1000,
                 seed: int = 0, with_lc: bool = True, draws: _Draws | None = None,
                 gamed: Any = None) -> list[dict[str, Any]]:
    """One row per metric: A's value, B's, the paired difference, its interval and p-values.

    `gamed`: the judge's gamed-baseline rows (`Battles.gamed` as a DataFrame), so that LC is
    the leaderboard's variant.
    """
    from evaluators.stats import paired_bootstrap, sign_test

    labels = [m.label for m in results]
    for label in (a, b):
        if label not in labels:
            raise InputError(f"no model '{label}' in this experiment; models: "
                             f"{', '.join(labels)}")
    if a == b:
        raise InputError(f"compare needs two different models, got '{a}' twice")
    draws = draws or _Draws(results, judge, rounds, seed, with_lc, gamed)
    rows = []
    for metric in METRICS:
        if metric == "lc_win_rate" and not with_lc:
            continue
        (pa, da), (pb, db) = draws.get(a, metric), draws.get(b, metric)
        row: dict[str, Any] = {"metric": metric, "a": a, "b": b, "value_a": pa, "value_b": pb}
        if pa is None or pb is None:
            row.update(diff=None, ci_low=None, ci_high=None, p_value=None)
        else:
            row.update(paired_bootstrap(da, db, pa, pb))
        row["bootstrap_rounds"] = int(len(da))
        if metric != "lc_win_rate":
            row.update({f"sign_{k}": v for k, v in sign_test(
                _prompt_means(_values(draws.by_label[a], metric, judge)),
                _prompt_means(_values(draws.by_label[b], metric, judge))).items()})
        rows.append(row)
    return rows


def _prompt_means(values: list[tuple[str, float]]) -> dict[str, float]:
    acc: dict[str, list[float]] = defaultdict(list)
    for p, v in values:
        acc[p].append(v)
    return {p: float(np.mean(v)) for p, v in acc.items()}


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (family-wise error), None entries left out and kept None."""
    idx = [i for i, p in enumerate(p_values) if p is not None]
    order = sorted(idx, key=lambda i: p_values[i])
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * float(p_values[i])))
        out[i] = running
    return out


def compare_all(results: list[ModelResults], judge: str, rounds: int, seed: int,
                with_lc: bool = False, gamed: Any = None) -> list[dict[str, Any]]:
    """head_to_head for every pair of models, p-values Holm-adjusted per metric."""
    rows = []
    draws = _Draws(results, judge, rounds, seed, with_lc, gamed)
    for a, b in itertools.combinations([m.label for m in results], 2):
        rows += head_to_head(results, a, b, judge, rounds, seed, with_lc, draws)
    for metric in METRICS:
        sub = [r for r in rows if r["metric"] == metric]
        for r, p in zip(sub, holm([r.get("p_value") for r in sub])):
            r["p_holm"] = p
    return rows


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A markdown table of head-to-head rows."""
    cols = ["a", "b", "metric", "value_a", "value_b", "diff", "ci", "p_value"]
    holm_col = any("p_holm" in r for r in rows)
    cols += ["p_holm"] if holm_col else []
    cols += ["sign test (A>B / B>A / ties, p)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        ci = "–" if r.get("ci_low") is None else f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]"
        sign = "–" if "sign_p_value" not in r else (
            f"{r['sign_n_a_better']} / {r['sign_n_b_better']} / {r['sign_n_ties']}, "
            f"{_fmt(r['sign_p_value'], 3)}")
        cells = [r["a"], r["b"], r["metric"], _fmt(r["value_a"]), _fmt(r["value_b"]),
                 _fmt(r.get("diff")), ci, _fmt(r.get("p_value"), 3)]
        cells += [_fmt(r.get("p_holm"), 3)] if holm_col else []
        lines.append("| " + " | ".join(cells + [sign]) + " |")
    return "\n".join(lines) + "\n"


def write_compare(rows: list[dict[str, Any]], out_dir: Path, judge: str) -> list[Path]:
    import pandas as pd

    intro = (f"# Head to head (judge `{judge}`)\n\nPaired prompt bootstrap: difference A - B, "
             "95% interval, two-sided p-value; Holm-adjusted p over all pairs of one metric; "
             "sign test on per-prompt outcomes.\n\n")
    write_text_atomic(out_dir / "compare.md", intro + format_rows(rows))
    write_text_atomic(out_dir / "compare.csv", pd.DataFrame(rows).to_csv(index=False))
    write_text_atomic(out_dir / "compare.json", dumps(rows, indent=2))
    return [out_dir / "compare.md", out_dir / "compare.csv", out_dir / "compare.json"]
