"""Which lm-eval task a `benchmarks:` entry names, checked before any stage runs.

An entry is one of
- a task shipped with spo-harness (`evaluators/lm_eval_tasks/`: shakespeare_cloze,
  bandit_best_answer), or a path to a task YAML: read here as plain data, never by lm-eval's
  own loader. lm-eval's loader runs Python named by a `!function` tag; here any YAML tag is
  refused, as are the keys that only take code (`class`, `process_docs`, `process_results`,
  `custom_dataset`), metrics outside lm-eval's registry (lm-eval would `evaluate.load` them,
  which can run a script), the `custom` filter, `unsafe_code` and promptsource prompts.
  `include:` files are read the same way. Data files are relative to the YAML's folder and
  must exist; their contents enter the results' key;
- the name of a task that ships inside lm-eval itself (its own YAML and Python, trusted as
  the library is), whose data is already in the local datasets cache: it is loaded with
  offline mode forced, so it is never downloaded.

Every task is then built once with lm-eval, offline, its Jinja templates rendered in Jinja's
sandbox (`lm_eval_context`), which loads its data and renders its first document: whatever
lm-eval would only find halfway through a run fails here, as one InputError.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import InputError, MissingDependencyError
from harness.hashing import file_hash

SHIPPED_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
SHIPPED = ("shakespeare_cloze", "bandit_best_answer")
MAX_YAML_BYTES = 1 << 20
# datasets' packaged builders that read local files through `data_files`
FILE_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
# keys of lm-eval's TaskConfig that only take Python callables (or fetch code): refused
CODE_KEYS = {
    "class": "names a Python class",
    "process_docs": "takes a Python function",
    "process_results": "takes a Python function",
    "custom_dataset": "takes a Python function",
    "use_prompt": "loads a promptsource template package",
}
# `model_args` the spec may not give lm-eval's model class, and why
MODEL_ARGS_REFUSED = {
    "pretrained": "the checkpoint is the harness's to give",
    "tokenizer": "the checkpoint's own tokenizer is used",
    "trust_remote_code": "it runs Python shipped with a model; only architectures "
                         "transformers knows are loaded",
    "batch_size": "give the entry's batch_size",
    "device": "the device is the harness's to choose",
}
TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice", "description", "gen_prefix",
                 "doc_to_decontamination_query")
TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")


@dataclass(frozen=True)
class TaskSource:
    """A checked task: what lm-eval is given and what (besides the model) its results
    depend on."""

    name: str                          # the task's name: the leaderboard's column prefix
    kind: str                          # "yaml" (shipped or a file) or "lm-eval" (built in)
    config: dict[str, Any] | None      # yaml: the config lm-eval receives, data paths absolute
    fingerprint: dict[str, Any] = field(hash=False, compare=False)
    single: bool = True                # lm-eval: one task (not a group or tag)


def lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        raise MissingDependencyError(
            "benchmarks need lm-eval (EleutherAI's lm-evaluation-harness): pip install "
            "lm-eval==0.4.13, or reinstall spo-harness (it is a dependency)") from None


# ---------------------------------------------------------------- how lm-eval runs here


@contextlib.contextmanager
def lm_eval_context(quiet_level: int = logging.ERROR,
                   show_progress: bool = False) -> Iterator[str]:
    """lm-eval as spo-harness runs it: hub and datasets offline (a hub dataset comes from
    the local cache or not at all), every Jinja template rendered in Jinja's sandbox (a
    template cannot reach Python internals such as `''.__class__`), its logging quiet, and
    without its environment report (torch's collect_env: a second of subprocesses per run,
    for results metadata spo-harness does not keep). Without `show_progress` its progress
    bars are off (lm-eval passes `disable=False` itself, which TQDM_DISABLE cannot undo).
    Yields a scratch folder for the datasets cache of local data files (`load_tasks`)."""
    import lm_eval.evaluator
    import lm_eval.utils
    from jinja2 import BaseLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    from harness.datasets_io import _offline, _quiet_datasets

    _quiet_datasets()
    saved = lm_eval.utils.env
    sandbox = SandboxedEnvironment(loader=BaseLoader, undefined=StrictUndefined,
                                   keep_trailing_newline=True)
    sandbox.filters.update(saved.filters)  # lm-eval's own regex_replace filter
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(quiet_level)
    env_info = lm_eval.evaluator.add_env_info
    lm_eval.utils.env = sandbox
    lm_eval.evaluator.add_env_info = lambda results: None
    bars = {} if show_progress else _silence_bars()
    try:
        with _offline(), warnings.catch_warnings(), \
                tempfile.TemporaryDirectory(prefix="spo-lm-eval-") as scratch:
            warnings.simplefilter("ignore")
            yield scratch
    finally:
        lm_eval.utils.env = saved
        lm_eval.evaluator.add_env_info = env_info
        for module, bar in bars.items():
            module.tqdm = bar
        logger.setLevel(level)


def _silence_bars() -> dict[Any, Any]:
    """Every loaded lm-eval module's `tqdm` replaced by one that is off; {module: saved}."""
    import sys

    from tqdm import tqdm

    def off(*args: Any, **kwargs: Any) -> Any:
        return tqdm(*args, **{**kwargs, "disable": True})

    saved = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("lm_eval") and getattr(module, "tqdm", None) is tqdm:
            saved[module] = module.tqdm
            module.tqdm = off
    return saved


# ---------------------------------------------------------------- finding a task


def find_task(task: str) -> TaskSource:
    """The task an entry names, checked and built once; InputError saying what is wrong."""
    return _find_task(task, str(Path.cwd()))


@functools.lru_cache(maxsize=64)
def _find_task(task: str, cwd: str) -> TaskSource:
    lm_eval_version()  # lm-eval is installed
    if task in SHIPPED:
        return _yaml_task(SHIPPED_DIR / f"{task}.yaml")
    if task.endswith((".yaml", ".yml")) or "/" in task or "\\" in task:
        path = Path(task).expanduser()
        path = path if path.is_absolute() else Path(cwd) / path
        if not path.is_file():
            raise InputError(f"task YAML '{task}' not found" if not path.exists()
                             else f"task YAML '{task}' is not a file")
        return _yaml_task(path)
    return _builtin_task(task)


def _unknown(task: str) -> InputError:
    close = difflib.get_close_matches(task, SHIPPED, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return InputError(f"unknown benchmark task '{task}': not a task shipped with spo-harness "
                      f"({', '.join(SHIPPED)}), a task of lm-eval {lm_eval_version()}, or a "
                      f"task YAML file (a path ending in .yaml){hint}")


# ---------------------------------------------------------------- a task YAML: plain data


def _read_yaml(path: Path) -> tuple[str, dict[str, Any], Any]:
    """(text, mapping, line locator) of a task YAML read as plain data."""
    import yaml

    from harness.spec import _Locator, _parse_yaml, _yaml_problem

    name = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the task YAML ({exc.strerror or exc})", file=name) from None
    if len(data) > MAX_YAML_BYTES:
        raise InputError(f"a task YAML is at most {MAX_YAML_BYTES} bytes", file=name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x})", file=name) from None
    try:
        raw, node = _parse_yaml(text)
    except yaml.YAMLError as exc:
        problem, line = _yaml_problem(exc, text)
        tag = re.search(r"tag '([^']*)'", problem)
        if tag and tag.group(1) == "!function":
            problem = ("'!function' would run Python code named by the config; spo-harness "
                       "runs no code from a task YAML: give the field as data (a column name "
                       "or a Jinja template)")
        elif tag:
            problem = f"YAML tag '{tag.group(1)}' refused: a task YAML is plain data"
        raise InputError(f"invalid task YAML: {problem}", file=name, line=line) from None
    except RecursionError:
        raise InputError("invalid task YAML: nested too deeply", file=name) from None
    if not isinstance(raw, dict):
        raise InputError("a task YAML must be a mapping (task: NAME, dataset_path: ...)",
                         file=name)
    return text, raw, _Locator(node)


def _load_with_includes(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, dict, list]:
    """The merged config (lm-eval's `include:` semantics: included keys first, the file's
    own keys win), {key: (file, line)} of where each top-level key came from, and
    [(file name, SHA-256 of its text)] of every file read."""
    path = path.resolve()
    if path in seen:
        raise InputError("include cycle", file=str(path))
    text, raw, locator = _read_yaml(path)
    merged: dict[str, Any] = {}
    where: dict[str, tuple[str, int | None]] = {}
    texts = []
    includes = raw.pop("include", None)
    for inc in [] if includes is None else includes if isinstance(includes, list) else [includes]:
        if not isinstance(inc, str):
            raise InputError("include: expected a file name or a list of them",
                             file=str(path), line=locator.line("include"), field="include")
        target = Path(inc) if Path(inc).is_absolute() else path.parent / inc
        if not target.is_file():
            raise InputError(f"included file '{inc}' not found", file=str(path),
                             line=locator.line("include"), field="include")
        sub, sub_where, sub_texts = _load_with_includes(target, (*seen, path))
        sub.pop("task_list", None)
        merged.update(sub)
        where.update(sub_where)
        texts += sub_texts
    merged.update(raw)
    where.update({k: (str(path), locator.line(str(k))) for k in raw})
    texts.append((path.name, hashlib.sha256(text.encode("utf-8")).hexdigest()))
    return merged, where, texts


def _yaml_task(path: Path) -> TaskSource:
    cfg, where, texts = _load_with_includes(path)

    def err(key: str, message: str) -> InputError:
        file, line = where.get(key.split(".")[0], (str(path), None))
        return InputError(message, file=file, line=line, field=key)

    _check_config(cfg, err)
    data = _local_data(cfg, path.parent, err)
    source = TaskSource(cfg["task"], "yaml", cfg, {
        "kind": "yaml", "task": cfg["task"], "yaml": texts, "data": data})
    built = _build(source, str(path))
    if not data:  # a hub dataset: the fingerprints of its cached copy
        source.fingerprint.update(data=built, hub=True)
    return source


def _check_config(cfg: dict[str, Any], err) -> None:
    """Keys, code-only keys, task name, output type, metrics, filters, templates."""
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import SandboxedEnvironment
    from lm_eval.config.task import TaskConfig

    known = [f for f in TaskConfig.__dataclass_fields__ if f not in CODE_KEYS]
    for key in cfg:
        if key in CODE_KEYS:
            raise err(key, f"'{key}' {CODE_KEYS[key]}; spo-harness runs no code from a task "
                           "YAML")
        if key in ("group", "task_list"):
            raise err(key, "a group of tasks: give each task as its own benchmarks entry")
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            raise err(str(key), "unknown key of an lm-eval task" +
                      (f"; did you mean '{close[0]}'?" if close else ""))
    name = cfg.get("task")
    if not isinstance(name, str) or not TASK_NAME.fullmatch(name):
        raise err("task", "expected the task's name: letters, digits and _.- (it names the "
                          "leaderboard's columns)")
    if cfg.get("unsafe_code"):
        raise err("unsafe_code", "a task that executes generated code is not run here")
    output = cfg.get("output_type", "generate_until")
    types = ("loglikelihood", "loglikelihood_rolling", "multiple_choice", "generate_until")
    if output not in types:
        raise err("output_type", f"must be one of {', '.join(types)}, got {output!r}")
    if not any(cfg.get(s) for s in ("test_split", "validation_split")):
        raise err("task", "needs test_split or validation_split: the documents evaluated")
    _check_metrics(cfg.get("metric_list"), err)
    _check_filters(cfg.get("filter_list"), err)
    env = SandboxedEnvironment()
    fewshot = cfg.get("fewshot_config") or {}
    if not isinstance(fewshot, dict):
        raise err("fewshot_config", "expected a mapping")
    for key in CODE_KEYS:
        if key in fewshot:
            raise err("fewshot_config", f"'{key}' {CODE_KEYS[key]}; spo-harness runs no code "
                                        "from a task YAML")
    for where, section in (("", cfg), ("fewshot_config.", fewshot)):
        for key in TEMPLATE_KEYS:
            value = section.get(key)
            if isinstance(value, str):
                try:
                    env.parse(value)
                except TemplateSyntaxError as exc:
                    raise err(where + key, f"malformed Jinja template: {exc.message}") from None


def _check_metrics(metrics: Any, err) -> None:
    from lm_eval.api import metrics as _registered  # noqa: F401  (fills the registries)
    from lm_eval.api.registry import aggregation_registry, metric_registry

    if metrics is None:
        return
    if not isinstance(metrics, list) or not all(isinstance(m, dict) for m in metrics):
        raise err("metric_list", "expected a list of {metric: NAME, aggregation: ...}")
    names = sorted(metric_registry.keys())
    for i, m in enumerate(metrics):
        if m.get("hf_evaluate"):
            raise err("metric_list", f"metric {i + 1}: hf_evaluate loads a metric script; "
                                     "use one of lm-eval's own metrics")
        if m.get("metric") not in names:
            raise err("metric_list", f"metric {i + 1}: {m.get('metric')!r} is not one of "
                                     f"lm-eval's metrics ({', '.join(names)})")
        agg = m.get("aggregation")
        if agg is not None and agg not in aggregation_registry.keys():
            raise err("metric_list", f"metric {i + 1}: aggregation {agg!r} is not one of "
                      f"lm-eval's ({', '.join(sorted(aggregation_registry.keys()))})")


def _check_filters(filters: Any, err) -> None:
    import lm_eval.filters  # noqa: F401  (fills the registry)
    from lm_eval.api.registry import filter_registry

    if filters is None:
        return
    allowed = sorted(set(filter_registry.keys()) - {"custom"})  # custom takes a function
    if not isinstance(filters, list):
        raise err("filter_list", "expected a list of {name, filter: [{function: ...}]}")
    for f in filters:
        steps = f.get("filter") if isinstance(f, dict) else None
        if not isinstance(steps, list) or not isinstance(f.get("name"), str):
            raise err("filter_list", "each filter is {name: NAME, filter: [{function: ...}]}")
        for step in steps:
            fn = step.get("function") if isinstance(step, dict) else None
            if fn not in allowed:
                raise err("filter_list", f"filter function {fn!r} is not one of lm-eval's "
                                         f"({', '.join(allowed)})")


def _local_data(cfg: dict[str, Any], folder: Path, err) -> dict[str, Any]:
    """Check the task's data, make local paths absolute in `cfg`, and return what keys it:
    {file name: content hash} of local files, or the cached hub dataset's fingerprints."""
    dpath = cfg.get("dataset_path")
    if not isinstance(dpath, str) or not dpath:
        raise err("dataset_path", "expected the data: a builder such as json with "
                                  "dataset_kwargs.data_files, a local folder, or a cached hub id")
    kwargs = cfg.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise err("dataset_kwargs", "expected a mapping")
    if dpath in FILE_BUILDERS:
        files = kwargs.get("data_files")
        if files is None:
            raise err("dataset_kwargs", f"dataset_path {dpath} reads local files: give "
                                        "dataset_kwargs.data_files")
        splits = files if isinstance(files, dict) else {"train": files}
        hashes, absolute = {}, {}
        for split, given in splits.items():
            paths = given if isinstance(given, list) else [given]
            resolved = []
            for p in paths:
                if not isinstance(p, str):
                    raise err("dataset_kwargs", f"data_files: expected file names, got {p!r}")
                full = Path(p).expanduser()
                full = full if full.is_absolute() else folder / full
                if not full.is_file():
                    raise err("dataset_kwargs", f"data file '{p}' not found (data files are "
                                                f"relative to the task YAML's folder, {folder})")
                hashes[f"{split}:{p}"] = file_hash(full, 64)
                resolved.append(str(full))
            absolute[split] = resolved if isinstance(given, list) else resolved[0]
        cfg["dataset_kwargs"] = {**kwargs, "data_files": absolute if isinstance(files, dict)
                                 else absolute["train"]}
        for key in ("test_split", "validation_split", "training_split", "fewshot_split"):
            if cfg.get(key) is not None and cfg[key] not in splits:
                raise err(key, f"no split {cfg[key]!r} in data_files "
                               f"(it has {', '.join(map(repr, splits))})")
        return hashes
    local = Path(dpath).expanduser()
    local = local if local.is_absolute() else folder / local
    if local.is_dir():
        cfg["dataset_path"] = str(local)
        try:
            return {str(p.relative_to(local)): file_hash(p, 64)
                    for p in sorted(local.rglob("*")) if p.is_file()}
        except OSError as exc:
            raise err("dataset_path", f"cannot read the data folder {local} "
                                      f"({exc.strerror or exc})") from None
    return {}  # a hub id: its cached fingerprints are read when it is built


# ---------------------------------------------------------------- a task of lm-eval itself


@functools.lru_cache(maxsize=1)
def _yaml_files() -> tuple[Path, ...]:
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent
    return tuple(sorted(p for p in root.glob("**/*.yaml") if "__pycache__" not in p.parts))


@functools.lru_cache(maxsize=16)
def _mini_index(name: str) -> dict[str, Any]:
    """lm-eval's index entries of the YAML files whose text holds `name`.

    lm-eval's TaskManager parses all of its ~14,000 YAML files (13 s here); a task is
    defined in a file that holds its name, so parsing those alone finds it in about a second
    (functions unresolved, as lm-eval's own index does)."""
    from lm_eval.tasks._index import TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    word = re.compile(r"(?<![\w.-])" + re.escape(name) + r"(?![\w.-])")
    index: dict[str, Any] = {}
    for path in _yaml_files():
        if word.search(path.read_text(encoding="utf-8", errors="replace")):
            with contextlib.suppress(Exception):  # as lm-eval's own index skips a broken file
                TaskIndex.process_cfg(load_yaml(path, resolve_func=False), path, index)
    return index


@functools.lru_cache(maxsize=1)
def _full_manager() -> Any:
    from lm_eval.tasks import TaskManager

    return TaskManager()


def _builtin_task(name: str) -> TaskSource:
    """A task, group or tag of lm-eval's own registry (a group or tag: with the full index)."""
    from lm_eval.tasks._index import Kind

    if not TASK_NAME.fullmatch(name):
        raise _unknown(name)
    entry = _mini_index(name).get(name)
    if entry is None:
        raise _unknown(name)
    texts = [(entry.yaml_path.name, file_hash(entry.yaml_path, 64))] if entry.yaml_path else []
    source = TaskSource(name, "lm-eval", None, {"kind": "lm-eval", "task": name,
                                                "yaml": texts, "data": {}},
                        single=entry.kind in (Kind.TASK, Kind.PY_TASK))
    source.fingerprint["data"] = _build(source, f"lm-eval task '{name}'")
    return source


# ---------------------------------------------------------------- building it


def load_tasks(source: TaskSource, scratch: str) -> tuple[list[Any], Any]:
    """(tasks, task manager) for `lm_eval.simple_evaluate`, built afresh (a built task holds
    the requests of its last run). Call inside `lm_eval_context`, which gives `scratch`:
    local data files are read through a cache there, never the user's datasets cache (so an
    edited file is never answered from a stale copy), as `harness.datasets_io` reads them."""
    import copy

    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._factory import TaskFactory

    if source.kind == "yaml":
        cfg = copy.deepcopy(source.config)
        if source.fingerprint["data"] and not source.fingerprint.get("hub"):
            cfg["dataset_kwargs"] = {**(cfg.get("dataset_kwargs") or {}), "cache_dir": scratch}
        return [cfg], TaskManager(include_defaults=False)
    if source.single:
        index = _mini_index(source.name)
        task = TaskFactory().build(index[source.name], registry=index)
        return [task], TaskManager(include_defaults=False)
    return [source.name], _full_manager()


def _build(source: TaskSource, where: str) -> dict[str, Any]:
    """Build the task with lm-eval (offline, sandboxed): its data loads and its first
    document renders, or InputError. Returns the fingerprints of the datasets it loaded."""
    try:
        with lm_eval_context(quiet_level=logging.CRITICAL + 1) as scratch:
            specs, manager = load_tasks(source, scratch)
            built = manager.load(specs)["tasks"]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - lm-eval's failures are the task's problem
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        if "OfflineModeIsEnabled" in reason or "Couldn't reach" in reason:
            raise InputError(f"{where}: its dataset is not in the local datasets cache, and "
                             f"is never downloaded ({reason})") from None
        raise InputError(f"{where}: lm-eval cannot build the task: "
                         f"{type(exc).__name__}: {reason}") from None
    return {task: {split: getattr(ds, "_fingerprint", None)
                   for split, ds in (getattr(t, "dataset", None) or {}).items()}
            for task, t in sorted(built.items())}
