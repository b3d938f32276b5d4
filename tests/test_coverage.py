"""The coverage study's machinery (bench/coverage.py): its arithmetic on hand-built records,
and a short real study on the tiny bandit. The K = 200 study itself is a benchmark."""

from __future__ import annotations

import importlib.util
import math

import pytest

from tests.conftest import REPO, TINY_SPEC, write_spec


def _bench():
    spec = importlib.util.spec_from_file_location("coverage_bench", REPO / "bench" / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(wr, se, lo, hi, exact, bt=(None, None, None)):
    return {"is_baseline": False, "win_rate": wr, "win_rate_se": se, "win_rate_ci_low": lo,
            "win_rate_ci_high": hi, "exact_win_rate": exact, "bt_ci_low": bt[0],
            "bt_ci_high": bt[1], "exact_bt_rating": bt[2]}


def test_tally_counts_hits_and_gives_the_binomial_se():
    cov = _bench()
    reruns = [[_record(60, 2, 56, 64, 61, (1040, 1100, 1050)), {"is_baseline": True}],
              [_record(60, 2, 56, 64, 70, (1040, 1100, 1200))],
              [_record(60, 1, 58, 62, 63, (None, None, 1000))],
              [_record(50, 5, 41, 59, 58)]]
    out = cov.tally(reruns)
    boot = out["win_rate (bootstrap)"]
    assert boot["n"] == 4 and boot["coverage"] == pytest.approx(2 / 4)  # 61 and 58 inside
    assert boot["coverage_se"] == pytest.approx(math.sqrt(0.5 * 0.5 / 4))
    assert boot["mean_width"] == pytest.approx((8 + 8 + 4 + 18) / 4)
    wald = out["win_rate (clustered SE)"]
    # 60 ± 3.92 holds 61; 60 ± 1.96 misses 63; 50 ± 9.8 holds 58
    assert wald["coverage"] == pytest.approx(2 / 4)
    bt = out["bt_rating (bootstrap)"]
    assert bt["n"] == 2 and bt["n_undefined"] == 2 and bt["coverage"] == pytest.approx(0.5)


def test_a_short_study_on_the_tiny_bandit_runs(tmp_path):
    cov = _bench()
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC)
    out, records = cov.study(str(spec), reruns=20, overrides=["report.bootstrap_rounds=50"],
                             results_dir=str(tmp_path / "r"))
    assert len(records) == 20
    for name, r in out.items():
        assert r["n"] + r["n_undefined"] == 20 * 2, name  # 2 runs per rerun
        assert 0 <= r["coverage"] <= 1 and r["mean_width"] > 0, name
    # every rerun sampled anew: the estimates differ between reruns
    assert len({round(recs[1]["win_rate"], 9) for recs in records}) > 1
