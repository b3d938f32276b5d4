"""What SPO's online KL regularizer costs per training step, by estimator.

Trains SPO on the sentiment task's pairs from an existing quickstart store (run the
quickstart first) with lambda = 0 (no regularizer) and with each KL estimator, interleaved
in turns so machine load hits all alike, and prints the median step time of each and the
extra time the regularizer adds.

    .venv/bin/python bench/spo_regularizer_cost.py [--results results/quickstart] [--steps 12] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")


def main() -> None:
    import torch

    from harness.spec import TrainingSpec
    from harness.store import Store
    from trainers.loop import TrainJob, compute_reference_logps, train
    from trainers.losses import get_loss

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results/quickstart", help="a quickstart results dir")
    ap.add_argument("--steps", type=int, default=12, help="steps per timed run")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of all variants")
    args = ap.parse_args()
    store = Store(args.results)
    rows = store.conn.execute("SELECT key, kind FROM artifacts").fetchall()
    ref = next(store.get_artifact(k) for k, kind in rows if kind == "reference")
    pairs_art = next(store.get_artifact(k) for k, kind in rows if kind == "pairs")
    import json
    pairs = [json.loads(s) for s in (pairs_art["path"] / "pairs.jsonl").read_text().splitlines()]
    prompts = [p["prompt"] for p in pairs]
    ref_logps = compute_reference_logps(ref["path"], pairs, 128)
    variants = {"lambda=0": {"alpha": 1.0}}
    for est in ("exact", "k1", "k3", "reference"):
        variants[f"lambda=0.05 {est}"] = {"alpha": 1.0, "lambda": 0.05, "kl_estimator": est}
    times: dict[str, list[float]] = {v: [] for v in variants}
    work = Path(tempfile.mkdtemp(prefix="spo-reg-"))

    def run(name: str, params: dict, steps: int) -> float:
        job = TrainJob(label=name, seed=0, reference_dir=ref["path"], pairs=pairs[:16 * steps],
                       reg_prompts=prompts, training=TrainingSpec(
                           epochs=1, batch_size=16, max_grad_norm=1.0, save_every=10**6,
                           log_every=10**6, kl_log_prompts=0),
                       work_dir=work / f"{name}-{steps}", ref_logps=ref_logps)
        t0 = time.perf_counter()
        train(job, get_loss("spo", **params), show_progress=False)
        return time.perf_counter() - t0

    # per-step time = (time of N steps - time of 1 step) / (N - 1): model loading and the
    # `reference` estimator's one-off sample pool cancel out. Variants take turns per round.
    for _ in range(args.rounds):
        for name, params in variants.items():
            times[name].append((run(name, params, args.steps) - run(name, params, 1))
                               / (args.steps - 1))
    base = statistics.median(times["lambda=0"])
    print(f"torch threads {torch.get_num_threads()}; SPO on {len(pairs)} sentiment pairs, "
          f"batch 16; regularizer: 8 prompts x 1 sample x 16 new tokens per step")
    print(f"{'variant':24s} {'median s/step':>14s} {'extra s/step':>13s}")
    for name in variants:
        med = statistics.median(times[name])
        print(f"{name:24s} {med:14.4f} {med - base:13.4f}")


if __name__ == "__main__":
    main()
