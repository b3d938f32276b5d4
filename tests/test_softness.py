"""The diversity-vs-softness table and plot."""

from __future__ import annotations

import json
import math

import pandas as pd

from evaluators.softness import seed_aggregate, softness_rows, write_softness


def _rec(method, params, seed=0, **metrics):
    base = {"method": method, "params": params, "label": method, "seed": seed}
    return {**base, **{"win_rate": None, "mean_reward": None, "entropy": None,
                       "distinct_1": None, "distinct_2": None, "kl_to_ref": None,
                       "exact_entropy": None}, **metrics}


def test_rows_cover_swept_methods_only_sorted_by_knob():
    records = [_rec("sft", {}), _rec("spo", {"alpha": 2.0}, entropy=3.0),
               _rec("spo", {"alpha": 0.5}, entropy=1.0), _rec("dpo", {"beta": 0.1}),
               _rec("simpo", {"beta": 2.0}, entropy=0.5), _rec("simpo", {"beta": 2.5})]
    rows = softness_rows(records)
    assert [(r["method"], r["value"]) for r in rows] == [("simpo", 2.0), ("simpo", 2.5),
                                                         ("spo", 0.5), ("spo", 2.0)]
    assert [r["entropy"] for r in rows if r["method"] == "spo"] == [1.0, 3.0]


def test_write_softness_makes_table_and_png(tmp_path):
    records = [_rec("spo", {"alpha": a}, win_rate=50 + a, entropy=a, distinct_2=0.5)
               for a in (0.5, 1.0, 2.0)]
    paths = write_softness(records, tmp_path)
    assert {p.name for p in paths} == {"softness.csv", "softness.md", "softness.png"}
    assert (tmp_path / "softness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "softness.md").read_text()
    assert "| spo | alpha | 0.5 | 0 | 50.5 |" in md
    assert write_softness([_rec("dpo", {"beta": 0.1})], tmp_path / "none") == []


def test_intervals_reach_table_csv_json_and_new_panels(tmp_path):
    records = [_rec("spo", {"alpha": a}, win_rate=50 + a, win_rate_ci_low=40 + a,
                    win_rate_ci_high=60 + a, ead=0.5 * a, ead_ci_low=0.4 * a,
                    ead_ci_high=0.6 * a, embedding_diversity=0.3, entropy=a)
               for a in (0.5, 1.0, 2.0)]
    write_softness(records, tmp_path)
    md = (tmp_path / "softness.md").read_text()
    header = md.splitlines()[2]
    assert "ead" in header and "embedding_diversity" in header
    # value [low, high] where the record has an interval, the bare value where it has none
    assert "| spo | alpha | 0.5 | 0 | 50.5 [40.5, 60.5] | 0.5 | 0.25 [0.2, 0.3] | 0.3 |" in md
    frame = pd.read_csv(tmp_path / "softness.csv")
    for col in ("win_rate_ci_low", "win_rate_ci_high", "ead_ci_low", "embedding_diversity_ci_high",
                "distinct_1_ci_low"):
        assert col in frame.columns
    assert frame["win_rate_ci_high"].tolist() == [60.5, 61.0, 62.0]
    rows = json.loads((tmp_path / "softness.json").read_text())
    assert rows[0]["ead_ci_low"] == 0.2 and rows[0]["entropy_ci_low"] is None


def test_seeds_average_and_error_bar_is_the_hull():
    records = [_rec("spo", {"alpha": 1.0}, seed=0, win_rate=50.0, win_rate_ci_low=45.0,
                    win_rate_ci_high=56.0),
               _rec("spo", {"alpha": 1.0}, seed=1, win_rate=60.0, win_rate_ci_low=52.0,
                    win_rate_ci_high=66.0),
               _rec("spo", {"alpha": 2.0}, seed=0, win_rate=70.0)]
    frame = pd.DataFrame(softness_rows(records))
    for c in ("win_rate", "win_rate_ci_low", "win_rate_ci_high"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    agg = seed_aggregate(frame, "win_rate")
    assert agg.loc[1.0].tolist() == [55.0, 45.0, 66.0]     # mean; lowest low, highest high
    assert agg.loc[2.0, "mean"] == 70.0 and math.isnan(agg.loc[2.0, "low"])


def test_plot_with_partial_intervals(tmp_path):
    records = [_rec("spo", {"alpha": a}, seed=s, win_rate=50.0 + s, entropy=a,
                    entropy_ci_low=(a - 0.1) if s else None,
                    entropy_ci_high=(a + 0.1) if s else None)
               for a in (0.5, 1.0) for s in (0, 1)]
    paths = write_softness(records, tmp_path)
    assert (tmp_path / "softness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(paths) == 3 and not list(tmp_path.glob(".*tmp*"))


def test_saturated_metric_is_named_and_left_out_of_the_plot(tmp_path):
    """distinct-2 at 1 for every run (within 0.01) says nothing: the table names it as
    saturated; a metric merely near its bound for some runs is kept."""
    records = [_rec("spo", {"alpha": a}, win_rate=50 + a, entropy=a, distinct_2=1.0 - 0.004 * a,
                    distinct_1=0.9 + 0.04 * a) for a in (0.5, 1.0, 2.0)]
    write_softness(records, tmp_path)
    md = (tmp_path / "softness.md").read_text()
    assert "saturated at their bound" in md and "distinct_2 (bound 1)" in md
    assert "distinct_1 (bound" not in md          # 0.92..0.98: not all within 0.01 of 1
    frame = pd.read_csv(tmp_path / "softness.csv")
    from evaluators.softness import saturated
    assert saturated(frame, "distinct_2") and not saturated(frame, "distinct_1")
    assert not saturated(frame, "entropy")        # unbounded metrics never saturate


def test_everything_saturated_writes_no_png(tmp_path):
    records = [_rec("spo", {"alpha": a}, distinct_2=1.0) for a in (0.5, 1.0)]
    paths = write_softness(records, tmp_path)
    assert [p.name for p in paths] == ["softness.csv", "softness.md"]
    assert not (tmp_path / "softness.png").exists()


def test_baseline_levels_are_the_baseline_record_and_50_for_win_rate():
    from evaluators.softness import baseline_levels
    base = {**_rec("sft", {}, entropy=49.0, mean_reward=0.04, kl_to_ref=0.0), "is_baseline": True}
    levels = baseline_levels([_rec("spo", {"alpha": 1.0}, entropy=70.0), base])
    assert levels == {"entropy": 49.0, "mean_reward": 0.04, "kl_to_ref": 0.0, "win_rate": 50.0}
    assert baseline_levels([_rec("spo", {"alpha": 1.0}, entropy=70.0)]) == {}
