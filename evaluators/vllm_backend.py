"""The `vllm` generation backend: vLLM's offline engine (`vllm.LLM`), the fast path on a GPU.

Same contract as `HFBackend`: prompts are tokenized here with `encode_prompt` and sent as
token ids, completions are decoded here with the same tokenizer call, so a generation stored
by this backend is the same kind of object as one stored by `hf`. Each request gets its own
sampling seed, `request_seed(seed, request)`, so a completion depends on its own prompt and
sample index only, whatever else the batch or the engine holds.

vLLM is imported inside the class, so this module (and the registry) imports without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from evaluators.generation import (
    BACKENDS,
    Completion,
    HFBackend,
    Request,
    SamplingParams,
    request_seed,
)

# vLLM accepts only these LoRA ranks as `max_lora_rank` (vllm.config.lora.MaxLoRARanks).
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@BACKENDS.register("vllm")
class VLLMBackend:
    """vLLM offline inference on a model folder, or on a PEFT/LoRA adapter folder.

    Options (the spec's `generation.options`):
      dtype: "auto" is float32 on CPU (as `hf`) and the model's own dtype on a GPU.
      max_model_len: prompt + completion tokens per sequence (None: the model's maximum).
      gpu_memory_utilization: share of GPU memory vLLM reserves; on vLLM's CPU build it is the
        share of RAM, whose default of 0.92 fails to start there, so None means 0.3 on CPU.
      enforce_eager: skip CUDA graphs / torch.compile (None: True on CPU, where compiling
        costs more start-up than it saves on short runs).
      lora_path: a PEFT adapter folder applied with a `LoRARequest`; when `model_dir` itself is
        an adapter folder, its base model is loaded and the adapter applied.
      engine_args: any further keyword arguments of `vllm.LLM`.

    One engine per process: vLLM reserves a fixed share of the (GPU) memory when it starts,
    so a second engine beside a live one would not fit, and dropping a backend does not stop
    its engine processes. Constructing a backend therefore closes the previous one (the
    pipeline builds one per model and uses one at a time); `close()` does it explicitly.
    """

    _live: ClassVar[VLLMBackend | None] = None

    def __init__(self, model_dir: str, dtype: str = "auto", max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None, enforce_eager: bool | None = None,
                 lora_path: str | None = None, engine_args: dict[str, Any] | None = None) -> None:
        import torch
        from vllm import LLM

        from harness.base_models import is_adapter, load_tokenizer

        base = model_dir
        if lora_path is None and is_adapter(Path(model_dir)):
            lora_path = model_dir
        if lora_path is not None and base == lora_path:
            config = json.loads((Path(lora_path) / "adapter_config.json").read_text())
            base = config["base_model_name_or_path"]
        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            _check_cpu_head_size(Path(base))
        if VLLMBackend._live is not None:
            VLLMBackend._live.close()
        self.options = {"dtype": dtype, "max_model_len": max_model_len,
                        "gpu_memory_utilization": gpu_memory_utilization,
                        "enforce_eager": enforce_eager, "lora_path": lora_path,
                        "engine_args": engine_args}
        self.model_dir = model_dir
        self.tokenizer = load_tokenizer(Path(model_dir))
        kwargs: dict[str, Any] = {}
        self.lora_request = None
        if lora_path is not None:
            from vllm.lora.request import LoRARequest

            rank = json.loads((Path(lora_path) / "adapter_config.json").read_text())["r"]
            kwargs.update(enable_lora=True,
                          max_lora_rank=next(r for r in _LORA_RANKS if r >= rank))
            self.lora_request = LoRARequest("adapter", 1, str(lora_path))
        self.llm = LLM(
            model=str(base), tokenizer=str(base), seed=0,
            dtype=("auto" if on_gpu else "float32") if dtype == "auto" else dtype,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization or (0.9 if on_gpu else 0.3),
            enforce_eager=(not on_gpu) if enforce_eager is None else enforce_eager,
            **kwargs, **(engine_args or {}))
        VLLMBackend._live = self

    @classmethod
    def colocated(cls, model_dir: str, **options: Any) -> VLLMBackend:
        """An engine inside this process, for sampling a policy while it trains.

        vLLM's engine core normally runs in a child process, which receives tensors only as
        serialized lists; in this process (vLLM's InprocClient, as TRL's colocate mode)
        `load_weights` hands it the policy's tensors directly. Generations stop at the
        tokenizer's EOS only (`generation_config="vllm"`), as the training loop's own
        sampling does, and the KV cache is 1 GiB unless `engine_args` says otherwise.
        """
        engine_args = {"generation_config": "vllm", "kv_cache_memory_bytes": 1 << 30,
                       **(options.pop("engine_args", None) or {})}
        options.setdefault("gpu_memory_utilization", 0.3)  # on a GPU: beside the training
        with _process_state_kept(in_process=True):
            backend = cls(model_dir, engine_args=engine_args, **options)
        backend.in_process = True
        # Each sync re-creates the rotary layers' caches from the old ones (they have no
        # weights in a checkpoint) and says so as a warning: a line per step, not a problem.
        logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").setLevel(
            logging.ERROR)
        return backend

    def load_weights(self, weights: Iterable[tuple[str, Any]]) -> None:
        """Replace the engine's weights in place with (Hugging Face name, tensor) pairs, as
        vLLM's `reload_weights` does (it re-runs the per-layer processing, e.g. the CPU's
        oneDNN packing), then empty the prefix cache: KV blocks cached for a prompt were
        computed with the old weights and would otherwise be reused."""
        if not getattr(self, "in_process", False):
            raise RuntimeError("load_weights needs an engine in this process: build it with "
                               "VLLMBackend.colocated")
        with _process_state_kept():
            self.llm.collective_rpc("reload_weights", kwargs={
                "weights_iterator": list(weights), "is_checkpoint_format": True})
            self.llm.reset_prefix_cache()

    def close(self) -> None:
        """Stop the engine's processes and free its memory; the backend is unusable after."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
        if VLLMBackend._live is self:
            VLLMBackend._live = None

    def __repr__(self) -> str:
        return f"VLLMBackend({self.model_dir!r}, {self.options!r})"

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "vllm", "model_dir": self.model_dir, **self.options}

    def generate_batch(self, requests: list[Request], params: SamplingParams,
                       seed: int) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams
        from vllm.inputs import TokensPrompt

        from trainers.tokenize import encode_prompt

        tok = self.tokenizer
        greedy = params.temperature == 0
        prompts = [TokensPrompt(prompt_token_ids=encode_prompt(tok, p)) for p, _ in requests]
        # One SamplingParams per request: its own seed (n=1), so sample i of a prompt does not
        # depend on how many samples were asked for or on its neighbours in the batch.
        # detokenize=False: the text is decoded below exactly as HFBackend decodes it.
        sampling = [VSamplingParams(n=1, temperature=0.0 if greedy else params.temperature,
                                    top_p=1.0 if greedy else params.top_p, top_k=0,
                                    max_tokens=params.max_new_tokens,
                                    min_tokens=params.min_new_tokens,
                                    seed=request_seed(seed, r), detokenize=False)
                    for r in requests]
        with _process_state_kept() if getattr(self, "in_process", False) else contextlib.nullcontext():
            outs = self.llm.generate(prompts, sampling, use_tqdm=False,
                                     lora_request=self.lora_request)
        completions = []
        for out in outs:
            o = out.outputs[0]
            ids = list(o.token_ids)
            finished = o.finish_reason == "stop"
            if ids and ids[-1] == tok.eos_token_id:  # EOS is in the output ids; not in ours
                ids = ids[:-1]
            completions.append(Completion(tok.decode(ids, skip_special_tokens=True), ids, finished))
        return completions

    generate = HFBackend.generate  # the same batches, each request seeded by its content


@contextlib.contextmanager
def _process_state_kept(in_process: bool = False) -> Iterator[None]:
    """Run vLLM without touching what the training around it computes with.

    An engine started in this process seeds Python's, numpy's and torch's global RNGs, cuts
    torch to one thread and then replaces `torch.set_num_threads` with a no-op (its CPU
    worker pins threads); all of that is put back. `in_process`: start the engine core
    here, not in a child (vLLM reads the variable when an engine starts and caches it).
    """
    import random

    import numpy as np
    import torch
    import vllm.envs

    key = "VLLM_ENABLE_V1_MULTIPROCESSING"
    old_env = os.environ.get(key)
    py_rng, np_rng = random.getstate(), np.random.get_state()
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    uncache = getattr(vllm.envs, "disable_envs_cache", lambda: None)
    if in_process:
        os.environ[key] = "0"
        uncache()
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        if in_process:
            if old_env is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old_env
            uncache()
        random.setstate(py_rng)
        np.random.set_state(np_rng)
        torch.set_num_threads = set_threads
        if torch.get_num_threads() != threads:
            set_threads(threads)


def _check_cpu_head_size(model_dir: Path) -> None:
    """vLLM's CPU attention has kernels for some head sizes only (not the bandit task's 16);
    without this check the engine dies at start-up with the reason buried in its log."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError:  # another vLLM layout: let the engine say it
        return
    from harness.errors import InputError

    c = json.loads((model_dir / "config.json").read_text())
    head = c.get("head_dim") or (c["hidden_size"] // c["num_attention_heads"]
                                 if "hidden_size" in c and "num_attention_heads" in c else None)
    supported = CPUAttentionBackend.get_supported_head_sizes()
    if head is not None and head not in supported:
        raise InputError(f"vllm backend: {model_dir} has attention heads of size {head}, and "
                         f"vLLM's CPU attention supports only {supported}; use backend 'hf' "
                         "(or a GPU)", field="generation.backend")
