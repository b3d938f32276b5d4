"""Faults of the results folder and its store: damaged artifacts, a corrupt database, a
folder that cannot hold results, a second run at once, a full disk, an empty folder.

Each case ends in one line and a stated exit code, or (a damaged checkpoint) in a
recomputation that is said so and reaches the same tables as an untouched folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ENV, REPO, assert_ok, cli, leaderboard, stderr_lines
from tests.hostile.attack import refused, store_digest


def _copy(reference_run, tmp_path: Path) -> Path:
    folder = tmp_path / "A"
    shutil.copytree(reference_run.results, folder)
    return folder


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("artifacts/checkpoint-*"))


# ------------------------------------------------------------------ damaged artifacts

@pytest.mark.parametrize("damage", ["deleted", "truncated", "weights_removed"])
def test_damaged_checkpoint_is_recomputed_and_said_so(damage, reference_run, tmp_path):
    folder = _copy(reference_run, tmp_path)
    ckpt = _checkpoints(folder)[0]
    weights = ckpt / "model.safetensors"
    if damage == "deleted":
        shutil.rmtree(ckpt)
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        weights.unlink()
    proc = cli("run", reference_run.spec, "--results-dir", folder, cwd=tmp_path)
    assert_ok(proc)
    notes = [line for line in stderr_lines(proc) if line.startswith("note:")]
    assert len(notes) == 1 and "recomputing" in notes[0], proc.stderr
    counts = json.loads((folder / "run.json").read_text())["counts"]
    assert counts["train"]["computed"] >= 1  # the damaged run was retrained ...
    assert leaderboard(folder) == reference_run.leaderboard  # ... to the same tables
    # and the next run trusts the new checkpoint
    proc = cli("run", reference_run.spec, "--results-dir", folder, cwd=tmp_path)
    assert_ok(proc) and not [ln for ln in stderr_lines(proc) if ln.startswith("note:")]


def test_damaged_reference_is_rebuilt(reference_run, tmp_path):
    folder = _copy(reference_run, tmp_path)
    (ref,) = folder.glob("artifacts/reference-*")
    (ref / "config.json").write_text("{}")  # size no longer matches the manifest
    proc = cli("report", reference_run.spec, "--results-dir", folder, cwd=tmp_path)
    assert_ok(proc)
    assert "recomputing" in proc.stderr
    assert leaderboard(folder) == reference_run.leaderboard


# ------------------------------------------------------------------ the database


@pytest.mark.parametrize("garbage", [b"", b"not a database at all" * 100, b"SQLite format 3\0"])
def test_corrupt_store_is_one_line_with_the_way_out(garbage, reference_run, tmp_path):
    folder = _copy(reference_run, tmp_path)
    for wal in folder.glob("store.sqlite-*"):
        wal.unlink()
    db = folder / "store.sqlite"
    db.write_bytes(garbage + b"\x00" * 4096 if garbage else db.read_bytes()[:2048])
    before = db.read_bytes()
    line = refused("report", reference_run.spec, "--results-dir", folder, cwd=tmp_path,
                   contains=("store.sqlite", "move it"))
    assert line.startswith("error: ")
    assert db.read_bytes() == before  # never "repaired" by overwriting


# ------------------------------------------------------------------ the results folder


def test_results_dir_that_is_a_file(tiny_spec, tmp_path):
    (tmp_path / "afile").write_text("x")
    refused("run", tiny_spec, "--results-dir", tmp_path / "afile", cwd=tmp_path,
            contains="is a file")
    refused("run", tiny_spec, "--results-dir", tmp_path / "afile" / "sub", cwd=tmp_path,
            contains="is a file")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_results_dir(tiny_spec, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        refused("run", tiny_spec, "--results-dir", ro, cwd=tmp_path, contains="not writable")
    finally:
        ro.chmod(0o755)


def test_report_on_an_empty_folder_says_so_at_once(tiny_spec, tmp_path):
    empty = tmp_path / "empty"
    refused("report", tiny_spec, "--results-dir", empty, cwd=tmp_path,
            contains="not trained yet")
    assert not (empty / "artifacts").exists()  # the reference model was not built first


# ------------------------------------------------------------------ two runs at once

def test_second_run_on_a_held_folder_exits_1_naming_the_holder(reference_run, tmp_path):
    folder = _copy(reference_run, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from harness.lock import lock_results_dir; lock_results_dir(Path(sys.argv[1])); "
         "print('held', flush=True); time.sleep(120)", str(folder)],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = store_digest(folder)
        line = refused("run", reference_run.spec, "--results-dir", folder, cwd=tmp_path,
                       code=1, contains=(f"pid {holder.pid}", "in use"))
        assert "Traceback" not in line and store_digest(folder) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file stays, but the lock went with it
    assert (folder / ".lock").exists()
    assert_ok(cli("report", reference_run.spec, "--results-dir", folder, cwd=tmp_path))


def test_concurrent_runs_never_traceback(tiny_spec, tmp_path):
    """Two `run`s started together on one folder: one finishes, the other exits 1 in one
    line (or, if it started after the first ended, finishes from the store)."""
    folder = tmp_path / "R"
    cmd = [sys.executable, "-m", "harness", "run", str(tiny_spec), "--results-dir",
           str(folder), "--quiet"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    for (_, err), p in zip(outs, procs):
        assert "Traceback" not in err, err
        if p.returncode == 1:
            assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
            assert "in use by another spo-harness run" in err
    assert codes in ([0, 0], [0, 1]), outs


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs (needs root and mount; skipped where that is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0
    if not ok:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_is_one_line_and_the_rerun_recovers(small_disk, reference_run, tmp_path):
    folder = small_disk / "A"
    shutil.copytree(reference_run.results, folder)
    filler = small_disk / "filler"
    free = shutil.disk_usage(small_disk).free
    with open(filler, "wb") as f:  # leave a few KiB: not enough for new units
        f.write(b"\0" * max(0, free - 8192))
    sets = ["--set", "generation.n_samples=8"]
    proc = cli("run", reference_run.spec, "--results-dir", folder, *sets, cwd=tmp_path)
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "disk" in lines[0], proc.stderr
    filler.unlink()
    assert_ok(cli("run", reference_run.spec, "--results-dir", folder, *sets, cwd=tmp_path))
    fresh = tmp_path / "fresh"
    assert_ok(cli("run", reference_run.spec, "--results-dir", fresh, *sets, cwd=tmp_path))
    assert leaderboard(folder) == leaderboard(fresh)


def test_interrupted_run_prints_one_line_and_resumes(tiny_spec, tmp_path):
    folder = tmp_path / "R"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(tiny_spec),
                             "--results-dir", str(folder), "--quiet"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (folder / "store.sqlite").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(2)  # Ctrl-C
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0 or (proc.returncode == -2 and "interrupted" not in err
                                and (folder / "run.json").exists()):
        # done before the interrupt arrived (in interpreter shutdown, Python's own SIGINT)
        pytest.skip("the run finished before the interrupt arrived")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130 and len(lines) == 1 and "resume" in lines[0], err
    assert_ok(cli("run", tiny_spec, "--results-dir", folder, cwd=tmp_path))
