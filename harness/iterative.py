"""SPPO's outer loop (METHODS.md §5): sample from the current iterate, judge, train, repeat.

Iteration t: K responses per training prompt are sampled from pi_t (pi_0 = the SFT
reference), scored by the experiment's first scorer, and P(y_i > y_j) = sigmoid(s (r_i -
r_j)) with the task's Bradley-Terry scale s; the best and the worst response form a pair
with soft label P(best > worst) (SPPO's `sppo_single` form, as in its code). pi_{t+1} is
trained on these pairs with pi_t as the reference. Each finished iterate is an artifact
keyed by (run, t), so a killed run resumes at the last finished iterate (and, inside an
iterate, from its last training checkpoint).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.hashing import content_hash, seed_from


def self_play_pairs(backend, scorer, prompts: list[str], k: int, bt_scale: float, seed: int,
                    max_new_tokens: int) -> list[dict[str, Any]]:
    from evaluators.generation import SamplingParams

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
    outs = backend.generate([(p, i) for p in prompts for i in range(k)], params,
                            batch_size=64, seed=seed, desc="sppo samples")
    rows = []
    for n, prompt in enumerate(prompts):
        texts = [o.text for o in outs[n * k:(n + 1) * k]]
        scores = scorer.score(prompt, texts) if len(texts) else []
        hi = max(range(k), key=lambda i: scores[i])
        lo = min(range(k), key=lambda i: scores[i])
        if scores[hi] == scores[lo] or texts[hi] == texts[lo]:
            continue  # no preference signal among this prompt's samples
        p = 1.0 / (1.0 + math.exp(-bt_scale * (scores[hi] - scores[lo])))
        rows.append({"prompt": prompt, "chosen": texts[hi], "rejected": texts[lo],
                     "soft_label": p})
    return rows


def train_sppo(exp, run, run_key: str, loss, show_progress: bool = True):
    """Run the outer loop; returns (model, tokenizer, history) of the last iterate."""
    from evaluators.generation import HFBackend
    from trainers.loop import TrainJob, compute_reference_logps, train

    store, assets = exp.store, exp.assets
    prompts = sorted({r["prompt"] for r in assets.pairs})
    scorer = exp.scorers()[0]
    policy_dir: Path = Path(assets.reference_dir)
    history: list[dict[str, Any]] = []
    model = tok = None
    for t in range(loss.iterations):
        key = content_hash({"sppo-iterate": run_key, "t": t})
        found = store.get_artifact(key)
        if found is not None:
            policy_dir = found["path"]
            history += found.get("history", [])
            continue
        rows = self_play_pairs(HFBackend(str(policy_dir)), scorer, prompts,
                               loss.samples_per_prompt, exp.task.bt_scale,
                               seed_from(run.seed, "sppo", t), exp.spec.generation.max_new_tokens)
        if not rows:
            raise InputError(f"run '{run.label}', sppo iteration {t + 1}: no prompt gave two "
                             "differently scored samples; raise samples_per_prompt")
        ref = compute_reference_logps(policy_dir, rows, exp.spec.training.max_length,
                                      assets.completion_eos)
        work = exp.results_dir / "work" / f"run-{run_key}-iter{t}"
        job = TrainJob(label=f"{run.label} iter {t + 1}/{loss.iterations}", seed=run.seed,
                       reference_dir=policy_dir, pairs=rows, reg_prompts=assets.reg_prompts,
                       training=exp.spec.training, work_dir=work, ref_logps=ref,
                       add_eos=assets.completion_eos)
        model, tok, hist = train(job, loss, show_progress=show_progress)
        hist = [{**h, "iteration": t + 1, "n_pairs": len(rows)} for h in hist]
        staging = store.staging_dir("sppo-iterate", key)
        model.save_pretrained(staging)
        tok.save_pretrained(staging)
        policy_dir = store.commit_artifact("sppo-iterate", key, staging, {"history": hist})
        shutil.rmtree(work, ignore_errors=True)
        history += hist
    if model is None:  # every iterate came from the store: load the last one
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(policy_dir, local_files_only=True,
                                                     dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(policy_dir, local_files_only=True)
    return model, tok, history
