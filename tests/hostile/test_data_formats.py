"""Hostile rows in every data format, through the real CLI: exit 2 and one line naming the
file, the row (a JSONL line; the row index of JSON arrays, Parquet, CSV, Arrow and
save_to_disk folders) and the field, before any work and with nothing stored."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.hostile.attack import refused
from tests.test_data_formats import write

OK = {"prompt": "q0", "chosen": "a1", "rejected": "a2"}
OK_SOFT = {**OK, "soft_label": 0.5}
CHAT = {"prompt": [{"role": "user", "content": "q0"}],
        "chosen": [{"role": "assistant", "content": "a1"}],
        "rejected": [{"role": "assistant", "content": "a2"}]}
UNPAIRED = {"prompt": "q0", "completion": "a1", "label": True}
LIST = {"prompt": "q0", "responses": ["a1", "a2"], "scores": [1.0, 2.0]}
BEST = {"prompt": "q0", "responses": ["a1", "a2"], "chosen_index": 0}


def _msg(role: str, content: str = "x") -> dict:
    return {"role": role, "content": content}


# (format, slot, rows, bad row's position (line or index), field, fragment of the reason)
CASES = {
    "jsonl-two-turn-completion": ("jsonl", "train", [CHAT, {**CHAT, "chosen": [
        _msg("assistant"), _msg("user"), _msg("assistant")]}], 2, "chosen", "final assistant"),
    "jsonl-label-not-bool": ("jsonl", "train", [UNPAIRED, {**UNPAIRED, "label": "yes"}], 2,
                             "label", "true (desirable)"),
    "jsonl-message-without-role": ("jsonl", "train", [CHAT, {**CHAT, "prompt": [
        _msg("user"), {"content": "hi"}]}], 2, "prompt", "message 1: 'role'"),
    "jsonl-prompt-ends-with-system": ("jsonl", "train", [CHAT, {**CHAT, "prompt": [
        _msg("system")]}], 2, "prompt", "last message's role"),
    "jsonl-implicit-without-prefix": ("jsonl", "train", [OK, {"chosen": "xa", "rejected": "yb"}],
                                      2, "prompt", "share no prefix"),
    "jsonl-chat-beside-text": ("jsonl", "train", [OK, {"chosen": CHAT["chosen"],
                                                       "rejected": "a2"}], 2, "rejected", ""),
    "jsonl-messages-row": ("jsonl", "train", [{"messages": [_msg("user")]}], 1, "messages",
                           "language-modeling"),
    "jsonl-unpaired-without-label": ("jsonl", "train", [UNPAIRED, {"prompt": "q", "completion": "a"}],
                                     2, "label", "missing field"),
    "jsonl-content-not-text": ("jsonl", "train", [CHAT, {**CHAT, "chosen": [
        {"role": "assistant", "content": 3}]}], 2, "chosen", "'content' must be a string"),
    "json-array-not-an-object": ("json", "train", [OK, "oops"], 1, None, "not a JSON object"),
    "json-array-soft-label": ("json", "train", [OK_SOFT, {**OK, "soft_label": 2}], 1,
                              "soft_label", "outside [0, 1]"),
    "parquet-empty-chosen": ("parquet", "train", [OK, {**OK, "chosen": ""}], 1, "chosen",
                             "non-empty string"),
    "parquet-nan-soft-label": ("parquet", "train", [OK_SOFT, {**OK, "soft_label": math.nan}], 1,
                               "soft_label", "must be a number"),
    "parquet-index-out-of-range": ("parquet", "train", [BEST, {**BEST, "chosen_index": 5}], 1,
                                   "chosen_index", "index into 'responses'"),
    "parquet-scores-length": ("parquet", "train", [LIST, {**LIST, "scores": [1.0]}], 1,
                              "scores", "as long as 'responses'"),
    "parquet-duplicate-id": ("parquet", "eval_prompts", [{"prompt": "a", "id": "x"},
                                                         {"prompt": "b", "id": "x"}], 1, "id",
                             "id of row 0"),
    "csv-soft-label-text": ("csv", "train", [OK_SOFT, {**OK, "soft_label": "abc"}], 1,
                            "soft_label", "must be a number"),
    "csv-empty-prompt-cell": ("csv", "train", [{**OK, "prompt": ""}, OK], 0, "prompt",
                              "non-empty string"),
    "csv-label-maybe": ("csv", "train", [UNPAIRED, {**UNPAIRED, "label": "maybe"}], 1, "label",
                        "true (desirable)"),
    "csv-duplicate-text": ("csv", "eval_prompts", [{"prompt": "a"}, {"prompt": "a"}], 1,
                           "prompt", "same prompt text as row 0"),
    "csv-soft-label-infinite": ("csv", "train", [OK_SOFT, {**OK, "soft_label": "inf"}], 1,
                                "soft_label", "non-finite"),
    "arrow-null-rejected": ("arrow", "train", [OK, {**OK, "rejected": None}], 1, "rejected",
                            "missing field"),
    "arrow-one-response": ("arrow", "train", [LIST, {**LIST, "responses": ["a1"],
                                                     "scores": [1.0]}], 1, "responses",
                           "at least two"),
    "disk-eval-multi-turn": ("disk", "eval_prompts", [
        {"prompt": [_msg("user", "a")]}, {"prompt": [_msg("user"), _msg("user")]}], 1,
        "prompt", "alternates user and assistant turns"),
    "parquet-eval-ends-with-assistant": ("parquet", "eval_prompts", [
        {"prompt": [_msg("user", "a")]}, {"prompt": [_msg("user"), _msg("assistant")]}], 1,
        "prompt",
        "ends with a user turn"),
    "disk-completion-from-user": ("disk", "train", [CHAT, {**CHAT, "chosen": [_msg("user")]}],
                                  1, "chosen", "final assistant"),
    "disk-reg-duplicate-text": ("disk", "reg_prompts", [{"prompt": "a"}, {"prompt": "a"}], 1,
                         "prompt", "same prompt text"),
}


def _run(tmp_path: Path, tiny_spec: Path, *sets: str, contains: tuple[str, ...]) -> str:
    results = tmp_path / "results"
    args = [a for s in sets for a in ("--set", s)]
    line = refused("train", tiny_spec, "--results-dir", results, *args, cwd=tmp_path,
                   results=results, code=2, contains=contains, timeout=120)
    assert line.isprintable()
    assert not (results / "store.sqlite").exists()
    return line


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_is_one_line_naming_file_row_and_field(tmp_path, tiny_spec, case):
    fmt, slot, rows, at, field, reason = CASES[case]
    path = write(rows, fmt, tmp_path / "data")
    where = f"{path}:{at}: " if fmt == "jsonl" else f"{path}, row {at}: "
    fragments = (where + (f"'{field}'" if field else ""), reason)
    _run(tmp_path, tiny_spec, f"data.{slot}={path}", contains=fragments)


def test_unpaired_rows_for_a_paired_method(tmp_path, tiny_spec):
    path = write([UNPAIRED], "parquet", tmp_path / "data")
    _run(tmp_path, tiny_spec, f"data.train={path}",
         contains=("'methods.0.name'", "unpaired", "kto"))


def test_conversational_rows_on_the_tiny_model(tmp_path, tiny_spec):
    path = write([CHAT], "jsonl", tmp_path / "data")
    _run(tmp_path, tiny_spec, f"data.train_file={path}",
         contains=("'base_model'", "chat template", "smollm2-135m-instruct"))


def test_a_mapped_column_that_no_row_has(tmp_path, tiny_spec):
    path = write([OK], "csv", tmp_path / "data")
    _run(tmp_path, tiny_spec, f"data.train={{path: {path}, columns: {{question: prompt}}}}",
         contains=(str(path), "'columns.question'"))


def test_score_labels_need_numbers(tmp_path, tiny_spec):
    rows = [{**OK, "score_chosen": "8", "score_rejected": "2"},
            {**OK, "score_chosen": "high", "score_rejected": "2"}]
    path = write(rows, "csv", tmp_path / "data")
    _run(tmp_path, tiny_spec, f"data.train={{path: {path}, soft_label_scale: 0.5}}",
         contains=(f"{path}, row 1: 'score_chosen'", "must be a number"))


def test_a_hub_id_not_in_the_cache(tmp_path, tiny_spec):
    _run(tmp_path, tiny_spec, "data.train=nobody-here/no-such-dataset-xyz",
         contains=("nobody-here/no-such-dataset-xyz", "never downloaded"))


def test_both_spellings_of_a_slot(tmp_path, tiny_spec):
    path = write([OK], "jsonl", tmp_path / "data")
    _run(tmp_path, tiny_spec, f"data.train={path}", f"data.train_file={path}",
         contains=("'data.train_file'", "not both"))
