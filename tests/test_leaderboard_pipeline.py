"""The trustworthy leaderboard end to end on the tiny bandit: every model meets every other
(`judging.pairs: all`), the baseline's gamed answers regularize LC, two judges and two
scorers reach the leaderboard, and `compare` tests two models head to head."""

from __future__ import annotations

import json

import pytest

from tests.conftest import TINY_BASE, assert_input_error, assert_ok, cli, leaderboard, write_spec

SPEC = TINY_BASE.replace("seeds: [0]", "seeds: [0, 1]") + """\
judges: [{name: oracle}, {name: oracle, params: {scale: 2.0}}]
scorers: [{name: oracle}, {name: length}]
judging: {pairs: all, gamed_baseline: true}
report: {primary_judge: "oracle#2", bootstrap_rounds: 60, style_bootstrap_rounds: 20,
         embedding_diversity: false}
"""


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    spec = write_spec(root / "all.yaml", SPEC)
    results = root / "results"
    assert_ok(cli("run", spec, "--results-dir", results, timeout=900))
    return spec, results


def test_every_judge_every_scorer_and_every_pair_reach_the_leaderboard(board):
    _, results = board
    rows = {r["label"]: r for r in leaderboard(results)}
    assert len(rows) == 5  # sft + 2 methods x 2 seeds
    for r in rows.values():
        assert r["primary_judge"] == "oracle#2"
        for judge in ("oracle", "oracle#2"):
            assert f"{judge}:win_rate" in r and f"{judge}:bt_rating" in r
        for scorer in ("oracle", "length"):
            assert f"{scorer}:mean_reward" in r and f"{scorer}:mean_reward_se" in r
    runs = [r for r in rows.values() if not r["is_baseline"]]
    for r in runs:
        assert r["win_rate"] == r["oracle#2:win_rate"]
        assert r["win_rate_ci_low"] <= r["win_rate"] <= r["win_rate_ci_high"]
        assert r["win_rate_se"] is not None and r["win_rate_se_iid"] is not None
        # the gamed baseline answers were generated and judged: AlpacaEval's default GLM
        assert r["lc_variant"] == "length_controlled_v1", r
        assert r["bt_rating"] is not None or r["bt_separated"]
        # the bandit's truth beside the estimates, per oracle judge (its own scale)
        assert 0 < r["exact_win_rate"] < 100 and r["exact_bt_rating"] is not None
        assert r["oracle:exact_win_rate"] != r["oracle#2:exact_win_rate"]
    # with all pairs judged, Bradley-Terry is no longer a transform of each win rate alone:
    # the store holds candidate-vs-candidate judgments: more than the baseline plan's at most
    # 2 judges x (4 models + 2 gamed kinds) x 12 slots (identical content shares one key)
    import sqlite3

    con = sqlite3.connect(results / "store.sqlite")
    n = con.execute("SELECT count(*) FROM judgments WHERE status = 'ok'").fetchone()[0]
    con.close()
    assert 2 * (4 + 2) * 12 < n <= 2 * (10 + 2) * 12
    board_md = (results / "leaderboard.md").read_text()
    assert "## Every judge" in board_md and "## Every scorer" in board_md
    by_config = json.loads((results / "leaderboard_by_config.json").read_text())
    assert {r["n_seeds"] for r in by_config} == {2}
    for name in ("pareto.md", "pareto.csv", "leaderboard_by_config.md"):
        assert (results / name).exists(), name


def test_compare_two_models_and_every_pair(board):
    spec, results = board
    proc = cli("compare", spec, "dpo(beta=1)/seed=0", "sft", "--results-dir", results)
    assert_ok(proc)
    assert "win_rate" in proc.stdout and "lc_win_rate" in proc.stdout
    proc = cli("compare", spec, "--all", "--results-dir", results, timeout=900)
    assert_ok(proc)
    rows = json.loads((results / "compare.json").read_text())
    assert len({(r["a"], r["b"]) for r in rows}) == 10  # C(5, 2)
    assert all("p_holm" in r for r in rows)
    # compare's values are the leaderboard's (same judge, same LC variant)
    board = {r["label"]: r for r in leaderboard(results)}
    for r in rows:
        if r["a"] != "sft" and r["metric"] in ("win_rate", "lc_win_rate"):
            assert r["value_a"] == pytest.approx(board[r["a"]][r["metric"]]), r


@pytest.mark.parametrize("args,fragment", [
    (("nope", "sft"), "no model 'nope'"),
    (("sft",), "two model labels"),
    (("--judge", "llm"), "not one of the judges"),
])
def test_compare_bad_input_is_one_line_exit_2(board, args, fragment):
    spec, results = board
    extra = ("sft", "nope") if args == ("--judge", "llm") else ()
    line = assert_input_error(cli("compare", spec, *args, *extra, "--results-dir", results))
    assert fragment in line


def test_compare_before_any_run_says_so(tmp_path):
    spec = write_spec(tmp_path / "t.yaml", SPEC)
    line = assert_input_error(cli("compare", spec, "a", "b", "--results-dir", tmp_path / "r"))
    assert "not trained yet" in line
