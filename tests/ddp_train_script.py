"""One training run of `tests/test_multiprocess.py`, launched by `accelerate launch` with N
processes (or plain python for 1): the tiny setup is built from a seed, every process
trains its shard, and the main process writes the final weights and the history."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from harness.spec import TrainingSpec
from trainers.loop import TrainJob, compute_reference_logps, train
from trainers.losses import get_loss


def main(reference: str, pairs_file: str, out: str, batch_size: int, method: str) -> None:
    pairs = json.loads(Path(pairs_file).read_text())
    cfg = TrainingSpec(epochs=2, batch_size=batch_size, learning_rate=0.01, max_length=16,
                       save_every=3, log_every=1, kl_log_prompts=0)
    params = ({"beta": 0.1} if method == "dpo" else
              {"alpha": 1.0, "lambda": 0.1, "reg_prompts_per_step": 2, "reg_max_new_tokens": 2})
    ref = compute_reference_logps(Path(reference), pairs, cfg.max_length)
    job = TrainJob(label="ddp", seed=0, reference_dir=Path(reference), pairs=pairs,
                   reg_prompts=[p["prompt"] for p in pairs], training=cfg,
                   work_dir=Path(out) / "work", ref_logps=ref)
    model, _, history = train(job, get_loss(method, **params), show_progress=False)
    from accelerate import PartialState

    if PartialState().is_main_process:
        save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
                   if k != "lm_head.weight"},
                  str(Path(out) / "final.safetensors"))
        (Path(out) / "history.json").write_text(json.dumps(history))
        (Path(out) / "processes.txt").write_text(str(PartialState().num_processes))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
