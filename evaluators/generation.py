"""Generation backends behind one small interface.

A backend maps a batch of (prompt, sample_index) requests to completions, in order
(like lm-eval's `LM.generate_until`). Sampling is seeded per batch from the batch's own
content, so a batch gives the same completions whenever and wherever it is run; the
pipeline forms the batches and stores each one in a single transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from harness.hashing import seed_from
from harness.registry import Registry


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    text: str
    token_ids: list[int]   # completion tokens, without EOS or padding
    finished: bool = True  # True when the model emitted EOS (EOS is part of the sample)


Request = tuple[str, int]  # (prompt text, sample index)


class GenerationBackend(Protocol):
    def generate_batch(self, requests: list[Request], params: SamplingParams,
                       seed: int) -> list[Completion]: ...


BACKENDS: Registry[type] = Registry("generation backend", "spo_harness.backends")


def resolve_backend(name: str) -> str:
    """'auto' is vllm where vLLM imports and a GPU is present (its fast path), else hf."""
    if name != "auto":
        return name
    import importlib.util

    import torch

    return "vllm" if importlib.util.find_spec("vllm") and torch.cuda.is_available() else "hf"


@BACKENDS.register("hf")
class HFBackend:
    """Hugging Face `generate`: batched, left-padded, seeded; the CPU default.

    Loads plain folders and PEFT/LoRA adapter folders (merged into their base); prompts go
    through `encode_prompt`, so instruct models get their chat template.
    """

    def __init__(self, model_dir: str, device: str | None = None) -> None:
        import torch

        from harness.base_models import load_causal_lm, load_tokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_causal_lm(model_dir).to(self.device).eval()

    def generate_batch(self, requests: list[Request], params: SamplingParams,
                       seed: int) -> list[Completion]:
        import torch

        from trainers.tokenize import encode_prompt, left_pad

        tok = self.tokenizer
        batch = left_pad([encode_prompt(tok, p) for p, _ in requests], tok.pad_token_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        torch.manual_seed(seed)
        sampling = ({"do_sample": False} if params.temperature == 0 else
                    {"do_sample": True, "temperature": params.temperature,
                     "top_p": params.top_p, "top_k": 0})
        with torch.no_grad():
            out = self.model.generate(
                **batch, **sampling, max_new_tokens=params.max_new_tokens,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:].tolist()
        completions = []
        for ids in new:
            finished = tok.eos_token_id in ids
            if finished:
                ids = ids[:ids.index(tok.eos_token_id)]
            ids = [i for i in ids if i != tok.pad_token_id]
            completions.append(Completion(tok.decode(ids, skip_special_tokens=True), ids, finished))
        return completions

    def generate(self, requests: list[Request], params: SamplingParams, *, batch_size: int,
                 seed: int, desc: str = "generate") -> list[Completion]:
        """Convenience: all requests in fixed batches, each seeded from its content."""
        from tqdm.auto import tqdm

        out: list[Completion] = []
        for i in tqdm(range(0, len(requests), batch_size), desc=desc, leave=False):
            chunk = requests[i:i + batch_size]
            out += self.generate_batch(chunk, params, seed_from(seed, chunk, params.as_dict()))
        return out
from evaluators import openai_backend, vllm_backend  # noqa: E402,F401  (register)
