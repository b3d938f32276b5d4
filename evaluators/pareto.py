"""The quality-diversity Pareto front of the runs: `pareto.md`, `pareto.csv`, `pareto.png`.

Quality is the win rate against the baseline where the report has one, else the mean
reward; diversity is the sequence entropy and the embedding diversity, one panel each where
the records have them. Higher is better on both axes.

This is the plot that answers "what does softness cost?": every run is a point with 95%
intervals on both axes, the baseline (the reference model in the quickstart) a star, and
the runs of a method swept over its softness knob (SPO's alpha, DPO's beta) are joined in
knob order into one curve, each point labelled with its knob value.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from harness.jsonio import write_text_atomic

DIVERSITY = [("entropy", "sequence entropy (nats)"),
             ("embedding_diversity", "embedding diversity (1 - mean cosine)")]
QUALITY = {"win_rate": "win rate vs baseline (%)", "mean_reward": "mean reward"}
BASELINE_WIN_RATE = 50.0   # the baseline against itself: every pair a tie, a tie counts 1/2
KNOB_SYMBOL = {"alpha": "α", "beta": "β"}


def _num(record: dict[str, Any], key: str) -> float | None:
    v = record.get(key)
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def pareto_front(records: list[dict[str, Any]], quality: str, diversity: str) -> list[bool]:
    """For each record, whether it is non-dominated in (higher `quality`, higher `diversity`).

    A record is dominated when another is at least as good on both and strictly better on
    one. Ties: records at exactly the same point do not dominate each other, so all copies
    of a front point are on the front; a record equal on one axis and worse on the other is
    dominated. A record missing either value (None, NaN) is never on the front and
    dominates nothing.
    """
    points = [(_num(r, quality), _num(r, diversity)) for r in records]
    valid = [p for p in points if p[0] is not None and p[1] is not None]
    front = []
    for q, d in points:
        if q is None or d is None:
            front.append(False)
            continue
        front.append(not any(oq >= q and od >= d and (oq > q or od > d) for oq, od in valid))
    return front


def sweep_knob(recs: list[dict[str, Any]], method: str) -> str | None:
    """The softness knob (alpha, beta) a method's runs take at least two values of, or None."""
    runs = [r for r in recs if r.get("method") == method and not r.get("is_baseline")]
    for knob in KNOB_SYMBOL:
        if len({(r.get("params") or {}).get(knob) for r in runs
                if knob in (r.get("params") or {})}) >= 2:
            return knob
    return None


def sweep_curve(recs: list[dict[str, Any]], method: str, knob: str, x_key: str,
                y_key: str) -> list[tuple[float, float, float]]:
    """(knob value, mean x, mean y) of a method's runs, in knob order, averaged over seeds."""
    by_value: dict[float, list[tuple[float, float]]] = {}
    for r in recs:
        value = (r.get("params") or {}).get(knob)
        x, y = _num(r, x_key), _num(r, y_key)
        if r.get("method") == method and not r.get("is_baseline") and value is not None \
                and x is not None and y is not None:
            by_value.setdefault(float(value), []).append((x, y))
    return [(v, sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts))
            for v, pts in sorted(by_value.items())]


def _quality_key(records: list[dict[str, Any]]) -> str | None:
    for key in QUALITY:
        if any(_num(r, key) is not None for r in records):
            return key
    return None


def _with_baseline_quality(records: list[dict[str, Any]], quality: str) -> list[dict[str, Any]]:
    """Records with the baseline's win rate set to 50 (it is not judged against itself)."""
    if quality != "win_rate":
        return records
    return [{**r, "win_rate": BASELINE_WIN_RATE} if r.get("is_baseline") and
            _num(r, "win_rate") is None else r for r in records]


def write_pareto(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write pareto.md, .csv and .png for the records (leaderboard dicts); [] if nothing to plot.

    The baseline takes part (at a win rate of 50 when quality is the win rate): a run below
    it on both axes is dominated by it.
    """
    quality = _quality_key(records)
    panels = [(k, t) for k, t in DIVERSITY if any(_num(r, k) is not None for r in records)]
    if quality is None or not panels:
        return []
    recs = _with_baseline_quality(records, quality)
    fronts = {k: pareto_front(recs, quality, k) for k, _ in panels}
    out_dir = Path(out_dir)
    paths = [out_dir / "pareto.csv", out_dir / "pareto.md", out_dir / "pareto.png"]
    write_text_atomic(paths[0], _csv(recs, quality, panels, fronts))
    write_text_atomic(paths[1], _markdown(recs, quality, panels, fronts))
    _plot(recs, quality, panels, fronts, paths[2])
    return paths


def _interval_keys(key: str) -> list[str]:
    return [key, f"{key}_ci_low", f"{key}_ci_high"]


def _csv(recs, quality, panels, fronts) -> str:
    cols = ["label", "method", "params", "seed", "is_baseline", *_interval_keys(quality)]
    for key, _ in panels:
        cols += [*_interval_keys(key), f"front_{key}"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for i, r in enumerate(recs):
        row = {**r, "params": json.dumps(r.get("params") or {}, sort_keys=True),
               **{f"front_{k}": fronts[k][i] for k, _ in panels}}
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in cols])
    return buf.getvalue()


def _cell(r: dict[str, Any], key: str) -> str:
    v = _num(r, key)
    if v is None:
        return "–"
    low, high = _num(r, f"{key}_ci_low"), _num(r, f"{key}_ci_high")
    return f"{v:.4g}" + (f" [{low:.4g}, {high:.4g}]" if low is not None and high is not None
                         else "")


def _markdown(recs, quality, panels, fronts) -> str:
    head = ["run", QUALITY[quality]]
    for key, title in panels:
        head += [title, f"front ({key})"]
    lines = ["# Quality vs diversity: the Pareto front", "",
             f"Quality: {QUALITY[quality]}; diversity: "
             + " and ".join(t for _, t in panels) + "; higher is better on both, 95% prompt-"
             "bootstrap intervals in brackets. A run is on the front (*) when no other run is "
             "at least as good on both axes and better on one; runs at the same point are all "
             "on it; a run missing a value is never on it."
             + (" The baseline stands at a win rate of 50 (against itself)."
                if quality == "win_rate" else ""),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(recs):
        label = str(r.get("label")) + (" (baseline)" if r.get("is_baseline") else "")
        cells = [label, _cell(r, quality)]
        for key, _ in panels:
            cells += [_cell(r, key), "*" if fronts[key][i] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _error(r: dict[str, Any], key: str, value: float) -> tuple[float, float] | None:
    low, high = _num(r, f"{key}_ci_low"), _num(r, f"{key}_ci_high")
    if low is None or high is None:
        return None
    # a percentile interval of a ratio need not contain the point: clip so bars stay drawable
    return max(value - low, 0.0), max(high - value, 0.0)


def _plot(recs, quality, panels, fronts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    methods = sorted({str(r.get("method")) for r in recs if not r.get("is_baseline")})
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    knobs = {m: sweep_knob(recs, m) for m in methods}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.4), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        shown = set()
        for i, r in enumerate(recs):
            x, y = _num(r, key), _num(r, quality)
            if x is None or y is None:
                continue
            xerr, yerr = _error(r, key, x), _error(r, quality, y)
            base = bool(r.get("is_baseline"))
            name = "baseline" if base else str(r.get("method"))
            ax.errorbar([x], [y], xerr=None if xerr is None else [[xerr[0]], [xerr[1]]],
                        yerr=None if yerr is None else [[yerr[0]], [yerr[1]]],
                        fmt="*" if base else "o", ms=13 if base else 7,
                        color="black" if base else colour[name], ecolor="0.6", elinewidth=0.8,
                        capsize=2, mec="red" if fronts[key][i] else "none", mew=1.6,
                        zorder=3)
            shown.add(name)
            knob = None if base else knobs[name]
            text = (f"{KNOB_SYMBOL[knob]}={(r.get('params') or {})[knob]:g}" if knob
                    else str(r.get("label")))
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for m in methods:  # one curve per swept method, in knob order
            if knobs[m]:
                curve = sweep_curve(recs, m, knobs[m], key, quality)
                ax.plot([c[1] for c in curve], [c[2] for c in curve], color=colour[m], lw=1.2,
                        alpha=0.8, zorder=2)
        on_front = sorted((_num(r, key), _num(r, quality))
                          for i, r in enumerate(recs) if fronts[key][i])
        if on_front:
            ax.plot(*zip(*on_front), ls="--", color="red", lw=1, zorder=2)
        ax.set_xlabel(title)
        ax.set_ylabel(QUALITY[quality])
        ax.grid(alpha=0.3)
        # legend entries drawn apart, so that no method's entry inherits a front ring
        handles = [Line2D([], [], ls="", marker="*" if n == "baseline" else "o",
                          ms=10 if n == "baseline" else 6,
                          color="black" if n == "baseline" else colour[n],
                          label=n if n == "baseline" or not knobs[n] else f"{n} over {knobs[n]}")
                   for n in ["baseline", *methods] if n in shown]
        handles += [Line2D([], [], ls="--", color="red", marker="o", mfc="none", mec="red",
                           label="Pareto front")] if on_front else []
        ax.legend(handles=handles, fontsize=7)
    fig.suptitle("quality vs diversity (front ringed in red)", fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
