"""Preference dimensions: pairs labelled per dimension (helpfulness, harmlessness, ...).

Where the dimensions come from, in this order:
- `data.train_by_dimension: {helpful: SOURCE, harmless: SOURCE}`: one dataset per dimension;
- `data.train` whose rows carry `labels: {helpful: 1, harmless: 0.3}` (values in [0, 1]:
  P(chosen preferred) on that dimension), with `data.dimensions` naming them;
- the task's own (`bandit` with `task_options.dimensions: K`, named dim1..dimK).
`data.dimensions` names them and fixes their order (SeqPO trains them in that order); it
must name exactly the dimensions the data has.

Every source becomes the same normalized rows: one pair row per (pair, dimension), with
`soft_label` the dimension's label and `dimension` its name. A method that is not
sequential trains on all of them at once (the mixed labels); SeqPO trains dimension by
dimension (harness/sequential.py). Without dimensions nothing here applies and no row
carries `dimension`, so every key is what it was before dimensions existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.datasets_io import Where, show
from harness.errors import InputError

DIMENSION = "dimension"      # the normalized row's field naming its dimension
SCORER_PREFIX = "oracle."    # a dimension's true reward on the leaderboard: oracle.<name>


# ---------------------------------------------------------------- rows


def parse_labels(value: Any, where: Where, dimensions: Sequence[str] | None) -> dict[str, float]:
    """A row's `labels`: every dimension of `dimensions` once, each a number in [0, 1]."""
    if not dimensions:
        raise where.error("rows with per-dimension labels need data.dimensions naming the "
                          "dimensions in order (e.g. data.dimensions: [helpful, harmless])",
                          "labels")
    if not isinstance(value, Mapping):
        raise where.error("must be a mapping {dimension: label in [0, 1]}", "labels")
    known = ", ".join(dimensions)
    for key, label in value.items():
        if key not in dimensions and label is not None:  # Arrow fills absent keys with null
            raise where.error(f"not one of data.dimensions ({known})", f"labels.{key}")
    out = {}
    for name in dimensions:
        label = value.get(name)
        field = f"labels.{name}"
        if label is None:
            raise where.error(f"missing label for dimension {show(name)} (data.dimensions: "
                              f"{known})", field)
        if isinstance(label, bool) or not isinstance(label, (int, float)) or (
                isinstance(label, float) and not math.isfinite(label)):
            raise where.error(f"must be a finite number in [0, 1], got {show(label)}", field)
        if not 0 <= label <= 1:
            raise where.error(f"label {show(label)} outside [0, 1]", field)
        out[name] = float(label)
    return out


def expand(item: dict[str, Any], labels: dict[str, float]) -> list[dict[str, Any]]:
    """One pair row per dimension: the dimension's label as its soft label."""
    return [{**item, "soft_label": p, DIMENSION: name} for name, p in labels.items()]


def rows_of(pairs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The pair rows of one dimension."""
    return [r for r in pairs if r.get(DIMENSION) == name]


@dataclass
class DimensionSources:
    """`data.train_by_dimension`: one source per dimension, in training order."""

    order: list[str]
    sources: dict[str, Any]          # name -> harness.spec.DataSource

    @property
    def path(self) -> str:
        return "data.train_by_dimension"


def load_by_dimension(given: DimensionSources) -> Any:
    """Each dimension's pair rows, tagged with it, concatenated in `given.order`."""
    from harness.data import Loaded, load_train

    rows, wheres, unused, chat, names = [], [], set(), False, []
    for name in given.order:
        source = given.sources[name]
        loaded = load_train(source.path, source.split, source.columns, source.limit,
                            source.soft_label_scale)
        if loaded.kind != "pair":
            raise InputError(f"data.train_by_dimension.{name} holds {loaded.kind} rows; a "
                             "dimension's dataset holds preference pairs", file=loaded.name)
        for row, where in zip(loaded.rows, loaded.where):
            if DIMENSION in row:
                raise where.error(f"a row with 'labels' in the dataset of dimension "
                                  f"{show(name)}: its rows are that dimension's pairs", "labels")
            rows.append({**row, DIMENSION: name})
            wheres.append(where)
        unused |= set(loaded.unused)
        chat = chat or loaded.conversational
        names.append(loaded.name)
    return Loaded(f"data.train_by_dimension ({', '.join(names)})", "pair", rows, wheres,
                  sorted(unused), chat)


# ---------------------------------------------------------------- the spec


def spec_dimensions(spec: Any, task_dimensions: Sequence[str]) -> list[str]:
    """The dimensions of an experiment, in training order (see the module doc)."""
    d = spec.data
    if d.train_by_dimension:
        return list(d.dimensions or d.train_by_dimension)
    if d.source("train") is not None:
        return list(d.dimensions or [])
    return list(d.dimensions or task_dimensions)


def task_dimensions(spec: Any) -> list[str]:
    from harness.spec import build_dataclass
    from harness.tasks import TASKS

    task_cls = TASKS.get(spec.task)
    return task_cls.option_dimensions(build_dataclass(task_cls.Options, spec.task_options))


def check_dimension_names(spec: Any, err: Any) -> None:
    """data.dimensions and data.train_by_dimension, before any data is read;
    `err(path, message)` makes the located InputError."""
    d = spec.data
    names = list(d.dimensions or [])
    for i, name in enumerate(names):
        if name in names[:i]:
            raise err(f"data.dimensions.{i}", f"names {show(name)} twice")
    if d.train_by_dimension:
        if d.source("train") is not None and not isinstance(d.source("train"),
                                                            DimensionSources):
            raise err("data.train_by_dimension", "give data.train or data.train_by_dimension, "
                      "not both")
        if names and set(names) != set(d.train_by_dimension):
            raise err("data.dimensions", f"names {_listed(names)} but data.train_by_dimension "
                      f"has datasets for {_listed(list(d.train_by_dimension))}")


def check_dimensions(spec: Any, loaded: Any, err: Any) -> None:
    """The spec's dimensions against its data and methods, before any stage (after
    `check_dimension_names` and the data's rows).

    `loaded`: the loaded training rows (data.train or data.train_by_dimension), or None
    for the task's own pairs; `err(path, message)` makes the located InputError.
    """
    from harness.spec import expand_runs
    from trainers.losses import LOSSES

    d, own = spec.data, task_dimensions(spec)
    names = list(d.dimensions or [])
    # data.train_by_dimension's names are check_dimension_names'; rows' labels the loader's
    if names and loaded is not None and not any(DIMENSION in r for r in loaded.rows):
        raise err("data.dimensions", f"names {_listed(names)} but the rows of "
                  f"{loaded.name} carry no 'labels' (give each row labels: "
                  "{dimension: label}, or use data.train_by_dimension)")
    if names and loaded is None and set(names) != set(own):  # the task's own pairs
        have = (f"has dimensions {_listed(own)}" if own else "has one unnamed reward"
                + (" (set task_options.dimensions: K >= 2 for dim1..dimK)"
                   if spec.task == "bandit" else ""))
        raise err("data.dimensions", f"names {_listed(names)} but task '{spec.task}' {have}")
    dims = spec_dimensions(spec, own)
    for i, m in enumerate(spec.methods):
        one = _one_method(spec, m)
        for run in expand_runs(one):
            loss = LOSSES.get(run.method)(**run.params)
            if not getattr(loss, "sequential", False):
                continue
            if getattr(m, "ssl", None) is not None:
                raise err(f"methods.{i}.ssl", f"{run.label}: ssl is not supported on "
                          "sequential rounds (each round trains its own dimension's pairs)")
            if not dims:
                raise err(f"methods.{i}.name", f"{run.label} trains one round per preference "
                          "dimension, and this spec has none: give rows with labels per "
                          "dimension and data.dimensions, data.train_by_dimension, or (bandit) "
                          "task_options.dimensions >= 2")
            if loss.rounds > len(dims):
                raise err(f"methods.{i}.params.rounds", f"{run.label}: {loss.rounds} rounds, "
                          f"but only {len(dims)} dimensions ({', '.join(dims)})")
    for kind in ("scorers", "judges"):
        for i, c in enumerate(getattr(spec, kind)):
            if c.name == "oracle" and c.params.get("dimension") is not None:
                if c.params["dimension"] not in own:
                    raise err(f"{kind}.{i}.params.dimension", f"task '{spec.task}' has no "
                              f"dimension {show(c.params['dimension'])} (its dimensions: "
                              f"{', '.join(own) or 'none'})")


def _one_method(spec: Any, method: Any) -> Any:
    import dataclasses

    return dataclasses.replace(spec, methods=[method], seeds=spec.seeds[:1])


def _listed(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


# ---------------------------------------------------------------- evaluation


def dimension_scorers(task: Any) -> list[tuple[str, Any]]:
    """(display name, scorer) of each of the task's dimensions: its true reward, which the
    leaderboard shows as `oracle.<name>:mean_reward` (and, enumerable, exact)."""
    from evaluators.scorers import OracleRewardScorer

    return [(SCORER_PREFIX + name, OracleRewardScorer(task, dimension=name))
            for name in task.dimensions]


def experiment_dimensions(exp: Any) -> list[str]:
    """The dimensions of a running experiment (`harness.pipeline.Experiment`)."""
    return spec_dimensions(exp.spec, exp.task.dimensions)
