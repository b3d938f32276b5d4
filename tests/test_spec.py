"""Experiment spec loading: defaults, sweeps, --set overrides and located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.errors import InputError
from harness.spec import ExperimentSpec, apply_override, expand_runs, load_spec

MINIMAL = """\
name: t
task: bandit
methods:
  - name: spo
    params: {alpha: 1}
"""


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _error(path: Path, overrides: list[str] | None = None) -> InputError:
    with pytest.raises(InputError) as exc:
        load_spec(path, overrides or [])
    return exc.value


def _assert_located(err: InputError, path: Path, line: int | None, field: str | None) -> None:
    msg = str(err)
    assert str(path) in msg
    if line is not None:
        assert f"{path}:{line}" in msg, msg
        assert err.line == line
    if field is not None:
        assert f"'{field}'" in msg, msg
        assert err.field == field


# ---------------------------------------------------------------------------- valid specs


def test_minimal_spec_loads_with_defaults(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, MINIMAL))
    assert isinstance(spec, ExperimentSpec)
    assert spec.name == "t" and spec.task == "bandit"
    assert len(spec.methods) == 1
    assert spec.methods[0].name == "spo" and spec.methods[0].params == {"alpha": 1}
    assert spec.methods[0].label is None
    assert spec.seeds == [0]
    assert spec.base_model == "tiny" and spec.baseline == "sft"
    assert spec.training.epochs == 2 and spec.training.batch_size == 16
    assert spec.training.learning_rate == pytest.approx(5e-4)
    assert spec.training.max_grad_norm == pytest.approx(1.0)
    assert spec.generation.backend == "auto" and spec.generation.n_samples == 4
    assert spec.generation.temperature == 1.0
    assert spec.data.train_file is None and spec.output.results_dir is None
    assert [j.name for j in spec.judges] == ["oracle"]
    assert [s.name for s in spec.scorers] == ["oracle"]
    assert spec.task_options == {}
    assert [r.label for r in expand_runs(spec)] == ["spo(alpha=1)"]


def test_defaults_are_not_shared_between_specs(tmp_path: Path) -> None:
    a = load_spec(_write(tmp_path, MINIMAL))
    a.seeds.append(5)
    a.training.epochs = 99
    b = load_spec(_write(tmp_path, MINIMAL, "b.yaml"))
    assert b.seeds == [0] and b.training.epochs == 2


def test_values_are_converted(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, MINIMAL + """\
training:
  learning_rate: 1
  max_grad_norm: null
task_options: {labels: sampled}
"""))
    assert isinstance(spec.training.learning_rate, float) and spec.training.learning_rate == 1.0
    assert spec.training.max_grad_norm is None
    assert spec.task_options == {"labels": "sampled"}


def test_sweep_expansion(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
name: t
task: bandit
methods:
  - name: spo
    params: {alpha: [0.5, 1, 2], lambda: 0}
  - name: dpo
    params: {beta: 0.1}
""")
    runs = expand_runs(load_spec(path))
    assert [r.label for r in runs] == ["spo(alpha=0.5)", "spo(alpha=1)", "spo(alpha=2)",
                                       "dpo(beta=0.1)"]
    assert [r.params for r in runs[:3]] == [{"alpha": a, "lambda": 0} for a in (0.5, 1, 2)]
    assert {r.seed for r in runs} == {0}
    assert runs[0].method == "spo" and runs[3].method == "dpo"


def test_two_sweeps_make_a_grid_and_seeds_multiply(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
name: t
task: bandit
seeds: [0, 1]
methods:
  - name: spo
    label: soft
    params: {alpha: [0.5, 2], lambda: [0, 0.1]}
""")
    runs = expand_runs(load_spec(path))
    assert len(runs) == 2 * 2 * 2
    labels = [r.label for r in runs]
    assert "soft(alpha=0.5,lambda=0)/seed=0" in labels
    assert "soft(alpha=2,lambda=0.1)/seed=1" in labels
    assert len(set(labels)) == len(labels)
    assert sorted({r.seed for r in runs}) == [0, 1]


def test_seeds_double_the_runs(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("    params: {alpha: 1}", "    params: {alpha: [0.5, 1, 2]}"))
    assert len(expand_runs(load_spec(path))) == 3
    runs = expand_runs(load_spec(path, ["seeds=[0, 1]"]))
    assert len(runs) == 6
    assert [r.label for r in runs[:2]] == ["spo(alpha=0.5)/seed=0", "spo(alpha=0.5)/seed=1"]


def test_set_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    spec = load_spec(path, ["training.epochs=3", "methods.0.params.alpha=[1,2]"])
    assert spec.training.epochs == 3
    assert spec.methods[0].params == {"alpha": [1, 2]}
    assert [r.label for r in expand_runs(spec)] == ["spo(alpha=1)", "spo(alpha=2)"]
    # the file itself is untouched
    assert load_spec(path).training.epochs == 2


def test_set_creates_missing_sections_and_parses_yaml_values(tmp_path: Path) -> None:
    spec = load_spec(_write(tmp_path, MINIMAL), ["generation.temperature=0.7",
                                                  "training.max_grad_norm=null",
                                                  "baseline=spo(alpha=1)"])
    assert spec.generation.temperature == pytest.approx(0.7)
    assert spec.training.max_grad_norm is None
    assert spec.baseline == "spo(alpha=1)"


def test_apply_override_on_raw_dict() -> None:
    raw = {"methods": [{"name": "spo"}]}
    apply_override(raw, "methods.0.params.alpha=0.5")
    apply_override(raw, "a.b.c=x=y")  # only the first '=' splits
    assert raw == {"methods": [{"name": "spo", "params": {"alpha": 0.5}}],
                   "a": {"b": {"c": "x=y"}}}


# ---------------------------------------------------------------------------- errors


def test_unknown_key_with_did_you_mean(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "training:\n  epocs: 3\n")
    err = _error(path)
    _assert_located(err, path, 7, "training.epocs")
    assert "unknown key" in str(err) and "did you mean 'epochs'" in str(err)


def test_unknown_key_in_list_item(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
name: t
task: bandit
methods:
  - name: spo
    parms: {alpha: 1}
""")
    err = _error(path)
    _assert_located(err, path, 5, "methods.0.parms")
    assert "did you mean 'params'" in str(err)


def test_unknown_top_level_key_without_close_match_lists_known(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "zzzzz: 1\n")
    err = _error(path)
    _assert_located(err, path, 6, "zzzzz")
    assert "known:" in str(err) and "methods" in str(err)


def test_unknown_task_option(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "task_options:\n  lables: soft\n")
    err = _error(path)
    _assert_located(err, path, 7, "task_options.lables")
    assert "did you mean 'labels'" in str(err)


@pytest.mark.parametrize("extra,line,field,expected", [
    ("training:\n  epochs: three\n", 7, "training.epochs", "expected int"),
    ("training:\n  epochs: 2.5\n", 7, "training.epochs", "expected int"),
    ("training:\n  learning_rate: true\n", 7, "training.learning_rate", "expected float"),
    ("seeds: 0\n", 6, "seeds", "expected a list"),
    ("seeds: [0, x]\n", 6, "seeds.1", "expected int"),
    ("training: 5\n", 6, "training", "expected a mapping"),
    ("name2: x\n", 6, "name2", "unknown key"),
])
def test_wrong_type(tmp_path: Path, extra: str, line: int, field: str, expected: str) -> None:
    path = _write(tmp_path, MINIMAL + extra)
    err = _error(path)
    _assert_located(err, path, line, field)
    assert expected in str(err)


def test_wrong_type_of_method_params(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("{alpha: 1}", "[1, 2]"))
    err = _error(path)
    _assert_located(err, path, 5, "methods.0.params")
    assert "expected a mapping" in str(err)


def test_missing_required_field_in_method(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
name: t
task: bandit
methods:
  - params: {alpha: 1}
""")
    err = _error(path)
    _assert_located(err, path, 4, "methods.0.name")
    assert "missing required field" in str(err)


@pytest.mark.parametrize("drop,field", [("name: t\n", "name"), ("task: bandit\n", "task")])
def test_missing_required_top_level_field(tmp_path: Path, drop: str, field: str) -> None:
    path = _write(tmp_path, MINIMAL.replace(drop, ""))
    err = _error(path)
    # no line exists for a key that is absent; the file and key path must be named
    _assert_located(err, path, None, field)
    assert "missing required field" in str(err)


@pytest.mark.parametrize("text,line", [
    ("name: t\ntask: bandit\nmethods:\n  - name: spo\n    params: {alpha: [1\n", 6),
    ("name: t\ntask: bandit\nmethods:\n  - name: spo\n   params: {}\n", 5),
    ("name: t\ntask: [bandit\nmethods: x\n", 3),
])
def test_broken_yaml(tmp_path: Path, text: str, line: int) -> None:
    path = _write(tmp_path, text)
    err = _error(path)
    _assert_located(err, path, line, None)
    assert "invalid YAML" in str(err)


def test_yaml_never_executes_tags(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _write(tmp_path, MINIMAL + f"output: !!python/object/apply:os.system "
                                      f"['touch {marker}']\n")
    err = _error(path)
    assert "invalid YAML" in str(err) and str(path) in str(err)
    assert not marker.exists()


def test_root_must_be_a_mapping(tmp_path: Path) -> None:
    path = _write(tmp_path, "- a\n- b\n")
    err = _error(path)
    assert str(path) in str(err) and "mapping" in str(err)


def test_unknown_method_name(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "  - name: dop\n    params: {beta: 0.1}\n")
    err = _error(path)
    _assert_located(err, path, 6, "methods.1.name")
    assert "Did you mean 'dpo'" in str(err)


def test_unknown_task(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("task: bandit", "task: bandt"))
    err = _error(path)
    _assert_located(err, path, 2, "task")
    assert "unknown task" in str(err) and "Did you mean 'bandit'" in str(err)


def test_unknown_judge(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "judges:\n  - name: oracel\n")
    err = _error(path)
    _assert_located(err, path, 7, "judges.0.name")
    assert "Did you mean 'oracle'" in str(err)


@pytest.mark.parametrize("extra,line,field", [
    ("methods: []\n", 3, "methods"),
    ("seeds: []\n", 6, "seeds"),
    ("training:\n  epochs: 0\n", 7, "training.epochs"),
    ("generation:\n  top_p: 1.5\n", 7, "generation.top_p"),
    ("generation:\n  temperature: -0.5\n", 7, "generation.temperature"),
    ("baseline: nobody\n", 6, "baseline"),
])
def test_rule_violations_are_located(tmp_path: Path, extra: str, line: int, field: str) -> None:
    text = MINIMAL + extra
    if extra.startswith("methods"):
        text = "name: t\ntask: bandit\n" + extra
    path = _write(tmp_path, text)
    err = _error(path)
    _assert_located(err, path, line, field)


def test_bad_hyperparameter_is_reported_before_any_stage(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL.replace("{alpha: 1}", "{alpha: -1}"))
    err = _error(path)
    assert str(path) in str(err) and "alpha must be positive" in str(err)
    assert "spo(alpha=-1)" in str(err)
    path = _write(tmp_path, MINIMAL.replace("{alpha: 1}", "{alpha: 1, betta: 2}"), "b.yaml")
    assert "betta" in str(_error(path))


def test_bad_hyperparameter_after_a_sweep_names_the_right_method(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
name: t
task: bandit
methods:
  - name: spo
    params: {alpha: [0.5, 1, 2]}
  - name: dpo
    params:
      beta: -1
""")
    err = _error(path)
    assert "beta must be positive" in str(err)
    assert err.field is not None and err.field.startswith("methods.1.params")
    assert err.line in (7, 8)


def test_duplicate_labels_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "  - name: spo\n    params: {alpha: 1.0}\n")
    err = _error(path)
    assert "share the label" in str(err)
    assert str(path) in str(err)


@pytest.mark.parametrize("assignment,expected", [
    ("training.epochs", "key.path=value"),
    ("methods.3.name=x", "not an index"),
    ("methods.x.name=x", "not an index"),
    ("name.sub=x", "not a mapping or list"),
    ("training.epochs=[1", "not valid YAML"),
])
def test_bad_set_syntax(tmp_path: Path, assignment: str, expected: str) -> None:
    path = _write(tmp_path, MINIMAL)
    err = _error(path, [assignment])
    assert expected in str(err)
    assert assignment.partition("=")[0] in str(err)


def test_set_value_of_wrong_type_is_located(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL + "training:\n  epochs: 2\n")
    err = _error(path, ["training.epochs=three"])
    _assert_located(err, path, 7, "training.epochs")
    assert "expected int" in str(err)


def test_set_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    err = _error(path, ["training.epoch=3"])
    assert str(path) in str(err) and "'training.epoch'" in str(err)
    assert "did you mean 'epochs'" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = _error(path)
    assert str(path) in str(err) and "not found" in str(err)
    err = _error(tmp_path)  # a directory is not a spec file either
    assert str(tmp_path) in str(err)


def test_examples_load() -> None:
    root = Path(__file__).resolve().parents[1] / "examples"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        assert expand_runs(load_spec(f))


def test_unknown_judge_param_is_a_located_error(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntask: bandit\nmethods:\n  - name: spo\n"
                    "judges:\n  - name: oracle\n    params: {scael: 2}\n")
    with pytest.raises(InputError) as err:
        load_spec(path)
    assert "judges.0.params" in str(err.value) and "scael" in str(err.value)
    assert f"{path}:" in str(err.value)


def test_bandit_takes_only_its_tiny_base_model(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntask: bandit\nbase_model: gpt2\nmethods:\n  - name: spo\n")
    with pytest.raises(InputError, match="takes only base_model: tiny") as err:
        load_spec(path)
    assert f"{path}:3" in str(err.value)


@pytest.mark.parametrize("name,ok", [("smollm2-135m-instruct", True), ("HuggingFaceTB/x", True),
                                     ("no-such-model", False)])
def test_sentiment_base_models(tmp_path, name, ok):
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: x\ntask: sentiment\nbase_model: {name}\nmethods:\n  - name: spo\n")
    if ok:
        assert load_spec(path).base_model == name
    else:
        with pytest.raises(InputError, match="not tiny, a registered model"):
            load_spec(path)


def test_reg_prompts_file_is_validated(tmp_path):
    bad = tmp_path / "reg.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: x\ntask: bandit\nmethods:\n  - name: spo\n"
                    f"data: {{reg_prompts_file: {bad}}}\n")
    with pytest.raises(InputError) as err:
        load_spec(path)
    assert f"{bad}:2" in str(err.value) and "prompt" in str(err.value)


def test_run_label_sft_is_reserved_for_the_reference(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntask: bandit\nmethods:\n  - name: sft\n")
    with pytest.raises(InputError, match="reserved"):
        load_spec(path)
    path.write_text("name: x\ntask: bandit\nmethods:\n  - name: sft\n    label: sft-chosen\n")
    assert [r.label for r in expand_runs(load_spec(path))] == ["sft-chosen"]


def test_llm_judge_template_is_checked_at_load(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: x\ntask: bandit\nmethods:\n  - name: spo\njudges:\n  - name: llm\n"
                    "    params: {template: no_such_template}\n")
    with pytest.raises(InputError) as err:
        load_spec(path)
    assert "judges.0.params.template" in str(err.value) and f"{path}:7" in str(err.value)
