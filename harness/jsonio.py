"""Strict JSON out: every file and stored value the harness writes parses in any reader.

Python's `json` writes NaN and Infinity by default, which is not JSON (browsers, jq and
pandas' strict mode refuse it). A non-finite number in a result means "no value", so it is
written as null; `allow_nan=False` then guarantees nothing non-standard slips through.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def finite_or_none(obj: Any) -> Any:
    """A copy of `obj` with every non-finite float (NaN, +-inf) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    return json.dumps(finite_or_none(obj), allow_nan=False, **kw)


def write_text_atomic(path: Path, text: str) -> None:
    """Write under a temporary name and rename into place: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: Path, obj: Any, indent: int | None = 2, **kw: Any) -> None:
    write_text_atomic(path, dumps(obj, indent=indent, **kw))
