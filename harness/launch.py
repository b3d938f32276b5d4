"""The command line under `accelerate launch --multi_gpu --num_processes N -m harness
train|run SPEC`: data-parallel training with one store writer.

Only the main process is the harness: it loads the spec, locks and opens the store,
prepares the task, computes the reference log-probs once and runs every later stage. The
other processes follow it. For each run to train the main process broadcasts the run's
job (reference folder, pairs, regularization prompts and the reference log-probs
themselves), every process trains its shard of each batch (`trainers.loop.train` is data
parallel), and the main process alone writes the checkpoint and commits it. When training
is over, or the command failed before a run started, the main process releases the
others, which exit 0 without ever opening the store. (A failure in the middle of a
run's training ends the main process, and the launcher stops the rest.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from harness.errors import InputError
from harness.executors import RunJob, Trained, quiet_transformers, train_one
from harness.secrets import redact

# The followers wait in a broadcast while the main process prepares the task and computes
# the reference log-probs, which can take hours on a large data set; torch's default
# process-group timeout (30 minutes) would end them.
WAIT = timedelta(hours=12)
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def processes() -> int:
    """The launch's process count (1 without a launcher)."""
    raw = os.environ.get("WORLD_SIZE", "") or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"WORLD_SIZE must be a positive integer, got '{raw}'")
    return int(raw)


def _init() -> Any:
    """Join the launch's process group (gloo on CPUs): Accelerate's PartialState, created
    as `trainers.loop.make_accelerator` would, with a longer timeout."""
    missing = [v for v in LAUNCH_VARS if not os.environ.get(v)]
    if missing:
        raise InputError(f"WORLD_SIZE is {processes()} but {', '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not set: start the processes "
                         "with `accelerate launch --num_processes N -m harness ...`")
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT)


def _broadcast(message: Any = None) -> Any:
    """The main process's `message`, in every process."""
    import torch.distributed as dist

    box = [message]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class LaunchedExecutor:
    """The main process's side: each run is trained by every process of the launch."""

    trains_iterative = False

    def __init__(self, show_progress: bool) -> None:
        self.show_progress = show_progress
        self._released = False
        self._training = False

    def train(self, jobs: list[RunJob]) -> Iterator[Trained]:
        from tqdm.auto import tqdm

        for job in tqdm(jobs, desc="train runs", disable=not self.show_progress):
            _broadcast(("train", job))
            self._training = True  # the followers are in this run's collectives now
            trained = train_one(job, self.show_progress)
            self._training = False
            yield trained

    def close(self) -> None:
        """Release the followers (once). Not in the middle of a run: the followers wait in
        its collectives, and a broadcast there would hang; the launcher stops them when this
        process exits."""
        if not self._released and not self._training:
            self._released = True
            try:
                _broadcast(("stop", None))
            except RuntimeError:  # a follower already gone (the launcher is ending them)
                pass


class Follower:
    """A non-main process of the launch: trains what the main process sends."""

    def follow(self) -> int:
        """Train each job the main process broadcasts until it says stop; the exit code.

        A bad input fails in every process alike, and the main process says it; any other
        failure may be this process's own, so it says it too, naming its rank.
        """
        quiet_transformers()  # the main process reports progress; warnings say it once
        try:
            while True:
                kind, job = _broadcast()
                if kind == "stop":
                    return 0
                train_one(job, show_progress=False)
        except InputError:
            return 2
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            rank = os.environ.get("RANK", "?")
            line = redact(f"error: process {rank}: {type(exc).__name__}: {exc}")
            print(" ".join(line.split()), file=sys.stderr)
            return 1


def executor(show_progress: bool) -> LaunchedExecutor | Follower:
    """This process's part in the launch (joins the process group)."""
    state = _init()
    if state.is_main_process:
        _note_cpu_sharding(state)
        return LaunchedExecutor(show_progress)
    return Follower()


def _note_cpu_sharding(state: Any) -> None:
    """Accelerate (1.16) turns an FSDP or DeepSpeed config into FSDP or DeepSpeed only on
    accelerators (`AcceleratorState`: FSDP for MULTI_GPU/XPU/..., DeepSpeed `not cpu`); on
    CPUs (MULTI_CPU, gloo) it ignores the config without a word and runs plain DDP."""
    import logging

    asked = [name for name, var in (("FSDP", "ACCELERATE_USE_FSDP"),
                                    ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(var, "").lower() == "true"]
    if asked and str(state.distributed_type).endswith("MULTI_CPU"):
        logging.getLogger("spo_harness").warning(
            "Accelerate runs %s on GPUs only: on these CPUs the launch trains plain data "
            "parallel (DDP), every process holding the whole model", " and ".join(asked))
