"""`--executor ray`: the runs of a sweep trained as Ray tasks, one task per run.

The driver (this process) prepares the task and the reference log-probs as it always
does. Each task trains one run (`executors.train_one`) wherever Ray places it, with the
resources of `training.resources`, and writes the checkpoint into the run's staging folder
under the results folder; the driver commits each run as its task finishes. So the SQLite
store keeps its one writer, and a finished run is stored even if a later one fails. A task
whose worker dies is run again by Ray (up to `MAX_RETRIES` times) and resumes from the
run's last resumable checkpoint in `work/`, so a retry loses at most `save_every` steps.

Every node must see the results folder at the same path (one machine, or a shared
filesystem) and have the same spo-harness installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import InputError, MissingDependencyError, ServiceError
from harness.executors import RunJob, Trained, quiet_transformers, train_one
from harness.spec import ResourcesSpec

MAX_RETRIES = 3
# Nothing is fetched from a hub at run time, on the cluster's nodes either.
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
           "HF_HUB_DISABLE_TELEMETRY")
_ADDRESS = re.compile(r"(?:ray://)?(?P<host>[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--executor ray needs Ray: pip install "
                                     "'spo-harness[ray]'") from None
    return ray


def check_address(address: str | None) -> None:
    """A malformed address is bad input (exit 2); one where nothing answers is a service
    fault (exit 1). Checked before anything is prepared or stored."""
    if address is None or address == "auto":
        return
    m = _ADDRESS.fullmatch(address)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise InputError(f"--address must be host:port, ray://host:port or auto, got "
                         f"'{address}'")
    try:
        socket.create_connection((m["host"].strip("[]"), int(m["port"])), timeout=5).close()
    except OSError as exc:
        raise ServiceError(f"no Ray cluster answers at --address {address} "
                           f"({exc.strerror or exc}); start one with `ray start --head`, or "
                           "fix the address") from None


def train_run(job: RunJob, shared: tuple[list, list, tuple]) -> Trained:
    """The Ray task: one run, its data from the object store (shared by the sweep's runs)."""
    if not Path(job.job.reference_dir).is_dir():
        raise InputError(f"the Ray worker on {socket.gethostname()} cannot see "
                         f"{job.job.reference_dir}: every node must see the results folder "
                         "at the same path (a shared filesystem)")
    quiet_transformers()
    pairs, reg_prompts, ref_logps = shared
    job = dataclasses.replace(job, job=dataclasses.replace(
        job.job, pairs=pairs, reg_prompts=reg_prompts, ref_logps=ref_logps))
    return train_one(job, show_progress=False)


class RayExecutor:
    """The driver's side: submits one task per run, yields each as it finishes."""

    trains_iterative = True  # SPPO's outer loop runs in the driver, beside the tasks

    def __init__(self, address: str | None, show_progress: bool) -> None:
        check_address(address)
        self.ray = require_ray()
        self.address = address
        self.show_progress = show_progress
        self._connected = False

    def _connect(self) -> None:
        if self.ray.is_initialized():  # a caller (a test) connected this process already
            return
        env = {v: os.environ[v] for v in OFFLINE if v in os.environ}
        with _stderr_captured() as said:
            try:
                self.ray.init(address=self.address, include_dashboard=False,
                              log_to_driver=False, logging_level=logging.ERROR,
                              runtime_env={"env_vars": env})
            except (ConnectionError, RuntimeError) as exc:  # no cluster, a dead head, auth
                hint = ("; the cluster wants its token: export RAY_AUTH_MODE=token (Ray sends "
                        "~/.ray/auth_token, or RAY_AUTH_TOKEN, only when told to)"
                        if "Authentication" in said() + str(exc) else "")
                raise ServiceError(f"cannot connect to a Ray cluster "
                                   f"({str(exc).splitlines()[0]}){hint}") from None
        self._connected = True

    def _check_fits(self, resources: ResourcesSpec) -> None:
        """A task asking more than the whole cluster has would wait for ever."""
        total = self.ray.cluster_resources()
        for name, asked in (("CPU", resources.num_cpus), ("GPU", resources.num_gpus)):
            if asked > total.get(name, 0):
                raise InputError(f"each run asks for {asked:g} {name}s; the Ray cluster has "
                                 f"{total.get(name, 0):g} in all", field="training.resources")

    def train(self, jobs: list[RunJob]) -> Iterator[Trained]:
        if not jobs:
            return
        from tqdm.auto import tqdm

        ray = self.ray
        self._connect()
        resources = jobs[0].job.training.resources or ResourcesSpec()
        self._check_fits(resources)
        task = ray.remote(train_run).options(num_cpus=resources.num_cpus,
                                             num_gpus=resources.num_gpus,
                                             max_retries=MAX_RETRIES)
        shared: dict[tuple[int, ...], Any] = {}  # the sweep's data, put once
        pending = {}
        for job in jobs:
            j = job.job
            ids = (id(j.pairs), id(j.reg_prompts), id(j.ref_logps))
            if ids not in shared:
                shared[ids] = ray.put((j.pairs, j.reg_prompts, j.ref_logps))
            pending[task.remote(_slim(job), shared[ids])] = job
        bar = tqdm(total=len(jobs), desc="train runs (ray)", disable=not self.show_progress)
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                yield self._result(ref, job)
                bar.update(1)
        finally:  # a failed commit, an interrupt: the other runs' tasks are not wanted
            for ref in pending:
                ray.cancel(ref, force=True)
            bar.close()

    def _result(self, ref: Any, job: RunJob) -> Trained:
        ray = self.ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised: as if it ran here
            if exc.cause is None:  # not unpicklable here
                raise RuntimeError(f"run '{job.run.label}': {str(exc).splitlines()[0]}") from None
            raise exc.cause from None
        except ray.exceptions.RayError as exc:  # its worker or node died every time
            raise ServiceError(f"run '{job.run.label}': its Ray task failed "
                               f"{MAX_RETRIES + 1} times ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]})") from None

    def close(self) -> None:
        if self._connected:
            self.ray.shutdown()  # stops the local cluster this process started, if it did
            self._connected = False


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """Ray's C++ core writes its connection retries (a line a second) straight to file
    descriptor 2: keep them off the command's one-line stderr, and readable for a hint."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read().decode(errors="replace"))[1]
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def _slim(job: RunJob) -> RunJob:
    """The job without its data (sent once through the object store), its paths absolute:
    a worker's working folder is not the driver's."""
    j = job.job
    return dataclasses.replace(job, staging=job.staging.resolve(), job=dataclasses.replace(
        j, pairs=[], reg_prompts=[], ref_logps=(), reference_dir=Path(j.reference_dir).resolve(),
        work_dir=Path(j.work_dir).resolve()))
