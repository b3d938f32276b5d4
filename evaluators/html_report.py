"""`report.html`: the whole report in one file a person can open offline and share.

One self-contained page (no request to the network or to any other file: the plots are
inline SVG, the little JavaScript is inline) rendered from `templates/report.html.j2` with
Jinja2's autoescaping on, since answers, prompts and judge outputs are untrusted text. It
holds the leaderboard (one tab per judge, sortable, intervals drawn as bars), the softness
curves and the Pareto plot, a sample browser (the baseline's and every model's answers to a
prompt side by side, with each judge's verdict, each scorer's value and the log-probs), the
judge-quality table, each run's training curves, and the run's metadata and unit counts.

It is built from plain data, like the other reports: leaderboard records, `ModelResults`,
the judge-quality report, each checkpoint's `spo_harness_run.json` and the run metadata.
The sample browser embeds at most `report.html_max_prompts` prompts and says which were left
out; prompts with a failure, a position flip or a judge-oracle disagreement go in first.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.collect import ModelResults
from evaluators.report import few_prompts_note, sort_key
from evaluators.svg import COLOURS, Chart, Point, Series, interval_bar, render
from harness.hashing import canonical_json, content_hash
from harness.jsonio import write_text_atomic

MAX_ANSWER = 4000   # characters of an answer shown; the rest is counted, not embedded
MAX_RAW = 2000      # characters of each raw judge output shown

# (leaderboard key, header, interval prefix or None); a judge's columns are "<judge>:<key>"
JUDGE_COLUMNS = [("win_rate", "win rate (%)", "win_rate_ci"), ("lc_win_rate", "LC win rate", None),
                 ("bt_rating", "BT rating", "bt_ci"), ("bt_rating_sc", "BT (style)", "bt_sc_ci"),
                 ("exact_win_rate", "exact win rate", None),
                 ("exact_bt_rating", "exact BT", None), ("n_judged", "judged", None),
                 ("n_failed", "failed", None)]
SAMPLE_COLUMNS = [("mean_reward", "mean reward", "mean_reward_ci"),
                  ("entropy", "entropy (nats)", "entropy_ci"), ("distinct_2", "distinct-2", None),
                  ("ead", "EAD", None), ("embedding_diversity", "embedding div.", None),
                  ("self_bleu", "self-BLEU", None), ("kl_to_ref", "KL to ref", None),
                  ("exact_kl_to_target", "exact KL to optimum", None),
                  ("exact_entropy", "exact entropy", None), ("n_samples", "samples", None)]
TRAIN_METRICS = [("loss", "loss"), ("rewards/margins", "reward margin"),
                 ("kl", "KL to reference"), ("entropy", "token entropy")]
FILTERS = [("all", "all prompts"), ("disagree", "judge and oracle disagree"),
           ("flip", "position flip"), ("longest", "longest answers first"),
           ("failed", "failed or missing")]


@dataclass
class PageInputs:
    """What the page is built from (all plain data; `oracle` judges pairs for the filter)."""

    name: str
    records: list[dict[str, Any]]
    results: list[ModelResults] = field(default_factory=list)
    prompts: dict[str, Any] = field(default_factory=dict)    # prompt id -> text or messages
    judges: dict[str, str] = field(default_factory=dict)     # display name -> fingerprint hash
    oracle: Any = None
    judge_quality: dict[str, Any] | None = None
    histories: dict[str, dict[str, Any]] = field(default_factory=dict)  # label -> run json
    run: dict[str, Any] = field(default_factory=dict)        # spec, counts, code, environment
    max_prompts: int = 200
    sources: list[dict[str, Any]] = field(default_factory=list)  # merged: the folders


def write_html_report(page: PageInputs, out_dir: Path, filename: str = "report.html") -> Path:
    path = Path(out_dir) / filename
    write_text_atomic(path, render_page(page))
    return path


def render_page(page: PageInputs) -> str:
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.filters["svg"] = Markup  # our own SVG strings, whose texts svg.py escaped
    context = {"name": page.name, "leaderboard": leaderboard_tabs(page.records,
                                                                  bool(page.sources)),
               "note": few_prompts_note(page.records) if page.records else None,
               "sources": page.sources, "softness": softness_charts(page.records),
               "pareto": pareto_charts(page.records),
               "browser": sample_browser(page) if page.results else None,
               "quality": quality_table(page.judge_quality),
               "training": training_charts(page.histories), "run": run_section(page.run),
               "filters": FILTERS}
    return env.get_template("report.html.j2").render(**context)


# ------------------------------------------------------------------ leaderboard


def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _short(v: Any, key: str) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if "bt_" in key or key.startswith("exact_bt"):
            return f"{v:.0f}"
        if "win_rate" in key:
            return f"{v:.2f}"
        return f"{v:.4g}"
    return str(v)


def judge_names(records: list[dict[str, Any]]) -> list[str]:
    """Every judge with columns in the records, the primary judge first."""
    names = []
    for r in records:
        for k in r:
            if k.endswith(":win_rate") and k.split(":")[0] not in names:
                names.append(k.split(":")[0])
    primary = records[0].get("primary_judge") if records else None
    return sorted(names, key=lambda n: (n != primary, names.index(n)))


def leaderboard_tabs(records: list[dict[str, Any]], merged: bool = False) -> list[dict]:
    """One table per judge: its columns, then the sample columns; cells keep the exact
    leaderboard.json value (`value`) beside the shown text and an interval bar."""
    rows = sorted(records, key=sort_key)
    t_interval = few_prompts_note(records) is not None
    scorers = sorted({k.split(":")[0] for r in records for k in r if k.endswith(":mean_reward")})
    extra = ([(f"{s}:mean_reward", f"{s} reward", f"{s}:mean_reward_ci") for s in scorers]
             if len(scorers) > 1 else [])
    tabs = []
    for judge in judge_names(records) or [None]:
        cols = [(f"{judge}:{k}" if judge else k, title, f"{judge}:{ci}" if judge and ci else ci)
                for k, title, ci in (JUDGE_COLUMNS if judge else [])]
        cols += SAMPLE_COLUMNS + extra
        cols = [c for c in cols if any(r.get(c[0]) is not None for r in rows)]
        if t_interval:  # few prompts: the t interval, which covers (README "Statistics")
            cols = [(k, t, ci.replace("win_rate_ci", "win_rate_t_ci").replace(
                "mean_reward_ci", "mean_reward_t_ci") if ci else ci) for k, t, ci in cols]
        header = [{"key": k, "title": t} for k, t, _ in cols]
        table = []
        for r in rows:
            cells = [_cell(r, k, ci, _scale(rows, k, ci)) for k, _, ci in cols]
            table.append({"label": r["label"], "is_baseline": r["is_baseline"],
                          "experiment": r.get("experiment", ""), "cells": cells})
        tabs.append({"judge": judge or "no judge", "id": f"lb{len(tabs)}", "header": header,
                     "rows": table, "merged": merged})
    return tabs


def _scale(rows: list[dict], key: str, ci: str | None) -> tuple[float, float] | None:
    if ci is None:
        return None
    vals = [v for r in rows for v in (_num(r.get(key)), _num(r.get(f"{ci}_low")),
                                      _num(r.get(f"{ci}_high"))) if v is not None]
    return (min(vals), max(vals)) if vals else None


def _cell(r: dict[str, Any], key: str, ci: str | None,
          scale: tuple[float, float] | None) -> dict[str, Any]:
    v = r.get(key)
    text = _short(v, key)
    low, high = (_num(r.get(f"{ci}_low")), _num(r.get(f"{ci}_high"))) if ci else (None, None)
    base = key.split(":")[0] if ":" in key else ""
    se = _num(r.get(f"{key}_se")) if key.endswith("win_rate") else None
    if se is not None:
        text += f" ± {se:.2f}"
    sort = _num(v)
    if sort is None and key.endswith("bt_rating") and r.get(f"{base}:bt_separated" if base
                                                            else "bt_separated"):
        inf = r.get(f"{base}:bt_direction" if base else "bt_direction") == "+inf"
        text, sort = ("+∞" if inf else "-∞"), (1e308 if inf else -1e308)
        text += (f" [{'-∞' if low is None else f'{low:.0f}'}, "
                 f"{'∞' if high is None else f'{high:.0f}'}]")  # its one-sided bound
    bar = ""
    if scale is not None and _num(v) is not None:
        span = f" [{_short(low, key)}, {_short(high, key)}]" if low is not None else ""
        bar = interval_bar(_num(v), low, high, *scale, f"{r['label']}: {text}{span}")
        text += span
    return {"key": key, "value": "" if _num(v) is None else json.dumps(v),
            "sort": "" if sort is None else repr(sort), "text": text, "bar": bar}


# ------------------------------------------------------------------ softness and Pareto


def softness_charts(records: list[dict[str, Any]]) -> list[str]:
    """One SVG per metric: each swept method's values against its knob (log scale), the
    mean over seeds with the hull of the seeds' intervals, the baseline dashed."""
    from evaluators.softness import (
        BOUNDED,
        PANELS,
        SATURATION_TOLERANCE,
        baseline_levels,
        softness_rows,
    )

    rows = softness_rows(records)
    levels = baseline_levels(records)
    groups = sorted({(r["method"], r["knob"]) for r in rows})
    charts = []
    for key, title in PANELS:
        vals = [_num(r[key]) for r in rows if _num(r[key]) is not None]
        if not vals or (key in BOUNDED and all(abs(BOUNDED[key] - v) <= SATURATION_TOLERANCE
                                               for v in vals)):
            continue
        series = []
        for i, (method, knob) in enumerate(groups):
            by_value: dict[float, list[dict]] = {}
            for r in rows:
                if (r["method"], r["knob"]) == (method, knob) and _num(r[key]) is not None:
                    by_value.setdefault(float(r["value"]), []).append(r)
            points = []
            for value, rs in sorted(by_value.items()):
                mean = sum(r[key] for r in rs) / len(rs)
                lows = [_num(r[f"{key}_ci_low"]) for r in rs]
                highs = [_num(r[f"{key}_ci_high"]) for r in rs]
                lo = min(lows) if None not in lows else None
                hi = max(highs) if None not in highs else None
                span = f" [{lo:.4g}, {hi:.4g}]" if lo is not None and hi is not None else ""
                labels = ", ".join(r["label"] for r in rs)
                points.append(Point(value, mean, f"{labels}: {title} {mean:.4g}{span}",
                                    y_low=lo, y_high=hi))
            series.append(Series(f"{method} ({knob})", points, COLOURS[i % 10]))
        hlines = [(levels[key], f"baseline: {levels[key]:.4g}")] if key in levels else []
        charts.append(render(Chart(series, "softness: alpha (SPO) / beta", title, title,
                                   log_x=True, hlines=hlines)))
    return charts


def pareto_charts(records: list[dict[str, Any]]) -> list[str]:
    """Quality against each diversity measure: every run with its intervals, the front
    ringed in red, each swept method joined in knob order, the baseline a star."""
    from evaluators.pareto import (
        DIVERSITY,
        KNOB_SYMBOL,
        QUALITY,
        _quality_key,
        _with_baseline_quality,
        pareto_front,
        sweep_curve,
        sweep_knob,
    )

    quality = _quality_key(records)
    if quality is None:
        return []
    recs = _with_baseline_quality(records, quality)
    methods = sorted({str(r.get("method")) for r in recs if not r.get("is_baseline")})
    knobs = {m: sweep_knob(recs, m) for m in methods}
    charts = []
    for key, title in DIVERSITY:
        if not any(_num(r.get(key)) is not None for r in recs):
            continue
        front = pareto_front(recs, quality, key)
        series = []
        for i, m in enumerate(["baseline", *methods]):
            knob = None if m == "baseline" else knobs.get(m)
            points = []
            for r, on in zip(recs, front):
                if (m == "baseline") != bool(r.get("is_baseline")) or (
                        m != "baseline" and str(r.get("method")) != m):
                    continue
                x, y = _num(r.get(key)), _num(r.get(quality))
                if x is None or y is None:
                    continue
                value = (r.get("params") or {}).get(knob) if knob else None
                points.append((_num(value) or 0.0, Point(
                    x, y, f"{r['label']}: {QUALITY[quality]} {y:.4g}, {title} {x:.4g}"
                    + (" (on the Pareto front)" if on else ""),
                    y_low=_num(r.get(f"{quality}_ci_low")),
                    y_high=_num(r.get(f"{quality}_ci_high")),
                    x_low=_num(r.get(f"{key}_ci_low")), x_high=_num(r.get(f"{key}_ci_high")),
                    label=f"{KNOB_SYMBOL[knob]}={value}" if knob else "",
                    star=m == "baseline", ring=on)))
            if not points:
                continue
            colour = "#000000" if m == "baseline" else COLOURS[(i - 1) % 10]
            series.append(Series(m if not knob else f"{m} over {knob}",
                                 [p for _, p in sorted(points, key=lambda vp: vp[0])],
                                 colour, line=False))
            if knob:  # the sweep in knob order, seeds averaged (as pareto.png)
                curve = sweep_curve(recs, m, knob, key, quality)
                series.append(Series("", [Point(x, y) for _, x, y in curve], colour,
                                     markers=False))
        charts.append(render(Chart(series, title, QUALITY[quality],
                                   f"{QUALITY[quality]} vs {key}", width=420, height=300)))
    return charts


# ------------------------------------------------------------------ sample browser


def _verdict(p: float | None) -> str:
    if p is None:
        return "–"
    return "tie" if abs(p - 0.5) <= 1e-9 else ("wins" if p > 0.5 else "loses")


def _clip(text: Any, limit: int) -> tuple[str, int]:
    text = "" if text is None else str(text)
    return (text[:limit], len(text) - limit) if len(text) > limit else (text, 0)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # a conversation
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt
                         if isinstance(m, dict))
    return "" if prompt is None else str(prompt)


def sample_browser(page: PageInputs) -> dict[str, Any]:
    """Prompts with every model's samples side by side, their flags, and the cap note."""
    results = page.results
    base = next(m for m in results if m.is_baseline)
    order = {r["label"]: i for i, r in enumerate(sorted(page.records, key=sort_key))}
    models = [base] + sorted((m for m in results if not m.is_baseline),
                             key=lambda m: order.get(m.label, len(order)))
    samples = {(m.label, s["prompt_id"], s["sample_index"]): s for m in models
               for s in m.samples}
    judged = {(name, m.label, j.candidate["prompt_id"], j.candidate["sample_index"]): j
              for m in models for name, js in m.judged.items() for j in js}
    names = list(page.judges) or sorted({k[0] for k in judged})
    oracle_fp = (content_hash(page.oracle.fingerprint)
                 if page.oracle is not None and hasattr(page.oracle, "fingerprint") else None)
    ask_oracle = {n for n in names if page.judges.get(n) != oracle_fp and page.oracle}
    oracle_p = _oracle_cache(page.oracle)
    prompt_ids = list(dict.fromkeys([s["prompt_id"] for m in models for s in m.samples]))
    n_samples = max((s["sample_index"] for s in samples.values()), default=-1) + 1
    prompts = []
    for pid in prompt_ids:
        rows, flags, longest = [], set(), 0
        for i in range(n_samples):
            cells = []
            for m in models:
                s = samples.get((m.label, pid, i))
                cell = _sample_cell(m, s, names, judged, pid, i, ask_oracle, oracle_p,
                                    page.prompts.get(pid), flags)
                longest = max(longest, cell["length"])
                cells.append(cell)
            rows.append({"index": i, "cells": cells})
        prompts.append({"id": pid, "text": _clip(_prompt_text(page.prompts.get(pid)),
                                                 MAX_ANSWER)[0],
                        "rows": rows, "flags": " ".join(sorted(flags)), "longest": longest})
    keep = sorted(range(len(prompts)), key=lambda k: (not prompts[k]["flags"], k))
    keep = sorted(keep[:page.max_prompts])
    shown = [prompts[k] for k in keep]
    kept = set(keep)
    left_out = [p["id"] for k, p in enumerate(prompts) if k not in kept]
    return {"models": [{"label": m.label, "is_baseline": m.is_baseline} for m in models],
            "prompts": shown, "n_prompts": len(prompts), "left_out": left_out,
            "left_out_shown": left_out[:50], "max_prompts": page.max_prompts}


def _oracle_cache(oracle: Any):
    cache: dict[str, float | None] = {}

    def p(prompt: Any, baseline: str, candidate: str) -> float | None:
        key = canonical_json([prompt, baseline, candidate])
        if key not in cache:
            try:  # a task without rewards for these prompts has no oracle verdict
                cache[key] = float(oracle.judge(prompt, [baseline], [candidate])[0])
            except Exception:
                cache[key] = None
        return cache[key]
    return p


def _sample_cell(m: ModelResults, s: dict | None, names: list[str], judged: dict, pid: str,
                 i: int, ask_oracle: set[str], oracle_p: Any, prompt: Any,
                 flags: set[str]) -> dict[str, Any]:
    if s is None:
        return {"missing": True, "length": 0, "text": "", "cut": 0, "rewards": [],
                "logp": None, "ref_logp": None, "verdicts": []}
    text, cut = _clip(s["text"], MAX_ANSWER)
    rewards = [{"name": k, "value": v} for k, v in (s.get("rewards") or {}).items()]
    if any(r["value"] is None for r in rewards):
        flags.add("failed")
    verdicts = []
    for name in names if not m.is_baseline else []:
        j = judged.get((name, m.label, pid, i))
        verdicts.append(_verdict_cell(name, j, name in ask_oracle, oracle_p, prompt, flags))
    return {"missing": False, "length": len(s["text"] or ""), "text": text, "cut": cut,
            "rewards": rewards, "logp": s.get("logp"), "ref_logp": s.get("ref_logp"),
            "verdicts": verdicts}


def _calls(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Each call of the judgment: which answer was shown first, its P(model wins) and the
    verdict it parsed (an LLM judge asked in both orders makes two)."""
    orders, ps, verdicts = (list(info.get(k) or []) for k in ("orders", "p_calls", "verdicts"))
    return [{"order": o, "p": _num(ps[i]) if i < len(ps) else None,
             "verdict": verdicts[i] if i < len(verdicts) else None}
            for i, o in enumerate(orders)]


def _verdict_cell(name: str, j: Any, ask_oracle: bool, oracle_p: Any, prompt: Any,
                  flags: set[str]) -> dict[str, Any]:
    row = j.row if j is not None and j.row is not None else {"status": "not judged"}
    info = row.get("info") or {}
    out = {"judge": name, "status": row["status"], "ok": j is not None and j.ok,
           "p": row.get("preference"),
           "verdict": _verdict(row.get("preference")), "calls": _calls(info),
           "flipped": info.get("flipped"), "error": info.get("error"),
           "raw": [_clip(t, MAX_RAW)[0] for t in
                   ([info["explanation"]] if info.get("explanation") else [])
                   + list(info.get("raw") or [])], "oracle": None,
           "disagree": False}
    if not out["ok"]:
        flags.add("failed")
    if info.get("flipped"):
        flags.add("flip")
    if out["ok"] and ask_oracle:
        q = oracle_p(prompt if prompt is not None else j.candidate.get("prompt"),
                     j.baseline["text"], j.candidate["text"])
        out["oracle"] = q
        a, b = _verdict(row["preference"]), _verdict(q)
        if {a, b} == {"wins", "loses"}:
            out["disagree"] = True
            flags.add("disagree")
    return out


# ------------------------------------------------------------------ the rest


def quality_table(report: dict[str, Any] | None) -> dict[str, Any] | None:
    from evaluators.judge_quality import COLUMNS

    if not report or not report.get("judges"):
        return None
    judges = [{"name": j["name"] + (f" {json.dumps(j['params'], sort_keys=True)}"
                                    if j.get("params") else ""),
               "fingerprint": j.get("fingerprint"), "overall": [j["overall"].get(c) for c in COLUMNS],
               "by_model": [(label, [st.get(c) for c in COLUMNS])
                            for label, st in j.get("by_model", {}).items()],
               "notes": [f"{k.removesuffix('_note')}: {j['overall'][k]}"
                         for k in ("length_bias_note", "self_preference_note")
                         if j["overall"].get(k)]}
              for j in report["judges"]]
    fmt = [[_fmt3(v) for v in j["overall"]] for j in judges]
    for j, cells in zip(judges, fmt):
        j["overall"] = cells
        j["by_model"] = [(label, [_fmt3(v) for v in vals]) for label, vals in j["by_model"]]
    return {"columns": COLUMNS, "judges": judges, "baseline": report.get("baseline")}


def _fmt3(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def training_charts(histories: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run: its training metrics (loss, reward margin, KL, entropy) over the steps."""
    out = []
    for label, meta in histories.items():
        history = [h for h in (meta.get("history") or []) if isinstance(h, dict)]
        xs, offset, last = [], 0.0, -math.inf
        for h in history:  # SPPO's iterations restart their steps: keep them in order
            step = _num(h.get("step")) or 0.0
            if step <= last - offset:
                offset = last
            last = step + offset
            xs.append(last)
        charts = []
        for key, title in TRAIN_METRICS:
            pts = [Point(x, float(h[key]), f"{label} step {x:.0f}: {key} {float(h[key]):.4g}")
                   for x, h in zip(xs, history) if _num(h.get(key)) is not None]
            if pts:
                charts.append(render(Chart([Series(title, pts, radius=1.8)], "step", key, title,
                                           width=250, height=170, legend=False)))
        out.append({"label": label, "method": meta.get("method"),
                    "params": json.dumps(meta.get("params", {}), sort_keys=True),
                    "seconds": meta.get("train_seconds"), "n_pairs": meta.get("n_pairs"),
                    "steps": len(history), "charts": charts,
                    "note": meta.get("note")})
    return out


def run_section(run: dict[str, Any]) -> dict[str, Any] | None:
    if not run:
        return None
    counts = run.get("counts") or {}
    return {"code_version": json.dumps(run.get("code_version"), sort_keys=True),
            "environment": run.get("environment") or {},
            "runs": [{**r, "params": json.dumps(r.get("params"), sort_keys=True)}
                     for r in run.get("runs") or []],
            # the report itself is counted once it is written
            "counts": [(stage, c.get("computed"), c.get("cached"))
                       for stage, c in counts.items() if stage != "report"],
            "spec": json.dumps(run.get("spec"), indent=2, sort_keys=True, default=str)}
