"""SeqPO's outer loop (trainers/losses/seqpo.py): one round per preference dimension.

Round n (1-based) trains on the pairs of dimension n (`harness.dimensions`, in the spec's
order) starting from, and with reference, the policy of round n-1 (round 0: the SFT
reference pi_0). Before it trains, each of its pairs gets its responses' earlier-dimension
implicit rewards P(y) from the chain pi_0, ..., pi_{n-1} (`SeqPOLoss.prior_rewards`): one
forward pass of each stored policy over the round's pairs, once. Each finished round is an
artifact keyed by what it depends on (`round_key`), so a killed run resumes at the last
finished round (and, inside a round, from its last training checkpoint), and runs that
differ only in what later rounds use (round 1 is DPO: lambda and margin_sign do not enter
it) train their shared rounds once. Every round before the last is also a model of the
leaderboard, `<label>@round<n>` (a shared round once, under the first run's label), whose
theory target is the chain up to round n.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.dimensions import experiment_dimensions, rows_of
from harness.errors import InputError
from harness.hashing import content_hash

ARTIFACT = "seqpo-round"


LATER_ROUNDS_ONLY = ("lambda", "margin_sign")  # hyperparameters round 1 does not read


def round_key(exp, run, n: int) -> str:
    """The content key of round n's policy (1-based): the run's key material (reference,
    training settings, seed, method, hyperparameters) with the pairs of the first n
    dimensions only, without `rounds`, and in round 1 without lambda and margin_sign."""
    a, dims = exp.assets, experiment_dimensions(exp)
    skip = ("rounds", *(LATER_ROUNDS_ONLY if n == 1 else ()))
    return content_hash({
        ARTIFACT: n, "reference": a.reference_key, "dimensions": dims[:n],
        "pairs": content_hash([r for d in dims[:n] for r in rows_of(a.pairs, d)]),
        "reg_prompts": content_hash(a.reg_prompts), "training": exp.spec.training.key(),
        "seed": run.seed, "method": run.method,
        "params": {k: v for k, v in run.params.items() if k not in skip}})


def n_rounds(loss: Any, dimensions: list[str]) -> int:
    return loss.rounds or len(dimensions)


def with_priors(rows: list[dict[str, Any]], chain_logps: list[tuple[Any, Any]],
                loss: Any) -> list[dict[str, Any]]:
    """The rows with chosen_prior_reward / rejected_prior_reward from the chain's log-probs
    [(chosen, rejected) under pi_0], ..., [under pi_{n-1}] (float64 for the sums)."""
    prior_c = loss.prior_rewards([c.double() for c, _ in chain_logps])
    prior_r = loss.prior_rewards([r.double() for _, r in chain_logps])
    return [{**row, "chosen_prior_reward": float(a), "rejected_prior_reward": float(b)}
            for row, a, b in zip(rows, prior_c, prior_r)]


def train_seqpo(exp, run, run_key: str, loss, show_progress: bool = True):
    """Run the rounds; returns (model, tokenizer, history) of the last round's policy.
    (`run_key` is unused: each round has a content key of its own, `round_key`.)"""
    from trainers.loop import TrainJob, compute_reference_logps, train

    store, assets = exp.store, exp.assets
    dims = experiment_dimensions(exp)
    total = n_rounds(loss, dims)
    if not dims or total > len(dims):  # the spec check refuses this before any stage
        raise InputError(f"run '{run.label}': {total} rounds, {len(dims)} dimensions")
    cut = exp.spec.training.truncation()
    chain: list[Path] = [Path(assets.reference_dir)]
    history: list[dict[str, Any]] = []
    model = tok = None
    for n in range(1, total + 1):
        key = round_key(exp, run, n)
        found = store.get_artifact(key)
        if found is not None:
            chain.append(found["path"])
            history += found.get("history", [])
            continue
        rows = rows_of(assets.pairs, dims[n - 1])
        if not rows:
            raise InputError(f"run '{run.label}', round {n}: no pairs of dimension "
                             f"'{dims[n - 1]}'")
        logps = [compute_reference_logps(p, rows, cut, assets.completion_eos) for p in chain]
        pairs = with_priors(rows, logps, loss)
        work = exp.results_dir / "work" / f"{ARTIFACT}-{key}"
        job = TrainJob(label=f"{run.label} round {n}/{total} ({dims[n - 1]})", seed=run.seed,
                       reference_dir=chain[-1], pairs=pairs, reg_prompts=assets.reg_prompts,
                       training=exp.spec.training, work_dir=work, ref_logps=logps[-1],
                       add_eos=assets.completion_eos)
        model, tok, hist = train(job, loss, show_progress=show_progress)
        hist = [{**h, "round": n, "dimension": dims[n - 1], "n_pairs": len(rows)} for h in hist]
        staging = store.staging_dir(ARTIFACT, key)
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        chain.append(store.commit_artifact(ARTIFACT, key, staging, {
            "history": hist, "round": n, "dimension": dims[n - 1], "label": run.label}))
        shutil.rmtree(work, ignore_errors=True)
        history += hist
    if model is None:  # every round came from the store: load the last one
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(chain[-1], local_files_only=True,
                                                     dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(chain[-1], local_files_only=True)
    return model, tok, history


def round_models(exp, run) -> list[Any]:
    """The stored policies of a trained SeqPO run's rounds before the last, as models
    `<label>@round<n>` (their run: the same method with rounds = n, whose theory target is
    the chain up to round n); [] for any other method."""
    from harness.pipeline import Model
    from harness.spec import RunSpec
    from trainers.losses import get_loss

    loss = get_loss(run.method, **run.params)
    if not getattr(loss, "sequential", False):
        return []
    out = []
    for n in range(1, n_rounds(loss, experiment_dimensions(exp))):
        key = round_key(exp, run, n)
        found = exp.store.get_artifact(key)
        if found is None:
            continue
        label = f"{run.label}@round{n}"
        out.append(Model(label, key, Path(found["path"]),
                         RunSpec(run.method, {**run.params, "rounds": n}, run.seed, label)))
    return out
