"""Preference data and prompt files (JSONL), validated row by row.

Rows follow TRL's standard format: `prompt`, `chosen`, `rejected` (strings), plus an
optional `soft_label`, the probability that `chosen` is preferred, in [0, 1].
Every problem is reported with the file, the line and the field.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from harness.errors import InputError

_SURROGATE = re.compile("[\ud800-\udfff]")


def show(value: Any, limit: int = 40) -> str:
    """A value for an error message: repr (so newlines and lone surrogates are escaped and
    the message stays one printable line), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _field_name(key: str) -> str:
    """A row's key as an error's field: escaped like `show`, without the quotes."""
    text = repr(key)[1:-1]
    return text if len(text) <= 40 else text[:37] + "..."


def _lines(path: Path):
    """(line number, text) per line. Bytes are decoded line by line, so a non-UTF-8 byte is
    reported at its line; lines end where text mode ends them (LF, CRLF or a lone CR)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", file=str(path)) from None
    for n, raw in enumerate(data.splitlines(), start=1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as editors write
            raw = raw[3:]
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                             f"{exc.start + 1})", file=str(path), line=n) from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a repeated key would silently keep only its last value."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _has_surrogate(value: Any) -> bool:
    """Whether a lone surrogate hides in `value` (JSON's "\\ud800" parses to one; such a str
    cannot be encoded, so it would fail later, in the store or on the terminal)."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def _rows(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    for n, line in _lines(path):
        if not line.strip():
            raise InputError("empty row", file=str(path), line=n)
        try:
            row = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON ({exc.msg})", file=str(path), line=n) from None
        except _DuplicateKey as exc:
            raise InputError("the key appears twice in the row", file=str(path), line=n,
                             field=_field_name(exc.key)) from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise InputError(f"malformed JSON ({show(str(exc), 80)[1:-1]})", file=str(path),
                             line=n) from None
        except RecursionError:
            raise InputError("malformed JSON (nested too deeply)", file=str(path),
                             line=n) from None
        if not isinstance(row, dict):
            raise InputError("row is not a JSON object", file=str(path), line=n)
        for key, value in row.items():
            if _has_surrogate(key) or _has_surrogate(value):
                raise InputError("a lone surrogate (e.g. \\ud800) is not text: the row is "
                                 "not valid Unicode", file=str(path), line=n,
                                 field=_field_name(key))
        yield n, row


def _string(row: dict, key: str, path: str, n: int) -> str:
    if key not in row:
        raise InputError("missing field", file=path, line=n, field=key)
    if not isinstance(row[key], str) or not row[key]:
        raise InputError("must be a non-empty string", file=path, line=n, field=key)
    return row[key]


def _numeric(value: Any) -> bool:
    """A JSON number that is not NaN (bools are ints in Python, not numbers in a row)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _number(value: Any, path: str, n: int, key: str) -> float:
    if not _numeric(value):
        raise InputError("must be a number", file=path, line=n, field=key)
    if isinstance(value, float) and math.isinf(value):  # JSON `1e400` parses to inf
        raise InputError(f"{show(value)} is non-finite: must be a finite number", file=path,
                         line=n, field=key)
    try:
        return float(value)
    except OverflowError:  # an integer with more than ~308 digits
        raise InputError(f"{show(value)} is too large for a number", file=path, line=n,
                         field=key) from None


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
            if not _numeric(p):
                raise InputError("must be a number", file=str(path), line=n, field="soft_label")
            if isinstance(p, float) and math.isinf(p):  # JSON `1e400` parses to inf
                raise InputError(f"label {show(p)} is non-finite, outside [0, 1]",
                                 file=str(path), line=n, field="soft_label")
            if not 0 <= p <= 1:  # compared as given: a huge integer is outside, not an error
                raise InputError(f"label {show(p)} outside [0, 1]", file=str(path), line=n,
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


def _prompt_id(row: dict, path: str, n: int) -> tuple[str, bool]:
    """(the row's id, whether it was given): a non-empty string or an integer (an integer
    is its decimal string), else the default, the line number zero-padded to 4 digits."""
    if "id" not in row:
        return f"{n:04d}", False
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise InputError(f"must be a non-empty string or an integer, not {show(value)}",
                         file=path, line=n, field="id")
    return str(value), True


def load_prompts(path: str | Path) -> list[tuple[str, str]]:
    """(id, prompt) pairs; `id` is optional and defaults to the line number (`0007`).

    Ids and texts must be unique: results are keyed by prompt id and generations by prompt
    text, so two rows sharing either would silently merge into one.
    """
    out: list[tuple[str, str]] = []
    by_id: dict[str, tuple[int, bool]] = {}  # id -> (its line, whether it was given there)
    by_text: dict[str, int] = {}
    where = str(path)
    for n, row in _rows(path):
        prompt = _string(row, "prompt", where, n)
        pid, given = _prompt_id(row, where, n)
        if pid in by_id:
            first, first_given = by_id[pid]
            if given and first_given:
                why = f"id {show(pid)} is already the id of line {first}"
            elif given:
                why = (f"id {show(pid)} is already the default id of line {first} (a row "
                       f"without an id is named by its line number)")
            else:  # this row has no id and its default was taken by an earlier one
                why = (f"this row has no id, and its default id {show(pid)} is already the "
                       f"id of line {first}")
            raise InputError(why, file=where, line=n, field="id")
        if prompt in by_text:
            raise InputError(f"same prompt text as line {by_text[prompt]} (generations are "
                             f"keyed by prompt text: the two would merge)", file=where, line=n,
                             field="prompt")
        by_id[pid], by_text[prompt] = (n, given), n
        out.append((pid, prompt))
    if not out:
        raise InputError("no rows", file=where)
    return out


def check_prompt_identity(prompts: list[tuple[str, str]], source: str) -> None:
    """Refuse a prompt list, e.g. a task's own, in which two entries share an id or a text
    (the same rule `load_prompts` applies to a file; positions are 1-based)."""
    by_id: dict[str, int] = {}
    by_text: dict[str, int] = {}
    for i, (pid, text) in enumerate(prompts, start=1):
        if not isinstance(pid, str) or not pid:
            raise InputError(f"prompt {i}: the id must be a non-empty string, not {show(pid)}",
                             file=source)
        if not isinstance(text, str) or not text:
            raise InputError(f"prompt {i}: the text must be a non-empty string, not "
                             f"{show(text)}", file=source)
        if pid in by_id:
            raise InputError(f"prompt {i} has the same id {show(pid)} as prompt {by_id[pid]}",
                             file=source)
        if text in by_text:
            raise InputError(f"prompt {i} has the same text as prompt {by_text[text]} "
                             f"(generations are keyed by prompt text: the two would merge)",
                             file=source)
        by_id[pid], by_text[text] = i, i
