"""The quality-diversity Pareto front and its table, CSV and plot."""

from __future__ import annotations

import csv
import math

from evaluators.pareto import pareto_front, write_pareto

PNG = b"\x89PNG\r\n\x1a\n"


def _rec(label, win_rate=None, entropy=None, embedding_diversity=None, mean_reward=None,
         is_baseline=False, **extra):
    return {"label": label, "method": label.split("-")[0], "params": {"alpha": 1.0}, "seed": 0,
            "is_baseline": is_baseline, "win_rate": win_rate, "entropy": entropy,
            "embedding_diversity": embedding_diversity, "mean_reward": mean_reward, **extra}


def _front(points):
    return pareto_front([{"q": q, "d": d} for q, d in points], "q", "d")


def test_front_hand_example() -> None:
    #         (q, d): A and C trade off; B is below A on both; D below C on both; E is best
    #         on quality alone
    points = [(60, 2.0), (55, 1.5), (50, 3.0), (45, 2.5), (70, 0.5)]
    assert _front(points) == [True, False, True, False, True]


def test_front_ties() -> None:
    # the same point twice: neither dominates the other, both on the front
    assert _front([(50, 1.0), (50, 1.0)]) == [True, True]
    # equal quality, less diversity: dominated; equal diversity, less quality: dominated
    assert _front([(50, 1.0), (50, 0.5)]) == [True, False]
    assert _front([(50, 1.0), (40, 1.0)]) == [True, False]
    # a copy of a dominated point stays dominated
    assert _front([(60, 2.0), (50, 1.0), (50, 1.0)]) == [True, False, False]


def test_missing_values_never_on_the_front_and_dominate_nothing() -> None:
    assert _front([(None, 5.0), (10, None), (float("nan"), 1.0), (1, 0.1)]) == \
        [False, False, False, True]
    assert _front([]) == []
    assert _front([(None, None)]) == [False]


def test_write_pareto_files(tmp_path) -> None:
    records = [
        _rec("sft", entropy=40.0, embedding_diversity=0.6, is_baseline=True),
        _rec("spo-a1", win_rate=62.0, win_rate_ci_low=55.0, win_rate_ci_high=69.0,
             entropy=30.0, entropy_ci_low=28.0, entropy_ci_high=32.0, embedding_diversity=0.5,
             embedding_diversity_ci_low=0.45, embedding_diversity_ci_high=0.55),
        _rec("spo-a4", win_rate=55.0, entropy=38.0, embedding_diversity=0.4),
        _rec("dpo-b01", win_rate=48.0, entropy=20.0, embedding_diversity=None),
    ]
    paths = write_pareto(records, tmp_path)
    assert [p.name for p in paths] == ["pareto.csv", "pareto.md", "pareto.png"]
    assert (tmp_path / "pareto.png").read_bytes()[:8] == PNG
    assert not list(tmp_path.glob(".*tmp*"))
    rows = list(csv.DictReader((tmp_path / "pareto.csv").open()))
    by = {r["label"]: r for r in rows}
    # the baseline stands at 50: it dominates dpo-b01 (48, 20 nats) on the entropy panel
    assert by["sft"]["win_rate"] == "50.0" and by["sft"]["is_baseline"] == "True"
    assert by["sft"]["front_entropy"] == "True"
    assert by["spo-a1"]["front_entropy"] == "True" and by["spo-a4"]["front_entropy"] == "True"
    assert by["dpo-b01"]["front_entropy"] == "False"
    assert by["spo-a4"]["front_embedding_diversity"] == "False"      # below spo-a1 on both
    assert by["dpo-b01"]["front_embedding_diversity"] == "False"     # no value
    assert by["spo-a1"]["win_rate_ci_low"] == "55.0" and by["spo-a4"]["win_rate_ci_low"] == ""
    assert by["spo-a1"]["params"] == '{"alpha": 1.0}'
    md = (tmp_path / "pareto.md").read_text()
    assert "| sft (baseline) | 50 | 40 | * | 0.6 | * |" in md
    assert "| spo-a1 | 62 [55, 69] | 30 [28, 32] | * | 0.5 [0.45, 0.55] | * |" in md
    assert "| spo-a4 | 55 | 38 | * | 0.4 |  |" in md
    assert "| dpo-b01 | 48 | 20 |  | – |  |" in md


def test_write_pareto_falls_back_to_reward_and_skips_missing_panels(tmp_path) -> None:
    records = [_rec("a", mean_reward=1.0, entropy=3.0), _rec("b", mean_reward=2.0, entropy=1.0)]
    paths = write_pareto(records, tmp_path)
    assert len(paths) == 3
    header = (tmp_path / "pareto.csv").read_text().splitlines()[0].split(",")
    assert "mean_reward" in header and "win_rate" not in header
    assert "embedding_diversity" not in header      # no record has it: no panel
    assert "mean reward" in (tmp_path / "pareto.md").read_text()


def test_write_pareto_nothing_to_plot(tmp_path) -> None:
    assert write_pareto([_rec("a", win_rate=50.0)], tmp_path) == []      # no diversity
    assert write_pareto([_rec("a", entropy=1.0)], tmp_path) == []        # no quality
    assert not list(tmp_path.iterdir())


def test_interval_not_containing_the_point_still_plots(tmp_path) -> None:
    # a percentile interval of a ratio can miss its point; the bars are clipped, not negative
    records = [_rec("a", win_rate=50.0, win_rate_ci_low=51.0, win_rate_ci_high=60.0,
                    entropy=2.0, entropy_ci_low=math.nan, entropy_ci_high=3.0)]
    assert len(write_pareto(records, tmp_path)) == 3


def test_sweep_curve_joins_a_methods_runs_in_knob_order_averaging_seeds() -> None:
    from evaluators.pareto import sweep_curve, sweep_knob
    recs = [{"method": "spo", "params": {"alpha": 2.0}, "seed": 0, "entropy": 3.0, "win_rate": 55.0},
            {"method": "spo", "params": {"alpha": 0.5}, "seed": 0, "entropy": 1.0, "win_rate": 70.0},
            {"method": "spo", "params": {"alpha": 0.5}, "seed": 1, "entropy": 2.0, "win_rate": 60.0},
            {"method": "dpo", "params": {"beta": 0.1}, "seed": 0, "entropy": 1.0, "win_rate": 75.0},
            {"method": "sft", "params": {}, "is_baseline": True, "entropy": 5.0}]
    assert sweep_knob(recs, "spo") == "alpha" and sweep_knob(recs, "dpo") is None
    assert sweep_knob(recs, "sft") is None
    assert sweep_curve(recs, "spo", "alpha", "entropy", "win_rate") == [(0.5, 1.5, 65.0),
                                                                       (2.0, 3.0, 55.0)]
