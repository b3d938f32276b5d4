"""Hostile executor options (issue 11): `--executor`, `--address`, a launch environment
without a launcher, and `--executor ray` without Ray. Each is one line and its exit code
before the results folder is touched (no store is created)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI, ENV, describe, stderr_lines
from tests.hostile.attack import refused


def _free_port() -> int:
    """A local port where nothing listens (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CASES = {  # arguments -> (exit code, what the one line names)
    "bad executor": (["--executor", "dask"], 2, ("--executor", "local, ray", "dask")),
    "empty executor": (["--executor", ""], 2, ("--executor",)),
    "address without ray": (["--address", "127.0.0.1:6379"], 2,
                            ("--address", "--executor ray")),
    "address not host:port": (["--executor", "ray", "--address", "not an address"], 2,
                              ("--address", "host:port", "not an address")),
    "address port out of range": (["--executor", "ray", "--address", "127.0.0.1:99999"], 2,
                                  ("--address", "127.0.0.1:99999")),
    "address ray:// without port": (["--executor", "ray", "--address", "ray://head"], 2,
                                    ("--address", "ray://head")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_executor_option_is_one_line(tmp_path: Path, tiny_spec: Path, case: str) -> None:
    args, code, fragments = CASES[case]
    command = "run" if case == "bad executor" else "train"  # both take the options
    results = tmp_path / "results"
    refused(command, tiny_spec, "--results-dir", results, *args, cwd=tmp_path,
            results=results, code=code, contains=fragments)
    assert not results.exists()


def test_an_address_where_nothing_answers_is_a_service_fault(tmp_path: Path,
                                                            tiny_spec: Path) -> None:
    results = tmp_path / "results"
    address = f"127.0.0.1:{_free_port()}"
    refused("train", tiny_spec, "--results-dir", results, "--executor", "ray", "--address",
            address, cwd=tmp_path, code=1, contains=("no Ray cluster answers", address))
    assert not results.exists()


def test_executor_ray_without_ray_names_the_extra(tmp_path: Path, tiny_spec: Path) -> None:
    """Ray hidden by a `ray` package that fails to import, as on an install without it."""
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(shadow.parent), ENV["PYTHONPATH"]])}
    results = tmp_path / "results"
    proc = subprocess.run([*CLI, "train", str(tiny_spec), "--results-dir", str(results),
                           "--executor", "ray", "--quiet"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    (line,) = stderr_lines(proc)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, describe(proc)
    assert "pip install 'spo-harness[ray]'" in line, line
    assert not results.exists()


LAUNCH_CASES = {  # environment -> what the one line names
    "WORLD_SIZE without a launcher": ({"WORLD_SIZE": "2"}, (
        "WORLD_SIZE is 2", "RANK", "MASTER_ADDR", "accelerate launch")),
    "WORLD_SIZE not a number": ({"WORLD_SIZE": "two"}, ("WORLD_SIZE", "two")),
    "ray under a launch": ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
                           ("--executor ray", "without `accelerate launch`")),
}


@pytest.mark.parametrize("case", sorted(LAUNCH_CASES))
def test_a_bad_launch_environment_is_one_line(tmp_path: Path, tiny_spec: Path,
                                              case: str) -> None:
    """Refused before the process group is joined (nothing waits) or the store opened."""
    extra, fragments = LAUNCH_CASES[case]
    results = tmp_path / "results"
    args = ["--executor", "ray"] if case == "ray under a launch" else []
    proc = subprocess.run([*CLI, "train", str(tiny_spec), "--results-dir", str(results),
                           *args, "--quiet"], env={**ENV, **extra}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    (line,) = stderr_lines(proc)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, describe(proc)
    for fragment in fragments:
        assert fragment in line, line
    assert not results.exists()
