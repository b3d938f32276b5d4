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


def _record(wr, se, lo, hi, exact, bt=(None, None, None), n_prompts=64):
    return {"is_baseline": False, "win_rate": wr, "win_rate_se": se, "win_rate_ci_low": lo,
            "win_rate_ci_high": hi, "exact_win_rate": exact, "bt_ci_low": bt[0],
            "bt_ci_high": bt[1], "exact_bt_rating": bt[2], "n_prompts": n_prompts}


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
    # one case per rerun: the clustered SE is the binomial one times sqrt(G / (G - 1))
    assert boot["coverage_se_clustered"] == pytest.approx(math.sqrt(0.5 * 0.5 / 4 * 4 / 3))
    assert boot["mean_width"] == pytest.approx((8 + 8 + 4 + 18) / 4)
    wald = out["win_rate (clustered SE, z)"]
    # 60 ± 3.92 holds 61; 60 ± 1.96 misses 63; 50 ± 9.8 holds 58
    assert wald["coverage"] == pytest.approx(2 / 4)
    bt = out["bt_rating (bootstrap)"]
    assert bt["n"] == 2 and bt["n_undefined"] == 2 and bt["coverage"] == pytest.approx(0.5)


def test_the_t_interval_widens_with_few_prompts():
    """The study tallies the leaderboard's own t interval (`t_interval`): t_{0.975, G-1} =
    2.7764 at G = 5 prompts (tables), so 60 ± 2 · 2.7764 holds 65 while the z interval
    (60 ± 3.92) does not; at G = 1000 the two agree to 0.2%."""
    from evaluators.bootstrap import t_interval

    cov = _bench()

    def record(n_prompts):
        low, high = t_interval(60, 2, n_prompts)
        return {**_record(60, 2, 0, 0, 65, n_prompts=n_prompts), "win_rate_t_ci_low": low,
                "win_rate_t_ci_high": high}

    few = cov.tally([[record(5)]])
    assert few["win_rate (clustered SE, t)"]["coverage"] == 1
    assert few["win_rate (clustered SE, z)"]["coverage"] == 0
    assert few["win_rate (clustered SE, t)"]["mean_width"] == pytest.approx(4 * 2.7764, abs=1e-3)
    many = cov.tally([[record(1000)]])
    assert many["win_rate (clustered SE, t)"]["mean_width"] == pytest.approx(4 * 1.96, rel=2e-3)


def test_pairs_are_tallied_apart_from_runs():
    cov = _bench()
    pair = {"kind": "pair", "a": "x", "b": "y", "ci_low": -2.0, "ci_high": 6.0,
            "exact_diff": 5.0}
    miss = {**pair, "exact_diff": 7.0}
    out = cov.tally([[_record(60, 2, 56, 64, 61), pair], [miss]])
    d = out["win_rate difference (paired bootstrap)"]
    assert d["n"] == 2 and d["coverage"] == pytest.approx(0.5) and d["mean_width"] == 8
    assert out["win_rate (bootstrap)"]["n"] == 1  # the pair rows are not runs


def test_the_clustered_se_counts_a_rerun_s_cases_as_one_draw():
    """Two reruns of two perfectly correlated cases (both hit, both miss): the binomial SE
    sees 4 independent cases, sqrt(.25 / 4) = 0.25; by rerun the mean hit is one draw of
    two clusters, sqrt(2/1 * (1^2 + 1^2)) / 4 = 0.5."""
    cov = _bench()
    hit, miss = _record(60, 2, 56, 64, 61), _record(60, 2, 56, 64, 70)
    boot = cov.tally([[hit, hit], [miss, miss]])["win_rate (bootstrap)"]
    assert boot["coverage"] == 0.5 and boot["coverage_se"] == pytest.approx(0.25)
    assert boot["coverage_se_clustered"] == pytest.approx(0.5)


def test_a_short_study_on_the_tiny_bandit_runs(tmp_path):
    cov = _bench()
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC)
    out, records = cov.study(str(spec), reruns=20, overrides=["report.bootstrap_rounds=50"],
                             results_dir=str(tmp_path / "r"))
    assert len(records) == 20
    for name, r in out.items():
        cases = 20 * (1 if "difference" in name else 2)  # 2 runs, so 1 pair, per rerun
        assert r["n"] + r["n_undefined"] == cases, name
        assert 0 <= r["coverage"] <= 1 and r["mean_width"] > 0, name
    # every rerun sampled anew: the estimates differ between reruns
    assert len({round(recs[1]["win_rate"], 9) for recs in records}) > 1
    pairs = [r for r in records[0] if r.get("kind") == "pair"]
    runs = {r["label"]: r for r in records[0] if "label" in r}
    non_baseline = {label for label, r in runs.items() if not r["is_baseline"]}
    assert len(pairs) == 1 and {pairs[0]["a"], pairs[0]["b"]} == non_baseline
    assert pairs[0]["exact_diff"] == pytest.approx(
        runs[pairs[0]["a"]]["exact_win_rate"] - runs[pairs[0]["b"]]["exact_win_rate"])


def test_a_study_on_drawn_prompts_checks_against_the_population_truth(tmp_path):
    """--prompts 2 of the tiny bandit's 3: each rerun sees a fresh pair of prompts, and the
    truth is the exact value over all 3 (the same in every rerun)."""
    cov = _bench()
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC)
    _, records = cov.study(str(spec), reruns=6, overrides=["report.bootstrap_rounds=20"],
                           results_dir=str(tmp_path / "r"), prompts=2)
    _, full = cov.study(str(spec), reruns=1, overrides=["report.bootstrap_rounds=20"],
                        results_dir=str(tmp_path / "r"))
    truth = {r["label"]: r["exact_win_rate"] for r in full[0] if "label" in r}
    for recs in records:
        runs = [r for r in recs if "label" in r]
        assert all(r["n_prompts"] == 2 for r in runs)
        for r in runs:
            assert r["exact_win_rate"] == pytest.approx(truth[r["label"]], abs=1e-9)
    drawn = [next(r for r in recs if r.get("kind") == "rerun")["prompt_ids"] for recs in records]
    assert all(len(ids) == 2 for ids in drawn) and len({tuple(ids) for ids in drawn}) > 1
    with pytest.raises(SystemExit, match="1..3"):
        cov.study(str(spec), reruns=1, overrides=[], results_dir=str(tmp_path / "r"), prompts=4)
