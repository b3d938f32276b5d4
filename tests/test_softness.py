"""The diversity-vs-softness table and plot."""

from __future__ import annotations

from evaluators.softness import softness_rows, write_softness


def _rec(method, params, **metrics):
    base = {"method": method, "params": params, "label": method, "seed": 0}
    return {**base, **{"win_rate": None, "mean_reward": None, "entropy": None,
                       "distinct_1": None, "distinct_2": None, "kl_to_ref": None, "exact_entropy": None}, **metrics}


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
