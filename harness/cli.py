"""Command line: `spo-harness run|train|generate|judge|report|compare EXPERIMENT.yaml`,
and `spo-harness leaderboard DIR [DIR ...]` across experiments.

Heavy libraries are imported inside the commands so that `--help` stays instant.
Every failure is one line on stderr, with secrets redacted, and an exit code:
2 bad input (the line names file, line and field), 1 a service that kept failing, a full
disk or a results folder held by another run, 130 interrupted. Finished units stay in the
store in every case, so rerunning the same command resumes.

`run` and `train` take `--executor local|ray` (who trains the runs: `harness.executors`);
under `accelerate launch` with several processes they train each run data parallel, the
main process alone writing the store (`harness.launch`).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from harness.errors import InputError, ServiceError
from harness.secrets import redact

if TYPE_CHECKING:
    from harness.executors import Executor

# Nothing is ever fetched from a hub at run time.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
             "HF_HUB_DISABLE_TELEMETRY"):
    os.environ.setdefault(_var, "1")

STAGE_STEPS = {
    "run": ("train", "generate", "score", "benchmark", "judge", "report"),
    "train": ("train",),
    "generate": ("generate",),
    "judge": ("score", "benchmark", "judge"),
    "report": ("report",),
}


def _common(f: Callable) -> Callable:
    f = click.option("--quiet", is_flag=True, help="No progress bars.")(f)
    f = click.option("--results-dir", type=click.Path(file_okay=False),
                     help="Where results go (default: results/<experiment name>/).")(f)
    f = click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override a spec field, e.g. --set training.epochs=1 "
                          "--set methods.0.params.alpha=[0.5,1] (repeatable).")(f)
    # A plain string: load_spec says in one line what is wrong with the path (missing, a
    # folder, unreadable), where click.Path would print three lines of usage.
    return click.argument("experiment")(f)


RESUME = "finished units are stored; run the same command to resume"


def fail(message: str, code: int) -> None:
    """Print one redacted line on stderr and exit."""
    line = " ".join(redact(str(message)).split())  # one line, whatever the message holds
    click.echo(line, err=True)
    if code == 130:
        # CPython can still end a process whose KeyboardInterrupt was caught by killing it
        # with SIGINT (exit -2, seen in CI) when the interrupt first surfaced in a nested
        # interpreter call; every finished unit is committed, so leave at once with 130.
        _flush_and_exit(130)
    sys.exit(code)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _disk_fault(exc: BaseException) -> bool:
    """A full or failing disk: the machine's fault, not the input's (exit 1, rerun resumes)."""
    return ((isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO))
            or (isinstance(exc, sqlite3.OperationalError)
                and any(m in str(exc) for m in ("disk is full", "disk I/O error"))))


def _execute(command: str, experiment: str, overrides: tuple[str, ...], results_dir: str | None,
             quiet: bool, executor: str = "local", address: str | None = None) -> None:
    _log_notices()
    from harness.executors import make_executor
    from harness.launch import Follower

    workers = None
    try:
        workers = make_executor(executor, address, show_progress=not quiet)
        if isinstance(workers, Follower):  # another process of an `accelerate launch`
            _flush_and_exit(workers.follow())
        _run_stages(command, experiment, overrides, results_dir, quiet, workers)
    except (Exception, KeyboardInterrupt) as exc:
        _exit_for(exc, RESUME)
    finally:
        if workers is not None:
            workers.close()


def _exit_for(exc: BaseException, resume: str | None) -> None:
    """The one line and exit code of a command's exception (call it in the `except`):
    2 bad input; 1 a failing service, a full or failing disk, or a bug (re-raised under
    SPO_HARNESS_DEBUG=1); 130 an interrupt. `resume` (what a rerun does) ends the lines of
    the faults a rerun recovers from, for the commands that have one."""
    if isinstance(exc, InputError):
        fail(f"error: {exc}", 2)
    if isinstance(exc, ServiceError):  # a server that kept failing, a folder held by another run
        from harness.lock import BusyError

        fail(f"error: {exc}" if isinstance(exc, BusyError) or not resume
             else f"error: {exc}; {resume}", 1)
    if isinstance(exc, KeyboardInterrupt):
        fail(f"interrupted: {resume}" if resume else "interrupted", 130)
    if _disk_fault(exc):
        fail(f"error: the disk is full or failing ({exc})"
             + (f"; free some space: {resume}" if resume else ""), 1)
    if os.environ.get("SPO_HARNESS_DEBUG"):
        raise exc
    fail(f"internal error: {type(exc).__name__}: {exc} (a bug in spo-harness, not in "
         "your input; rerun with SPO_HARNESS_DEBUG=1 for the traceback)", 1)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(redact(f"note: {record.getMessage()}").split())


def _log_notices() -> None:
    """Warnings of the harness (e.g. a damaged checkpoint being recomputed) reach stderr."""
    logger = logging.getLogger("spo_harness")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLine())
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _run_stages(command: str, experiment: str, overrides: tuple[str, ...],
                results_dir: str | None, quiet: bool, workers: Executor) -> None:
    if quiet:  # read by tqdm when it is first imported, so set before any heavy import
        os.environ["TQDM_DISABLE"] = "1"
    from harness.pipeline import Experiment
    from harness.spec import load_spec

    t0 = time.time()
    stages = STAGE_STEPS[command]
    if "train" not in stages:
        workers.close()  # nothing to train: a launch's other processes may go
    spec = load_spec(experiment, overrides)
    if "train" in stages:  # a tracker's missing library: exit 2 before any work
        from trainers.trackers import check_installed

        check_installed(spec.training.report_to)
    if not spec.benchmarks:  # the lm-eval stage shows only where the spec has benchmarks
        stages = tuple(s for s in stages if s != "benchmark")
    exp = Experiment(spec, results_dir, show_progress=not quiet, executor=workers)
    if command in ("generate", "judge", "report") and not exp.store.has_runs():
        raise InputError(f"runs not trained yet in {exp.results_dir}: run `spo-harness train` "
                         "(or `run`) on this spec first")
    seconds = {}
    for stage in ("prepare", *stages):
        t = time.time()
        getattr(exp, stage)()
        seconds[stage] = round(time.time() - t, 2)
        if stage == "train":
            workers.close()  # free the launch's other processes, or the Ray cluster
    exp.write_run_json(list(stages), time.time() - t0, seconds)
    click.echo(f"{spec.name}: {exp.results_dir}")
    for stage in ("prepare", *stages):
        c = exp.counts[stage]
        click.echo(f"  {stage:9s} computed {c['computed']:6d}   from store {c['cached']:6d}"
                   f"   {seconds[stage]:7.1f}s")
    if "report" in stages:
        click.echo((exp.results_dir / "leaderboard.md").read_text())
        from evaluators.report import few_prompts_note

        note = few_prompts_note(json.loads((exp.results_dir / "leaderboard.json").read_text()))
        if note:
            click.echo(f"warning: {note}", err=True)
        if (exp.results_dir / "report.html").is_file():
            click.echo(f"report: {exp.results_dir / 'report.html'}")
    click.echo(f"done in {time.time() - t0:.1f}s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spo-harness")
def main() -> None:
    """Train SPO and rival preference methods, sample, judge and rank them.

    Every stage reads and writes one results store (results/<name>/store.sqlite);
    finished units are never recomputed, so any command can be interrupted and rerun.
    """


def _executor_options(f: Callable) -> Callable:
    f = click.option("--address", default=None, metavar="ADDR",
                     help="With --executor ray: the cluster (host:port, ray://host:port or "
                          "auto); default: start a local one.")(f)
    # a plain string, not click.Choice: make_executor says in one line what is wrong
    return click.option("--executor", default="local", metavar="local|ray",
                        help="Who trains the runs: this process (local, the default) or "
                             "Ray tasks, one per run (needs spo-harness[ray]).")(f)


@main.command()
@_common
@_executor_options
def run(experiment, overrides, results_dir, quiet, executor, address):
    """Run every stage: train, generate, score, judge, report.

    With `benchmarks:` in the spec, also the lm-eval benchmarks (after score)."""
    _execute("run", experiment, overrides, results_dir, quiet, executor, address)


@main.command()
@_common
@_executor_options
def train(experiment, overrides, results_dir, quiet, executor, address):
    """Build the task (SFT reference, pairs) and train every run of the spec."""
    _execute("train", experiment, overrides, results_dir, quiet, executor, address)


@main.command()
@_common
def generate(experiment, overrides, results_dir, quiet):
    """Sample every trained model (and the baseline) on the held-out prompts."""
    _execute("generate", experiment, overrides, results_dir, quiet)


@main.command()
@_common
def judge(experiment, overrides, results_dir, quiet):
    """Score every generation and judge each model against the baseline.

    With `benchmarks:` in the spec, also the lm-eval benchmarks (after score)."""
    _execute("judge", experiment, overrides, results_dir, quiet)


@main.command()
@_common
def report(experiment, overrides, results_dir, quiet):
    """Aggregate the store into leaderboard.md, .csv and .json, and report.html."""
    _execute("report", experiment, overrides, results_dir, quiet)


@main.command()
@_common
@click.argument("models", nargs=-1)
@click.option("--all", "every_pair", is_flag=True,
              help="Compare every pair of models; writes compare.{md,csv,json}.")
@click.option("--judge", "judge_name", default=None,
              help="Judge (display name) of the win rates; default: report.primary_judge.")
@click.option("--no-lc", is_flag=True, help="Skip the LC difference (refitted per resample).")
def compare(experiment, models, every_pair, judge_name, no_lc, overrides, results_dir, quiet):
    """Head to head: `compare EXPERIMENT.yaml A B` (run labels, or sft).

    Differences of win rate, LC win rate, mean reward and entropy between A and B with a
    paired prompt bootstrap (difference, 95% interval, p-value) and a sign test on
    per-prompt outcomes. Reads the store only; run the experiment first.
    """
    _log_notices()
    try:
        _compare(experiment, models, every_pair, judge_name, no_lc, overrides, results_dir,
                 quiet)
    except (Exception, KeyboardInterrupt) as exc:  # reads the store only: nothing to resume
        _exit_for(exc, None)


def _compare(experiment, models, every_pair, judge_name, no_lc, overrides, results_dir,
             quiet) -> None:
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
    if every_pair == bool(models) or (models and len(models) != 2):
        raise InputError("give two model labels (compare EXPERIMENT.yaml A B) or --all")
    from evaluators.collect import judge_names
    from evaluators.compare import compare_all, format_rows, head_to_head, write_compare
    from harness.pipeline import Experiment
    from harness.spec import load_spec

    spec = load_spec(experiment, overrides)
    exp = Experiment(spec, results_dir, show_progress=not quiet)
    if not exp.store.has_runs():
        raise InputError(f"runs not trained yet in {exp.results_dir}: run `spo-harness run` "
                         "on this spec first")
    names = judge_names([j.display_name() for j in spec.judges])
    judge = judge_name or spec.report.primary_judge or names[0]
    if judge not in names:
        raise InputError(f"--judge '{judge}' is not one of the judges: {', '.join(names)}")
    import pandas as pd

    results, battles = exp.results()
    gamed = pd.DataFrame(battles[judge].gamed) if battles[judge].gamed else None
    r = spec.report
    if every_pair:
        rows = compare_all(results, judge, r.bootstrap_rounds, r.bootstrap_seed, not no_lc,
                           gamed)
        write_compare(rows, exp.results_dir, judge)
        click.echo(format_rows(rows))
        click.echo(f"wrote {exp.results_dir / 'compare.md'}")
    else:
        rows = head_to_head(results, models[0], models[1], judge, r.bootstrap_rounds,
                            r.bootstrap_seed, not no_lc, gamed=gamed)
        click.echo(format_rows(rows))


@main.command()
@click.argument("folders", nargs=-1, required=True, metavar="DIR [DIR ...]")
@click.option("--out", "out_dir", default="results/merged", show_default=True,
              type=click.Path(file_okay=False),
              help="Where the merged leaderboard.{md,csv,json,html} go.")
@click.option("--quiet", is_flag=True, help="Accepted for symmetry; nothing to silence.")
def leaderboard(folders, out_dir, quiet):
    """Merge the leaderboards of several experiments' results folders into one.

    The folders must share the baseline (its model key) and the primary judge (its
    fingerprint), as each folder's report.json records them; otherwise exit 2 naming the
    folder that differs. Reads leaderboard.json and report.json only.
    """
    try:
        from evaluators.merge import write_merged

        out = write_merged(list(folders), out_dir)
        click.echo((out / "leaderboard.md").read_text())
        click.echo(f"wrote {out / 'leaderboard.md'} (.csv, .json, .html)")
    except Exception as exc:  # nothing to resume: it reads two files per folder
        _exit_for(exc, None)


def entry() -> None:
    """The console script: click's own usage errors become one line and exit 2 too."""
    try:
        rc = main.main(standalone_mode=False)
    except click.exceptions.Abort:
        fail(f"interrupted: {RESUME}", 130)
    except click.ClickException as exc:
        fail(f"error: {exc.format_message()} (see --help)", exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    entry()
