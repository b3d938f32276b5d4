"""Training curves in the tools people use: `training.report_to` (TRL's `report_to`).

Each name opens one of Accelerate's trackers (`accelerate.tracking`), offline and under the
results folder, and the training loop hands it every log record (the `log_every`-step means
that also go into `spo_harness_run.json`) as `train/<metric>` at its step, as TRL's
`report_to` does:

| name | where it writes |
|---|---|
| tensorboard | `results/<name>/tb/<run>/` (a SummaryWriter's event files) |
| wandb | `results/<name>/wandb/`, in wandb's offline mode (`wandb sync` uploads it later) |
| mlflow | the file store `results/<name>/mlruns/`, experiment = the experiment's name |
| trackio | trackio's local database, `results/<name>/trackio/` |

Only the main process logs. A tracker whose library is not installed stops the run before
its first step, naming the pip command. `report_to` does not change what is trained, so it
is not part of the run's content key: a run already trained is not retrained (nor logged)
because a tracker was added.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from pathlib import Path
from typing import Any

from harness.errors import MissingDependencyError

# tracker -> (the module it needs, the pip package)
LIBRARIES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
             "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio")}


def check_installed(report_to: list[str]) -> None:
    """MissingDependencyError (exit 2) naming the pip command of the first missing one."""
    for name in report_to:
        module, package = LIBRARIES[name]
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"training.report_to '{name}' needs the {package} package: pip install "
                f"{package} (or remove it from training.report_to)",
                field="training.report_to")


def _safe(name: str) -> str:
    """A run label as one folder name ('spo(alpha=0.1)' -> 'spo_alpha=0.1_')."""
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip(".") or "run"


def _tracker(name: str, results: Path, run: str, experiment: str) -> Any:
    from accelerate import tracking

    if name == "tensorboard":
        return tracking.TensorBoardTracker(_safe(run), results / "tb")
    if name == "wandb":
        (results / "wandb").mkdir(parents=True, exist_ok=True)
        return tracking.WandBTracker(experiment, name=run, mode="offline",
                                     dir=str(results / "wandb"))
    if name == "mlflow":
        import mlflow

        mlflow.set_tracking_uri((results / "mlruns").resolve().as_uri())
        return tracking.MLflowTracker(experiment, run_name=run)
    os.environ.setdefault("TRACKIO_DIR", str(results / "trackio"))
    return tracking.TrackioTracker(experiment, name=run)


class Trackers:
    """The run's open trackers (none where `report_to` is empty or off the main process)."""

    def __init__(self, report_to: list[str], results: Path, run: str, experiment: str,
                 config: dict[str, Any] | None = None) -> None:
        from accelerate.state import PartialState

        names = list(dict.fromkeys(report_to))
        check_installed(names)
        self.trackers = []
        if not names or not PartialState().is_main_process:
            return
        for name in names:
            tracker = _tracker(name, Path(results), run, experiment)
            tracker.start()
            if config:
                tracker.store_init_configuration(config)
            self.trackers.append(tracker)

    def log(self, record: dict[str, Any]) -> None:
        """One log record of the loop: its finite numbers as train/<key> at its step."""
        values = {f"train/{k}": float(v) for k, v in record.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
                  and math.isfinite(v)}
        for tracker in self.trackers:
            tracker.log(values, step=int(record["step"]))

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []


def open_trackers(job: Any) -> Trackers:
    """The trackers of a `TrainJob`: its results folder is the one holding work/<run>/."""
    cfg = job.training
    report_to = list(getattr(cfg, "report_to", None) or [])
    results = Path(job.work_dir).parent.parent
    config = {"label": job.label, "seed": job.seed, "epochs": cfg.epochs,
              "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate}
    return Trackers(report_to, results, job.label, results.name, config)
