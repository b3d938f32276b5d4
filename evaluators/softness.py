"""Diversity-vs-softness: the sweep table and plot of each method over its softness knob.

SPO's softness is alpha (higher = higher-entropy optimum); DPO-family methods are swept
over beta. For every method swept over one of these, the report writes `softness.csv`,
`softness.md`, `softness.json` and `softness.png` (win rate, reward, entropy and diversity
against the knob), with the records' 95% prompt-bootstrap intervals (`<key>_ci_low/_ci_high`)
as columns, bracketed in the table and as error bars in the plot.

Axes that do not exaggerate: each panel draws the baseline's value (the reference model in
the quickstart; 50 for a win rate against it) as a dashed line and its y-range includes it,
so a spread of a few points is seen against the distance from where training started. A
bounded metric that every run has within 1% of its bound (distinct-n of short answers is 1
everywhere) cannot show a difference: it is left out of the plot and named as saturated in
`softness.md`.

Several seeds of one configuration: the plot shows the mean over seeds, and its error bar is
the hull of the seeds' intervals (lowest low to highest high). The hull is conservative: it
covers every seed's interval and so also part of the spread between seeds, which a mean of
the intervals would hide. The table keeps one row per seed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.jsonio import write_json, write_text_atomic

KNOBS = ("alpha", "beta")
PANELS = [("win_rate", "win rate vs baseline (%)"), ("mean_reward", "mean reward"),
          ("entropy", "sequence entropy (nats)"), ("distinct_1", "distinct-1"),
          ("distinct_2", "distinct-2"), ("ead", "EAD (Kirk et al., n = 1..5)"),
          ("embedding_diversity", "embedding diversity (1 - cos)"),
          ("kl_to_ref", "KL to reference (nats)"), ("exact_entropy", "exact entropy (nats)")]


# metrics with an upper bound they saturate at: (bound, how close counts as saturated)
BOUNDED = {"distinct_1": 1.0, "distinct_2": 1.0, "ead": 1.0}
SATURATION_TOLERANCE = 0.01
BASELINE_WIN_RATE = 50.0   # the baseline against itself: every pair a tie


def _interval(key: str) -> tuple[str, str]:
    return f"{key}_ci_low", f"{key}_ci_high"


def softness_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run of a method swept over alpha or beta (at least two values)."""
    rows = []
    for method in sorted({r["method"] for r in records}):
        runs = [r for r in records if r["method"] == method]
        for knob in KNOBS:
            values = {r["params"].get(knob) for r in runs if knob in r["params"]}
            if len(values) < 2:
                continue
            for r in sorted(runs, key=lambda r: (r["params"].get(knob, math.inf), r["seed"])):
                row = {"method": method, "knob": knob, "value": r["params"][knob],
                       "label": r["label"], "seed": r["seed"]}
                for k, _ in PANELS:
                    low, high = _interval(k)
                    row.update({k: r.get(k), low: r.get(low), high: r.get(high)})
                rows.append(row)
            break
    return rows


def saturated(frame: Any, key: str) -> bool:
    """Whether every run's value of a bounded metric lies within SATURATION_TOLERANCE of its
    bound (so the metric cannot tell the runs apart)."""
    if key not in BOUNDED:
        return False
    values = frame[key].dropna()
    return bool(len(values)) and bool(((BOUNDED[key] - values).abs()
                                       <= SATURATION_TOLERANCE).all())


def baseline_levels(records: list[dict[str, Any]]) -> dict[str, float]:
    """The baseline record's value of each panel metric (50 for the win rate against it)."""
    base = next((r for r in records if r.get("is_baseline")), None)
    if base is None:
        return {}
    levels = {k: float(base[k]) for k, _ in PANELS
              if isinstance(base.get(k), (int, float)) and not isinstance(base.get(k), bool)
              and math.isfinite(base[k])}
    levels.setdefault("win_rate", BASELINE_WIN_RATE)
    return levels


def write_softness(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """softness.csv / .md / .json / .png for the swept methods; [] when nothing is swept."""
    rows = softness_rows(records)
    if not rows:
        return []
    import pandas as pd

    frame = pd.DataFrame(rows)
    for k, _ in PANELS:     # None -> NaN, so an empty interval column still aggregates
        for c in (k, *_interval(k)):
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    panels = [(k, t) for k, t in PANELS if frame[k].notna().any()]
    flat = [k for k, _ in panels if saturated(frame, k)]
    write_text_atomic(out_dir / "softness.csv", frame.to_csv(index=False))
    cols = ["method", "knob", "value", "seed"] + [k for k, _ in panels]
    lines = ["# Diversity vs softness", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, c) for c in cols) + " |")
    if flat:
        lines += ["", "Not plotted, saturated at their bound (every run within "
                  f"{SATURATION_TOLERANCE:g} of it, so they cannot tell the runs apart): "
                  + ", ".join(f"{k} (bound {BOUNDED[k]:g})" for k in flat) + "."]
    write_text_atomic(out_dir / "softness.md", "\n".join(lines) + "\n")
    write_json(out_dir / "softness.json", rows)
    plotted = [(k, t) for k, t in panels if k not in flat]
    if not plotted:
        return [out_dir / "softness.csv", out_dir / "softness.md"]
    _plot(frame, plotted, baseline_levels(records), out_dir / "softness.png")
    return [out_dir / "softness.csv", out_dir / "softness.md", out_dir / "softness.png"]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _cell(row: dict[str, Any], key: str) -> str:
    """The value, with its interval in brackets where the record has one."""
    low, high = (row.get(k) for k in _interval(key))
    if _missing(row.get(key)) or _missing(low) or _missing(high):
        return _fmt(row.get(key))
    return f"{_fmt(row[key])} [{_fmt(float(low))}, {_fmt(float(high))}]"


def seed_aggregate(group: Any, key: str) -> Any:
    """Per knob value over the seeds of one (method, knob): mean of `key` and the hull of the
    seeds' intervals (NaN where no seed has one). A frame indexed by value: mean, low, high."""
    low, high = _interval(key)
    by_value = group.groupby("value")
    out = by_value[key].mean().to_frame("mean")
    out["low"] = by_value[low].min() if low in group else math.nan
    out["high"] = by_value[high].max() if high in group else math.nan
    return out


def _plot(frame, panels, levels: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for (method, knob), group in frame.groupby(["method", "knob"]):
            agg = seed_aggregate(group, key)
            # bars only where both ends are known; a percentile interval of a ratio need not
            # contain the mean, so the lengths are clipped at 0 to stay drawable
            known = agg["low"].notna() & agg["high"].notna()
            below = (agg["mean"] - agg["low"]).clip(lower=0).where(known, 0.0)
            above = (agg["high"] - agg["mean"]).clip(lower=0).where(known, 0.0)
            ax.errorbar(agg.index, agg["mean"], yerr=[below.values, above.values]
                        if known.any() else None, marker="o", capsize=3, elinewidth=0.8,
                        label=f"{method} ({knob})")
        if key in levels:  # where training started, so the spread is seen against it
            ax.axhline(levels[key], ls="--", color="0.4", lw=1, label="baseline")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("softness: alpha (SPO) / beta")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
