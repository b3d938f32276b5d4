"""Online sampling during training through a generation backend (`training.online_backend`).

SPO's KL regularizer samples the policy at every step (and SPPO samples each iterate).
`hf` is the policy's own `generate` (`regularizers.sample_completions`): the default, whose
samples every number in the README was trained with. `vllm` samples from a vLLM engine in
this process (`VLLMBackend.colocated`, TRL's colocate mode) whose weights are replaced by the
policy's every `sync_every` steps; between syncs it samples the policy as it was at the last
sync. A LoRA policy is synced as merged weights, W + (alpha/r) B A per adapted layer, computed
beside the base weights, which stay untouched. Each sample has its own seed,
`request_seed(seed_from(seed, "reg-samples", step), (prompt, i))` with i its place in the step's
batch, so a step's samples are a function of the weights, the prompts and the step only, and
a resumed run samples what an uninterrupted one did (resumes start on a sync step:
`save_every` is a multiple of `sync_every`, checked when the spec loads).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.errors import InputError
from trainers.tokenize import Encoded, encode_prompt

INSTALL_HINT = ("bash scripts/install_vllm.sh builds .venv-vllm with vLLM's CPU build (run "
                "spo-harness from there); on a GPU machine pip install 'spo-harness[vllm]'")


def vllm_problem() -> str | None:
    """Why `online_backend: vllm` cannot run in this environment, or None."""
    if importlib.util.find_spec("vllm") is None:
        return f"online_backend vllm needs vLLM, which is not installed here: {INSTALL_HINT}"
    return None


class OnlineSampler(Protocol):
    def sample(self, policy, prompts: list[str], max_new_tokens: int, seed: int,
               step: int) -> list[Encoded]: ...

    def close(self) -> None: ...


def make_online_sampler(name: str, model_dir: Path, tokenizer, sync_every: int = 1
                        ) -> OnlineSampler | None:
    """The sampler of `training.online_backend`; None for hf (the regularizer's own
    `sample_completions` on the live policy, unchanged)."""
    if name == "hf":
        return None
    if name == "vllm":
        return VLLMOnline(model_dir, tokenizer, sync_every)
    raise InputError(f"unknown online_backend {name!r}; known: hf, vllm",
                     field="training.online_backend")


class VLLMOnline:
    """A colocated vLLM engine on the run's starting model, synced from the policy."""

    def __init__(self, model_dir: Path, tokenizer, sync_every: int = 1) -> None:
        from evaluators.generation import BACKENDS

        problem = vllm_problem()
        if problem:
            raise InputError(problem, field="training.online_backend")
        self.tokenizer, self.sync_every = tokenizer, sync_every
        try:
            self.backend = BACKENDS.get("vllm").colocated(str(model_dir))
        except InputError as exc:  # e.g. a head size vLLM's CPU build has no kernel for
            raise InputError(f"online_backend vllm cannot sample this model ({exc}); use "
                             "online_backend hf", field="training.online_backend") from None
        self.synced_step: int | None = None

    def sync(self, policy) -> None:
        """Push the policy's current weights into the engine."""
        self.backend.load_weights(policy_weights(policy))

    def sample(self, policy, prompts: list[str], max_new_tokens: int, seed: int,
               step: int) -> list[Encoded]:
        """One completion per prompt at temperature 1, as `sample_completions` returns them:
        the prompt's ids, and the completion's with its EOS where the model stopped."""
        from evaluators.generation import SamplingParams

        if step % self.sync_every == 0 and self.synced_step != step:
            self.sync(policy)
            self.synced_step = step
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=1.0)
        outs = self.backend.generate_batch([(p, i) for i, p in enumerate(prompts)], params,
                                           seed)
        eos = [self.tokenizer.eos_token_id]
        return [Encoded(encode_prompt(self.tokenizer, p), o.token_ids + (eos if o.finished else []))
                for p, o in zip(prompts, outs)]

    def close(self) -> None:
        self.backend.close()


@torch.no_grad()
def policy_weights(policy) -> Iterable[tuple[str, torch.Tensor]]:
    """(name, tensor) of the policy's weights as its base architecture names them.

    A PEFT LoRA model gives merged weights: each adapted layer's base weight plus its active
    adapters' delta (PEFT's `get_delta_weight`, what `merge_and_unload` adds), computed into
    new tensors so the frozen base, which is also the run's reference, stays bit-identical.
    """
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(policy, PeftModel):
        return [(k, v.detach()) for k, v in policy.state_dict().items()]
    base = policy.get_base_model()
    deltas: dict[str, Any] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.disable_adapters:
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    key = f"{name}.weight"
                    delta = module.get_delta_weight(adapter)
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    out = []
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        out.append((key, value + deltas[key].to(value.dtype) if key in deltas else value))
    return out
