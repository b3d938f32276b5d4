"""Hostile training settings (issue 11): each is one line and exit 2, before any run is
trained; nothing is stored for a run that could not start."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from tests.hostile.attack import refused

LOAD_CASES = {  # --set value -> what the one line names
    "training.precision=fp8": ("training.precision", "fp8"),
    "training.precision=[bf16]": ("training.precision", "bf16"),
    "training.gradient_accumulation_steps=0": ("training.gradient_accumulation_steps", ">= 1"),
    "training.gradient_accumulation_steps=2.5": ("training.gradient_accumulation_steps", ""),
    "training.gradient_checkpointing=maybe": ("training.gradient_checkpointing", ""),
    "training.lr_scheduler=exponential": ("training.lr_scheduler", "exponential"),
    "training.optimizer=lion": ("training.optimizer", "lion"),
    "training.truncation_mode=middle": ("training.truncation_mode", "middle"),
    "training.max_prompt_length=0": ("training.max_prompt_length", ">= 1"),
    "training.peft={r: 0}": ("training.peft.r", ">= 1"),
    "training.peft={lora_dropout: 1}": ("training.peft.lora_dropout", "[0, 1)"),
    "training.peft={rank: 8}": ("training.peft", "rank"),
    "training.peft={target_modules: q_proj}": ("training.peft.target_modules", ""),
}


@pytest.mark.parametrize("override", sorted(LOAD_CASES))
def test_a_bad_setting_is_refused_when_the_spec_loads(tmp_path: Path, tiny_spec: Path,
                                                      override: str) -> None:
    field, reason = LOAD_CASES[override]
    results = tmp_path / "results"
    refused("train", tiny_spec, "--results-dir", results, "--set", override, cwd=tmp_path,
            results=results, contains=(field, reason))
    assert not (results / "store.sqlite").exists()


def _runs(results: Path) -> int:
    with sqlite3.connect(results / "store.sqlite") as db:
        return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: fp16 works")
def test_fp16_on_a_cpu_is_refused_before_a_run_trains(tmp_path: Path, tiny_spec: Path) -> None:
    results = tmp_path / "results"
    refused("train", tiny_spec, "--results-dir", results, "--set", "training.precision=fp16",
            cwd=tmp_path, contains=("training.precision", "fp16 needs a CUDA GPU", "bf16"))
    assert _runs(results) == 0


def test_keep_start_with_a_prompt_that_fills_max_length_names_the_row(tmp_path: Path,
                                                                      tiny_spec: Path) -> None:
    """TRL drops such rows silently; we refuse: a row whose prompt leaves no completion
    token would train on nothing (the bandit's prompts are 2+ tokens with BOS)."""
    results = tmp_path / "results"
    line = refused("train", tiny_spec, "--results-dir", results, "--set",
                   "training.truncation_mode=keep_start", "--set", "training.max_length=2",
                   cwd=tmp_path, contains=("training row 1", "keep_start", "no completion token"))
    assert line.isprintable()
    assert _runs(results) == 0


def test_lora_on_modules_the_model_lacks_names_the_ones_it_has(tmp_path: Path,
                                                               tiny_spec: Path) -> None:
    results = tmp_path / "results"
    refused("train", tiny_spec, "--results-dir", results, "--set",
            "training.peft={r: 4, target_modules: [nope]}", cwd=tmp_path,
            contains=("training.peft.target_modules", "nope", "q_proj, up_proj, v_proj"))
    assert _runs(results) == 0
