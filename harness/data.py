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


def _number(value: Any, path: str, n: int, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InputError("must be a number", file=path, line=n, field=key)
    return float(value)


def _ranked(row: dict, path: str, n: int) -> dict[str, Any]:
    """A list row: `responses` with `scores` (a full ranking) or `chosen_index` (best-of-n).

    Stored sorted best -> worst under `responses`, with `ranked` saying which form it is.
    """
    prompt = _string(row, "prompt", path, n)
    responses = row["responses"]
    if (not isinstance(responses, list) or len(responses) < 2
            or not all(isinstance(r, str) and r for r in responses)):
        raise InputError("must be a list of at least two non-empty strings", file=path, line=n,
                         field="responses")
    if ("scores" in row) == ("chosen_index" in row):
        raise InputError("give either 'scores' (a ranking) or 'chosen_index' (best-of-n)",
                         file=path, line=n, field="responses")
    if "scores" in row:
        scores = row["scores"]
        if not isinstance(scores, list) or len(scores) != len(responses):
            raise InputError("must be a list as long as 'responses'", file=path, line=n,
                             field="scores")
        values = [_number(s, path, n, "scores") for s in scores]
        order = sorted(range(len(responses)), key=lambda i: -values[i])  # stable for ties
        return {"prompt": prompt, "responses": [responses[i] for i in order], "ranked": True}
    best = row["chosen_index"]
    if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < len(responses):
        raise InputError(f"must be an index into 'responses' (0..{len(responses) - 1})",
                         file=path, line=n, field="chosen_index")
    rest = [r for i, r in enumerate(responses) if i != best]
    return {"prompt": prompt, "responses": [responses[best], *rest], "ranked": False}


def load_pairs(path: str | Path) -> list[dict[str, Any]]:
    """Pair rows (prompt, chosen, rejected[, soft_label]) or list rows (see `_ranked`)."""
    out, has_soft, kind = [], None, None
    for n, row in _rows(path):
        row_kind = "list" if "responses" in row else "pair"
        if kind is not None and row_kind != kind:
            raise InputError(f"a {row_kind} row in a file of {kind} rows: use one kind per file",
                             file=str(path), line=n, field="responses")
        kind = row_kind
        if row_kind == "list":
            out.append(_ranked(row, str(path), n))
            continue
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
