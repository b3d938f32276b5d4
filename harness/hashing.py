"""Content hashes: every stored unit is keyed by a hash of what determines it."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal content gives equal text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot hash {type(obj).__name__}")


def content_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def file_hash(path: str | Path, length: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def seed_from(*parts: Any) -> int:
    """A 31-bit seed derived from content (stable across processes, unlike hash())."""
    return int(content_hash(list(parts), 8), 16) & 0x7FFFFFFF


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Git commit (and whether the tree is dirty) of this checkout, else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True, timeout=5).stdout.strip())
        return {"git_commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import PackageNotFoundError, version

        try:
            return {"package_version": version("spo-harness")}
        except PackageNotFoundError:
            return {"package_version": "unknown"}


PACKAGES = ("spo-harness", "torch", "transformers", "accelerate", "peft", "datasets",
            "tokenizers", "numpy", "pandas", "scipy", "scikit-learn", "sentence-transformers",
            "vllm", "openai", "trl")


def environment() -> dict[str, Any]:
    """What else made these results: package versions, Python, the machine and its GPUs."""
    import os
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    out: dict[str, Any] = {"python": platform.python_version(),
                           "platform": platform.platform(), "machine": platform.machine(),
                           "cpus": os.cpu_count(), "packages": packages}
    torch = sys.modules.get("torch")  # only where already imported: this must stay cheap
    if torch is not None and torch.cuda.is_available():
        out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return out
