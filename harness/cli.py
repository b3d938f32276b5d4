"""Command line: `spo-harness run|train|generate|judge|report EXPERIMENT.yaml`.

Heavy libraries are imported inside the commands so that `--help` stays instant. Bad
input exits with code 2 and one line on stderr; finished units stay in the store.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import click

from harness.errors import InputError, ServiceError

# Nothing is ever fetched from a hub at run time.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
             "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")

STAGE_STEPS = {
    "run": ("train", "generate", "score", "judge", "report"),
    "train": ("train",),
    "generate": ("generate",),
    "judge": ("score", "judge"),
    "report": ("report",),
}


def _common(f: Callable) -> Callable:
    f = click.option("--quiet", is_flag=True, help="No progress bars.")(f)
    f = click.option("--results-dir", type=click.Path(file_okay=False),
                     help="Where results go (default: results/<experiment name>/).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override a spec field, e.g. --set training.epochs=1 "
                          "--set methods.0.params.alpha=[0.5,1] (repeatable).")(f)
    return click.argument("experiment", type=click.Path(dir_okay=False))(f)


def _execute(command: str, experiment: str, overrides: tuple[str, ...], results_dir: str | None,
             quiet: bool) -> None:
    try:
        _run_stages(command, experiment, overrides, results_dir, quiet)
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ServiceError as exc:  # e.g. a generation server that kept failing
        click.echo(f"error: {exc}\nfinished units are stored; run the same command to resume",
                   err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted: finished units are stored; run the same command to resume",
                   err=True)
        sys.exit(130)


def _run_stages(command: str, experiment: str, overrides: tuple[str, ...],
                results_dir: str | None, quiet: bool) -> None:
    if quiet:  # read by tqdm when it is first imported, so set before any heavy import
        os.environ["TQDM_DISABLE"] = "1"
    from harness.pipeline import Experiment
    from harness.spec import load_spec

    t0 = time.time()
    spec = load_spec(experiment, overrides)
    exp = Experiment(spec, results_dir, show_progress=not quiet)
    stages = STAGE_STEPS[command]
    seconds = {}
    for stage in ("prepare", *stages):
        t = time.time()
        getattr(exp, stage)()
        seconds[stage] = round(time.time() - t, 2)
    exp.write_run_json(list(stages), time.time() - t0, seconds)
    click.echo(f"{spec.name}: {exp.results_dir}")
    for stage in ("prepare", *stages):
        c = exp.counts[stage]
        click.echo(f"  {stage:9s} computed {c['computed']:6d}   from store {c['cached']:6d}"
                   f"   {seconds[stage]:7.1f}s")
    if "report" in stages:
        click.echo((exp.results_dir / "leaderboard.md").read_text())
    click.echo(f"done in {time.time() - t0:.1f}s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spo-harness")
def main() -> None:
    """Train SPO and rival preference methods, sample, judge and rank them.

    Every stage reads and writes one results store (results/<name>/store.sqlite);
    finished units are never recomputed, so any command can be interrupted and rerun.
    """


@main.command()
@_common
def run(experiment, overrides, results_dir, quiet):
    """Run every stage: train, generate, score, judge, report."""
    _execute("run", experiment, overrides, results_dir, quiet)


@main.command()
@_common
def train(experiment, overrides, results_dir, quiet):
    """Build the task (SFT reference, pairs) and train every run of the spec."""
    _execute("train", experiment, overrides, results_dir, quiet)


@main.command()
@_common
def generate(experiment, overrides, results_dir, quiet):
    """Sample every trained model (and the baseline) on the held-out prompts."""
    _execute("generate", experiment, overrides, results_dir, quiet)


@main.command()
@_common
def judge(experiment, overrides, results_dir, quiet):
    """Score every generation and judge each model against the baseline."""
    _execute("judge", experiment, overrides, results_dir, quiet)


@main.command()
@_common
def report(experiment, overrides, results_dir, quiet):
    """Aggregate the store into leaderboard.md, .csv and .json."""
    _execute("report", experiment, overrides, results_dir, quiet)


if __name__ == "__main__":
    main()
