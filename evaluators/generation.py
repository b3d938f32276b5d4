"""Generation backends behind one small interface.

A backend maps a batch of (prompt, sample_index) requests to completions, in order
(like lm-eval's `LM.generate_until`). Every request samples with its own seed,
`request_seed(seed, request)`, so a completion depends only on the model, the prompt, the
sample index, the sampling settings and the seed: never on which other requests share its
batch. That is what lets a results folder reuse sample 0 and 1 of a prompt when a spec
goes from 4 samples to 2, and still equal a fresh run. The pipeline passes a seed derived
from the model's key, so two models never share random numbers (coupled samples would bias
the paired win rate).
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
    # EOS is suppressed until this many tokens: the "verbose" length steering of the gamed
    # baselines (AlpacaEval's LC regularization). 0 leaves the model free.
    min_new_tokens: int = 0

    def as_dict(self) -> dict:
        # min_new_tokens enters the generation key only when set, so every generation
        # stored before the field existed keeps its key.
        d = asdict(self)
        if not d["min_new_tokens"]:
            del d["min_new_tokens"]
        return d


def length_steered(params: SamplingParams, kind: str) -> SamplingParams:
    """The baseline's "gamed" sampling of AlpacaEval's LC regularization, for any model.

    AlpacaEval prompts its baseline to answer concisely or verbosely. A tiny or base model
    does not follow such an instruction, so the steering is done in decoding, which every
    backend supports: 'concise' caps the answer at a quarter of the token budget, 'verbose'
    forbids EOS until the whole budget is used.
    """
    from dataclasses import replace

    if kind == "concise":
        return replace(params, max_new_tokens=max(1, params.max_new_tokens // 4))
    if kind == "verbose":
        return replace(params, min_new_tokens=params.max_new_tokens)
    raise ValueError(f"unknown length steering {kind!r}")


@dataclass
class Completion:
    text: str
    token_ids: list[int]   # completion tokens, without EOS or padding
    finished: bool = True  # True when the model emitted EOS (EOS is part of the sample)


Request = tuple[str, int]  # (prompt text, sample index)


def request_seed(seed: int, request: Request) -> int:
    """The sampling seed of one request: a function of its own content only."""
    return seed_from(seed, request[0], request[1])


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
        from transformers import LogitsProcessorList

        from trainers.tokenize import encode_prompt, left_pad

        tok = self.tokenizer
        batch = left_pad([encode_prompt(tok, p) for p, _ in requests], tok.pad_token_id)
        batch = {k: v.to(self.device) for k, v in batch.items()}
        # Greedy decoding over Gumbel-perturbed log-probs: argmax(log p + G) is an exact draw
        # from p, and each row's noise comes from its own generator (HF's sampler draws from
        # one global RNG, so a row's sample would depend on its neighbours).
        processors = LogitsProcessorList() if params.temperature == 0 else LogitsProcessorList(
            [PerRowSampler([request_seed(seed, r) for r in requests], params.temperature,
                           params.top_p)])
        with torch.no_grad():
            out = self.model.generate(
                **batch, do_sample=False, temperature=None, top_p=None, top_k=None,
                logits_processor=processors, max_new_tokens=params.max_new_tokens,
                min_new_tokens=params.min_new_tokens or None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
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
                 seed: int, desc: str = "generate", progress: bool = True) -> list[Completion]:
        """Convenience: all requests in batches; each request seeded from its own content."""
        from tqdm.auto import tqdm

        out: list[Completion] = []
        for i in tqdm(range(0, len(requests), batch_size), desc=desc, leave=False,
                      disable=not progress):
            out += self.generate_batch(requests[i:i + batch_size], params, seed)
        return out


class PerRowSampler:
    """A logits processor that turns greedy decoding into exact, per-row seeded sampling.

    Scores become log softmax(logits / temperature), restricted to the top-p nucleus (the
    smallest set of tokens whose mass reaches top_p, as HF's TopPLogitsWarper keeps), plus
    Gumbel noise drawn from the row's own `torch.Generator`; the argmax is then a sample.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        logp = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_lp, order = logp.sort(dim=-1, descending=True)
            before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()  # mass ahead of each token
            drop_sorted = before >= self.top_p  # the top token always stays (nothing ahead)
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            logp = logp.masked_fill(drop, -torch.inf)
        u = torch.stack([torch.rand(logp.shape[-1], generator=g, dtype=torch.float64)
                         for g in self.generators]).to(logp.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-300, 1.0 - 1e-16)))
        return (logp.double() + gumbel).to(scores.dtype)
from evaluators import openai_backend, vllm_backend  # noqa: E402,F401  (register)
