"""How far sampled Bradley-Terry labels leave SPO and DPO from their optima, by data size.

With exact soft labels the bandit's optimum is reached (KL ~ 0). With sampled labels the
empirical preference frequencies are noisy, so the learned policy matches the optimum only
as the number of pairs grows. This script trains SPO (alpha=1) and DPO (beta=1) on the
`bandit` task with sampled labels at several sizes and prints exact KL to each target.

    .venv/bin/python bench/bandit_sampled_labels.py [--sizes 16 64 256 1024] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is first imported


def main() -> None:
    from harness.pipeline import Experiment
    from harness.spec import ExperimentSpec, build_dataclass

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024],
                    help="pairs per prompt")
    ap.add_argument("--steps", type=int, default=600, help="optimizer steps per run")
    ap.add_argument("--out", default=None, help="results folder (default: a temp dir)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bandit-sampled-"))
    rows = []
    for size in args.sizes:
        pairs = 8 * size
        batch = min(64, pairs)
        epochs = max(1, round(args.steps * batch / pairs))
        spec = build_dataclass(ExperimentSpec, {
            "name": f"bandit-sampled-{size}", "task": "bandit",
            "task_options": {"labels": "sampled", "pairs_per_prompt": size},
            "methods": [{"name": "spo", "params": {"alpha": 1.0, "lambda": 0}},
                        {"name": "dpo", "params": {"beta": 1.0}}],
            "training": {"epochs": epochs, "batch_size": batch, "learning_rate": 0.003,
                         "max_grad_norm": None, "save_every": 10_000, "log_every": 100,
                         "kl_log_prompts": 0},
            "generation": {"n_samples": 4, "max_new_tokens": 1, "batch_size": 64}})
        exp = Experiment(spec, out / f"pairs-{size}", show_progress=False)
        t0 = time.time()
        for stage in ("prepare", "train", "generate", "score", "judge"):
            getattr(exp, stage)()
        for rec in exp.report():
            if rec["method"] != "sft":
                rows.append({"pairs_per_prompt": size, "label": rec["label"],
                             "exact_kl_to_target": rec["exact_kl_to_target"],
                             "exact_entropy": rec["exact_entropy"]})
                print(f"pairs/prompt={size:5d}  {rec['label']:16s} "
                      f"exact_kl_to_target={rec['exact_kl_to_target']:.4f} "
                      f"exact_entropy={rec['exact_entropy']:.3f}  ({time.time() - t0:.0f}s)",
                      flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    print(f"summary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
