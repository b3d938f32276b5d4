"""The experiment spec: one YAML file, validated on load.

Every section is a dataclass whose fields carry `help` metadata (as TRL's configs do), so
the same definitions drive validation, defaults and documentation. Loading never executes
anything from the file (`yaml.safe_load` semantics); errors name the file, the line and
the key path, and are raised before any stage runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.errors import InputError
from harness.hashing import content_hash


def _f(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        value = default
        return field(default_factory=lambda: typing.cast(Any, type(value))(value),
                     metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class MethodSpec:
    name: str = _f(help="registered method (loss) name, e.g. spo, dpo")
    params: dict[str, Any] = _f({}, help="hyperparameters; a list value sweeps (one run per value)")
    label: str | None = _f(None, help="display name prefix; default: the method name")


@dataclass
class TrainingSpec:
    epochs: int = _f(2, help="passes over the preference pairs")
    batch_size: int = _f(16, help="pairs per optimizer step")
    learning_rate: float = _f(5e-4, help="AdamW learning rate")
    weight_decay: float = _f(0.0, help="AdamW weight decay")
    warmup_steps: int = _f(0, help="linear warm-up steps")
    max_grad_norm: float | None = _f(1.0, help="gradient clipping norm; null disables")
    max_length: int = _f(128, help="prompt+completion tokens kept (prompt truncated from the left)")
    save_every: int = _f(20, help="save a resumable checkpoint every N steps")
    log_every: int = _f(5, help="log metrics every N steps")
    kl_log_prompts: int = _f(8, help="prompts sampled to log KL(policy||ref) at each log step; 0 = off")


@dataclass
class GenerationSpec:
    backend: str = _f("auto", help="generation backend: auto (vllm where it imports and a GPU is "
                      "present, else hf), hf, vllm, openai")
    options: dict[str, Any] = _f({}, help="keyword arguments of the backend (e.g. openai: base_url, "
                                  "api_key_env, concurrency, timeout)")
    n_samples: int = _f(4, help="samples per held-out prompt")
    max_new_tokens: int = _f(32, help="tokens generated per sample")
    temperature: float = _f(1.0, help="sampling temperature (1.0 keeps entropy/KL estimates unbiased; "
                            "0 = greedy)")
    top_p: float = _f(1.0, help="nucleus sampling mass")
    batch_size: int = _f(32, help="sequences per generate() call")
    seed: int = _f(0, help="base sampling seed; each batch derives its own from its content")


@dataclass
class ComponentSpec:
    name: str = _f(help="registered judge or scorer name")
    params: dict[str, Any] = _f({}, help="keyword arguments of the component")


@dataclass
class DataSpec:
    train_file: str | None = _f(None, help="JSONL of preference pairs replacing the task's own")
    eval_prompts_file: str | None = _f(None, help="JSONL of held-out prompts replacing the task's own")
    reg_prompts_file: str | None = _f(
        None, help="JSONL of prompts for SPO's KL regularizer (and the KL log) replacing the task's own")


@dataclass
class OutputSpec:
    results_dir: str | None = _f(None, help="where results go; default results/<name>/")


@dataclass
class ExperimentSpec:
    name: str = _f(help="experiment name (names the results folder)")
    task: str = _f(help="built-in task: bandit or sentiment")
    methods: list[MethodSpec] = _f(help="methods to train, each with hyperparameters")
    task_options: dict[str, Any] = _f({}, help="options of the task (see its Options dataclass)")
    base_model: str = _f("tiny", help="'tiny' (the task's own model, SFT'd locally), a registered "
                         "model (smollm2-135m-instruct), a local HF folder, or a cached hub id")
    data: DataSpec = _f(None, help="user data replacing the task's pairs or prompts")
    seeds: list[int] = _f([0], help="training seeds; one run per seed")
    training: TrainingSpec = _f(None, help="shared training settings")
    generation: GenerationSpec = _f(None, help="sampling on the held-out prompts")
    judges: list[ComponentSpec] = _f([], help="pairwise judges; default: the task's oracle judge")
    scorers: list[ComponentSpec] = _f([], help="pointwise scorers; default: the task's oracle reward")
    baseline: str = _f("sft", help="'sft' (the reference model) or a run label")
    output: OutputSpec = _f(None, help="output settings")

    def __post_init__(self) -> None:
        self.data = self.data or DataSpec()
        self.training = self.training or TrainingSpec()
        self.generation = self.generation or GenerationSpec()
        self.output = self.output or OutputSpec()
        if not self.judges:
            self.judges = [ComponentSpec(name="oracle")]
        if not self.scorers:
            self.scorers = [ComponentSpec(name="oracle")]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method at one point of its sweep, with one seed."""

    method: str
    params: dict[str, Any]
    seed: int
    label: str

    def key_material(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params, "seed": self.seed}


# ---------------------------------------------------------------- loading and validation


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads 1e-3 (no dot) as a float, as YAML 1.2 and JSON do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


class _Locator:
    """Maps key paths ('methods.0.params.alpha') to line numbers of the YAML source."""

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            node = None
        if node is not None:
            self._walk(node, "")

    def _walk(self, node: yaml.Node, prefix: str) -> None:
        self.lines[prefix] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = f"{prefix}.{k.value}" if prefix else str(k.value)
                self.lines[path] = k.start_mark.line + 1
                if not isinstance(v, yaml.ScalarNode):
                    self._walk(v, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                path = f"{prefix}.{i}" if prefix else str(i)
                self.lines[path] = v.start_mark.line + 1
                self._walk(v, path)

    def line(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path.rpartition(".")[0]
        return None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, path: str, err: typing.Callable[[str, str], InputError]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], path, err)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise err(path, f"expected a mapping, got {type(value).__name__}")
        return _build(tp, value, path, err)
    if origin is list:
        if not isinstance(value, list):
            raise err(path, f"expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{path}.{i}", err) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise err(path, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise err(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: dict[str, Any], prefix: str,
           err: typing.Callable[[str, str], InputError]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(fields)}"
            raise err(path, f"unknown key{hint}")
        kwargs[key] = _convert(value, hints[key], path, err)
    for name, f in fields.items():
        if (name not in kwargs and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING):
            raise err(f"{prefix}.{name}" if prefix else name, "missing required field")
    return cls(**kwargs)


def build_dataclass(cls: type, data: dict[str, Any], *, file: str = "<options>",
                    prefix: str = "", locator: _Locator | None = None) -> Any:
    """Validate `data` against dataclass `cls` (unknown keys, types, required fields)."""

    def err(path: str, message: str) -> InputError:
        line = locator.line(path) if locator else None
        return InputError(message, file=file, line=line, field=path)

    return _build(cls, data, prefix, err)


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `--set key.path=value` (value parsed as YAML) to the raw spec dict."""
    if "=" not in assignment:
        raise InputError(f"--set expects key.path=value, got {assignment!r}")
    path, _, text = assignment.partition("=")
    try:
        value = yaml.load(text, Loader=_Loader) if text else None
    except yaml.YAMLError as exc:
        raise InputError(f"--set {path}: value is not valid YAML ({exc.problem})") from None
    keys = path.strip().split(".")
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise InputError(f"--set {path}: '{key}' is not an index of the list at "
                                 f"'{'.'.join(keys[:i])}' (length {len(node)})")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
        else:
            raise InputError(f"--set {path}: '{'.'.join(keys[:i])}' is not a mapping or list")


def load_spec(path: str | Path, overrides: typing.Sequence[str] = ()) -> ExperimentSpec:
    path = Path(path)
    if not path.is_file():
        raise InputError("experiment file not found", file=str(path))
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"invalid YAML: {problem}", file=str(path),
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(raw, dict):
        raise InputError("the experiment must be a YAML mapping", file=str(path))
    for assignment in overrides:
        apply_override(raw, assignment)
    spec = build_dataclass(ExperimentSpec, raw, file=str(path), locator=_Locator(text))
    _check_rules(spec, str(path), _Locator(text))
    return spec


def _check_rules(spec: ExperimentSpec, file: str, locator: _Locator) -> None:
    """Cross-field rules and registry names, checked before any stage runs."""
    from evaluators.generation import BACKENDS
    from evaluators.judges import JUDGES
    from evaluators.scorers import SCORERS
    from harness.tasks import TASKS
    from trainers.losses import LOSSES

    def check(ok: bool, path: str, message: str) -> None:
        if not ok:
            raise InputError(message, file=file, line=locator.line(path), field=path)

    def check_name(registry: Any, name: str, path: str) -> None:
        try:
            registry.get(name)
        except InputError as exc:
            raise InputError(str(exc), file=file, line=locator.line(path), field=path) from None

    check_name(TASKS, spec.task, "task")
    task_cls = TASKS.get(spec.task)
    build_dataclass(task_cls.Options, spec.task_options, file=file, prefix="task_options",
                    locator=locator)
    check(bool(spec.methods), "methods", "at least one method is required")
    for i, m in enumerate(spec.methods):
        check_name(LOSSES, m.name, f"methods.{i}.name")
    if spec.generation.backend != "auto":
        check_name(BACKENDS, spec.generation.backend, "generation.backend")
        try:  # backend options bind now, as judge and scorer params do
            inspect.signature(BACKENDS.get(spec.generation.backend)).bind(
                None, **spec.generation.options)
        except TypeError as exc:
            check(False, "generation.options", f"{spec.generation.backend}: {exc}")
    if spec.base_model != "tiny":
        from harness.base_models import BASE_MODELS

        check(task_cls.accepts_base_model, "base_model",
              f"task '{spec.task}' builds its own model; it takes only base_model: tiny")
        name = spec.base_model
        check(name in BASE_MODELS.names() or (Path(name).expanduser() / "config.json").exists()
              or (name.count("/") == 1 and not Path(name).exists()), "base_model",
              f"'{name}' is not tiny, a registered model ({', '.join(BASE_MODELS.names())}), "
              "a folder with a config.json, or a hub id (org/name)")
    for kind, registry, components in (("judges", JUDGES, spec.judges),
                                       ("scorers", SCORERS, spec.scorers)):
        for i, c in enumerate(components):
            check_name(registry, c.name, f"{kind}.{i}.name")
            try:  # bind the params now so a typo fails here, not in the judge stage
                inspect.signature(registry.get(c.name)).bind(None, **c.params)
            except TypeError as exc:
                check(False, f"{kind}.{i}.params", f"{c.name}: {exc}")
            if kind == "judges" and c.name == "llm":  # a broken template fails here too
                from evaluators.llm_judge import load_template

                try:
                    load_template(str(c.params.get("template", "alpaca_eval")))
                except InputError as exc:
                    check(False, f"judges.{i}.params.template", str(exc))
    check(bool(spec.seeds), "seeds", "at least one seed is required")
    for name in ("epochs", "batch_size", "max_length", "save_every", "log_every"):
        check(getattr(spec.training, name) > 0, f"training.{name}", "must be positive")
    check(spec.training.learning_rate > 0, "training.learning_rate", "must be positive")
    for name in ("n_samples", "max_new_tokens", "batch_size"):
        check(getattr(spec.generation, name) > 0, f"generation.{name}", "must be positive")
    check(spec.generation.temperature >= 0, "generation.temperature", "must be >= 0 (0 = greedy)")
    check(0 < spec.generation.top_p <= 1, "generation.top_p", "must be in (0, 1]")
    for i, m in enumerate(spec.methods):
        path = f"methods.{i}.params"
        one = dataclasses.replace(spec, methods=[m], seeds=spec.seeds[:1])
        for run in expand_runs(one):
            try:
                LOSSES.get(run.method)(**run.params)
            except (TypeError, ValueError) as exc:
                raise InputError(f"{run.label}: {exc}", file=file, line=locator.line(path),
                                 field=path) from None
    from harness.data import load_pairs, load_prompts

    if spec.data.train_file:
        load_pairs(spec.data.train_file)
    if spec.data.eval_prompts_file:
        load_prompts(spec.data.eval_prompts_file)
    if spec.data.reg_prompts_file:
        load_prompts(spec.data.reg_prompts_file)
    try:
        labels = [r.label for r in expand_runs(spec)]
    except InputError as exc:
        raise InputError(str(exc), file=file, line=locator.line("methods"),
                         field="methods") from None
    check(spec.baseline in ("sft", *labels), "baseline",
          f"baseline must be 'sft' or one of the run labels: {', '.join(labels)}")


def _format_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand_runs(spec: ExperimentSpec) -> list[RunSpec]:
    """Expand sweeps (list-valued params) and seeds into one RunSpec per training run."""
    runs: list[RunSpec] = []
    for m in spec.methods:
        names = sorted(m.params)
        grids = [m.params[n] if isinstance(m.params[n], list) else [m.params[n]] for n in names]
        swept = [n for n in names if isinstance(m.params[n], list)]
        for values in itertools.product(*grids):
            params = dict(zip(names, values))
            shown = ",".join(f"{n}={_format_value(params[n])}" for n in (swept or names))
            base = m.label or m.name
            for seed in spec.seeds:
                label = f"{base}({shown})" if shown else base
                if len(spec.seeds) > 1:
                    label += f"/seed={seed}"
                runs.append(RunSpec(method=m.name, params=params, seed=seed, label=label))
    seen: set[str] = {"sft"}  # the label of the SFT reference model
    for r in runs:
        if r.label == "sft":
            raise InputError("the run label 'sft' is reserved for the SFT reference model; "
                             "give this method a 'label' (e.g. label: sft-on-chosen)")
        if r.label in seen:
            raise InputError(f"two runs share the label '{r.label}'; give one a distinct 'label'")
        seen.add(r.label)
    return runs


def spec_fingerprint(spec: ExperimentSpec) -> str:
    return content_hash(dataclasses.asdict(spec))
