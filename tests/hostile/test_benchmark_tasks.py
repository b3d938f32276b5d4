"""Hostile benchmark tasks: refused at load, before any training, with one line.

A `benchmarks:` entry names a task; lm-eval's own YAML loader runs Python named by
`!function`, renders Jinja with Python's attribute access open, and loads unknown metrics
with `evaluate.load` (which can run a script). spo-harness reads a task YAML as plain data
and renders templates in Jinja's sandbox, so none of that runs. The CLI cases go through
`refused(...)` (exit 2, one stderr line, no traceback, no store); the further refusals call
`find_task` directly, and each checks that a marker file the attack would write is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluators.benchmark_tasks import SHIPPED_DIR, find_task
from harness.errors import InputError
from tests.conftest import TINY_SPEC, line_of, write_spec
from tests.hostile.attack import refused

TASK = """\
task: my_task
dataset_path: json
dataset_kwargs:
  data_files: {test: data.jsonl}
test_split: test
output_type: multiple_choice
doc_to_text: prompt
doc_to_choice: choices
doc_to_target: label
metric_list:
  - {metric: acc, aggregation: mean, higher_is_better: true}
"""


def _task(folder: Path, text: str = TASK, name: str = "task.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = (SHIPPED_DIR / "bandit_best_answer.jsonl").read_text()
    (folder / "data.jsonl").write_text(data)
    # what `!function utils.attack` would import and run: it leaves a marker behind
    (folder / "utils.py").write_text(
        f"open({str(folder / 'EXECUTED')!r}, 'w').close()\n"
        "def attack(doc):\n    return 'x'\n")
    path = folder / name
    path.write_text(text)
    return path


def _spec(tmp_path: Path, task: str) -> Path:
    return write_spec(tmp_path / "exp.yaml", TINY_SPEC + f"benchmarks:\n  - {task}\n")


CASES = {
    "unknown task name": (None, "no_such_benchmark_task",
                          ("unknown benchmark task 'no_such_benchmark_task'",
                           "'benchmarks.0.task'")),
    "malformed task YAML": (TASK.replace("test_split: test", "test_split: [test"),
                            "task.yaml", ("invalid task YAML", "task.yaml:6:")),
    "!function": (TASK.replace("doc_to_text: prompt", "doc_to_text: !function utils.attack"),
                  "task.yaml", ("'!function' would run Python code", "task.yaml:7:")),
    "missing data file": (TASK.replace("data.jsonl", "gone.jsonl"), "task.yaml",
                          ("data file 'gone.jsonl' not found", "task.yaml:4:")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_benchmark_is_refused_before_any_training(tmp_path: Path, case: str) -> None:
    text, entry, fragments = CASES[case]
    if text is not None:
        entry = str(_task(tmp_path / "tasks", text))
    spec = _spec(tmp_path, entry)
    results = tmp_path / "results"
    line = refused("run", spec, "--results-dir", results, cwd=tmp_path, results=results,
                   contains=fragments)
    assert f"{spec}:{line_of(spec.read_text(), entry)}" in line  # the entry that names it
    assert not results.exists()  # nothing trained, no store
    assert not (tmp_path / "tasks" / "EXECUTED").exists()


ATTACKS = {
    "a class key": ("class: !function utils.attack\n", "'!function'"),
    "class as text": ("class: utils.attack\n", "'class' names a Python class"),
    "process_docs": ("process_docs: utils.attack\n", "'process_docs' takes a Python function"),
    "a metric script": (None, "is not one of lm-eval's metrics"),
    "hf_evaluate": (None, "hf_evaluate loads a metric script"),
    "the custom filter": ("filter_list:\n  - name: f\n    filter:\n      - function: custom\n",
                          "filter function 'custom'"),
    "an unknown YAML tag": ("tag: !!python/object/apply:os.system ['true']\n",
                            "refused: a task YAML is plain data"),
    "a template escaping the sandbox": (None, "SecurityError"),
    "a group": ("group: g\n", "a group of tasks"),
    "an include carrying !function": (None, "'!function' would run Python code"),
    "a misspelt key": (None, "did you mean 'doc_to_text'"),
    "a broken template": (None, "malformed Jinja template"),
    "a split not in data_files": (None, "no split 'validation'"),
}


def _attack_text(name: str, folder: Path) -> str:
    extra, _ = ATTACKS[name]
    if extra is not None:
        return TASK + extra
    escape = (f"{{{{ cycler.__init__.__globals__.os.system('touch {folder / 'EXECUTED'}') }}}}")
    return {
        "a metric script": TASK.replace("metric: acc,", "metric: ./utils.py,"),
        "hf_evaluate": TASK.replace("higher_is_better: true}", "hf_evaluate: true}"),
        "a template escaping the sandbox": TASK.replace("doc_to_text: prompt",
                                                        f'doc_to_text: "{escape}"'),
        "an include carrying !function": "include: base.yaml\ntask: inc\n",
        "a misspelt key": TASK.replace("doc_to_text:", "doc_to_txt:"),
        "a broken template": TASK.replace("doc_to_text: prompt", 'doc_to_text: "{{ prompt"'),
        "a split not in data_files": TASK.replace("test_split: test", "validation_split: "
                                                  "validation"),
    }[name]


@pytest.mark.parametrize("name", list(ATTACKS))
def test_no_code_runs_from_a_task_yaml(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "tasks"
    path = _task(folder, _attack_text(name, folder))
    if name == "an include carrying !function":
        (folder / "base.yaml").write_text(TASK.replace("doc_to_text: prompt",
                                                       "doc_to_text: !function utils.attack"))
    with pytest.raises(InputError) as exc:
        find_task(str(path))
    message = str(exc.value)
    assert ATTACKS[name][1] in message and len(message.splitlines()) == 1, message
    assert not (folder / "EXECUTED").exists(), "code from the task YAML ran"


@pytest.mark.parametrize(("entry", "field", "fragment"), [
    ("{task: shakespeare_cloze, limit: 0}", "benchmarks.0.limit", "must be >= 1"),
    ("{task: shakespeare_cloze, num_fewshot: -1}", "benchmarks.0.num_fewshot", "must be >= 0"),
    ("{task: shakespeare_cloze, limt: 5}", "benchmarks.0.limt", "did you mean 'limit'"),
    ("{limit: 5}", "benchmarks.0.task", "missing required field"),
    ("[shakespeare_cloze]", "benchmarks.0", "expected"),
    ("{task: shakespeare_cloze, model_args: {trust_remote_code: true}}",
     "benchmarks.0.model_args.trust_remote_code", "runs Python shipped with a model"),
])
def test_benchmark_entry_values_are_checked_on_their_line(tmp_path: Path, entry: str,
                                                          field: str, fragment: str) -> None:
    from harness.spec import load_spec

    spec = _spec(tmp_path, entry)
    with pytest.raises(InputError) as exc:
        load_spec(spec)
    assert exc.value.field == field and fragment in str(exc.value), str(exc.value)
    assert exc.value.line == line_of(spec.read_text(), entry)


def test_one_entry_per_task(tmp_path: Path) -> None:
    from harness.spec import load_spec

    spec = write_spec(tmp_path / "exp.yaml", TINY_SPEC + "benchmarks:\n  - bandit_best_answer"
                      "\n  - {task: bandit_best_answer, limit: 4}\n")
    with pytest.raises(InputError, match="already benchmarks.0") as exc:
        load_spec(spec)
    assert exc.value.field == "benchmarks.1.task"
