"""Who trains a sweep's runs: this process (the default), the processes of an `accelerate
launch` together (`harness.launch`), or a Ray cluster (`harness.ray_executor`).

The pipeline decides what to train (one `RunJob` per run), an executor trains the jobs and
hands back, per run, its history and its checkpoint folder (written under the store's
staging name), and the pipeline alone commits them into the store. So the store has one
writer whatever trains, and a run is in it whole or not at all.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness.errors import InputError
from harness.spec import RunSpec

if TYPE_CHECKING:  # torch stays unimported until a run trains: option errors are instant
    from trainers.loop import TrainJob

EXECUTORS = ("local", "ray")


@dataclass
class RunJob:
    """One run to train: everything a trainer in another process needs, and no store."""

    run: RunSpec
    key: str             # the run's content key
    job: TrainJob
    staging: Path        # the checkpoint folder is written here; the driver commits it


@dataclass
class Trained:
    key: str
    history: list[dict[str, Any]]
    seconds: float       # training time, the checkpoint's save excluded


class Executor(Protocol):
    # SPPO samples and judges between its trainings, with the driver's store and judges:
    # an executor that trains in this one process can run it; the launch cannot
    trains_iterative: bool

    def train(self, jobs: list[RunJob]) -> Iterator[Trained]:
        """Train every job; yield each as it finishes, its checkpoint in `job.staging`."""
        ...

    def close(self) -> None:
        """Training is over for this command (release helpers, disconnect)."""
        ...


def train_one(job: RunJob, show_progress: bool) -> Trained:
    """Train one run and write its model and tokenizer into `job.staging`.

    Under `accelerate launch` every process trains, and the main one alone writes.
    """
    from accelerate import PartialState

    from trainers.loop import train
    from trainers.losses import get_loss

    t0 = time.time()
    model, tok, history = train(job.job, get_loss(job.run.method, **job.run.params),
                                show_progress=show_progress)
    seconds = round(time.time() - t0, 2)
    if PartialState().is_main_process:
        shutil.rmtree(job.staging, ignore_errors=True)  # a retried attempt starts clean
        job.staging.mkdir(parents=True)
        model.save_pretrained(job.staging)
        tok.save_pretrained(job.staging)
    return Trained(job.key, history, seconds)


def quiet_transformers() -> None:
    """No progress bars or warnings from transformers in a process that only trains for
    another (a launch's follower, a Ray worker): the driver reports."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


class LocalExecutor:
    """This process trains the runs one after another."""

    trains_iterative = True

    def __init__(self, show_progress: bool = True) -> None:
        self.show_progress = show_progress

    def train(self, jobs: list[RunJob]) -> Iterator[Trained]:
        from tqdm.auto import tqdm

        from harness.progress import eta_lines

        bar = (tqdm(jobs, desc="train runs") if self.show_progress
               else eta_lines(jobs, "train runs"))  # --quiet: an ETA line every 30 s at most
        for job in bar:
            yield train_one(job, self.show_progress)

    def close(self) -> None:
        pass


def make_executor(name: str, address: str | None, show_progress: bool) -> Any:
    """The executor the command line asked for. Under a multi-process `accelerate launch`:
    the main process's `LaunchedExecutor`, and a `launch.Follower` in every other process.
    The options are checked before the launch's processes connect, so a bad one fails in
    each process alike rather than leaving the others waiting."""
    from harness import launch

    if name not in EXECUTORS:
        raise InputError(f"--executor must be one of {', '.join(EXECUTORS)}, got '{name}'")
    if address is not None and name != "ray":
        raise InputError("--address names a Ray cluster: give it with --executor ray")
    if launch.processes() > 1:
        if name != "local":
            raise InputError(f"--executor {name} trains each run in a process of its own; "
                             "run it without `accelerate launch`")
        return launch.executor(show_progress)
    if name == "ray":
        from harness.ray_executor import RayExecutor

        return RayExecutor(address, show_progress)
    return LocalExecutor(show_progress)
