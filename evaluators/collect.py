"""Read the units the current spec names into plain per-model results.

The report stages (leaderboard, softness, judge quality) take these plain records, not the
experiment: they never see the store, so they cannot read a stale unit, and they can be
tested on hand-built data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.units import Judged, Units


@dataclass
class ExactPrompt:
    """Bandit only: a model's exact log-probs over every answer of one prompt."""

    logprobs: np.ndarray        # log pi(y|x) of each enumerable answer
    rewards: np.ndarray         # the task's true reward of each answer
    target: np.ndarray | None   # the method's optimal log-probs (None: no closed form)
    prompt: str = ""            # the prompt's text (pairs a model's row with the baseline's)
    outside_reward: float | None = None  # the reward of an answer outside the set, if known
    # each preference dimension's reward of each answer, in training order (bandit with
    # dimensions >= 2; harness/dimensions.py); None without dimensions
    dimension_rewards: dict[str, np.ndarray] | None = None


@dataclass
class ModelResults:
    label: str
    method: str
    params: dict[str, Any]
    seed: int | None
    is_baseline: bool
    # one row per stored generation of the spec's slots:
    # prompt_id, sample_index, text, reward (None: not scored / failed), logp, ref_logp
    samples: list[dict[str, Any]]
    # judge name -> one Judged per (baseline sample i, candidate sample i); empty for the baseline
    judged: dict[str, list[Judged]] = field(default_factory=dict)
    exact: list[ExactPrompt] | None = None


def judge_names(names: list[str]) -> list[str]:
    """Display names of the spec's judges, unique ('llm', 'llm#2', ...)."""
    out, seen = [], {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


@dataclass
class Battles:
    """Every judged pair of one judge, among all models (the battle plan) and the gamed rows.

    `rows`: one per successful judgment: prompt_id, sample_index, model_a, model_b, p_b
    (P(model_b beats model_a)), text_a, text_b. `gamed`: the baseline's length-steered
    answers judged against the baseline: prompt_id, kind, baseline_text_len,
    model_text_len, preference (AlpacaEval's LC regularization rows).
    """

    rows: list[dict[str, Any]]
    n_failed: int
    gamed: list[dict[str, Any]]


def collect_battles(units: Units, gens: dict[str, list[dict]], plan: list[tuple[str, str]],
                    judges: dict[str, Any], gamed: dict[str, list[dict]] | None = None
                    ) -> dict[str, Battles]:
    """The battles of each judge: `gens` maps a label to its generations (`units.generations`).

    `gamed` maps 'concise'/'verbose' to the baseline's gamed generations, whose judgments
    (first position: the baseline, plan[0][0]) become the LC regularization rows.
    """
    out = {}
    for name, judge in judges.items():
        rows, failed = [], 0
        for a, b in plan:
            for j in units.judgments(judge.fingerprint, gens[a], gens[b]):
                if not j.ok:
                    failed += 1
                    continue
                rows.append({"prompt_id": j.candidate["prompt_id"],
                             "sample_index": j.candidate["sample_index"], "model_a": a,
                             "model_b": b, "p_b": float(j.row["preference"]),
                             "text_a": j.baseline["text"], "text_b": j.candidate["text"]})
        gamed_rows = []
        base = plan[0][0] if plan else None
        for kind, steered in (gamed or {}).items():
            if base is None:
                break
            for j in units.judgments(judge.fingerprint, gens[base], steered):
                if j.ok:
                    gamed_rows.append({"prompt_id": j.candidate["prompt_id"], "kind": kind,
                                       "baseline_text_len": len(j.baseline["text"]),
                                       "model_text_len": len(j.candidate["text"]),
                                       "preference": float(j.row["preference"])})
        out[name] = Battles(rows, failed, gamed_rows)
    return out


def collect(units: Units, models: list[Any], baseline_key: str, reference_key: str,
            scorers: dict[str, Any], judges: dict[str, Any], task: Any,
            eos: bool) -> list[ModelResults]:
    """Plain results of every model (the pipeline's `Model`s), read through `units` only.

    Each sample's `rewards` holds every scorer's value (None: not scored or failed) by
    display name; `reward` is the first scorer's, the one `mean_reward` reports.
    """
    from trainers.losses import get_loss

    base_gens = units.generations(baseline_key)
    enumerable = task.enumerable_responses(units.prompts[0].text) is not None
    ref_exact = units.exact(reference_key, task, eos) if enumerable else {}
    out = []
    for model in models:
        gens = units.generations(model.key)
        by_scorer = {name: units.scores(s.fingerprint, gens) for name, s in scorers.items()}
        own, ref = units.logps(model.key, gens), units.logps(reference_key, gens)
        samples = []
        for g in gens:
            rewards = {name: rows[g["key"]]["value"]
                       if g["key"] in rows and rows[g["key"]]["status"] == "ok" else None
                       for name, rows in by_scorer.items()}
            samples.append({"prompt_id": g["prompt_id"], "sample_index": g["sample_index"],
                            "text": g["text"], "rewards": rewards,
                            "reward": next(iter(rewards.values()), None),
                            "logp": own.get(g["key"]), "ref_logp": ref.get(g["key"])})
        is_base = model.key == baseline_key
        judged = {} if is_base else {name: units.judgments(j.fingerprint, base_gens, gens)
                                     for name, j in judges.items()}
        exact = None
        if enumerable:
            loss = get_loss(model.run.method, **model.run.params) if model.run else None
            if model.run and getattr(model.run, "ssl", None):  # the degree loss moves it
                loss = None
            exact = _exact(units.exact(model.key, task, eos), ref_exact, task, loss)
        run = model.run
        ssl = getattr(run, "ssl", None)  # Self-supervised PO: its own method and config
        out.append(ModelResults(label=model.label,
                                method=(run.method + ("+ssl" if ssl else "")) if run else "sft",
                                params=({**run.params, "ssl": ssl} if ssl else run.params)
                                if run else {},
                                seed=run.seed if run else None, is_baseline=is_base,
                                samples=samples, judged=judged, exact=exact))
    return out


def _exact(own: dict[str, list[float]], ref: dict[str, list[float]], task: Any,
           loss: Any) -> list[ExactPrompt]:
    import torch

    rows = []
    order = getattr(task, "dimension_order", None) or []
    order = order if set(order) == set(task.dimensions) else task.dimensions
    for prompt, logp in own.items():
        r = np.asarray(task.true_rewards(prompt), dtype=float)
        by_dim = task.true_dimension_rewards(prompt) if task.dimensions else None
        by_dim = {d: np.asarray(by_dim[d], dtype=float) for d in order} if by_dim else None
        target = None
        if loss is not None and prompt in ref:
            ref_lp = np.asarray(ref[prompt]) - np.logaddexp.reduce(ref[prompt])
            if by_dim is None:
                t = loss.optimal_logprobs(torch.tensor(r), torch.tensor(ref_lp))
            elif getattr(loss, "dimensional", False):  # SeqPO: [D, K] in training order
                t = loss.optimal_logprobs(torch.tensor(np.stack(list(by_dim.values()))),
                                          torch.tensor(ref_lp))
            else:  # mixed labels of several dimensions: the targets' BT labels do not hold
                t = None
            target = None if t is None else t.numpy()
        rows.append(ExactPrompt(np.asarray(logp), r, target, prompt,
                                task.outside_reward(prompt), by_dim))
    return rows
