"""Multi-turn eval prompts through the whole pipeline (issue 10, item 3).

A tiny chat model built here (a role-tagged chat template), conversational training pairs
and two-turn eval conversations given as data: generation samples each conversation through
the chat template, the two-turn llm judge (FastChat's pair-v2-multi-turn template) reads the
history, and the sentiment task samples no pairs of its own (data.train replaces them).
Judges that cannot read the prompts are refused before any work.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import assert_input_error, assert_ok, cli, leaderboard

# "role: content" per message; the generation prompt "assistant: " is a prefix of the
# rendered answer, so the prompt/completion split of a pair is prefix-consistent
CHAT = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
WORDS = "the sun is bright and good the night is dark and bad a happy day a sad song".split()


def _m(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    import random

    from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama

    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(200)]
    tok = bpe_tokenizer(texts + ["user: assistant: system:"], 300)
    tok.chat_template = CHAT
    model = tiny_llama(tok, hidden_size=32, num_layers=1, num_heads=2, max_positions=256, seed=0)
    folder = tmp_path_factory.mktemp("chat") / "tiny-chat"
    save_model(model.eval(), tok, folder)
    return folder


EVAL = [{"id": f"c{i}", "prompt": [_m("system", "Be kind."), _m("user", f"the {w} day"),
                                    _m("assistant", "a happy song"), _m("user", f"and {w}?")]}
        for i, w in enumerate(WORDS[:4])]
TRAIN = [{"prompt": [_m("user", f"a {w} night")], "chosen": [_m("assistant", "good and bright")],
          "rejected": [_m("assistant", "sad and dark")]} for w in sorted(set(WORDS))[:8]]


def _spec(tmp_path: Path, model: Path, judge: str) -> Path:
    for name, rows in (("train", TRAIN), ("eval", EVAL)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "multi_turn.yaml"
    spec.write_text(f"""
name: multi_turn
task: sentiment
base_model: {model}
data:
  train: {{path: train.jsonl}}
  eval_prompts: {{path: eval.jsonl}}
  reg_prompts: {{path: train.jsonl}}
methods:
  - name: dpo
    params: {{beta: 0.1}}
seeds: [0]
training: {{epochs: 1, batch_size: 4, learning_rate: 1.0e-3, max_length: 64}}
generation: {{n_samples: 2, max_new_tokens: 4, batch_size: 8}}
scorers: [{{name: oracle}}]
judges:
  - name: oracle
  - name: llm
    params: {judge}
baseline: sft
report: {{bootstrap_rounds: 20}}
""")
    return spec


def test_conversations_are_sampled_through_the_template_and_judged_with_their_history(
        tmp_path, chat_model):
    from evaluators.generation import HFBackend, SamplingParams
    from harness.hashing import seed_from

    judge = f"{{model: {chat_model}, template: mt_bench_multi_turn, max_new_tokens: 3}}"
    spec = _spec(tmp_path, chat_model, judge)
    proc = cli("run", spec, "--results-dir", "out", cwd=tmp_path, timeout=600)
    assert_ok(proc)
    board = {r["label"]: r for r in leaderboard(tmp_path / "out")}
    assert set(board) == {"sft", "dpo(beta=0.1)"}
    assert board["dpo(beta=0.1)"]["n_prompts"] == 4 and board["dpo(beta=0.1)"]["n_samples"] == 8

    db = sqlite3.connect(tmp_path / "out" / "store.sqlite")
    rows = db.execute("SELECT model_key, prompt_id, sample_index, prompt, token_ids "
                      "FROM generations ORDER BY prompt_id, sample_index").fetchall()
    assert {json.dumps(json.loads(r[3]), sort_keys=True) for r in rows} == {
        json.dumps(e["prompt"], sort_keys=True) for e in EVAL}  # stored as the conversation
    # the reference's sample equals the backend's sample of that conversation, which
    # encode_prompt renders with the chat template (history and system message included)
    ref = [r for r in rows if r[1] == "c0" and r[2] == 1]
    backend = HFBackend(str(chat_model))
    outs = {}
    for model_key, *_rest, token_ids in ref:
        params = SamplingParams(max_new_tokens=4, temperature=1.0, top_p=1.0)
        (out,) = backend.generate_batch([(EVAL[0]["prompt"], 1)], params,
                                        seed_from(0, model_key))
        outs[model_key] = (out.token_ids, json.loads(token_ids))
    assert any(mine == stored for mine, stored in outs.values()), outs  # the sft model's

    # every llm judgment was asked in both orders (a verdict or an unparsed reply, never a
    # render error), unless the two answers were the same (a tie without asking)
    infos = [json.loads(i) for (i,) in db.execute("SELECT info FROM judgments")]
    llm = [i for i in infos if i.get("judge") == "llm"]
    assert llm and all("error" not in i and i["calls"] in (0, 2) for i in llm), llm[:2]
    assert sum(i["calls"] == 2 for i in llm) >= len(llm) // 2
    # data.train replaced the task's pairs: none were sampled
    kinds = [k for (k,) in db.execute("SELECT kind FROM artifacts")]
    assert "pairs" not in kinds and "reference" not in kinds


@pytest.mark.parametrize("judge,contains", [
    ("{protocol: mt_bench_pair}", ["eval.jsonl:1:", "'prompt'", "judges.1 (llm)",
                                   "2 user turns", "mt_bench_pair_multi_turn"]),
    ("{protocol: alpaca_eval_2}", ["eval.jsonl:1:", "2 user turns"]),
])
def test_a_single_turn_judge_of_multi_turn_prompts_is_refused_before_any_work(
        tmp_path, chat_model, judge, contains):
    spec = _spec(tmp_path, chat_model, judge)
    line = assert_input_error(cli("run", spec, "--results-dir", "out", cwd=tmp_path))
    assert all(c in line for c in contains), line
    assert not (tmp_path / "out" / "store.sqlite").exists()


def test_a_two_turn_judge_of_the_tasks_text_prompts_is_refused_before_any_work(tmp_path):
    from tests.conftest import write_spec

    spec = write_spec(tmp_path / "tiny.yaml")
    line = assert_input_error(cli(
        "run", spec, "--results-dir", "out", "--set",
        "judges=[{name: llm, params: {protocol: mt_bench_pair_multi_turn}}]", cwd=tmp_path))
    assert "judges.0" in line and "one turn of text" in line, line
    assert not (tmp_path / "out" / "store.sqlite").exists()
