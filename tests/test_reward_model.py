"""Reward models: chat formatting without a doubled BOS, scores equal to a direct forward
pass, the Bradley-Terry judge, and content fingerprints."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch

from evaluators.judges import JUDGES
from evaluators.reward_model import (
    RewardModelJudge,
    RewardModelScorer,
    encode_conversation,
    load_reward_model,
    render_conversation,
)
from evaluators.scorers import SCORERS
from harness.base_models import model_fingerprint
from harness.errors import InputError

WORDS = "user assistant good bad fine answer question the a is very".split()
CHAT = ("<s>{% for m in messages %} {{ m['role'] }} {{ m['content'] }} </s>{% endfor %}")


def _tokenizer(chat: bool):
    """Word tokenizer that adds BOS itself (like Llama's), with or without a chat template."""
    from tokenizers import processors

    from harness.tasks.tiny_models import word_tokenizer

    tok = word_tokenizer(WORDS)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    if chat:
        tok.chat_template = CHAT
    return tok


def _save_rm(folder: Path, chat: bool = True, num_labels: int = 1, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = _tokenizer(chat)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, num_labels=num_labels,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():  # a visible reward spread (the score head starts near zero)
        model.score.weight.normal_(0, 1.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    return _save_rm(tmp_path_factory.mktemp("rm") / "rm")


def _direct_reward(folder: Path, ids: list[int]) -> float:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        return float(model(torch.tensor([ids])).logits[0, 0])


def test_chat_formatting_never_doubles_bos(rm_dir: Path):
    _, tok = load_reward_model(rm_dir)
    text = render_conversation(tok, "the question", "a good answer")
    assert text == "<s> user the question </s> assistant a good answer </s>"
    naive = tok(text)["input_ids"]  # what a plain tokenizer call would give
    assert naive[:2] == [tok.bos_token_id, tok.bos_token_id]
    ids = encode_conversation(tok, text, max_length=64)
    assert ids == naive[1:] and ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids == [tok.convert_tokens_to_ids(w) for w in text.split()]

    plain = _tokenizer(chat=False)  # no chat template: prompt + response, the tokenizer's BOS
    text = render_conversation(plain, "the question", "a good answer")
    assert text == "the question a good answer"
    ids = encode_conversation(plain, text, max_length=64)
    assert ids[0] == plain.bos_token_id and ids.count(plain.bos_token_id) == 1
    assert render_conversation(plain, "the question ", "answer") == "the question answer"


def test_scorer_equals_direct_forward_pass(rm_dir: Path):
    scorer = RewardModelScorer(None, model=str(rm_dir), batch_size=3, max_length=64)
    prompt = "the question"
    answers = ["good", "a very good answer is the answer", "bad answer", "fine fine", "a"]
    got = scorer.score(prompt, answers)  # batches of 3, right-padded to different lengths
    _, tok = load_reward_model(rm_dir)
    want = [_direct_reward(rm_dir, encode_conversation(
        tok, render_conversation(tok, prompt, a), 64)) for a in answers]
    assert got == pytest.approx(want, abs=1e-5)
    assert len(set(round(x, 4) for x in got)) == len(answers)
    assert SCORERS.get("reward_model") is RewardModelScorer
    assert scorer.fingerprint["model"] == model_fingerprint(rm_dir)


def test_judge_is_sigmoid_of_reward_difference(rm_dir: Path):
    judge = RewardModelJudge(None, model=str(rm_dir), batch_size=2)
    scorer = RewardModelScorer(None, model=str(rm_dir))
    base, cand = ["good", "bad answer", "same"], ["bad", "a very good answer", "same"]
    out = judge.judge_detailed("the question", base, cand)
    for b, c, (p, info) in zip(base, cand, out):
        rb, rc = scorer.score("the question", [b, c])
        assert p == pytest.approx(1 / (1 + math.exp(-(rc - rb))), abs=1e-6)
        if b != c:
            assert info["reward_baseline"] == pytest.approx(rb, abs=1e-5)
            assert info["calls"] == 2 and info["prompt_tokens"] > 0
    assert out[2] == (0.5, {"judge": "reward_model", "longer": "equal", "calls": 0,
                            "identical": True})
    assert judge.judge("the question", base, cand) == [p for p, _ in out]
    assert JUDGES.get("reward_model") is RewardModelJudge


def test_fingerprint_follows_content_not_location(tmp_path: Path):
    a = _save_rm(tmp_path / "a", seed=0)
    copy = tmp_path / "copy"
    shutil.copytree(a, copy)  # new mtimes, same bytes: same key (a moved store stays valid)
    assert model_fingerprint(copy) == model_fingerprint(a)
    before = model_fingerprint(a)
    _save_rm(a, seed=1)  # retrained into the same folder: same config and file sizes
    assert model_fingerprint(a) != before
    assert RewardModelJudge(None, model=str(a)).fingerprint != \
        RewardModelJudge(None, model=str(copy)).fingerprint


def test_rejects_multi_output_models_and_missing_folders(tmp_path: Path):
    two = _save_rm(tmp_path / "two", num_labels=2)
    with pytest.raises(InputError, match="num_labels=1"):
        RewardModelScorer(None, model=str(two)).score("q", ["a"])
    with pytest.raises(InputError, match="does not exist"):
        RewardModelJudge(None, model=str(tmp_path / "nowhere"))
