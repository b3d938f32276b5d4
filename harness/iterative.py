"""SPPO's outer loop (METHODS.md §5): sample from the current iterate, judge, train, repeat.

Iteration t: K responses per training prompt are sampled from pi_t (pi_0 = the SFT
reference). P(y_i > y_j) comes from the experiment's first scorer as sigmoid(s (r_i - r_j))
with the task's Bradley-Terry scale s (preference: scorer, SPPO's PairRM scores), or from
its first pairwise judge asked about every unordered pair (preference: judge). Win rates
P(y_i > pi_t) = (1/K) sum_j P(y_i > y_j); the responses with the highest and lowest win
rate form the pair, labelled for both SPPO forms. pi_{t+1} is trained on these pairs with
pi_t as the reference. Each finished iterate is an artifact
keyed by (run, t), so a killed run resumes at the last finished iterate (and, inside an
iterate, from its last training checkpoint).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.data import distinct_prompts
from harness.errors import InputError
from harness.hashing import content_hash, seed_from
from harness.numeric import sigmoid


def win_matrix_from_scores(scores: list[float], bt_scale: float) -> list[list[float]]:
    """P(y_i > y_j) = sigmoid(s (r_i - r_j)), 1/2 on the diagonal (SPPO's compute_prob)."""
    return [[sigmoid(bt_scale * (a - b)) for b in scores] for a in scores]


def win_matrix_from_judge(judge, prompt: str, texts: list[str]) -> list[list[float]] | None:
    """Every unordered pair judged once: P(y_j > y_i) = judge(baseline y_i, candidate y_j).

    None when any judgment failed: the prompt gives no pair this iteration rather than one
    built on a partial matrix.
    """
    k = len(texts)
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    verdicts = judge.judge(prompt, [texts[i] for i, _ in pairs], [texts[j] for _, j in pairs])
    m = [[0.5] * k for _ in range(k)]
    for (i, j), p in zip(pairs, verdicts):
        if p is None:
            return None
        m[j][i], m[i][j] = float(p), 1.0 - float(p)
    return m


def pair_from_win_matrix(prompt: str, texts: list[str],
                         m: list[list[float]]) -> dict[str, Any] | None:
    """Best and worst by estimated win rate P(y_i > pi_t) = (1/K) sum_j P(y_i > y_j).

    The diagonal contributes 1/2, as in SPPO's code. The row carries both SPPO forms'
    labels: soft_label = P(best > worst) and the two responses' win rates.
    """
    k = len(texts)
    win = [sum(row) / k for row in m]
    hi = max(range(k), key=lambda i: win[i])
    lo = min(range(k), key=lambda i: win[i])
    if win[hi] == win[lo] or texts[hi] == texts[lo]:
        return None  # no preference signal among this prompt's samples
    return {"prompt": prompt, "chosen": texts[hi], "rejected": texts[lo],
            "soft_label": m[hi][lo], "chosen_win_rate": win[hi], "rejected_win_rate": win[lo]}


def self_play_pairs(backend, prompts: list[str], k: int, seed: int, max_new_tokens: int, *,
                    scorer=None, judge=None, bt_scale: float = 1.0,
                    progress: bool = True) -> tuple[list[dict], int]:
    """One iteration's training rows, and how many prompts had a failed judgment."""
    from evaluators.generation import SamplingParams

    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
    outs = backend.generate([(p, i) for p in prompts for i in range(k)], params,
                            batch_size=64, seed=seed, desc="sppo samples", progress=progress)
    rows, failed = [], 0
    for n, prompt in enumerate(prompts):
        texts = [o.text for o in outs[n * k:(n + 1) * k]]
        if judge is not None:
            m = win_matrix_from_judge(judge, prompt, texts)
        else:
            m = win_matrix_from_scores(scorer.score(prompt, texts), bt_scale)
        if m is None:
            failed += 1
            continue
        row = pair_from_win_matrix(prompt, texts, m)
        if row is not None:
            rows.append(row)
    return rows, failed


def train_sppo(exp, run, run_key: str, loss, show_progress: bool = True):
    """Run the outer loop; returns (model, tokenizer, history) of the last iterate."""
    from evaluators.generation import BACKENDS
    from trainers.loop import TrainJob, compute_reference_logps, train

    store, assets = exp.store, exp.assets
    prompts = distinct_prompts(assets.pairs)  # pairs' or prompt-only rows' prompts
    judge = exp.judges()[0] if loss.preference == "judge" else None
    scorer = None if judge is not None else exp.scorers()[0]
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
        # training.online_backend samples the iterate: hf, or a fresh vLLM engine on its
        # folder, closed before training so it holds no memory meanwhile
        backend = BACKENDS.get(exp.spec.training.online_backend)(str(policy_dir))
        rows, failed = self_play_pairs(backend, prompts,
                                       loss.samples_per_prompt, seed_from(run.seed, "sppo", t),
                                       exp.spec.generation.max_new_tokens, scorer=scorer,
                                       judge=judge, bt_scale=exp.task.bt_scale,
                                       progress=show_progress)
        if hasattr(backend, "close"):
            backend.close()
        del backend
        if not rows:
            raise InputError(f"run '{run.label}', sppo iteration {t + 1}: no prompt gave two "
                             f"differently judged samples ({failed} prompts had failed "
                             "judgments); raise samples_per_prompt")
        ref = compute_reference_logps(policy_dir, rows, exp.spec.training.truncation(),
                                      assets.completion_eos)
        work = exp.results_dir / "work" / f"run-{run_key}-iter{t}"
        job = TrainJob(label=f"{run.label} iter {t + 1}/{loss.iterations}", seed=run.seed,
                       reference_dir=policy_dir, pairs=rows, reg_prompts=assets.reg_prompts,
                       training=exp.spec.training, work_dir=work, ref_logps=ref,
                       add_eos=assets.completion_eos)
        model, tok, hist = train(job, loss, show_progress=show_progress)
        hist = [{**h, "iteration": t + 1, "n_pairs": len(rows), "n_failed_prompts": failed}
                for h in hist]
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
