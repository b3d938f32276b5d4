"""Paired and unpaired (KTO) objectives on a tiny model built in the test."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from harness.tasks.tiny_models import tiny_llama, word_tokenizer
from tests.conftest import ENV, REPO, TINY_SPEC
from trainers.logprobs import batched_completion_logps
from trainers.losses import get_loss
from trainers.objectives import PairedObjective, UnpairedObjective
from trainers.tokenize import encode

WORDS = ["q0", "q1", "a0", "a1", "a2"]
PAIRS = [{"prompt": "q0", "chosen": "a0", "rejected": "a1"},
         {"prompt": "q1", "chosen": "a2", "rejected": "a0"},
         {"prompt": "q0", "chosen": "a2", "rejected": "a1"}]


def _setup():
    tok = word_tokenizer(WORDS)
    model = tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, max_positions=16, seed=0)
    enc = lambda key: [encode(tok, r["prompt"], r[key], 8, False) for r in PAIRS]  # noqa: E731
    ref = (batched_completion_logps(model, enc("chosen"), tok.pad_token_id),
           batched_completion_logps(model, enc("rejected"), tok.pad_token_id))
    return tok, model, ref


def test_unpaired_objective_splits_pairs_and_fixes_mismatched_partners():
    tok, model, ref = _setup()
    obj = UnpairedObjective(get_loss("kto"), tok, PAIRS, ref, 8, False, model, seed=0)
    assert obj.n == 6 and obj.desirable.tolist() == [True] * 3 + [False] * 3
    assert torch.allclose(obj.ref, torch.cat(ref).float())
    # every item is paired with another item's completion, each used once
    own = [tuple(e.completion_ids) for e in obj.items]
    other = [tuple(e.completion_ids) for e in obj.mismatched]
    assert sorted(own) == sorted(other)
    assert [tuple(e.prompt_ids) for e in obj.mismatched] == [tuple(e.prompt_ids)
                                                             for e in obj.items]
    again = batched_completion_logps(model, obj.mismatched, tok.pad_token_id).float()
    assert torch.allclose(obj.ref_mismatched, again)
    out, seq = obj(model, torch.arange(6), "cpu")
    assert out.losses.shape == (6,) and torch.isfinite(out.losses).all()
    out.losses.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_paired_objective_matches_the_loss_on_hand_computed_logps():
    tok, model, ref = _setup()
    loss = get_loss("dpo", beta=0.5)
    obj = PairedObjective(loss, tok, PAIRS, ref, 8, False)
    out, _ = obj(model, torch.tensor([2, 0]), "cpu")
    # the untrained policy is the reference: every margin is 0, loss = log 2
    assert torch.allclose(out.losses, torch.full((2,), float(torch.log(torch.tensor(2.0)))),
                          atol=1e-5)


def test_kto_trains_end_to_end_through_the_cli(tmp_path):
    spec = tmp_path / "kto.yaml"
    spec.write_text(TINY_SPEC.replace("  - name: dpo\n    params: {beta: 1}\n",
                                      "  - name: kto\n    params: {beta: 0.5}\n"))
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--results-dir",
                           str(tmp_path / "out"), "--quiet"], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = {r["label"]: r for r in json.loads((tmp_path / "out" / "leaderboard.json").read_text())}
    kto = board["kto(beta=0.5)"]
    assert kto["n_judged"] == kto["n_samples"] > 0
    # desirable = the higher-reward answer of each pair: KTO moves mass towards better answers
    assert kto["exact_expected_reward"] > board["sft"]["exact_expected_reward"] + 0.05


def test_spo_on_plackett_luce_rankings_approaches_softmax_r_over_alpha(tmp_path):
    """Rankings drawn from PL(exp r): SPO's list loss is minimised by softmax(r/alpha)."""
    spec = tmp_path / "ranked.yaml"
    text = (TINY_SPEC
            .replace("task_options: {n_prompts: 3, n_arms: 4, sft_samples_per_prompt: 64, "
                     "sft_epochs: 2}",
                     "task_options: {n_prompts: 3, n_arms: 4, sft_samples_per_prompt: 64, "
                     "sft_epochs: 2, labels: ranked, pairs_per_prompt: 400}")
            .replace("  - name: dpo\n    params: {beta: 1}\n", "")
            .replace("params: {alpha: 1, lambda: 0.1, reg_prompts_per_step: 2, "
                     "reg_max_new_tokens: 2}", "params: {alpha: 1}")
            .replace("epochs: 12", "epochs: 6").replace("batch_size: 8", "batch_size: 100"))
    assert "labels: ranked" in text and "dpo" not in text
    spec.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--results-dir",
                           str(tmp_path / "out"), "--quiet", "--set", "training.learning_rate=0.01"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    board = {r["label"]: r for r in json.loads((tmp_path / "out" / "leaderboard.json").read_text())}
    spo = board["spo(alpha=1)"]
    # 400 sampled rankings per prompt leave a finite-sample gap, so the bound is loose; the
    # policy must also have moved from the reference (measured: expected reward -0.02 -> 0.21)
    assert spo["exact_kl_to_target"] < 0.05, spo
    assert spo["exact_expected_reward"] > board["sft"]["exact_expected_reward"] + 0.1
    # a pairwise method cannot take ranked data: exit code 2 with one line
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("  - name: spo\n    params: {alpha: 1}\n",
                                "  - name: dpo\n    params: {beta: 1}\n"))
    proc = subprocess.run([sys.executable, "-m", "harness", "train", str(bad), "--results-dir",
                           str(tmp_path / "out"), "--quiet"], capture_output=True, text=True,
                          env=ENV, cwd=REPO, timeout=600)
    assert proc.returncode == 2 and "supported by spo" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
