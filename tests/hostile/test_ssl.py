"""Hostile `ssl:` sections (Self-supervised PO, harness/spec.py `SSLSpec`): each is refused
with exit 2 and one line naming file:line and the key, before anything is stored; ssl on
rows that are not preference pairs is refused before any run trains."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import TINY_BASE, line_of, write_spec
from tests.hostile.attack import refused

_HEAD, _, _REST = TINY_BASE.partition("methods:\n")
_REST = _REST[_REST.index("seeds:"):] + "report: {embedding_diversity: false}\n"


def _spec(root: Path, method: str) -> tuple[Path, int]:
    """The tiny bandit with one method entry, `method` (YAML lines under `- `); returns the
    spec and the line of its `ssl:` key."""
    body = "methods:\n  - " + "\n    ".join(method.splitlines()) + "\n"
    text = _HEAD + body + _REST
    return write_spec(root / "ssl.yaml", text), line_of(text, "ssl:")


CASES = {  # ssl section -> (the key the line names, a fragment of the reason)
    "{weight: -0.5}": ("methods.0.ssl.weight", ">= 0"),
    "{weight: .nan}": ("methods.0.ssl.weight", "finite"),
    "{weight: [0.1, 1]}": ("methods.0.ssl.weight", "expected float"),
    "{fractions: [0, 0.5, 0.5, 1]}": ("methods.0.ssl.fractions.2", "increase strictly"),
    "{fractions: [0, 0.7, 0.4]}": ("methods.0.ssl.fractions.2", "increase strictly"),
    "{fractions: [0, 1.5]}": ("methods.0.ssl.fractions.1", "[0, 1]"),
    "{fractions: [-0.1, 1]}": ("methods.0.ssl.fractions.0", "[0, 1]"),
    "{fractions: [0]}": ("methods.0.ssl.fractions", "between 2 and 32"),
    "{fractions: 0.5}": ("methods.0.ssl.fractions", "list"),
    "{degrees: 3, fractions: [0, 0.5, 0.8, 1]}": ("methods.0.ssl.degrees", "4 values"),
    "{degrees: 1}": ("methods.0.ssl.degrees", "[2, 32]"),
    "{degrees: 1000000}": ("methods.0.ssl.degrees", "[2, 32]"),
    "{keyword_share: 0}": ("methods.0.ssl.keyword_share", "(0, 1]"),
    "{beta: 0}": ("methods.0.ssl.beta", "> 0"),
    "{target: last}": ("methods.0.ssl.target", "'last'"),
    "{responses: rejected}": ("methods.0.ssl.responses", "'rejected'"),
    "{lambda: 0.1}": ("methods.0.ssl.lambda", "unknown key"),
    "0.1": ("methods.0.ssl", "mapping"),
}


@pytest.mark.parametrize("section", sorted(CASES))
def test_a_bad_ssl_value_is_refused_at_load(tmp_path: Path, section: str) -> None:
    key, reason = CASES[section]
    spec, line = _spec(tmp_path, f"name: dpo\nparams: {{beta: 1}}\nssl: {section}")
    results = tmp_path / "results"
    refused("train", spec, "--results-dir", results, cwd=tmp_path, results=results,
            contains=(f"{spec}:{line}: '{key}'", reason))
    assert not (results / "store.sqlite").exists()


@pytest.mark.parametrize("method,reason", [
    ("name: kto\nparams: {beta: 1}", "kto trains on unpaired completions"),
    ("name: sppo", "sppo trains on pairs it samples at every iteration"),
    ("name: seqpo", "seqpo trains on one round per preference dimension")])
def test_ssl_on_a_method_without_fixed_pairs_is_refused(tmp_path: Path, method: str,
                                                        reason: str) -> None:
    spec, line = _spec(tmp_path, method + "\nssl: {weight: 0.1}")
    results = tmp_path / "results"
    refused("train", spec, "--results-dir", results, cwd=tmp_path, results=results,
            contains=(f"{spec}:{line}: 'methods.0.ssl'", reason))


def test_ssl_on_training_rows_that_are_lists_is_refused_at_load(tmp_path: Path) -> None:
    rows = tmp_path / "lists.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}", "responses": ["a0", "a1"],
                                        "scores": [1, 0]}) + "\n" for i in range(3)))
    spec, _ = _spec(tmp_path, "name: spo\nparams: {alpha: 1}\nssl: {weight: 0.1}")
    spec.write_text(spec.read_text() + f"data: {{train: {rows}}}\n")
    results = tmp_path / "results"
    refused("train", spec, "--results-dir", results, cwd=tmp_path, results=results,
            contains=("'methods.0.ssl'", "list rows"))


def test_ssl_on_the_tasks_ranked_lists_is_refused_before_a_run_trains(tmp_path: Path) -> None:
    """The bandit's ranked labels give lists, known only once the task is prepared."""
    spec, _ = _spec(tmp_path, "name: spo\nparams: {alpha: 1}\nssl: {weight: 0.1}")
    results = tmp_path / "results"
    refused("train", spec, "--results-dir", results, "--set", "task_options.labels=ranked",
            "--set", "task_options.pairs_per_prompt=2", cwd=tmp_path,
            contains=("'methods.ssl'", "ssl builds graded variants", "ranked or best-of-n"))
    with sqlite3.connect(results / "store.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
