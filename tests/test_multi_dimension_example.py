"""`examples/multi_dimension.yaml` end to end (slow: minutes on a 2-core CPU): every SeqPO
run and each of its stored rounds lands on its closed-form optimum (METHODS.md §8), the
pi_n = pi_{n-1} exp((R_n + s lambda sum_{i<n} R_i)/beta)/Z chain from pi_0, within 0.02
nats; the leaderboard carries each dimension's mean and exact reward."""

from __future__ import annotations

import pytest

from tests.test_examples import _run


@pytest.mark.slow
def test_seqpo_reaches_its_optimum_on_the_two_dimension_bandit(tmp_path):
    board = {r["label"]: r for r in _run("multi_dimension.yaml", tmp_path)}
    seqpo = [r for r in board.values() if r["method"] == "seqpo"]
    # round 1 (DPO on dim1) reads neither lambda nor margin_sign: trained and listed once
    assert {r["label"] for r in seqpo} == {
        "seqpo(lambda=0)", "seqpo(lambda=0.5)", "seqpo-flipped(beta=1,lambda=0.5,margin_sign=-1)",
        "seqpo(lambda=0)@round1"}
    for rec in seqpo:
        assert rec["exact_kl_to_target"] <= 0.02, rec
        assert rec["exact_support_mass"] > 0.9, rec
    for rec in board.values():
        for d in ("dim1", "dim2"):
            assert rec[f"oracle.{d}:exact_expected_reward"] is not None
            assert rec[f"oracle.{d}:mean_reward"] is not None
    # mixed labels: no closed-form target; lambda > 0 keeps more of dim1 than lambda = 0
    assert board["dpo(beta=1)"]["exact_kl_to_target"] is None
    assert (board["seqpo(lambda=0.5)"]["oracle.dim1:exact_expected_reward"]
            > board["seqpo(lambda=0)"]["oracle.dim1:exact_expected_reward"])


@pytest.mark.slow
def test_sentiment_and_brevity_conflict_and_every_dimension_has_its_columns(tmp_path):
    """`examples/multi_dimension_sentiment.yaml`: every model has each dimension's reward and
    win rate; SeqPO's round 1 (DPO on sentiment) raises sentiment beyond the 95% intervals
    and lowers brevity against the SFT model: the two dimensions conflict. (The brevity drop
    was beyond the intervals in the README's run, 0.44 -> 0.19, and not in this test's
    environment, 0.443 -> 0.392, whose one MKL thread gives another SFT reference.)"""
    board = {r["label"]: r for r in _run("multi_dimension_sentiment.yaml", tmp_path)}
    for rec in board.values():
        for d in ("sentiment", "brevity"):
            assert rec[f"oracle.{d}:mean_reward"] is not None
            if not rec["is_baseline"]:
                assert 0 <= rec[f"oracle.{d}:win_rate"] <= 100
    sft, round1 = board["sft"], board["seqpo(lambda=0)@round1"]
    assert round1["oracle.sentiment:mean_reward_ci_low"] > sft[
        "oracle.sentiment:mean_reward_ci_high"]
    assert round1["oracle.brevity:mean_reward"] < sft["oracle.brevity:mean_reward"]
