"""Run by tests/test_online_sampling.py under .venv-vllm: vLLM's CPU engine in the training
process, synced from a policy, against Hugging Face generate on the same weights.

    .venv-vllm/bin/python tests/online_vllm_script.py MODEL_DIR WORK_DIR

Prints one line `RESULT {json}` (or `NO_VLLM ...` and exits 3 where vLLM does not import).
One engine serves the sync checks; the training-loop checks start one per run, as training
does.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from pathlib import Path

import torch

GREEDY_NEW = 24
LONG = "the big cat sat on the mat near the red fox " * 16  # > one 128-token KV block


def trained_copy(model_dir: Path, tok, steps: int = 3):
    """The model after a few AdamW steps on text of its own kind: weights that differ from
    the folder the engine started on."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.tensor([tok("one two three four five six seven eight nine ten eleven twelve."
                            " the happy dog ran under the blue hat.")["input_ids"]])
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def lora_copy(model_dir: Path, folder: Path):
    """A PEFT LoRA policy with random (non-zero) B, saved as an adapter folder too."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return model


def sync_checks(model_dir: Path, work: Path) -> dict:
    from evaluators.generation import HFBackend, SamplingParams
    from harness.base_models import load_tokenizer
    from trainers.online import VLLMOnline, policy_weights
    from trainers.tokenize import encode_prompt

    tok = load_tokenizer(model_dir)
    greedy = SamplingParams(max_new_tokens=GREEDY_NEW, temperature=0.0)
    requests = [(p, 0) for p in ("the big cat", "the small", "the red fox sat on the", "one two",
                                 "three four five", "seven", LONG)]
    out: dict = {"long_prompt_tokens": len(encode_prompt(tok, LONG))}

    random.seed(1)
    torch.manual_seed(1)
    want = (random.random(), torch.rand(4).tolist())
    random.seed(1)
    torch.manual_seed(1)
    threads = torch.get_num_threads()
    t0 = time.time()
    sampler = VLLMOnline(model_dir, tok)
    out["startup_s"] = time.time() - t0
    out["rng_kept"] = (random.random(), torch.rand(4).tolist()) == want
    out["threads_kept"] = torch.get_num_threads() == threads
    torch.set_num_threads(threads + 1)  # vLLM's CPU worker makes this a no-op; not here
    out["set_num_threads_works"] = torch.get_num_threads() == threads + 1
    torch.set_num_threads(threads)

    def as_dicts(completions):
        return [dataclasses.asdict(c) for c in completions]

    # Before any sync: the engine's weights are the folder's. This also fills the prefix
    # cache with the long prompt's KV under the old weights, which a sync must drop.
    out["start"] = as_dicts(sampler.backend.generate_batch(requests, greedy, 0))
    out["hf_start"] = as_dicts(HFBackend(str(model_dir)).generate_batch(requests, greedy, 0))

    trained = trained_copy(model_dir, tok)
    sampler.sync(trained)
    trained_dir = work / "trained"
    trained.save_pretrained(trained_dir)
    tok.save_pretrained(trained_dir)
    out["synced"] = as_dicts(sampler.backend.generate_batch(requests, greedy, 0))
    out["hf_trained"] = as_dicts(HFBackend(str(trained_dir)).generate_batch(requests, greedy, 0))

    # The regularizer's samples: temperature 1, seeded per step, EOS kept where it stopped.
    prompts = ["the big cat", "one two", "the big cat", "seven"]
    a = sampler.sample(trained, prompts, 12, seed=5, step=1)
    b = sampler.sample(trained, prompts, 12, seed=5, step=1)
    c = sampler.sample(trained, prompts, 12, seed=6, step=1)
    out["samples"] = [dataclasses.asdict(e) for e in a]
    out["samples_repeat"] = [dataclasses.asdict(e) for e in b]
    out["samples_other_seed"] = [dataclasses.asdict(e) for e in c]
    out["eos"] = tok.eos_token_id
    out["prompt_ids"] = [encode_prompt(tok, p) for p in prompts]

    lora_dir = work / "lora"
    lora = lora_copy(model_dir, lora_dir)
    base_before = {k: v.clone() for k, v in lora.get_base_model().state_dict().items()}
    sampler.sync(lora)
    base_after = lora.get_base_model().state_dict()
    out["lora_base_untouched"] = all(torch.equal(v, base_after[k]) for k, v in base_before.items())
    out["lora_synced"] = as_dicts(sampler.backend.generate_batch(requests, greedy, 0))
    out["hf_lora_merged"] = as_dicts(HFBackend(str(lora_dir)).generate_batch(requests, greedy, 0))
    out["weights_named_as_base"] = sorted(k for k, _ in policy_weights(lora)) == sorted(
        k for k, _ in policy_weights(trained))
    sampler.close()
    return out


class Interrupted(Exception):
    pass


def resume_checks(model_dir: Path, work: Path) -> dict:
    """SPO with online_backend vllm and sync_every 3 through the training loop: interrupted
    after step 5 (checkpoint at step 3), resumed, against an uninterrupted run."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from harness.spec import TrainingSpec
    from trainers.loop import TrainJob, compute_reference_logps, train
    from trainers.losses import get_loss

    rng = random.Random(0)
    words = "the big small red cat dog sat ran on under mat hat one two three four".split()

    def text(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n))

    pairs = [{"prompt": text(3), "chosen": " " + text(3), "rejected": " " + text(3)}
             for _ in range(8)]
    reg_prompts = [text(3) for _ in range(6)]
    training = TrainingSpec(epochs=4, batch_size=4, learning_rate=0.01, max_length=32,
                            save_every=3, log_every=2, kl_log_prompts=0,
                            online_backend="vllm", sync_every=3)
    ref = compute_reference_logps(model_dir, pairs, 32)
    loss = get_loss("spo", alpha=1.0, **{"lambda": 0.5}, reg_prompts_per_step=3,
                    reg_max_new_tokens=6)

    def run(work_dir: Path, stop_after: int | None = None):
        count = [0]

        def hook(*_):
            count[0] += 1
            if count[0] == stop_after:
                raise Interrupted

        handle = register_optimizer_step_post_hook(hook)
        try:
            job = TrainJob(label="online", seed=0, reference_dir=model_dir, pairs=pairs,
                           reg_prompts=reg_prompts, training=training, work_dir=work_dir,
                           ref_logps=ref)
            model, _, history = train(job, loss, show_progress=False)
        finally:
            handle.remove()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}, history, count[0]

    t0 = time.time()
    whole, history, steps = run(work / "whole")
    out = {"train_s": time.time() - t0, "steps": steps, "kl": [h["kl"] for h in history]}
    try:
        run(work / "cut", stop_after=5)
    except Interrupted:
        pass
    resumed, history2, steps2 = run(work / "cut")
    out.update(resumed_steps=steps2, resumed_history_equal=history2 == history,
               resumed_weights_equal=all(torch.equal(resumed[k], v) for k, v in whole.items()))
    return out


def head16_error(model_dir: Path, work: Path) -> str | None:
    """VLLMOnline on a model whose head size (16, the bandit's) vLLM's CPU build lacks."""
    from harness.base_models import load_tokenizer
    from harness.errors import InputError
    from harness.tasks.tiny_models import save_model, tiny_llama
    from trainers.online import VLLMOnline

    tok = load_tokenizer(model_dir)
    folder = work / "head16"
    save_model(tiny_llama(tok, hidden_size=64, num_layers=1, num_heads=4, max_positions=64,
                          seed=0), tok, folder)
    try:
        VLLMOnline(folder, tok).close()
    except InputError as exc:
        return str(exc)
    return None


def main() -> None:
    try:
        import vllm  # noqa: F401
    except Exception as exc:
        print("NO_VLLM", repr(exc))
        sys.exit(3)
    model_dir, work = Path(sys.argv[1]), Path(sys.argv[2])
    out = sync_checks(model_dir, work)
    out["head16_error"] = head16_error(model_dir, work)
    out["resume"] = resume_checks(model_dir, work)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
