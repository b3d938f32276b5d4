"""Diversity-vs-softness: the sweep table and plot of each method over its softness knob.

SPO's softness is alpha (higher = higher-entropy optimum); DPO-family methods are swept
over beta. For every method swept over one of these, the report writes `softness.csv`,
`softness.md` and `softness.png` (win rate, reward, entropy and diversity against the knob).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.jsonio import write_json, write_text_atomic

KNOBS = ("alpha", "beta")
PANELS = [("win_rate", "win rate vs baseline (%)"), ("mean_reward", "mean reward"),
          ("entropy", "sequence entropy (nats)"), ("distinct_1", "distinct-1"),
          ("distinct_2", "distinct-2"),
          ("kl_to_ref", "KL to reference (nats)"), ("exact_entropy", "exact entropy (nats)")]


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
                row.update({k: r.get(k) for k, _ in PANELS})
                rows.append(row)
            break
    return rows


def write_softness(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    rows = softness_rows(records)
    if not rows:
        return []
    import pandas as pd

    frame = pd.DataFrame(rows)
    panels = [(k, t) for k, t in PANELS if frame[k].notna().any()]
    frame.to_csv(out_dir / "softness.csv", index=False)
    cols = ["method", "knob", "value", "seed"] + [k for k, _ in panels]
    lines = ["# Diversity vs softness", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    write_text_atomic(out_dir / "softness.md", "\n".join(lines) + "\n")
    write_json(out_dir / "softness.json", rows)
    _plot(frame, panels, out_dir / "softness.png")
    return [out_dir / "softness.csv", out_dir / "softness.md", out_dir / "softness.png"]


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _plot(frame, panels, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = 3
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for (method, knob), group in frame.groupby(["method", "knob"]):
            mean = group.groupby("value")[key].mean()
            ax.plot(mean.index, mean.values, marker="o", label=f"{method} ({knob})")
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
