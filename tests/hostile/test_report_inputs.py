"""Hostile values in the leaderboard's settings (`judging`, `report`, judge prices) and the
`compare` command: refused at load with the file, line and key, exit 2 and one line."""

from __future__ import annotations

import pytest

from harness.errors import InputError
from harness.spec import load_spec
from tests.conftest import TINY_BASE, write_spec
from tests.hostile.attack import refused

NO_EMBEDDINGS = "report: {embedding_diversity: false}\n"

CASES = [
    ("judging: {pairs: ALL}", "judging.pairs", "'baseline' or 'all' or {anchors"),
    ("judging: {pairs: {anchors: 0}}", "judging.pairs.anchors", ">= 1"),
    ("judging: {pairs: {anchors: -3}}", "judging.pairs.anchors", ">= 1"),
    ("judging: {pairs: {anchors: 1.5}}", "judging.pairs.anchors", "expected int"),
    ("judging: {pairs: {anchor: 2}}", "judging.pairs.anchor", "did you mean 'anchors'"),
    ("judging: {pairs: [all]}", "judging.pairs", "expected"),
    ("judging: {gamed_baseline: 'yes'}", "judging.gamed_baseline", "expected bool"),
    ("report: {primary_judge: llm}", "report.primary_judge", "not one of the judges"),
    ("report: {primary_judge: 3}", "report.primary_judge", "expected"),
    ("report: {bootstrap_rounds: 0}", "report.bootstrap_rounds", "[10, 100000]"),
    ("report: {bootstrap_rounds: 10000000000}", "report.bootstrap_rounds", "[10, 100000]"),
    ("report: {bootstrap_rounds: .nan}", "report.bootstrap_rounds", "expected int"),
    ("report: {bootstrap_seed: -1}", "report.bootstrap_seed", "[0, 4294967295]"),
    ("report: {style_bootstrap_rounds: 5}", "report.style_bootstrap_rounds", "[10, 100000]"),
    ("report: {bootstrap: 100}", "report.bootstrap", "unknown key"),
    ("judges: [{name: oracle, prices: {prompt_per_1k: -1}}]", "judges.0.prices.prompt_per_1k",
     ">= 0"),
    ("judges: [{name: oracle, prices: {prompt_per_1k: .inf}}]",
     "judges.0.prices.prompt_per_1k", "finite"),
    ("judges: [{name: oracle, prices: {dollars: 1}}]", "judges.0.prices.dollars", "unknown key"),
    ("scorers: [{name: oracle, prices: {prompt_per_1k: 1}}]", "scorers.0.prices",
     "judges only"),
]


@pytest.mark.parametrize("extra,field,fragment", CASES)
def test_bad_leaderboard_setting_is_refused_at_load(tmp_path, extra, field, fragment):
    path = write_spec(tmp_path / "exp.yaml", TINY_BASE + extra + "\n")
    with pytest.raises(InputError) as exc:
        load_spec(path)
    msg = str(exc.value)
    assert exc.value.field == field, msg
    assert fragment in msg, msg
    assert msg.startswith(f"{path}:{TINY_BASE.count(chr(10)) + 1}: "), msg
    assert len(msg.splitlines()) == 1


def test_bad_setting_through_the_cli_is_one_line_and_no_store(tmp_path):
    path = write_spec(tmp_path / "exp.yaml",
                      TINY_BASE + NO_EMBEDDINGS + "judging: {pairs: {anchors: 0}}\n")
    results = tmp_path / "r"
    refused("run", path, "--results-dir", results, cwd=tmp_path, results=results,
            contains=("judging.pairs.anchors", ">= 1"))
    assert not (results / "store.sqlite").exists()


@pytest.mark.parametrize("args,fragment", [
    ((), "two model labels"),
    (("a", "b", "c"), "two model labels"),
    (("a", "--all"), "two model labels"),
])
def test_compare_needs_two_labels_or_all(tmp_path, args, fragment):
    path = write_spec(tmp_path / "exp.yaml", TINY_BASE + NO_EMBEDDINGS)
    refused("compare", path, *args, "--results-dir", tmp_path / "r", cwd=tmp_path,
            contains=fragment)


def test_html_cap_is_validated_like_its_neighbours(tmp_path):
    for value, fragment in (("-1", "[0, 100000]"), ("1000001", "[0, 100000]"),
                            ("many", "expected int")):
        path = write_spec(tmp_path / "exp.yaml",
                          TINY_BASE + f"report: {{html_max_prompts: {value}}}\n")
        with pytest.raises(InputError) as exc:
            load_spec(path)
        assert exc.value.field == "report.html_max_prompts" and fragment in str(exc.value)


# ------------------------------------------------------- spo-harness leaderboard DIR [DIR ...]

BASELINE = {"label": "sft", "is_baseline": True, "win_rate": None}
IDENTITY = {"format": 1, "experiment": "e", "baseline": {"label": "sft", "key": "k"},
            "primary_judge": "oracle", "judges": {"oracle": "f"}, "scorers": {}}


def _folder(root, name, records: object = (BASELINE,), ident: object = IDENTITY):
    """A results folder as `leaderboard` reads it; str and bytes are written as they are."""
    import json

    folder = root / name
    folder.mkdir()
    for file, content in (("leaderboard.json", records), ("report.json", ident)):
        if isinstance(content, bytes):
            (folder / file).write_bytes(content)
        elif content is not None:
            (folder / file).write_text(content if isinstance(content, str)
                                       else json.dumps(list(content) if file.startswith("l")
                                                       else content))
    return folder


@pytest.mark.parametrize("records,ident,file,fragment", [
    (None, IDENTITY, "leaderboard.json", "missing"),
    ("[{not json", IDENTITY, "leaderboard.json", "not readable JSON"),
    ('{"label": "sft"}', IDENTITY, "leaderboard.json", "expected a non-empty list"),
    ("[]", IDENTITY, "leaderboard.json", "expected a non-empty list"),
    ('[{"label": 3, "is_baseline": true}]', IDENTITY, "leaderboard.json", "with a label"),
    ((BASELINE, BASELINE), IDENTITY, "leaderboard.json", "exactly one baseline"),
    ((BASELINE,), None, "report.json", "run `spo-harness report`"),
    ((BASELINE,), b"\xff\xfe{garbled", "report.json", "not readable JSON"),
    ((BASELINE,), {**IDENTITY, "primary_judge": "llm"}, "report.json", "expected {"),
    ((BASELINE,), {**IDENTITY, "baseline": "sft"}, "report.json", "expected {"),
    ((BASELINE,), {**IDENTITY, "models": ["sft"]}, "report.json", "expected {"),
    ((BASELINE,), {**IDENTITY, "models": {"sft": 7}}, "report.json", "expected {"),
])
def test_leaderboard_refuses_a_missing_or_garbled_file(tmp_path, records, ident, file,
                                                      fragment):
    good = _folder(tmp_path, "good")
    bad = _folder(tmp_path, "bad", records, ident)
    refused("leaderboard", good, bad, "--out", tmp_path / "out", cwd=tmp_path,
            contains=(str(bad / file), fragment))
    assert not (tmp_path / "out").exists()


def test_leaderboard_refuses_bad_folders_and_outputs(tmp_path):
    good = _folder(tmp_path, "good")
    other = _folder(tmp_path, "other")
    refused("leaderboard", good, tmp_path / "nope", cwd=tmp_path,
            contains=(str(tmp_path / "nope"), "no such results folder"))
    refused("leaderboard", good, good, cwd=tmp_path, contains=(str(good), "given twice"))
    (tmp_path / "file").write_text("x")
    refused("leaderboard", good, other, "--out", tmp_path / "file", cwd=tmp_path,
            contains="is a file")
    refused("leaderboard", good, other, "--out", other, cwd=tmp_path,
            contains="one of the folders merged")
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    (experiment / "store.sqlite").write_bytes(b"")
    refused("leaderboard", good, other, "--out", experiment, cwd=tmp_path,
            contains="store.sqlite")
    assert not (experiment / "leaderboard.json").exists()
