"""LoRA / PEFT training (issue 11, item 2), on the tiny setup of `test_pinned_resume`.

* only the adapters train: the base weights after training are the reference's, bit for
  bit, and the adapters moved;
* the reference is the policy with its adapters disabled: no second model is loaded, and
  its outputs after training are the untouched reference's, exactly;
* a run interrupted mid-way resumes from its checkpoint to bit-identical adapters;
* through the CLI a LoRA run's checkpoint is a PEFT adapter folder that is sampled, scored,
  judged and reported like a full checkpoint, and its run key differs from full tuning's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import trainers.loop as loop
from harness.spec import PeftSpec
from tests.conftest import assert_ok, cli, leaderboard, write_spec
from tests.test_pinned_resume import (  # noqa: F401  (fixtures)
    LOSS_PARAMS,
    TRAINING,
    Interrupted,
    _one_thread,
    assert_same_weights,
    checkpoints,
    counting_optimizer_steps,
    tiny,
)
from trainers.loop import TrainJob
from trainers.losses import get_loss

LORA = dataclasses.replace(TRAINING, peft=PeftSpec(r=4, lora_alpha=8.0), learning_rate=0.05)


def _train(setup, work: Path):
    job = TrainJob(label="lora", seed=0, reference_dir=setup.reference_dir, pairs=setup.pairs,
                   reg_prompts=setup.reg_prompts, training=LORA, work_dir=work,
                   ref_logps=setup.ref_logps)
    model, _, history = loop.train(job, get_loss("spo", **LOSS_PARAMS), show_progress=False)
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def test_only_the_adapters_train_and_the_reference_is_the_base_with_adapters_off(
        tiny, tmp_path, monkeypatch):  # noqa: F811
    from transformers import AutoModelForCausalLM

    loads = []
    real = AutoModelForCausalLM.from_pretrained

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", counting)
    model, state, _ = _train(tiny, tmp_path / "work")
    assert len(loads) == 1  # the policy only: SPO's KL reference is the policy, adapters off
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", real)

    base = load_file(tiny.reference_dir / "model.safetensors")
    prefix = "base_model.model."
    frozen = {k[len(prefix):].replace(".base_layer", ""): v for k, v in state.items()
              if "lora_" not in k}
    for k, v in base.items():
        assert torch.equal(frozen[k], v), k
    lora_b = [v for k, v in state.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 1e-3  # the adapters moved

    reference = real(tiny.reference_dir).eval()
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    off = loop.AdaptersDisabled(model)(input_ids=ids).logits
    torch.testing.assert_close(off, reference(input_ids=ids).logits, rtol=0, atol=0)
    on = model(input_ids=ids).logits
    assert float((on - off).abs().max()) > 1e-4  # with adapters on it is the trained policy


def test_a_lora_run_resumes_to_bit_identical_adapters(tiny, tmp_path):  # noqa: F811
    _, want, want_history = _train(tiny, tmp_path / "straight")
    work = tmp_path / "work"
    with counting_optimizer_steps(stop_after=5), pytest.raises(Interrupted):
        _train(tiny, work)
    assert checkpoints(work) == ["step-0000003"]
    with counting_optimizer_steps() as steps:
        _, state, history = _train(tiny, work)
    assert steps[0] == 5
    assert_same_weights(state, want)
    assert history == want_history


def test_a_lora_run_through_the_cli_is_an_adapter_checkpoint_evaluated_like_any(tmp_path):
    spec = write_spec(tmp_path / "tiny.yaml")
    proc = cli("run", spec, "--results-dir", "lora", "--set",
               "training.peft={r: 4, lora_alpha: 8}", cwd=tmp_path)
    assert_ok(proc)
    board = leaderboard(tmp_path / "lora")
    trained = [r for r in board if not r["is_baseline"]]
    assert len(trained) == 2 and all(r["win_rate"] is not None and r["n_failed"] == 0
                                     for r in trained)
    folders = sorted((tmp_path / "lora" / "artifacts").glob("checkpoint-*"))
    assert len(folders) == 2
    for folder in folders:
        assert (folder / "adapter_config.json").exists()
        assert not (folder / "model.safetensors").exists()  # adapters only
        meta = json.loads((folder / "spo_harness_run.json").read_text())
        assert meta["training"]["peft"] == {"r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0,
                                            "target_modules": None}
    # the same runs fully fine-tuned have other keys (nothing cached is reused)
    full = cli("train", spec, "--results-dir", "lora", cwd=tmp_path)
    assert_ok(full)
    assert len(list((tmp_path / "lora" / "artifacts").glob("checkpoint-*"))) == 4
