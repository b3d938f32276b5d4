"""Hostile preference dimensions (harness/dimensions.py): dimension names that do not match
the data, a row missing one dimension's label, and SeqPO without dimensions. Each is refused
by the CLI before any work: exit 2, one line naming the file, the row or key, and the field;
nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_SPEC
from tests.hostile.attack import refused

ROW = {"prompt": "q0", "chosen": "a0", "rejected": "a1"}


def _rows(path: Path, labels: list[dict]) -> Path:
    path.write_text("".join(json.dumps({**ROW, "prompt": f"q{i % 3}", "labels": lab}) + "\n"
                            for i, lab in enumerate(labels)))
    return path


def _spec(tmp_path: Path, extra: str, methods: str | None = None) -> Path:
    text = TINY_SPEC
    if methods is not None:
        head, _, rest = text.partition("methods:\n")
        rest = rest[rest.index("seeds:"):]
        text = head + "methods:\n" + methods + rest
    path = tmp_path / "spec.yaml"
    path.write_text(text + extra)
    return path


@pytest.mark.parametrize("labels,dims,line,field,fragment", [
    ([{"helpful": 1, "honest": 0}], "[helpful, harmless]", 1, "labels.honest",
     "not one of data.dimensions (helpful, harmless)"),
    ([{"helpful": 1, "harmless": 0}, {"helpful": 0.5}], "[helpful, harmless]", 2,
     "labels.harmless", "missing label for dimension 'harmless'"),
    ([{"helpful": 1, "harmless": 2}], "[helpful, harmless]", 1, "labels.harmless",
     "outside [0, 1]"),
    ([{"helpful": 1, "harmless": 0}], None, 1, "labels", "need data.dimensions"),
], ids=["name-mismatch", "missing-label", "label-range", "no-dimensions"])
def test_rows_that_do_not_match_the_dimensions(tmp_path, labels, dims, line, field, fragment):
    data = _rows(tmp_path / "prefs.jsonl", labels)
    extra = f"data:\n  train: {data}\n" + (f"  dimensions: {dims}\n" if dims else "")
    results = tmp_path / "results"
    refused("run", _spec(tmp_path, extra), "--results-dir", results, cwd=tmp_path,
            results=results, contains=(f"{data}:{line}: '{field}': ", fragment), timeout=120)
    assert not (results / "store.sqlite").exists()


@pytest.mark.parametrize("extra,field,fragment", [
    ("", "methods.0.name", "trains one round per preference dimension, and this spec has none"),
    ("data: {dimensions: [helpful, harmless]}\n", "data.dimensions",
     "task 'bandit' has one unnamed reward"),
], ids=["seqpo-without-dimensions", "spec-names-what-the-task-lacks"])
def test_seqpo_and_dimension_names_against_the_task(tmp_path, extra, field, fragment):
    spec = _spec(tmp_path, extra, methods="  - name: seqpo\n    params: {beta: 1}\n")
    results = tmp_path / "results"
    refused("run", spec, "--results-dir", results, cwd=tmp_path, results=results,
            contains=(str(spec), f"'{field}'", fragment), timeout=120)
    assert not (results / "store.sqlite").exists()


def test_dimension_names_against_one_dataset_per_dimension(tmp_path):
    data = tmp_path / "helpful.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    spec = _spec(tmp_path, f"data:\n  dimensions: [helpful, harmless]\n"
                           f"  train_by_dimension: {{helpful: {data}, honest: {data}}}\n")
    results = tmp_path / "results"
    refused("run", spec, "--results-dir", results, cwd=tmp_path, results=results,
            contains=(str(spec), "'data.dimensions'", "datasets for [helpful, honest]"),
            timeout=120)


@pytest.mark.parametrize("extra,field,fragment", [
    ("task_options: {dimensions: 3}\n", "task_options.dimensions", "must be in [1, 2], got 3"),
    ("judges: [{name: oracle, params: {dimension: sentiment}}]\n", "judges.0.params.dimension",
     "task 'sentiment' has no dimension 'sentiment' (its dimensions: none)"),
    ("task_options: {dimensions: 2}\njudges: [{name: oracle, params: {dimension: 5}}]\n",
     "judges.0.params.dimension", "expected str, got int 5"),
    ("task_options: {dimensions: 2}\njudges: [{name: oracle, params: {dimension: [a]}}]\n",
     "judges.0.params.dimension", "expected str, got list"),
    ("task_options: {dimensions: 2}\njudges: [{name: oracle, params: {dimension: joy}}]\n",
     "judges.0.params.dimension", "has no dimension 'joy' (its dimensions: sentiment, brevity)"),
], ids=["too-many", "judge-without-dimensions", "judge-int", "judge-list", "judge-unknown"])
def test_sentiment_dimensions_and_per_dimension_judges(tmp_path, extra, field, fragment):
    """`sentiment` takes one or two dimensions, and an oracle judge of one dimension must
    name one the task has, as a string: refused at load, before any model is built."""
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: h\ntask: sentiment\nmethods: [{name: dpo}]\n" + extra)
    results = tmp_path / "results"
    refused("run", spec, "--results-dir", results, cwd=tmp_path, results=results,
            contains=(f"'{field}': ", fragment), timeout=120)
    assert not (results / "store.sqlite").exists()
