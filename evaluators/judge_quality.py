"""How far each configured judge can be trusted: `judge_quality.{md,json}` per experiment.

For every judge of the spec, over the same (baseline sample i, candidate sample i) pairs the
judge stage judged: how many judgments succeeded, failed or are missing; agreement with the
task's oracle Bradley-Terry judge (the share of pairs where both prefer the same answer,
pairs either calls a tie excluded, and the mean |P - P_oracle|); the position-flip rate
(judges asked in both orders: the verdict changed when the answers were swapped, as MT-Bench's
inconsistency count); the share of decided judgments won by the longer answer (in words; the
length bias lm-sys/FastChat#3911 measured); and the judge calls and tokens spent, from the
info stored with each judgment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evaluators.collect import ModelResults
from evaluators.llm_judge import longer
from harness.hashing import content_hash
from harness.jsonio import dumps, write_text_atomic
from harness.units import Judged

TIE = 1e-9  # |P - 1/2| below this is a tie
COLUMNS = ["n_pairs", "n_judged", "n_failed", "n_missing", "oracle_agreement",
           "oracle_mean_abs_diff", "flip_rate", "longer_win_share", "calls", "prompt_tokens",
           "completion_tokens"]


def judge_quality_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Statistics of one judge over judgment rows.

    Each row: `status` ('ok', 'failed: ...', or None when not stored), `preference`
    (P(candidate wins)), `oracle` (the oracle's P, or None), `longer` ('candidate' |
    'baseline' | 'equal') and `info` (the stored info dict).
    """
    def is_ok(r: dict) -> bool:
        return r["status"] == "ok" and r["preference"] is not None

    ok = [r for r in rows if is_ok(r)]
    with_oracle = [r for r in ok if r.get("oracle") is not None]
    decided = [r for r in with_oracle
               if abs(r["preference"] - 0.5) > TIE and abs(r["oracle"] - 0.5) > TIE]
    flips = [r["info"]["flipped"] for r in ok if r["info"].get("flipped") is not None]
    by_length = [r for r in ok if abs(r["preference"] - 0.5) > TIE and r["longer"] != "equal"]
    spent = [r["info"] for r in rows if r["status"] is not None and "calls" in r["info"]]

    def share(hits: int, n: int) -> float | None:
        return hits / n if n else None

    return {
        "n_pairs": len(rows), "n_judged": len(ok),
        "n_failed": sum(1 for r in rows if r["status"] is not None and not is_ok(r)),
        "n_missing": sum(1 for r in rows if r["status"] is None),
        "oracle_agreement": share(sum((r["preference"] > 0.5) == (r["oracle"] > 0.5)
                                      for r in decided), len(decided)),
        "n_oracle_decided": len(decided),
        "oracle_mean_abs_diff": share(sum(abs(r["preference"] - r["oracle"])
                                          for r in with_oracle), len(with_oracle)),
        "flip_rate": share(sum(flips), len(flips)), "n_flip_checked": len(flips),
        "longer_win_share": share(sum(("candidate" if r["preference"] > 0.5 else "baseline")
                                      == r["longer"] for r in by_length), len(by_length)),
        "n_length_decided": len(by_length),
        "calls": sum(i["calls"] for i in spent) if spent else None,
        "prompt_tokens": sum(i.get("prompt_tokens", 0) for i in spent) if spent else None,
        "completion_tokens": sum(i.get("completion_tokens", 0) for i in spent) if spent else None,
    }


def oracle_judge(task: Any) -> Any | None:
    """The task's oracle judge, or None for a task without one."""
    from evaluators.judges import JUDGES

    try:
        return JUDGES.get("oracle")(task)
    except Exception:
        return None


def _rows(judged: list[Judged], oracle: Any | None) -> list[dict[str, Any]]:
    rows = []
    for j in judged:
        b, c, s = j.baseline, j.candidate, j.row
        oracle_p = None
        if oracle is not None:
            try:  # a task without rewards for these prompts (e.g. user data) has no oracle
                oracle_p = oracle.judge(c["prompt"], [b["text"]], [c["text"]])[0]
            except Exception:
                oracle_p = None
        rows.append({"status": s["status"] if s else None,
                     "preference": s["preference"] if s else None,
                     "info": (s["info"] or {}) if s else {}, "oracle": oracle_p,
                     "longer": longer(b["text"], c["text"]), "prompt_id": c["prompt_id"]})
    return rows


def write_judge_quality(results: list[ModelResults], judges: list[dict[str, Any]],
                        oracle: Any | None, experiment: str,
                        results_dir: Path) -> dict[str, Any]:
    """Write judge_quality.json and .md into results_dir; returns what was written.

    `judges`: one {"name", "display", "params", "fingerprint"} per judge of the spec, where
    `display` is the key of that judge's verdicts in each model's `judged`.
    """
    results_dir = Path(results_dir)
    base = next(m for m in results if m.is_baseline)
    models = [m for m in results if not m.is_baseline]
    out = []
    for j in judges:
        by_model = {m.label: _rows(m.judged.get(j["display"], []), oracle) for m in models}
        out.append({"name": j["name"], "params": j["params"],
                    "fingerprint": content_hash(j["fingerprint"]),
                    "overall": judge_quality_stats([r for rs in by_model.values() for r in rs]),
                    "by_model": {label: judge_quality_stats(rs)
                                 for label, rs in by_model.items()}})
    report = {"experiment": experiment, "baseline": base.label,
              "oracle": oracle.fingerprint if oracle is not None else None, "judges": out}
    write_text_atomic(results_dir / "judge_quality.json", dumps(report, indent=2, default=str))
    write_text_atomic(results_dir / "judge_quality.md", _markdown(report))
    return report


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _markdown(report: dict[str, Any]) -> str:
    head = "| judge | " + " | ".join(COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    lines = [f"# Judge quality: {report['experiment']}", "",
             f"Each judge over the pairs (baseline `{report['baseline']}` sample i, model sample "
             "i). oracle_agreement: share of pairs where judge and oracle prefer the same "
             "answer (ties excluded); oracle_mean_abs_diff: mean |P - P_oracle|; flip_rate: "
             "share of both-order judgments whose verdict changed with the order; "
             "longer_win_share: share of decided judgments won by the longer answer (words); "
             "calls and tokens: what the judge spent.", "", head, rule]
    for j in report["judges"]:
        name = f"{j['name']} {json.dumps(j['params'], sort_keys=True)}" if j["params"] \
            else j["name"]
        lines.append(f"| {name} | " + " | ".join(_fmt(j["overall"][c]) for c in COLUMNS) + " |")
    for j in report["judges"]:
        lines += ["", f"## {j['name']} ({j['fingerprint']}) by model", "",
                  head.replace("| judge |", "| model |"), rule]
        for label, stats in j["by_model"].items():
            lines.append(f"| {label} | " + " | ".join(_fmt(stats[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
