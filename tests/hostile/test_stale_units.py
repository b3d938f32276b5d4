"""Stale units never reach a table: a rerun in place equals a run in a fresh folder.

A results folder keeps every unit it ever computed. After a spec change, the units of the
old spec are still in the store (that is what makes switching back free), but every stage
and report must read exactly the units the *current* spec's keys name. For each field that
enters a key, rerun the tiny experiment in a copy of a finished folder with the field
changed, and compare the tables with a run of the changed spec in an empty folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_ok, cli, leaderboard

# (what changes, --set overrides): generation settings, the judge, the scorer, a method's
# hyperparameter and a training setting (the last two retrain).
CHANGES = {
    "n_samples": ["generation.n_samples=2"],
    "temperature": ["generation.temperature=0.5"],
    "top_p": ["generation.top_p=0.8"],
    "max_new_tokens": ["generation.max_new_tokens=1"],
    "generation_seed": ["generation.seed=7"],
    "judge_scale": ["judges=[{name: oracle, params: {scale: 3.0}}]"],
    "scorer": ["scorers=[{name: length}]"],
    "method_param": ["methods.1.params.beta=0.5"],
    "training": ["training.learning_rate=0.002"],
}


def _tables(results: Path) -> dict:
    return {"leaderboard": leaderboard(results),
            "judge_quality": json.loads((results / "judge_quality.json").read_text())}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_rerun_in_place_equals_fresh_folder(change: str, reference_run, tmp_path: Path):
    sets = [a for s in CHANGES[change] for a in ("--set", s)]
    in_place = tmp_path / "in_place"
    shutil.copytree(reference_run.results, in_place)
    assert_ok(cli("run", reference_run.spec, "--results-dir", in_place, *sets, cwd=tmp_path))
    fresh = tmp_path / "fresh"
    assert_ok(cli("run", reference_run.spec, "--results-dir", fresh, *sets, cwd=tmp_path))
    assert _tables(in_place) == _tables(fresh)
    # and the change really changed something the tables show
    assert _tables(in_place)["leaderboard"] != reference_run.leaderboard


def test_switching_back_reads_the_old_units_only(reference_run, tmp_path: Path):
    """n_samples 4 -> 2 -> 4 in place: the last tables equal the first, nothing recomputed."""
    folder = tmp_path / "A"
    shutil.copytree(reference_run.results, folder)
    assert_ok(cli("run", reference_run.spec, "--results-dir", folder, "--set",
                  "generation.n_samples=2", cwd=tmp_path))
    proc = cli("run", reference_run.spec, "--results-dir", folder, cwd=tmp_path)
    assert_ok(proc)
    assert leaderboard(folder) == reference_run.leaderboard
    counts = json.loads((folder / "run.json").read_text())["counts"]
    assert all(counts[s]["computed"] == 0 for s in ("train", "generate", "score", "judge"))
