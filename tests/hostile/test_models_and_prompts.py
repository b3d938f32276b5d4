"""Model folders that cannot be loaded, and prompts that cannot be generated from, are
refused before any stage works on them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import TINY_SPEC, write_spec
from tests.hostile.attack import refused

SENTIMENT = """\
name: real
task: sentiment
base_model: {model}
methods:
  - name: dpo
    params: {{beta: 0.1}}
"""


def _model_copy(reference_run, tmp_path: Path, drop: tuple[str, ...]) -> Path:
    (ref,) = reference_run.results.glob("artifacts/reference-*")
    folder = tmp_path / "model"
    shutil.copytree(ref, folder)
    for pattern in drop:
        for f in folder.glob(pattern):
            f.unlink()
    return folder


@pytest.mark.parametrize("case, drop, fragment", [
    ("config only", ("*.safetensors", "tokenizer*", "special_tokens_map.json"), "no weights"),
    ("no tokenizer", ("tokenizer*", "special_tokens_map.json"), "no tokenizer"),
    ("no weights", ("*.safetensors",), "no weights"),
])
def test_unloadable_base_model_folder(case, drop, fragment, reference_run, tmp_path):
    folder = _model_copy(reference_run, tmp_path, drop)
    spec = write_spec(tmp_path / "real.yaml", SENTIMENT.format(model=folder))
    refused("train", spec, "--results-dir", tmp_path / "R", cwd=tmp_path,
            results=tmp_path / "R", contains=(fragment, str(folder)))


def test_broken_config_json(reference_run, tmp_path):
    folder = _model_copy(reference_run, tmp_path, ())
    (folder / "config.json").write_bytes(b"\xff\xfe not json")
    spec = write_spec(tmp_path / "real.yaml", SENTIMENT.format(model=folder))
    refused("train", spec, "--results-dir", tmp_path / "R", cwd=tmp_path,
            contains="config.json")


@pytest.mark.parametrize("size", [10_000, 1_000_000])
def test_prompt_longer_than_the_context_is_refused(size, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "ok", "prompt": "q0"}) + "\n"
                       + json.dumps({"id": "huge", "prompt": " ".join(["q1"] * size)}) + "\n")
    spec = write_spec(tmp_path / "t.yaml", TINY_SPEC + f"data:\n  eval_prompts_file: {prompts}\n")
    line = refused("run", spec, "--results-dir", tmp_path / "R", cwd=tmp_path,
                   contains=("'huge'", "context", str(prompts)))
    assert "generations" not in line
