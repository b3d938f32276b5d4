"""Aggregate plain results into leaderboard records and write them as .md, .csv and .json.

One record per model. The flat columns (`win_rate`, `lc_win_rate`, `bt_rating`, ...) are the
primary judge's; every judge also has its own prefixed set (`<judge>:win_rate`, ...) and
every scorer its mean and standard error (`<scorer>:mean_reward`, `..._se`), so a leaderboard
with an LLM judge and the oracle shows both. How each number is computed, and which anchor
it equals, is the README's "Statistics" section; the code of each lives in `stats`
(win rates), `ratings` (Bradley-Terry, style control), `length_control` (AlpacaEval 2's LC) and
`diversity` (sample metrics). Every interval draws the same prompt resamples
(`evaluators.bootstrap`), seeded by `report.bootstrap_seed`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.collect import Battles, ExactPrompt, ModelResults
from evaluators.metrics import exact_distribution_metrics
from harness.jsonio import dumps, write_text_atomic

# The primary judge's columns, flat; each judge's set again under "<judge>:".
JUDGE_COLUMNS = ["win_rate", "win_rate_se", "win_rate_se_iid", "win_rate_ci_low",
                 "win_rate_ci_high", "win_rate_t_ci_low", "win_rate_t_ci_high",
                 "discrete_win_rate", "lc_win_rate", "lc_standard_error",
                 "lc_variant", "bt_rating", "bt_ci_low", "bt_ci_high", "bt_separated",
                 "bt_direction", "bt_boot_missing", "bt_rating_sc", "bt_sc_ci_low",
                 "bt_sc_ci_high", "exact_win_rate", "exact_bt_rating", "n_judged", "n_failed"]
SAMPLE_COLUMNS = ["mean_reward", "mean_reward_se", "mean_reward_ci_low", "mean_reward_ci_high",
                  "mean_reward_t_ci_low", "mean_reward_t_ci_high", "n_scored",
                  "distinct_1", "distinct_2", "distinct_2_cross_input", "ead", "ead_cross_input",
                  "self_bleu", "embedding_diversity", "embedding_diversity_cross_input",
                  "entropy", "entropy_ci_low", "entropy_ci_high", "kl_to_ref"]
ID_COLUMNS = ["label", "method", "params", "seed", "is_baseline"]
# Below this many prompts the prompt-bootstrap intervals are too narrow: the resamples of a
# few prompts understate how much another draw of prompts would move the estimate (measured
# by bench/coverage.py on the exact bandit; the README's "Do the intervals cover the truth?").
FEW_PROMPTS = 30
EXACT = ["exact_kl_to_target", "exact_entropy", "exact_expected_reward", "exact_support_mass",
         "exact_mean_reward"]


@dataclass
class ReportSettings:
    """What the report's statistics need besides the results (the spec's `report` section)."""

    rounds: int = 1000           # prompt-bootstrap rounds of every interval
    seed: int = 0                # seed of those resamples
    style_control: bool = True
    style_rounds: int = 100      # Arena-Hard's num_round for the style-controlled fit
    embedder: Any = None         # a SentenceTransformer, or None: no embedding diversity
    embedders: dict[str, Any] = field(default_factory=dict)  # label -> stored embeddings
    vocab_size: int = 50257      # V of expectation-adjusted distinct-n
    # judge name -> the scale of its known preference function (the oracle), for the exact
    # win rate and rating on enumerable tasks
    oracle_scales: dict[str, float] = field(default_factory=dict)


def _prompts(results: list[ModelResults]) -> list[str]:
    """Every prompt id of the experiment, sorted: the universe the bootstrap resamples."""
    return sorted({s["prompt_id"] for m in results for s in m.samples})


def leaderboard_records(results: list[ModelResults], battles: dict[str, Battles] | None = None,
                        primary: str | None = None,
                        settings: ReportSettings | None = None) -> list[dict[str, Any]]:
    """One record per model (the baseline and each run) from plain results.

    `battles` are each judge's judgments among all models (`collect_battles`); `primary`
    names the judge whose columns are also the flat ones (default: the first).
    """
    from evaluators.diversity import sample_metrics

    settings = settings or ReportSettings()
    battles = battles or {}
    prompts = _prompts(results)
    records = []
    for m in results:
        rec: dict[str, Any] = {"label": m.label, "method": m.method, "params": m.params,
                               "seed": m.seed, "is_baseline": m.is_baseline,
                               "n_prompts": len({s["prompt_id"] for s in m.samples}),
                               "n_samples": len(m.samples)}
        rec.update(sample_metrics(m.samples, rounds=settings.rounds, seed=settings.seed,
                                  embedder=settings.embedders.get(m.label, settings.embedder),
                                  vocab_size=settings.vocab_size,
                                  prompts=prompts))
        rec.update(_scorer_columns(m, prompts, settings))
        if m.exact is not None:
            rec.update(_exact_metrics(m.exact))
        records.append(rec)

    names = list(battles) or list(next((m.judged for m in results if m.judged), {}))
    for name in names:
        per_model = _judge_columns(results, battles.get(name), name, prompts, settings)
        for rec in records:
            for k, v in per_model[rec["label"]].items():
                rec[f"{name}:{k}"] = v
    primary = primary or (names[0] if names else None)
    for rec in records:
        for k in JUDGE_COLUMNS:
            rec[k] = rec.get(f"{primary}:{k}") if primary else None
        rec["primary_judge"] = primary
    return records


def _scorer_columns(m: ModelResults, prompts: list[str],
                    settings: ReportSettings) -> dict[str, Any]:
    """Mean reward of every scorer with its prompt-clustered SE and bootstrap interval."""
    from evaluators.bootstrap import mean_stats

    out: dict[str, Any] = {}
    names = list(m.samples[0]["rewards"]) if m.samples and "rewards" in m.samples[0] else []
    for name in names:
        rows = [(s["prompt_id"], s["rewards"][name]) for s in m.samples
                if s["rewards"][name] is not None]
        st = mean_stats([v for _, v in rows], [p for p, _ in rows], rounds=settings.rounds,
                        seed=settings.seed, prompts=prompts)
        out.update({f"{name}:mean_reward": st["mean"], f"{name}:mean_reward_se": st["se"],
                    f"{name}:mean_reward_ci_low": st["ci_low"],
                    f"{name}:mean_reward_ci_high": st["ci_high"],
                    f"{name}:mean_reward_t_ci_low": st["t_ci_low"],
                    f"{name}:mean_reward_t_ci_high": st["t_ci_high"], f"{name}:n_scored": len(rows)})
    return out


def _judge_columns(results: list[ModelResults], battles: Battles | None, name: str,
                   prompts: list[str], settings: ReportSettings) -> dict[str, dict[str, Any]]:
    """One judge's columns for every model: win rate vs the baseline, LC, BT (+ style)."""
    import pandas as pd

    from evaluators.length_control import N_SPLITS, instruction_difficulty, lc_win_rate
    from evaluators.ratings import bradley_terry_ratings
    from evaluators.stats import win_rate_stats

    base = next(m for m in results if m.is_baseline)
    out: dict[str, dict[str, Any]] = {}
    vs_base: dict[str, list[dict[str, Any]]] = {}
    for m in results:
        pairs = m.judged.get(name, []) if not m.is_baseline else []
        ok = [j for j in pairs if j.ok]
        vs_base[m.label] = [{"prompt_id": j.candidate["prompt_id"], "model": m.label,
                             "preference": float(j.row["preference"]),
                             "baseline_text_len": len(j.baseline["text"]),
                             "model_text_len": len(j.candidate["text"])} for j in ok]
        st = win_rate_stats([r["preference"] for r in vs_base[m.label]],
                            [r["prompt_id"] for r in vs_base[m.label]],
                            rounds=settings.rounds, seed=settings.seed, prompts=prompts)
        out[m.label] = {**st, "n_judged": len(ok), "n_failed": len(pairs) - len(ok),
                        "lc_win_rate": None, "lc_standard_error": None, "lc_variant": None}
    out[base.label].update(win_rate=None, lc_win_rate=None)

    # LC: AlpacaEval 2's GLM; instruction difficulty from every model's judgments here.
    judged = pd.DataFrame([r for rows in vs_base.values() for r in rows])
    # fewer judgments than AlpacaEval's 5 folds: no instruction difficulty can be fitted, and
    # lc_win_rate would give every model LC None anyway, so the LC columns keep their None
    if not judged.empty and int(judged["preference"].notna().sum()) >= N_SPLITS:
        difficulty = instruction_difficulty(judged[["prompt_id", "model", "preference"]])
        gamed = pd.DataFrame(battles.gamed) if battles is not None and battles.gamed else None
        for label, rows in vs_base.items():
            if rows:
                out[label].update(lc_win_rate(pd.DataFrame(rows), difficulty, gamed))

    # Bradley-Terry over every battle of the plan, anchored at the baseline = 1000.
    if battles is not None and battles.rows:
        frame = pd.DataFrame(battles.rows)
        labels = [m.label for m in results]
        bt = bradley_terry_ratings(frame[["prompt_id", "model_a", "model_b", "p_b"]], labels,
                                   base.label, rounds=settings.rounds, seed=settings.seed,
                                   prompts=prompts)
        for label in labels:
            out[label].update(bt.get(label, {}))
        if settings.style_control:
            out_sc = _style_controlled(frame, labels, base.label, prompts, settings)
            for label in labels:
                out[label].update(out_sc.get(label, {}))
    if name in settings.oracle_scales and all(m.exact for m in results):
        out = _exact_columns(results, battles, settings.oracle_scales[name], out)
    return out


def _exact_columns(results: list[ModelResults], battles: Battles | None, scale: float,
                   out: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The truth the judge's estimates target, from exact distributions (`evaluators.exact`)."""
    from evaluators.exact import exact_bt_ratings, exact_win_rate

    base = next(m for m in results if m.is_baseline)
    exact = {m.label: m.exact for m in results}
    pairs = sorted({(r["model_a"], r["model_b"]) for r in battles.rows}) if battles else []
    pairs = pairs or [(base.label, m.label) for m in results if not m.is_baseline]
    ratings = exact_bt_ratings(exact, pairs, base.label, scale)
    for m in results:
        out[m.label]["exact_win_rate"] = None if m.is_baseline else exact_win_rate(
            m.exact, base.exact, scale)
        out[m.label]["exact_bt_rating"] = ratings.get(m.label)
    return out


def _style_controlled(frame: Any, labels: list[str], anchor: str, prompts: list[str],
                      settings: ReportSettings) -> dict[str, dict[str, Any]]:
    import pandas as pd

    from evaluators.ratings import style_controlled_ratings
    from evaluators.style import style_feature_table

    feats = style_feature_table(list(frame["text_a"]), list(frame["text_b"]))
    feats.index = frame.index
    data = pd.concat([frame[["prompt_id", "model_a", "model_b", "p_b"]], feats], axis=1)
    ratings, _ = style_controlled_ratings(data, labels, anchor, list(feats.columns),
                                          rounds=settings.style_rounds, seed=settings.seed,
                                          prompts=prompts)
    return ratings


def _exact_metrics(exact: list[ExactPrompt]) -> dict[str, float | None]:
    per_prompt = [exact_distribution_metrics(e.logprobs, e.rewards, e.target, e.outside_reward)
                  for e in exact]
    out: dict[str, float | None] = {}
    for k in EXACT:
        values = [m[k] for m in per_prompt if m[k] is not None]
        out[k] = float(np.mean(values)) if values else None
    out.update(_exact_dimension_metrics(exact))
    return out


def _exact_dimension_metrics(exact: list[ExactPrompt]) -> dict[str, float]:
    """Each preference dimension's exact expected reward (renormalised over the answers,
    as exact_expected_reward), under its scorer's name `oracle.<dimension>`."""
    from evaluators.exact import normalised

    dims = exact[0].dimension_rewards if exact else None
    return {f"oracle.{d}:exact_expected_reward": float(np.mean(
        [normalised(e.logprobs) @ e.dimension_rewards[d] for e in exact]))  # type: ignore[index]
        for d in dims or {}}


# ------------------------------------------------------------------ writing


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def _interval(low: Any, high: Any, digits: int = 1) -> str:
    """'[low, high]', with an open end shown as ∞ (a separated Bradley-Terry rating)."""
    if low is None and high is None:
        return ""
    lo = "-∞" if low is None else f"{low:.{digits}f}"
    hi = "∞" if high is None else f"{high:.{digits}f}"
    return f" [{lo}, {hi}]"


def columns(records: list[dict[str, Any]]) -> list[str]:
    """The CSV/JSON columns: identity, the primary judge's, samples, then per judge/scorer."""
    fixed = ID_COLUMNS + ["primary_judge"] + JUDGE_COLUMNS + SAMPLE_COLUMNS + [
        "n_prompts", "n_samples"]
    if any("exact_entropy" in r for r in records):
        fixed += EXACT
    extra = sorted({k for r in records for k in r if ":" in k})
    rest = sorted({k for r in records for k in r} - set(fixed) - set(extra))
    return fixed + rest + extra


def sort_key(r: dict[str, Any]) -> tuple:
    wr = r.get("win_rate")
    return (not r["is_baseline"], -(wr if wr is not None else -1), r["label"])


def write_leaderboard(records: list[dict[str, Any]], out_dir: Path, name: str) -> None:
    import pandas as pd

    cols = columns(records)
    ordered = sorted(records, key=sort_key)
    rows = [{c: r.get(c) for c in cols} for r in ordered]
    write_text_atomic(out_dir / "leaderboard.json", dumps(rows, indent=2))
    frame = pd.DataFrame([{**r, "params": json.dumps(r["params"], sort_keys=True)} for r in rows],
                         columns=cols)
    write_text_atomic(out_dir / "leaderboard.csv", frame.to_csv(index=False))
    write_text_atomic(out_dir / "leaderboard.md", _markdown(ordered, name))


def few_prompts_note(records: list[dict[str, Any]]) -> str | None:
    """A warning when the intervals rest on fewer than FEW_PROMPTS prompts, else None.

    Counts the prompts a model's primary judge judged (its win-rate clusters), or the prompts
    it answered when there is no judge; the smallest count over the non-baseline models.
    """
    counts = []
    for r in records:
        if r["is_baseline"]:
            continue
        judge = r.get("primary_judge")
        judged = r.get(f"{judge}:n_prompts") if judge else None
        counts.append(judged if judged else r["n_prompts"])
    if not counts or min(counts) >= FEW_PROMPTS:
        return None
    return (f"only {min(counts)} prompts: below {FEW_PROMPTS} the prompt-bootstrap intervals "
            "are too narrow (README 'Do the intervals cover the truth?'), so the win-rate "
            "interval shown is Student's t on the prompts (win_rate_t_ci_*, mean reward: "
            "mean_reward_t_ci_*) and the Bradley-Terry one is optimistic; evaluate on more "
            "prompts")


def _dimension_table(rows: list[dict[str, Any]]) -> list[str]:
    """'Per dimension': each preference dimension's mean true reward of the samples ± SE
    and, on an enumerable task, its exact expected reward (harness/dimensions.py)."""
    dims = sorted({k.split(":")[0] for r in rows for k in r
                   if k.startswith("oracle.") and k.endswith(":mean_reward")})
    if not dims:
        return []
    exact = any(r.get(f"{d}:exact_expected_reward") is not None for r in rows for d in dims)
    head = [f"{d} {kind}" for d in dims for kind in (("mean", "exact") if exact else ("mean",))]
    lines = ["", "## Per dimension", "", "Each dimension's true reward: mean over the samples "
             "± prompt-clustered SE" + (", and exact expectation over the answers" if exact
                                         else "") + ".", "",
             "| label | " + " | ".join(head) + " |", "|" + "---|" * (1 + len(head))]
    for r in rows:
        cells = []
        for d in dims:
            v, se = r.get(f"{d}:mean_reward"), r.get(f"{d}:mean_reward_se")
            cells.append("–" if v is None else f"{v:.4g}"
                         + (f" ± {se:.2g}" if se is not None else ""))
            if exact:
                cells.append(_fmt(r.get(f"{d}:exact_expected_reward")))
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines


def _markdown(rows: list[dict[str, Any]], name: str) -> str:
    exact = any(r.get("exact_entropy") is not None for r in rows)
    primary = rows[0].get("primary_judge") if rows else None
    shown = ["label", "win_rate", "lc_win_rate", "bt_rating", "bt_rating_sc", "mean_reward",
             "entropy", "distinct_2", "ead", "embedding_diversity", "self_bleu", "kl_to_ref"]
    shown = [c for c in shown if c == "label" or any(r.get(c) is not None for r in rows)]
    shown += EXACT[:3] if exact else []
    lines = [f"# Leaderboard: {name}", "",
             f"Judge: `{primary}`. Win rate (%) against the baseline (a tie counts one half) "
             "± its prompt-clustered standard error, with the 95% prompt-bootstrap interval; "
             "LC: AlpacaEval 2's length-controlled win rate; BT: Bradley-Terry rating on the "
             "Elo scale (baseline = 1000) with its 95% prompt-bootstrap interval (∞: the model "
             "won or lost every judgment, so its rating has no finite estimate); BT (style): "
             "the same with Arena-Hard's style covariates. Entropy and KL in nats per "
             "sequence; self-BLEU 0-100 (higher = less diverse). See the README's "
             "Statistics section.", ""]
    note = few_prompts_note(rows)
    if note:
        lines += [f"**Warning: {note}.**", ""]
    ci = "win_rate_t_ci" if note else "win_rate_ci"  # few prompts: the interval that covers
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        cells = []
        for c in shown:
            if c == "label":
                cells.append(r["label"] + (" (baseline)" if r["is_baseline"] else ""))
            elif c == "win_rate" and r.get("win_rate") is not None:
                se = f" ± {r['win_rate_se']:.2f}" if r.get("win_rate_se") is not None else ""
                cells.append(f"{r['win_rate']:.2f}{se}"
                             + _interval(r.get(f"{ci}_low"), r.get(f"{ci}_high")))
            elif c == "bt_rating" and not r["is_baseline"] and (
                    r.get("bt_rating") is not None or r.get("bt_separated")):
                point = f"{r['bt_rating']:.0f}" if r.get("bt_rating") is not None else \
                    ("+∞" if r.get("bt_direction") == "+inf" else "-∞")
                cells.append(point + _interval(r.get("bt_ci_low"), r.get("bt_ci_high"), 0))
            elif c == "bt_rating_sc" and not r["is_baseline"] and r.get(c) is not None:
                cells.append(f"{r[c]:.0f}" + _interval(r.get("bt_sc_ci_low"),
                                                       r.get("bt_sc_ci_high"), 0))
            else:
                cells.append(_fmt(r.get(c)))
        lines.append("| " + " | ".join(cells) + " |")
    judges = sorted({k.split(":")[0] for r in rows for k in r if k.endswith(":win_rate")})
    if len(judges) > 1:
        lines += ["", "## Every judge", "",
                  "Win rate (%) ± prompt-clustered SE, and LC, of each judge.", "",
                  "| label | " + " | ".join(f"{j} | {j} LC" for j in judges) + " |",
                  "|" + "---|" * (1 + 2 * len(judges))]
        for r in rows:
            if r["is_baseline"]:
                continue
            cells = []
            for j in judges:
                wr, se = r.get(f"{j}:win_rate"), r.get(f"{j}:win_rate_se")
                cells.append("–" if wr is None else f"{wr:.2f}"
                             + (f" ± {se:.2f}" if se is not None else ""))
                cells.append(_fmt(r.get(f"{j}:lc_win_rate")))
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines += _dimension_table(rows)
    scorers = sorted({k.split(":")[0] for r in rows for k in r if k.endswith(":mean_reward")})
    if len(scorers) > 1:
        lines += ["", "## Every scorer", "", "Mean reward ± prompt-clustered SE.", "",
                  "| label | " + " | ".join(scorers) + " |", "|" + "---|" * (1 + len(scorers))]
        for r in rows:
            cells = []
            for s in scorers:
                v, se = r.get(f"{s}:mean_reward"), r.get(f"{s}:mean_reward_se")
                cells.append("–" if v is None else f"{v:.4g}"
                             + (f" ± {se:.2g}" if se is not None else ""))
            lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    from evaluators.benchmarks import benchmark_markdown  # lm-eval's columns, where present

    lines += benchmark_markdown(rows)
    return "\n".join(lines) + "\n"
