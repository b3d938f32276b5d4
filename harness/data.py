"""The data slots: training rows, eval prompts and regularization prompts, row-checked.

Every slot is read by `harness.datasets_io.read_rows` (JSONL, JSON, Parquet, CSV, Arrow, a
`save_to_disk` folder or a cached hub id), its columns renamed by the spec's `columns`, and
each row checked and normalized by the rules of TRL's formats (`harness.trl_formats`) before
any work. Normalized rows depend on the content only, never on the file format, so the same
rows in any format give the same content keys.

Training rows are one kind per file:
- pair: `prompt`, `chosen`, `rejected`, standard or conversational, the prompt explicit or
  implicit; optional `soft_label` (P(chosen preferred), in [0, 1]), or, opt-in,
  sigmoid(s (score_chosen - score_rejected));
- list: `prompt`, `responses` with `scores` (a ranking) or `chosen_index` (best-of-n);
- unpaired: `prompt`, `completion`, `label` (KTO);
- prompt: `prompt` alone (SPPO samples its own responses).
Columns no rule reads are reported once (`Loaded.unused`), never dropped silently. Every
problem is one InputError naming the file, the row (a JSONL line, else the row index) and
the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.datasets_io import RawRows, Where, field_name, read_rows, show
from harness.dimensions import DimensionSources, expand, load_by_dimension, parse_labels
from harness.errors import InputError
from harness.hashing import canonical_json
from harness.numeric import sigmoid
from harness.trl_formats import (
    completion_value,
    dialogue_problem,
    is_conversational,
    preference_parts,
    prompt_value,
)

KINDS = ("pair", "list", "unpaired", "prompt")
MARKER = {"list": "responses", "pair": "chosen", "unpaired": "completion", "prompt": "prompt"}


@dataclass
class Loaded:
    """One slot's normalized rows, where each came from, and the columns nothing read."""

    name: str
    kind: str
    rows: list[dict[str, Any]]
    where: list[Where]
    unused: list[str]
    conversational: bool = False  # some row was given as messages (needs a chat template)

    def unused_note(self, slot: str) -> str | None:
        if not self.unused:
            return None
        hint = ("; soft_label_scale turns score_chosen/score_rejected into soft labels"
                if "score_chosen" in self.unused else "")
        return (f"{slot} ({self.name}): columns not used: {', '.join(self.unused)} (rename "
                f"one to ours with 'columns'{hint})")


# ---------------------------------------------------------------- reading a slot


def _renamed(raw: RawRows, columns: Mapping[str, str] | None) -> RawRows:
    """The rows with the spec's `columns` ({theirs: ours}) renamed; a mapped column that no
    row has, or a rename onto a column the row already has, is an error."""
    if not columns:
        return raw
    seen: set[str] = set()
    rows = []
    for where, row in raw.rows:
        out = {k: v for k, v in row.items() if k not in columns}
        for theirs, ours in columns.items():
            if theirs in row:
                seen.add(theirs)
                if ours in out:
                    raise where.error(f"'columns' renames {show(theirs)} to {show(ours)}, "
                                      "which the row has already", field_name(ours))
                out[ours] = row[theirs]
        rows.append((where, out))
    missing = [c for c in columns if c not in seen]
    if missing and raw.rows:
        raise InputError(f"'columns' names {show(missing[0])}, which no row has",
                         file=raw.name, field=f"columns.{missing[0]}")
    return RawRows(raw.name, rows, raw.text_cells)


def _source(path: str | Path, split: str, columns: Mapping[str, str] | None,
            limit: int | None) -> RawRows:
    raw = _renamed(read_rows(str(path), split, limit), columns)
    if not raw.rows:
        raise InputError("no rows", file=raw.name)
    return raw


# ---------------------------------------------------------------- fields


def _numeric(value: Any) -> bool:
    """A number that is not NaN (bools are ints in Python, not numbers in a row)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def _from_text(value: Any, text: bool) -> Any:
    """A CSV cell meant as a number: parsed from its text (anything else passes on)."""
    if not text or not isinstance(value, str):
        return value
    try:
        return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
    except ValueError:
        return value


def _number(value: Any, where: Where, key: str) -> float:
    if not _numeric(value):
        raise where.error("must be a number", key)
    if isinstance(value, float) and math.isinf(value):  # JSON `1e400` parses to inf
        raise where.error(f"{show(value)} is non-finite: must be a finite number", key)
    try:
        return float(value)
    except OverflowError:  # an integer with more than ~308 digits
        raise where.error(f"{show(value)} is too large for a number", key) from None


def _soft_label(value: Any, where: Where) -> float:
    if not _numeric(value):
        raise where.error("must be a number", "soft_label")
    if isinstance(value, float) and math.isinf(value):
        raise where.error(f"label {show(value)} is non-finite, outside [0, 1]", "soft_label")
    if not 0 <= value <= 1:  # compared as given: a huge integer is outside, not an error
        raise where.error(f"label {show(value)} outside [0, 1]", "soft_label")
    return float(value)


def _label(value: Any, where: Where, text: bool) -> bool:
    if text and isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if not isinstance(value, bool):
        raise where.error("must be true (desirable) or false (undesirable)", "label")
    return value


# ---------------------------------------------------------------- row kinds


def _kind(row: dict[str, Any]) -> str:
    if "responses" in row:
        return "list"
    if "chosen" in row or "rejected" in row:
        return "pair"
    if "completion" in row:
        return "unpaired"
    return "prompt"


def _pair(row: dict, where: Where, text: bool, scale: float | None,
          dimensions: Sequence[str] | None = None) -> tuple[dict, set[str]]:
    prompt, chosen, rejected, given = preference_parts(row, where)
    item: dict[str, Any] = {"prompt": prompt_value(prompt, where),
                            "chosen": completion_value(chosen, where, "chosen"),
                            "rejected": completion_value(rejected, where, "rejected")}
    used = {"chosen", "rejected"} | ({"prompt"} if given else set())
    if row.get("labels") is not None:  # per-dimension labels (harness/dimensions.py)
        if "soft_label" in row or scale is not None:
            raise where.error("give labels (per dimension) or one soft_label, not both",
                              "labels")
        item["labels"] = parse_labels(row["labels"], where, dimensions)
        return item, used | {"labels"}
    if "soft_label" in row:
        if scale is not None:
            raise where.error("give soft_label or scores with soft_label_scale, not both",
                              "soft_label")
        item["soft_label"] = _soft_label(_from_text(row["soft_label"], text), where)
        used.add("soft_label")
    elif scale is not None:
        scores = []
        for key in ("score_chosen", "score_rejected"):
            if key not in row:
                raise where.error("missing field (soft_label_scale is set)", key)
            scores.append(_number(_from_text(row[key], text), where, key))
        item["soft_label"] = sigmoid(scale * (scores[0] - scores[1]))
        used |= {"score_chosen", "score_rejected"}
    return item, used


def _ranked(row: dict, where: Where, text: bool) -> tuple[dict, set[str]]:
    """A list row: `responses` with `scores` (a full ranking) or `chosen_index` (best-of-n).

    Stored sorted best -> worst under `responses`, with `ranked` saying which form it is.
    """
    if "prompt" not in row:
        raise where.error("missing field", "prompt")
    prompt = prompt_value(row["prompt"], where)
    given = row["responses"]
    if not isinstance(given, list) or len(given) < 2:
        raise where.error("must be a list of at least two non-empty strings", "responses")
    responses = [completion_value(r, where, "responses") for r in given]
    if ("scores" in row) == ("chosen_index" in row):
        raise where.error("give either 'scores' (a ranking) or 'chosen_index' (best-of-n)",
                          "responses")
    if "scores" in row:
        scores = row["scores"]
        if not isinstance(scores, list) or len(scores) != len(responses):
            raise where.error("must be a list as long as 'responses'", "scores")
        values = [_number(s, where, "scores") for s in scores]
        order = sorted(range(len(responses)), key=lambda i: -values[i])  # stable for ties
        return ({"prompt": prompt, "responses": [responses[i] for i in order], "ranked": True},
                {"prompt", "responses", "scores"})
    best = _from_text(row["chosen_index"], text)
    if isinstance(best, bool) or not isinstance(best, int) or not 0 <= best < len(responses):
        raise where.error(f"must be an index into 'responses' (0..{len(responses) - 1})",
                          "chosen_index")
    rest = [r for i, r in enumerate(responses) if i != best]
    return ({"prompt": prompt, "responses": [responses[best], *rest], "ranked": False},
            {"prompt", "responses", "chosen_index"})


def _unpaired(row: dict, where: Where, text: bool) -> tuple[dict, set[str]]:
    for key in ("prompt", "completion", "label"):
        if key not in row:
            raise where.error("missing field (an unpaired row is prompt, completion, label)",
                              key)
    return ({"prompt": prompt_value(row["prompt"], where),
             "completion": completion_value(row["completion"], where, "completion"),
             "label": _label(row["label"], where, text)}, {"prompt", "completion", "label"})


def _prompt_only(row: dict, where: Where) -> tuple[dict, set[str]]:
    if "messages" in row and "prompt" not in row:
        raise where.error("a language-modeling row ('messages') holds no preference: give "
                          "prompt + chosen/rejected, prompt + completion + label, or a prompt",
                          "messages")
    if "prompt" not in row:
        raise where.error("missing field", "prompt")
    return {"prompt": prompt_value(row["prompt"], where)}, {"prompt"}


# ---------------------------------------------------------------- training rows


def load_train(path: str | Path, split: str = "train", columns: Mapping[str, str] | None = None,
               limit: int | None = None, soft_label_scale: float | None = None,
               dimensions: Sequence[str] | None = None) -> Loaded:
    """Training rows of one kind (see the module doc), normalized. A pair row with
    `labels` ({dimension: label}, every one of `dimensions`) becomes one row per dimension,
    in that order (`harness.dimensions.expand`)."""
    raw = _source(path, split, columns, limit)
    rows, wheres, unused = [], [], set()
    kind = None
    has_soft = has_labels = None
    for where, row in raw.rows:
        row_kind = _kind(row)
        if row_kind == "pair":
            item, used = _pair(row, where, raw.text_cells, soft_label_scale, dimensions)
            if has_labels is not None and has_labels != ("labels" in item):
                raise where.error("labels must be given on every row or on none", "labels")
            has_labels = "labels" in item
            if has_soft is not None and not has_labels and has_soft != ("soft_label" in item):
                raise where.error("soft_label must be given on every row or on none",
                                  "soft_label")
            has_soft = "soft_label" in item
        elif row_kind == "list":
            item, used = _ranked(row, where, raw.text_cells)
        elif row_kind == "unpaired":
            item, used = _unpaired(row, where, raw.text_cells)
        else:
            item, used = _prompt_only(row, where)
        if kind is not None and row_kind != kind:  # after its own checks: their field is precise
            raise where.error(f"a {row_kind} row in a file of {kind} rows: use one kind per "
                              "file", MARKER[kind])
        kind = row_kind
        unused |= set(row) - used
        if "labels" in item:
            labels = item.pop("labels")
            rows += expand(item, labels)
            wheres += [where] * len(labels)
            continue
        rows.append(item)
        wheres.append(where)
    assert kind is not None  # _source refuses an empty source
    return Loaded(raw.name, kind, rows, wheres, sorted(unused),
                  any(isinstance(r["prompt"], list) for r in rows))


def load_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a training file (any kind; see `load_train`)."""
    return load_train(path).rows


def distinct_prompts(rows: list[dict[str, Any]]) -> list[Any]:
    """The rows' distinct prompts in a fixed order (text sorted; conversations by their
    canonical JSON), e.g. the prompts SPPO samples from."""
    unique = {canonical_json(r["prompt"]): r["prompt"] for r in rows}
    if all(isinstance(p, str) for p in unique.values()):
        return sorted(unique.values())
    return [unique[k] for k in sorted(unique)]


# ---------------------------------------------------------------- prompts


def _prompt_id(row: dict, where: Where, text: bool) -> tuple[str, bool]:
    """(the row's id, whether it was given): a non-empty string or an integer (an integer
    is its decimal string), else the default, the row's 1-based position zero-padded to 4
    digits (a JSONL line number). An empty CSV cell is no id (a column cannot skip a row)."""
    if "id" not in row or (text and row["id"] == ""):
        return f"{where.position:04d}", False
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise where.error(f"must be a non-empty string or an integer, not {show(value)}", "id")
    return str(value), True


def load_prompt_rows(path: str | Path, split: str = "train",
                     columns: Mapping[str, str] | None = None, limit: int | None = None,
                     *, for_eval: bool = False) -> Loaded:
    """Prompt rows {id, prompt}, standard or conversational; `id` optional (the row's
    position, `0007`). `for_eval`: a conversation must be a dialogue the model can answer
    (`dialogue_problem`: user and assistant turns alternating after any system messages,
    ending with a user turn); one that is a single user message becomes its text, the same
    unit as that text given as text (the chat template renders a text prompt as exactly
    that one user turn), so its generations keep their keys.

    Ids and prompts must be unique: results are keyed by prompt id and generations by
    prompt, so two rows sharing either would silently merge into one.
    """
    raw = _source(path, split, columns, limit)
    rows, wheres, unused = [], [], set()
    by_id: dict[str, tuple[Where, bool]] = {}  # id -> (its row, whether it was given there)
    by_text: dict[str, Where] = {}
    conversational = False
    for where, row in raw.rows:
        item, used = _prompt_only(row, where)
        prompt = item["prompt"]
        conversational = conversational or isinstance(prompt, list)
        if for_eval and isinstance(prompt, list):
            problem = dialogue_problem(prompt)
            if problem:
                raise where.error(problem, "prompt")
            if not prompt[-1]["content"]:
                raise where.error("the last user turn is empty: nothing to answer", "prompt")
            if len(prompt) == 1:
                prompt = prompt[0]["content"]
        pid, given = _prompt_id(row, where, raw.text_cells)
        if pid in by_id:
            first, first_given = by_id[pid]
            at = first.describe()
            if given and first_given:
                why = f"id {show(pid)} is already the id of {at}"
            elif given:
                why = (f"id {show(pid)} is already the default id of {at} (a row without an "
                       f"id is named by its position)")
            else:  # this row has no id and its default was taken by an earlier one
                why = f"this row has no id, and its default id {show(pid)} is already the id of {at}"
            raise where.error(why, "id")
        text = canonical_json(prompt)
        if text in by_text:
            raise where.error(f"same prompt text as {by_text[text].describe()} (generations "
                              "are keyed by prompt text: the two would merge)", "prompt")
        by_id[pid], by_text[text] = (where, given), where
        unused |= set(row) - used - {"id"}
        rows.append({"id": pid, "prompt": prompt})
        wheres.append(where)
    return Loaded(raw.name, "prompt", rows, wheres, sorted(unused), conversational)


def load_prompts(path: str | Path, **options: Any) -> list[tuple[str, Any]]:
    """(id, prompt) pairs of a prompt file (see `load_prompt_rows`)."""
    return [(r["id"], r["prompt"]) for r in load_prompt_rows(path, **options).rows]


# ---------------------------------------------------------------- slots of a spec


def load_slot(slot: str, source: Any, dimensions: Sequence[str] | None = None) -> Loaded:
    """The rows of one slot of `data:` ('train', 'eval_prompts' or 'reg_prompts') from its
    `harness.spec.DataSource` (train: or `DimensionSources`, data.train_by_dimension);
    `dimensions`: data.dimensions, which rows with `labels` need."""
    if slot == "train" and isinstance(source, DimensionSources):
        return load_by_dimension(source)
    if slot == "train":
        return load_train(source.path, source.split, source.columns, source.limit,
                          source.soft_label_scale, dimensions)
    return load_prompt_rows(source.path, source.split, source.columns, source.limit,
                            for_eval=slot == "eval_prompts")


def method_problem(kind: str, loss: Any) -> str | None:
    """Why a loss cannot train on rows of `kind`, or None (pairs suit every method: KTO
    unpairs them, SPPO takes their prompts)."""
    if kind == "list" and not hasattr(loss, "list_loss"):
        return "takes pairs; ranked and best-of-n lists are supported by spo"
    if kind == "unpaired" and getattr(loss, "paired", True):
        return "takes pairs; unpaired {prompt, completion, label} rows feed kto"
    if kind == "prompt" and not getattr(loss, "iterative", False):
        return "needs responses; prompt-only training rows feed sppo (it samples its own)"
    return None


def check_chat_rows(loaded: Loaded, tokenizer: Any) -> None:
    """Conversational rows against the model's chat template, before any work: a template
    must exist, and each row's prompt/completion split must be prefix-consistent
    (`trainers.tokenize.conversation_problem`); the error names the row."""
    from trainers.tokenize import NO_TEMPLATE, conversation_problem, uses_chat_template

    if not loaded.conversational:
        return
    if not uses_chat_template(tokenizer):
        first = next((w for r, w in zip(loaded.rows, loaded.where)
                      if isinstance(r["prompt"], list)), loaded.where[0])
        raise first.error(NO_TEMPLATE, "prompt")
    for row, where in zip(loaded.rows, loaded.where):
        if not isinstance(row["prompt"], list):
            continue
        for key in ("chosen", "rejected", "completion", "responses"):
            for text in ([row[key]] if isinstance(row.get(key), str) else row.get(key, [])):
                problem = conversation_problem(tokenizer, row["prompt"], text)
                if problem:
                    raise where.error(problem, key)


def check_prompt_identity(prompts: list[tuple[str, Any]], source: str) -> None:
    """Refuse a prompt list, e.g. a task's own, in which two entries share an id or a text
    (the same rule `load_prompts` applies to a file; positions are 1-based). A prompt is
    text or a conversation that `load_prompt_rows` already checked."""
    by_id: dict[str, int] = {}
    by_text: dict[str, int] = {}
    for i, (pid, text) in enumerate(prompts, start=1):
        if not isinstance(pid, str) or not pid:
            raise InputError(f"prompt {i}: the id must be a non-empty string, not {show(pid)}",
                             file=source)
        if not (isinstance(text, str) and text) and not is_conversational(text):
            raise InputError(f"prompt {i}: the text must be a non-empty string, not "
                             f"{show(text)}", file=source)
        text = canonical_json(text)
        if pid in by_id:
            raise InputError(f"prompt {i} has the same id {show(pid)} as prompt {by_id[pid]}",
                             file=source)
        if text in by_text:
            raise InputError(f"prompt {i} has the same text as prompt {by_text[text]} "
                             f"(generations are keyed by prompt text: the two would merge)",
                             file=source)
        by_id[pid], by_text[text] = i, i


__all__ = ["KINDS", "Loaded", "check_chat_rows", "check_prompt_identity", "distinct_prompts",
           "load_pairs", "load_prompt_rows", "load_prompts", "load_slot", "load_train",
           "method_problem", "show"]
