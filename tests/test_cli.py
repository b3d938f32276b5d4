"""The command line: help texts, and bad input -> exit 2 with one line on stderr.

Bad input must be reported before anything is computed, name the file (and the line and
the key path or field where there is one), and leave an existing results store as it was.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import (
    ENV,
    N_GENERATIONS,
    N_RUNS,
    REPO,
    TINY_SPEC,
    WORK_STAGES,
    assert_input_error,
    assert_ok,
    cached,
    cli,
    computed,
    digest,
    line_of,
    table_counts,
    write_spec,
)

# ---------------------------------------------------------------------------- help

HELP = {
    None: ["train spo", "sample", "judge", "rank", "run", "generate", "report"],
    "run": ["every stage", "train, generate, score, judge, report"],
    "train": ["train every run", "sft reference"],
    "generate": ["sample every trained model", "held-out prompts"],
    "judge": ["score every generation", "against the baseline"],
    "report": ["leaderboard"],
}


@pytest.mark.parametrize("command", list(HELP), ids=lambda c: c or "group")
def test_help(command):
    proc = cli(*([command] if command else []), "--help", quiet=False, timeout=60)
    assert_ok(proc)
    text = proc.stdout.lower()
    assert text.startswith("usage:")
    for phrase in HELP[command]:
        assert phrase in text, f"{phrase!r} missing from:\n{proc.stdout}"
    if command:  # every stage command takes the experiment and the shared options
        for option in ("experiment", "--set", "--results-dir", "--quiet"):
            assert option in text
    assert proc.stderr == ""


def test_cli_module_does_not_import_torch():
    """`--help` stays instant: the heavy libraries are imported only inside commands."""
    code = "import sys, harness.cli; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=60)
    assert_ok(proc)
    assert proc.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- bad specs

def edit(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} not in the spec text"
    return text.replace(old, new)


BROKEN_YAML = "name: tiny\ntask: bandit\nmethods: [\n  {name: spo\n"
UNKNOWN_KEY = edit(TINY_SPEC, "\n  epochs:", "\n  epochz:")
WRONG_TYPE = re.sub(r"\n  epochs: \d+", "\n  epochs: twenty", TINY_SPEC)
NO_METHODS = "name: tiny\ntask: bandit\nseeds: [0]\n"
UNKNOWN_METHOD = edit(TINY_SPEC, "name: dpo", "name: dpoo")
UNKNOWN_TASK_OPTION = edit(TINY_SPEC, "{n_prompts: 3,", "{n_prompt: 3,")
# A sweep before the faulty method: the run index (2) is not the method index (1).
SWEEP_THEN_BAD_PARAM = edit(edit(
    TINY_SPEC, "{alpha: 1, lambda: 0.1, reg_prompts_per_step: 2, reg_max_new_tokens: 2}",
    "{alpha: [0.5, 1]}"), "{beta: 1}", "{beta: -1}")

def case(case_id, filename, text, args, fragments):
    """One bad-spec case: the file to write (text None: no file), extra CLI args, and the
    fragments the one-line message must contain."""
    return pytest.param(filename, text, args, fragments, id=case_id)


SPEC_ERRORS = [
    case("broken-yaml", "broken.yaml", BROKEN_YAML, [],
         ["broken.yaml:5:", "invalid YAML"]),
    case("unknown-key", "unknown.yaml", UNKNOWN_KEY, [],
         [f"unknown.yaml:{line_of(UNKNOWN_KEY, 'epochz')}:", "'training.epochz'", "unknown key",
          "did you mean 'epochs'"]),
    case("wrong-type", "wrongtype.yaml", WRONG_TYPE, [],
         [f"wrongtype.yaml:{line_of(WRONG_TYPE, 'twenty')}:", "'training.epochs'",
          "expected int", "'twenty'"]),
    case("missing-methods", "nomethods.yaml", NO_METHODS, [],
         ["nomethods.yaml", "'methods'", "missing required field"]),
    case("unknown-method", "badmethod.yaml", UNKNOWN_METHOD, [],
         [f"badmethod.yaml:{line_of(UNKNOWN_METHOD, 'dpoo')}:", "'methods.1.name'",
          "unknown method 'dpoo'", "Did you mean 'dpo'"]),
    case("unknown-task-option", "taskopt.yaml", UNKNOWN_TASK_OPTION, [],
         [f"taskopt.yaml:{line_of(UNKNOWN_TASK_OPTION, 'n_prompt:')}:",
          "'task_options.n_prompt'", "unknown key", "n_prompts"]),
    case("missing-experiment-file", "nosuch.yaml", None, [],
         ["nosuch.yaml", "not found"]),
    case("set-without-equals", "tiny.yaml", TINY_SPEC, ["--set", "training.epochs"],
         ["--set", "key.path=value", "training.epochs"]),
    case("set-invalid-yaml", "tiny.yaml", TINY_SPEC, ["--set", "training.epochs=[1"],
         ["--set training.epochs", "not valid YAML"]),
    case("set-bad-index", "tiny.yaml", TINY_SPEC, ["--set", "methods.5.name=dpo"],
         ["methods.5.name", "'5' is not an index", "length 2"]),
    case("set-wrong-type", "tiny.yaml", TINY_SPEC, ["--set", "training.epochs=oops"],
         ["tiny.yaml", "'training.epochs'", "expected int", "'oops'"]),
    case("set-out-of-range", "tiny.yaml", TINY_SPEC, ["--set", "generation.top_p=1.5"],
         ["tiny.yaml", "'generation.top_p'", "(0, 1]"]),
    case("sweep-bad-param", "sweep.yaml", SWEEP_THEN_BAD_PARAM, [],
         [f"sweep.yaml:{line_of(SWEEP_THEN_BAD_PARAM, 'beta: -1')}:", "'methods.1.params'",
          "beta must be positive"]),
    case("duplicate-run-labels", "tiny.yaml", TINY_SPEC, ["--set", "seeds=[0,0]"],
         ["tiny.yaml", "share the label"]),
]


@pytest.mark.parametrize("filename,text,args,fragments", SPEC_ERRORS)
def test_bad_spec_exits_2_with_one_line(tmp_path, filename, text, args, fragments):
    spec = tmp_path / filename
    if text is not None:
        write_spec(spec, text)
    results = tmp_path / "results"
    proc = cli("run", spec, "--results-dir", results, *args, timeout=120)
    line = assert_input_error(proc)
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    # Spec errors are found before any stage runs: nothing is created.
    assert not results.exists()


def test_float_in_scientific_notation_is_accepted(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml",
                      edit(TINY_SPEC, "learning_rate: 0.003", "learning_rate: 3e-3"))
    results = tmp_path / "results"
    # `report` on an empty results folder validates the spec, then stops with
    # "not trained yet" (exit 2) -- unless the spec itself is refused first.
    proc = cli("report", spec, "--results-dir", results, "--set", "task_options.sft_epochs=1")
    assert "learning_rate" not in proc.stderr, proc.stderr
    assert "not trained yet" in proc.stderr


# ---------------------------------------------------------------------------- bad data files

GOOD_ROW = '{"prompt": "q0", "chosen": "a1", "rejected": "a2", "soft_label": 0.7}'


def bad_data_files(tmp_path):
    """(id, path, fragments of the message) for each kind of broken preference file; the
    first fragment follows the path directly (`path:LINE:`)."""
    d = tmp_path / "data"
    d.mkdir()
    files = {
        "malformed-row": (GOOD_ROW + '\n{"prompt": "q0", "chosen": \n' + GOOD_ROW + "\n",
                          [":2:", "malformed JSON"]),
        "empty-row": (GOOD_ROW + "\n\n" + GOOD_ROW + "\n", [":2:", "empty row"]),
        "missing-field": (GOOD_ROW + "\n" + GOOD_ROW + "\n"
                          + '{"prompt": "q1", "rejected": "a2", "soft_label": 0.7}\n',
                          [":3:", "'chosen'", "missing"]),
        "soft-label-1.5": (GOOD_ROW + "\n" + edit(GOOD_ROW, "0.7", "1.5") + "\n",
                           [":2:", "'soft_label'", "1.5", "[0, 1]"]),
        "missing-file": (None, [": ", "not found"]),
    }
    out = []
    for name, (text, fragments) in files.items():
        path = d / f"{name}.jsonl"
        if text is not None:
            path.write_text(text)
        out.append((name, path, fragments))
    return out


def test_bad_input_leaves_store_intact(tmp_path, tiny_spec):
    results = tmp_path / "results"
    first = cli("run", tiny_spec, "--results-dir", results)
    assert_ok(first)
    # the tiny spec has 3 prompts: the leaderboard's intervals are flagged as too narrow
    assert "warning: only 3 prompts" in first.stderr
    counts = table_counts(results)
    assert counts["runs"] == N_RUNS and counts["generations"] == N_GENERATIONS
    assert counts["scores"] > 0 and counts["judgments"] > 0
    board, record = digest(results / "leaderboard.json"), digest(results / "run.json")

    def unchanged():
        assert table_counts(results) == counts
        assert digest(results / "leaderboard.json") == board
        assert digest(results / "run.json") == record
        assert not list((results / "artifacts").glob(".tmp-*"))

    for name, path, fragments in bad_data_files(tmp_path):
        proc = cli("run", tiny_spec, "--results-dir", results,
                   "--set", f"data.train_file={path}")
        line = assert_input_error(proc)
        assert f"{path}{fragments[0]}" in line, f"{name}: {line!r} does not name file and line"
        for fragment in fragments[1:]:
            assert fragment in line, f"{name}: {fragment!r} not in {line!r}"
        unchanged()

    for args in (["--set", "training.epochs=oops"], ["--set", "methods.0.name=nope"]):
        line = assert_input_error(cli("run", tiny_spec, "--results-dir", results, *args))
        assert str(tiny_spec) in line
        unchanged()

    # The same good command again: everything comes from the store.
    assert_ok(cli("run", tiny_spec, "--results-dir", results))
    assert computed(results) == dict.fromkeys(WORK_STAGES, 0)
    assert all(n > 0 for n in cached(results).values())
    assert table_counts(results) == counts
    assert digest(results / "leaderboard.json") == board


@pytest.mark.parametrize("which", ["missing-file", "soft-label-1.5"])
def test_bad_data_file_fails_before_any_work(tmp_path, tiny_spec, which):
    (name, path, fragments), = [c for c in bad_data_files(tmp_path) if c[0] == which]
    results = tmp_path / "results"
    proc = cli("run", tiny_spec, "--results-dir", results, "--set", f"data.train_file={path}")
    assert proc.returncode == 2
    assert f"{path}{fragments[0]}" in proc.stderr
    assert not list((results / "artifacts").glob("*")), "work was done before validation"
    assert_input_error(proc)
