"""Preference data and prompt files (JSONL), validated row by row.

Rows follow TRL's standard format: `prompt`, `chosen`, `rejected` (strings), plus an
optional `soft_label`, the probability that `chosen` is preferred, in [0, 1].
Every problem is reported with the file, the line and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.errors import InputError


def _rows(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                raise InputError("empty row", file=str(path), line=n)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON ({exc.msg})", file=str(path), line=n) from None
            if not isinstance(row, dict):
                raise InputError("row is not a JSON object", file=str(path), line=n)
            yield n, row


def _string(row: dict, key: str, path: str, n: int) -> str:
    if key not in row:
        raise InputError("missing field", file=path, line=n, field=key)
    if not isinstance(row[key], str) or not row[key]:
        raise InputError("must be a non-empty string", file=path, line=n, field=key)
    return row[key]


def load_pairs(path: str | Path) -> list[dict[str, Any]]:
    out, has_soft = [], None
    for n, row in _rows(path):
        item = {k: _string(row, k, str(path), n) for k in ("prompt", "chosen", "rejected")}
        if "soft_label" in row:
            p = row["soft_label"]
            if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p):
                raise InputError("must be a number", file=str(path), line=n, field="soft_label")
            if not 0.0 <= p <= 1.0:
                raise InputError(f"label {p} outside [0, 1]", file=str(path), line=n,
                                 field="soft_label")
            item["soft_label"] = float(p)
        if has_soft is not None and has_soft != ("soft_label" in item):
            raise InputError("soft_label must be given on every row or on none", file=str(path),
                             line=n, field="soft_label")
        has_soft = "soft_label" in item
        out.append(item)
    if not out:
        raise InputError("no rows", file=str(path))
    return out


def load_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(id, prompt) pairs; `id` is optional and defaults to the line number."""
    out = []
    for n, row in _rows(path):
        prompt = _string(row, "prompt", str(path), n)
        out.append((str(row.get("id", f"{n:04d}")), prompt))
    if not out:
        raise InputError("no rows", file=str(path))
    return out
