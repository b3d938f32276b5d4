"""JSONL preference pairs and prompts: valid rows and located errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.data import load_pairs, load_prompts
from harness.errors import InputError

ROW = {"prompt": "p", "chosen": "good", "rejected": "bad"}


def _jsonl(tmp_path: Path, lines: list, name: str = "pairs.jsonl") -> Path:
    """Dict rows are JSON-encoded, strings are written verbatim."""
    path = tmp_path / name
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n"
                            for x in lines), encoding="utf-8")
    return path


def _error(fn, path: Path) -> InputError:
    with pytest.raises(InputError) as exc:
        fn(path)
    return exc.value


def _assert_located(err: InputError, path: Path, line: int | None,
                    field: str | None = None) -> None:
    msg = str(err)
    assert str(path) in msg, msg
    if line is not None:
        assert f"{path}:{line}:" in msg, msg
        assert err.line == line
    if field is not None:
        assert f"'{field}'" in msg, msg
        assert err.field == field


# ---------------------------------------------------------------------------- pairs


def test_load_pairs_valid(tmp_path: Path) -> None:
    rows = [ROW, {"prompt": "q", "chosen": "é ünïcode", "rejected": "r", "extra": 1}]
    out = load_pairs(_jsonl(tmp_path, rows))
    assert out == [ROW, {"prompt": "q", "chosen": "é ünïcode", "rejected": "r"}]


def test_load_pairs_soft_labels(tmp_path: Path) -> None:
    rows = [dict(ROW, soft_label=0.75), dict(ROW, soft_label=1), dict(ROW, soft_label=0)]
    out = load_pairs(_jsonl(tmp_path, rows))
    assert [r["soft_label"] for r in out] == [0.75, 1.0, 0.0]
    assert all(isinstance(r["soft_label"], float) for r in out)


def test_load_pairs_accepts_str_path(tmp_path: Path) -> None:
    assert len(load_pairs(str(_jsonl(tmp_path, [ROW, ROW])))) == 2


def test_malformed_json_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [ROW, '{"prompt": "p", "chosen": '])
    err = _error(load_pairs, path)
    _assert_located(err, path, 2)
    assert "malformed JSON" in str(err)


def test_empty_row(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [ROW, "   ", ROW])
    err = _error(load_pairs, path)
    _assert_located(err, path, 2)
    assert "empty row" in str(err)


@pytest.mark.parametrize("row", ["[1, 2]", '"text"', "3", "null"])
def test_non_object_row(tmp_path: Path, row: str) -> None:
    path = _jsonl(tmp_path, [ROW, ROW, row])
    err = _error(load_pairs, path)
    _assert_located(err, path, 3)
    assert "not a JSON object" in str(err)


@pytest.mark.parametrize("key", ["prompt", "chosen", "rejected"])
def test_missing_field(tmp_path: Path, key: str) -> None:
    row = {k: v for k, v in ROW.items() if k != key}
    path = _jsonl(tmp_path, [ROW, row])
    err = _error(load_pairs, path)
    _assert_located(err, path, 2, key)
    assert "missing field" in str(err)


@pytest.mark.parametrize("value", ["", 3, None, ["a"]])
def test_empty_or_non_string_field(tmp_path: Path, value) -> None:
    path = _jsonl(tmp_path, [dict(ROW, chosen=value)])
    err = _error(load_pairs, path)
    _assert_located(err, path, 1, "chosen")
    assert "non-empty string" in str(err)


@pytest.mark.parametrize("label", [-0.1, 1.5, 2])
def test_soft_label_outside_unit_interval(tmp_path: Path, label: float) -> None:
    path = _jsonl(tmp_path, [dict(ROW, soft_label=0.5), dict(ROW, soft_label=label)])
    err = _error(load_pairs, path)
    _assert_located(err, path, 2, "soft_label")
    assert "outside [0, 1]" in str(err)


@pytest.mark.parametrize("raw", ['"0.5"', "true", "null", "NaN", "[0.5]"])
def test_soft_label_not_a_number(tmp_path: Path, raw: str) -> None:
    bad = '{"prompt": "p", "chosen": "a", "rejected": "b", "soft_label": ' + raw + "}"
    path = _jsonl(tmp_path, [bad])
    err = _error(load_pairs, path)
    _assert_located(err, path, 1, "soft_label")
    assert "must be a number" in str(err)


@pytest.mark.parametrize("first,second", [(True, False), (False, True)])
def test_soft_label_on_some_rows_only(tmp_path: Path, first: bool, second: bool) -> None:
    rows = [dict(ROW, soft_label=0.6) if s else ROW for s in (first, first, second)]
    path = _jsonl(tmp_path, rows)
    err = _error(load_pairs, path)
    _assert_located(err, path, 3, "soft_label")
    assert "every row or on none" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    err = _error(load_pairs, path)
    assert str(path) in str(err) and "no rows" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.jsonl"
    err = _error(load_pairs, path)
    assert str(path) in str(err) and "not found" in str(err)
    err = _error(load_prompts, path)
    assert str(path) in str(err) and "not found" in str(err)


def test_error_message_format(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [ROW, dict(ROW, soft_label=0.5)])
    assert str(_error(load_pairs, path)) == (
        f"{path}:2: 'soft_label': soft_label must be given on every row or on none")


# ---------------------------------------------------------------------------- prompts


def test_load_prompts_ids_default_to_line_number(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [{"prompt": "a"}, {"prompt": "b", "id": "x7"}, {"prompt": "c", "id": 3}],
                  "prompts.jsonl")
    assert load_prompts(path) == [("0001", "a"), ("x7", "b"), ("3", "c")]


def test_load_prompts_errors(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, [{"prompt": "a"}, {"text": "b"}], "p1.jsonl")
    _assert_located(_error(load_prompts, path), path, 2, "prompt")
    path = _jsonl(tmp_path, [{"prompt": ""}], "p2.jsonl")
    _assert_located(_error(load_prompts, path), path, 1, "prompt")
    path = _jsonl(tmp_path, [{"prompt": "a"}, "oops"], "p3.jsonl")
    _assert_located(_error(load_prompts, path), path, 2)
    path = _jsonl(tmp_path, [{"prompt": "a"}, "", {"prompt": "b"}], "p4.jsonl")
    _assert_located(_error(load_prompts, path), path, 2)
    path = _jsonl(tmp_path, [{"prompt": "a"}, ""], "p4b.jsonl")  # a trailing blank line is fine
    assert load_prompts(path) == [("0001", "a")]
    path = _jsonl(tmp_path, ["[]"], "p5.jsonl")
    _assert_located(_error(load_prompts, path), path, 1)
    path = tmp_path / "p6.jsonl"
    path.write_text("")
    assert "no rows" in str(_error(load_prompts, path))


def test_ranked_and_best_of_n_rows(tmp_path):
    path = tmp_path / "lists.jsonl"
    path.write_text('{"prompt": "p", "responses": ["a", "b", "c"], "scores": [1, 3, 2]}\n'
                    '{"prompt": "q", "responses": ["x", "y"], "scores": [0.5, 0.5]}\n')
    rows = load_pairs(path)
    assert rows[0] == {"prompt": "p", "responses": ["b", "c", "a"], "ranked": True}
    assert rows[1]["responses"] == ["x", "y"]  # ties keep the given order
    best = tmp_path / "best.jsonl"
    best.write_text('{"prompt": "p", "responses": ["a", "b", "c"], "chosen_index": 2}\n')
    assert load_pairs(best) == [{"prompt": "p", "responses": ["c", "a", "b"], "ranked": False}]


@pytest.mark.parametrize("row, field", [
    ('{"prompt": "p", "responses": ["a"], "scores": [1]}', "responses"),
    ('{"prompt": "p", "responses": ["a", "b"], "scores": [1]}', "scores"),
    ('{"prompt": "p", "responses": ["a", "b"], "scores": [1, "x"]}', "scores"),
    ('{"prompt": "p", "responses": ["a", "b"]}', "responses"),
    ('{"prompt": "p", "responses": ["a", "b"], "chosen_index": 5}', "chosen_index"),
    ('{"prompt": "p", "responses": ["a", "b"], "chosen_index": 0, "scores": [1, 2]}',
     "responses"),
])
def test_bad_list_rows_name_line_and_field(tmp_path, row, field):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "p", "responses": ["a", "b"], "scores": [1, 2]}\n' + row + "\n")
    with pytest.raises(InputError) as err:
        load_pairs(path)
    assert f"{path}:2" in str(err.value) and field in str(err.value)


def test_pair_and_list_rows_do_not_mix(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
                    '{"prompt": "p", "responses": ["a", "b"], "scores": [1, 2]}\n')
    with pytest.raises(InputError, match="one kind per file"):
        load_pairs(path)
