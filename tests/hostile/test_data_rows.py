"""Hostile data rows: bytes that are not UTF-8, lone surrogates, non-finite numbers, and
prompt files whose ids or texts collide. Each is refused as an InputError naming the file,
the line and the field; a few go through the CLI (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.data import check_prompt_identity, load_pairs, load_prompts
from harness.errors import InputError
from tests.hostile.attack import refused

PAIR = '{"prompt": "p%d", "chosen": "good", "rejected": "bad"}'
PROMPT = '{"prompt": "p%d"}'


def write(path: Path, lines: list[str | bytes]) -> Path:
    """Lines written verbatim (str as UTF-8), each ended by a newline."""
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n"
                              for x in lines))
    return path


def refusal(fn, path: Path, line: int | None, field: str | None = None) -> str:
    with pytest.raises(InputError) as exc:
        fn(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.isprintable(), msg
    assert msg.encode("utf-8")  # printable on any terminal: no lone surrogate in it
    if line is not None:
        assert msg.startswith(f"{path}:{line}: "), msg
        assert exc.value.line == line
    else:
        assert msg.startswith(f"{path}: "), msg
    if field is not None:
        assert exc.value.field == field and f"'{field}'" in msg, msg
    return msg


# ---------------------------------------------------------------------------- bytes and text

@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82"],
                         ids=["ff", "c3-28", "encoded-surrogate", "cut-sequence"])
@pytest.mark.parametrize("fn, row", [(load_pairs, PAIR), (load_prompts, PROMPT)],
                         ids=["pairs", "prompts"])
def test_non_utf8_bytes_name_their_line(tmp_path, fn, row, bad):
    lines: list[str | bytes] = [row % 1, row % 2, (row % 3).encode().replace(b"p3", b"p" + bad)]
    msg = refusal(fn, write(tmp_path / "d.jsonl", lines), 3)
    assert "not valid UTF-8" in msg and "column 14" in msg  # after '{"prompt": "p'


def test_line_numbers_count_crlf_and_lone_cr_as_text_mode_does(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(((PAIR % 1) + "\r\n" + (PAIR % 2) + "\r" + '{"prompt": 3}\r\n').encode())
    refusal(load_pairs, path, 3, "prompt")


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (PROMPT % 1).encode() + b"\n")
    assert load_prompts(path) == [("0001", "p1")]


@pytest.mark.parametrize("row, field", [
    ('{"prompt": "p", "chosen": "a\\ud800", "rejected": "b"}', "chosen"),
    ('{"prompt": "\\udfff", "chosen": "a", "rejected": "b"}', "prompt"),
    ('{"prompt": "p", "chosen": "a", "rejected": "b", "note": ["x", {"y": "\\ud83d"}]}',
     "note"),  # an unused field too: the row is not valid Unicode
    ('{"prompt": "p", "responses": ["a", "b\\udc00"], "chosen_index": 0}', "responses"),
])
def test_lone_surrogate_is_refused_naming_the_field(tmp_path, row, field):
    msg = refusal(load_pairs, write(tmp_path / "d.jsonl", [PAIR % 1, row]), 2, field)
    assert "lone surrogate" in msg


def test_lone_surrogate_in_a_key_or_an_id(tmp_path):
    path = write(tmp_path / "k.jsonl", ['{"prompt": "p", "x\\ud800": 1}'])
    assert "lone surrogate" in refusal(load_prompts, path, 1, "x\\ud800")
    path = write(tmp_path / "i.jsonl", ['{"prompt": "p", "id": "\\ud800"}'])
    refusal(load_prompts, path, 1, "id")


def test_a_repeated_key_is_refused(tmp_path):
    path = write(tmp_path / "d.jsonl", ['{"prompt": "a", "chosen": "x", "rejected": "y", '
                                        '"chosen": "z"}'])
    assert "appears twice" in refusal(load_pairs, path, 1, "chosen")


@pytest.mark.parametrize("raw", ["[" * 100_000 + "]" * 100_000, '{"prompt": ' + "9" * 5000 + "}"])
def test_pathological_json_is_malformed_not_a_crash(tmp_path, raw):
    msg = refusal(load_pairs, write(tmp_path / "d.jsonl", [PAIR % 1, raw]), 2)
    assert "malformed JSON" in msg and len(msg) < 300


# ---------------------------------------------------------------------------- numbers

@pytest.mark.parametrize("raw", ["1e400", "-1e400", "Infinity", "-Infinity"])
def test_non_finite_soft_label(tmp_path, raw):
    row = '{"prompt": "p", "chosen": "a", "rejected": "b", "soft_label": ' + raw + "}"
    msg = refusal(load_pairs, write(tmp_path / "d.jsonl", [row]), 1, "soft_label")
    assert "non-finite" in msg and "outside [0, 1]" in msg


def test_huge_integer_soft_label_is_outside_the_interval(tmp_path):
    row = '{"prompt": "p", "chosen": "a", "rejected": "b", "soft_label": 1' + "0" * 400 + "}"
    msg = refusal(load_pairs, write(tmp_path / "d.jsonl", [row]), 1, "soft_label")
    assert "outside [0, 1]" in msg and len(msg) < 200


@pytest.mark.parametrize("raw, fragment", [("1e400", "non-finite"), ("-Infinity", "non-finite"),
                                           ("1" + "0" * 400, "too large"), ("NaN", "a number")])
def test_non_finite_scores(tmp_path, raw, fragment):
    row = '{"prompt": "p", "responses": ["a", "b"], "scores": [1, ' + raw + "]}"
    msg = refusal(load_pairs, write(tmp_path / "d.jsonl", [row]), 1, "scores")
    assert fragment in msg and len(msg) < 200


# ---------------------------------------------------------------------------- prompt identity

def test_duplicate_id_names_both_lines(tmp_path):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "a", "id": "x"}', '{"prompt": "b"}',
                                        '{"prompt": "c", "id": "x"}'])
    assert "id 'x' is already the id of line 1" in refusal(load_prompts, path, 3, "id")


def test_int_and_string_ids_collide_as_their_string(tmp_path):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "a", "id": 7}', '{"prompt": "b", "id": "7"}'])
    assert "line 1" in refusal(load_prompts, path, 2, "id")


@pytest.mark.parametrize("raw", ["null", "1.5", "true", '""', "[1]", '{"a": 1}'])
def test_id_must_be_a_string_or_an_integer(tmp_path, raw):
    path = write(tmp_path / "p.jsonl", [PROMPT % 1, '{"prompt": "b", "id": ' + raw + "}"])
    assert "non-empty string or an integer" in refusal(load_prompts, path, 2, "id")


def test_an_id_equal_to_an_earlier_default_id(tmp_path):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"prompt": "b"}',
                                        '{"prompt": "c", "id": "0001"}'])
    assert "default id of line 1" in refusal(load_prompts, path, 3, "id")


def test_a_default_id_equal_to_an_earlier_id(tmp_path):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "a", "id": "0003"}', '{"prompt": "b"}',
                                        '{"prompt": "c"}'])
    msg = refusal(load_prompts, path, 3, "id")
    assert "has no id" in msg and "'0003'" in msg and "line 1" in msg


def test_identical_prompt_texts(tmp_path):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "same"}', '{"prompt": "other"}',
                                        '{"prompt": "same", "id": "z"}'])
    assert "same prompt text as line 1" in refusal(load_prompts, path, 3, "prompt")


def test_distinct_prompts_keep_their_ids(tmp_path):
    path = write(tmp_path / "p.jsonl", ['{"prompt": "a"}', '{"prompt": "b", "id": "x"}',
                                        '{"prompt": "c", "id": 3}', '{"prompt": "d", "id": "0001x"}'])
    assert load_prompts(path) == [("0001", "a"), ("x", "b"), ("3", "c"), ("0001x", "d")]


def test_check_prompt_identity():
    check_prompt_identity([("a", "x"), ("b", "y")], "task bandit")
    with pytest.raises(InputError, match=r"^task bandit: prompt 3 has the same id 'a' as prompt 1"):
        check_prompt_identity([("a", "x"), ("b", "y"), ("a", "z")], "task bandit")
    with pytest.raises(InputError, match=r"^task t: prompt 2 has the same text as prompt 1"):
        check_prompt_identity([("a", "x"), ("b", "x")], "task t")
    with pytest.raises(InputError, match=r"prompt 1: the id must be a non-empty string"):
        check_prompt_identity([("", "x")], "task t")


# ---------------------------------------------------------------------------- property

MUTATIONS = {  # name -> (row text, field the error must name, or None)
    "missing-field": ('{"prompt": "p", "chosen": "a"}', "rejected"),
    "wrong-type": ('{"prompt": "p", "chosen": 3, "rejected": "b"}', "chosen"),
    "non-finite": ('{"prompt": "p", "chosen": "a", "rejected": "b", "soft_label": 1e400}',
                   "soft_label"),
    "surrogate": ('{"prompt": "p", "chosen": "a\\ud800", "rejected": "b"}', "chosen"),
    "bad-utf8": (b'{"prompt": "p", "chosen": "a\xff", "rejected": "b"}', None),
    "malformed": ('{"prompt": "p", "chosen": ', None),
    "empty": ("  ", None),
    "not-an-object": ("[1, 2]", None),
}
PROMPT_MUTATIONS = {
    "missing-prompt": ('{"text": "x"}', "prompt"),
    "null-id": ('{"prompt": "fresh", "id": null}', "id"),
    "duplicate-id": ('{"prompt": "fresh", "id": "given-0"}', "id"),
    "default-id": ('{"prompt": "fresh", "id": "0001"}', "id"),
    "duplicate-text": ('{"prompt": "text 0"}', "prompt"),
    "surrogate": ('{"prompt": "\\ud800"}', "prompt"),
    "bad-utf8": (b'{"prompt": "\xc3"}', None),
}

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_hostile_row_in_a_pair_file_is_found_at_its_line(tmp_path_factory, data):
    n = data.draw(st.integers(1, 12), label="rows")
    at = data.draw(st.integers(1, n + 1), label="hostile line")
    name = data.draw(st.sampled_from(sorted(MUTATIONS)), label="mutation")
    soft = data.draw(st.booleans())
    lines: list[str | bytes] = []
    for _ in range(n):
        row = {"prompt": data.draw(_text), "chosen": data.draw(_text),
               "rejected": data.draw(_text)}
        if soft or name == "non-finite":  # soft labels on every row or on none
            row["soft_label"] = data.draw(st.floats(0, 1))
        lines.append(json.dumps(row, ensure_ascii=data.draw(st.booleans())))
    bad, field = MUTATIONS[name]
    lines.insert(at - 1, bad)  # its own fault is found before any soft-label mismatch
    path = write(tmp_path_factory.mktemp("rows") / "pairs.jsonl", lines)
    with pytest.raises(InputError) as exc:
        load_pairs(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{at}: "), (name, msg)
    assert "\n" not in msg and msg.isprintable(), msg
    if field is not None:
        assert exc.value.field == field, (name, msg)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_one_hostile_row_in_a_prompt_file_is_found_at_its_line(tmp_path_factory, data):
    n = data.draw(st.integers(1, 12), label="rows")
    at = data.draw(st.integers(2, n + 1), label="hostile line")  # after the first row
    name = data.draw(st.sampled_from(sorted(PROMPT_MUTATIONS)), label="mutation")
    lines: list[str | bytes] = []
    for i in range(n):  # distinct texts; ids given (unique) or left to default
        row: dict = {"prompt": f"text {i}"}
        if data.draw(st.booleans()) or (i == 0 and name == "duplicate-id"):
            row["id"] = f"given-{i}"
        if i == 0 and name == "default-id":
            row.pop("id", None)  # line 1's default id is "0001"
        lines.append(json.dumps(row))
    bad, field = PROMPT_MUTATIONS[name]
    lines.insert(at - 1, bad)
    path = write(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", lines)
    with pytest.raises(InputError) as exc:
        load_prompts(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{at}: "), (name, msg)
    if field is not None:
        assert exc.value.field == field, (name, msg)
    if name in ("duplicate-id", "default-id", "duplicate-text"):
        assert "line 1" in msg, msg


# ---------------------------------------------------------------------------- the CLI

@pytest.mark.parametrize("option, lines, fragments", [
    ("data.train_file", [b'{"prompt": "q0", "chosen": "a1", "rejected": "a2\xff"}'],
     (":1: ", "not valid UTF-8")),
    ("data.train_file", ['{"prompt": "q0", "chosen": "a1\\ud800", "rejected": "a2"}'],
     (":1: ", "'chosen'", "lone surrogate")),
    ("data.eval_prompts_file", ['{"prompt": "q0", "id": "x"}', '{"prompt": "q1", "id": "x"}'],
     (":2: ", "'id'", "line 1")),
    ("data.eval_prompts_file", ['{"prompt": "q0"}', '{"prompt": "q0"}'],
     (":2: ", "same prompt text as line 1")),
], ids=["non-utf8", "surrogate", "duplicate-id", "duplicate-text"])
def test_cli_refuses_hostile_rows_before_any_work(tmp_path, tiny_spec, option, lines, fragments):
    path = write(tmp_path / "data.jsonl", lines)
    results = tmp_path / "results"
    line = refused("run", tiny_spec, "--results-dir", results, "--set", f"{option}={path}",
                   cwd=tmp_path, results=results, code=2,
                   contains=(str(path) + fragments[0], *fragments[1:]), timeout=120)
    assert line.isprintable()
    assert not (results / "store.sqlite").exists()


# ---------------------------------------------------------------------------- judge templates

GOOD_TEMPLATE = """\
name: t
user: "{instruction} 1: {output_1} 2: {output_2}"
verdict: {first: m, second: M, tie: null, regex: "(m|M)"}
"""


@pytest.mark.parametrize("content, line, fragment", [
    (b"name: t\nuser: ok\xff\n", 2, "not valid UTF-8 (byte 0xff)"),
    (b'name: t\nsystem: "never closed\nuser: x\n', 4, "found unexpected end of stream"),
    (b"name: t\nuser: [1, 2\nverdict: 3\n", 3, "expected ',' or ']'"),
    (b"name: t\n\tuser: x\n", 2, "'\\t' that cannot start any token"),
    (b"name: t\nuser: a\x00b\n", 2, "character #x0000 is not allowed"),
    (b"a: &x [*x, *y]\n", 1, "undefined alias"),
    (b"!!python/object:os.system {}\n", 1, "could not determine a constructor"),
], ids=["non-utf8", "unclosed-quote", "unclosed-list", "tab", "nul", "alias", "python-tag"])
def test_broken_template_is_one_line_naming_file_and_line(tmp_path, content, line, fragment):
    from evaluators.llm_judge import load_template

    path = tmp_path / "judge.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        load_template(str(path))
    msg = str(exc.value)
    assert "\n" not in msg and msg.isprintable(), msg
    assert msg.startswith(f"{path}:{line}: "), msg
    assert fragment in msg, msg


@pytest.mark.parametrize("content, fragment", [
    (GOOD_TEMPLATE.replace("name: t", "name: t\n1: 2\nx: y"), "unknown keys"),  # mixed key types
    (GOOD_TEMPLATE.replace("regex:", "7: 1, regex:"), "unknown keys"),
    (GOOD_TEMPLATE.replace('"{instruction}', '"\\ud800 {instruction}'), "lone surrogate"),
], ids=["mixed-keys", "mixed-verdict-keys", "surrogate"])
def test_hostile_template_values_are_input_errors(tmp_path, content, fragment):
    from evaluators.llm_judge import load_template

    path = tmp_path / "judge.yaml"
    path.write_text(content)
    with pytest.raises(InputError, match=fragment) as exc:
        load_template(str(path))
    assert "\n" not in str(exc.value) and str(exc.value).startswith(str(path))


def test_good_template_with_a_byte_order_mark_loads(tmp_path):
    from evaluators.llm_judge import load_template

    path = tmp_path / "judge.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_TEMPLATE.encode())
    assert load_template(str(path)).verdict.first == "m"


def test_cli_broken_template_exits_2_in_one_line(tmp_path, tiny_spec):
    path = tmp_path / "judge.yaml"
    path.write_bytes(b'name: t\nsystem: "never closed\nuser: x\n')
    results = tmp_path / "results"
    refused("run", tiny_spec, "--results-dir", results,
            "--set", f"judges=[{{name: llm, params: {{template: '{path}'}}}}]",
            cwd=tmp_path, results=results, code=2, timeout=120,
            contains=("judges.0.params.template", f"{path}:4: not valid YAML"))
    assert not (results / "store.sqlite").exists()
