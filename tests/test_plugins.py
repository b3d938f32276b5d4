"""A third-party package adds a method through the `spo_harness.methods` entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ENV, REPO, TINY_SPEC

PLUGIN = REPO / "tests" / "plugin_example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--no-index", "--target", str(target),
                           str(PLUGIN)], capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        pytest.fail(f"installing the example plugin failed: {proc.stderr[-1500:]}")
    return target


def _env(plugin_path):
    return {**ENV, "PYTHONPATH": f"{plugin_path}:{ENV['PYTHONPATH']}"}


def test_plugin_method_is_found_by_get_loss(plugin_path):
    code = ("import torch, json; from trainers.losses import get_loss, LOSSES\n"
            "l = get_loss('margin_dpo', beta=0.5, margin=0.2)\n"
            "t = lambda *v: torch.tensor(v, dtype=torch.float64)\n"
            "out = l(policy_chosen_logps=t(-1., -3.), policy_rejected_logps=t(-2., -1.),"
            " ref_chosen_logps=t(-1.5, -2.), ref_rejected_logps=t(-1.5, -2.))\n"
            "print(json.dumps({'names': LOSSES.names(), 'losses': out.losses.tolist()}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(plugin_path), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "margin_dpo" in result["names"] and "spo" in result["names"]
    import math
    for h, got in zip((0.5 * (0.5 + 0.5), 0.5 * (-1.0 - 1.0)), result["losses"]):
        assert got == pytest.approx(math.log1p(math.exp(-(h - 0.2))), abs=1e-12)


def test_plugin_method_trains_through_the_cli(plugin_path, tmp_path):
    spec = tmp_path / "plugin.yaml"
    text = TINY_SPEC.replace("  - name: dpo\n    params: {beta: 1}\n",
                             "  - name: margin_dpo\n    params: {beta: 1, margin: 0.5}\n")
    assert "margin_dpo" in text
    spec.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--results-dir",
                           str(tmp_path / "out"), "--quiet"], capture_output=True, text=True,
                          env=_env(plugin_path), cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert "margin_dpo(beta=1,margin=0.5)" in {r["label"] for r in board}
    # without the plugin on the path the same spec is refused with exit code 2
    bare = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--results-dir",
                           str(tmp_path / "out2"), "--quiet"], capture_output=True, text=True,
                          env=ENV, cwd=REPO)
    assert bare.returncode == 2 and "margin_dpo" in bare.stderr
