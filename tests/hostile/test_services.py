"""Service faults: an OpenAI-compatible server that answers 200 with something that is no
completion (garbage, the wrong JSON, no choices, no text) or drops the connection.

The generation backend must raise a ServiceError (exit 1 at the CLI) of ONE line naming
the URL, credentials redacted, and what was wrong, after the client's retries; the LLM
judge must record such a call as a failed judgment with that reason, and raise a
ServiceError only when no call of a batch got an answer. One case runs the whole pipeline:
the batches generated before the server broke stay stored, and the rerun does the rest.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evaluators.generation import SamplingParams
from evaluators.llm_judge import JudgeServiceError, LLMJudge, OpenAIChatBackend
from evaluators.openai_backend import BackendError, MalformedReply, OpenAIBackend, parse_reply
from harness.errors import ServiceError
from tests import conftest
from tests.conftest import TINY_SPEC, cli, describe, table_counts, write_spec
from tests.hostile.attack import refused

GREEDY = SamplingParams(max_new_tokens=4, temperature=0.0)

Action = tuple  # ("ok", text) | ("json", obj) | ("body", bytes, content type) | ...


class ReplyServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 (port 0) that answers on cue.

    Each POST takes the next entry of `script`, else `default`, else asks `decide(path,
    body)`. Actions: ("ok", text) a proper (chat) completion; ("echo",) one whose text is
    the request's Authorization header; ("json", obj) a 200 with that JSON; ("body", bytes,
    content_type) a 200 with those bytes; ("disconnect",) close without answering;
    ("truncate",) promise 1000 bytes, send 20, close; ("status", code) an error reply.
    """

    def __init__(self) -> None:
        self.script: list[Action] = []
        self.default: Action | None = ("ok", "a1")
        self.decide: Callable[[str, dict], Action] | None = None
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                except ValueError:  # a request the client abandoned while sending it
                    return
                with server.lock:
                    server.requests.append({"path": self.path, "body": body,
                                            "auth": self.headers.get("Authorization")})
                    action = (server.script.pop(0) if server.script
                              else server.default if server.default is not None
                              else server.decide(self.path, body))
                try:
                    server.answer(self, action, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, action: Action, body: dict) -> None:
        kind = action[0]
        if kind == "disconnect":
            handler.close_connection = True
            return
        if kind == "truncate":
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            handler.wfile.write(b'{"choices": [{"text"')
            handler.close_connection = True
            return
        status, content_type = 200, "application/json"
        if kind in ("ok", "echo"):
            text = action[1] if kind == "ok" else f"you sent {handler.headers.get('Authorization')}"
            data = json.dumps(completion(handler.path, body, text)).encode()
        elif kind == "json":
            data = json.dumps(action[1]).encode()
        elif kind == "body":
            data, content_type = action[1], action[2]
        elif kind == "status":
            status = action[1]
            data = json.dumps({"error": {"message": "injected", "code": status}}).encode()
        else:
            raise AssertionError(f"unknown action {action!r}")
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(path: str, body: dict, text: str) -> dict[str, Any]:
    """A well-formed reply for the endpoint at `path`."""
    if path.endswith("/chat/completions"):
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}
        return {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [choice],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]}


@pytest.fixture
def server() -> Iterator[ReplyServer]:
    s = ReplyServer()
    yield s
    s.close()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness.tasks.tiny_models import word_tokenizer

    folder = tmp_path_factory.mktemp("wordtok")
    word_tokenizer(["a0", "a1", "a2", "q0", "q1", "you", "sent", "Bearer"]).save_pretrained(folder)
    return folder


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "sk-hostile-" + secrets.token_hex(16)
    monkeypatch.setenv("SPO_HOSTILE_KEY", value)
    return value


def backend(url: str, folder: Path, **options: Any) -> OpenAIBackend:
    options = {"max_retries": 0, "timeout": 5, **options}
    return OpenAIBackend(str(folder), base_url=url, model="m", api_key_env="SPO_HOSTILE_KEY",
                         **options)


def one_line_service_error(exc: BaseException, url: str, *fragments: str) -> str:
    text = str(exc)
    assert isinstance(exc, ServiceError), repr(exc)
    assert "\n" not in text and text.strip() == text, text
    assert url in text, text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return text


# ---------------------------------------------------------------------------- generation

MALFORMED = [  # (case, reply, fragment of the error), both endpoints
    ("html-page", ("body", b"<html><body>502 Bad Gateway</body></html>", "text/html"),
     "the body is not JSON: '<html><body>502 Bad"),
    ("garbage-as-json", ("body", b"{not json at all", "application/json"), "not JSON"),
    ("empty-body", ("body", b"", "application/json"), "not JSON: (empty)"),
    ("not-utf8", ("body", b"\xff\xfe\x00garbage", "application/json"), "not JSON"),
    ("deep-nesting", ("body", b"[" * 100_000 + b"]" * 100_000, "application/json"), "not JSON"),
    ("json-array", ("json", [1, 2]), "JSON but not an object"),
    ("wrong-schema", ("json", {"object": "list", "data": []}),
     "no 'choices' list in the reply (its keys: 'object', 'data')"),
    ("empty-object", ("json", {}), "(an empty object)"),
    ("choices-null", ("json", {"choices": None}), "no 'choices' list"),
    ("choices-empty", ("json", {"choices": []}), "'choices' is empty"),
    ("choice-a-string", ("json", {"choices": ["a1"]}), "choices[0] is str, not an object"),
]
COMPLETIONS_ONLY = [
    ("text-missing", ("json", {"choices": [{"index": 0, "finish_reason": "stop"}]}),
     "choices[0].text is missing, not a string"),
    ("text-int", ("json", {"choices": [{"text": 7}]}), "choices[0].text is int"),
    ("text-null", ("json", {"choices": [{"text": None}]}), "choices[0].text is null"),
    ("token-ids-strings", ("json", {"choices": [{"text": "a1", "token_ids": ["x"]}]}),
     "token_ids is not a list of token ids"),
    ("token-id-huge", ("json", {"choices": [{"text": "a1", "token_ids": [2**40]}]}),
     "token_ids is not a list of token ids"),
    ("finish-reason-int", ("json", {"choices": [{"text": "a1", "finish_reason": 3}]}),
     "finish_reason is int"),
]
CHAT_ONLY = [
    ("message-missing", ("json", {"choices": [{"index": 0}]}), "choices[0].message is missing"),
    ("content-missing", ("json", {"choices": [{"message": {"role": "assistant"}}]}),
     "choices[0].message.content is missing, not a string"),
    ("content-null", ("json", {"choices": [{"message": {"content": None}}]}),
     "choices[0].message.content is null"),
    ("content-list", ("json", {"choices": [{"message": {"content": ["a1"]}}]}),
     "choices[0].message.content is list"),
]


@pytest.mark.parametrize("endpoint, case, reply, fragment", [
    *[("completions", *c) for c in MALFORMED + COMPLETIONS_ONLY],
    *[("chat", *c) for c in MALFORMED + CHAT_ONLY],
], ids=lambda v: v if isinstance(v, str) else None)
def test_malformed_200_is_one_line_service_error(server, tokenizer_dir, key, endpoint, case,
                                                 reply, fragment):
    server.default = reply
    b = backend(server.url, tokenizer_dir, endpoint=endpoint, max_retries=2)
    with pytest.raises(BackendError) as err:
        b.generate_batch([("q0", 0)], GREEDY, 0)
    path = "chat/completions" if endpoint == "chat" else "completions"
    one_line_service_error(err.value, f"{server.url}/{path} sent a malformed reply: ", fragment)
    assert key not in str(err.value)
    # a 200 is not retried (a wrong reply is the server's configuration, not a hiccup): the
    # batch fails at once, and the next run asks again
    assert len(server.requests) == 1


def test_a_disconnect_is_retried_then_succeeds(server, tokenizer_dir, key):
    server.script = [("disconnect",)]
    (got,) = backend(server.url, tokenizer_dir, max_retries=1).generate_batch(
        [("q0", 0)], GREEDY, 0)
    assert got.text == "a1" and len(server.requests) == 2


@pytest.mark.parametrize("fault", [("disconnect",), ("truncate",)])
def test_a_server_that_keeps_disconnecting_fails_after_the_retries(server, tokenizer_dir, key,
                                                                   fault):
    server.default = fault
    t0 = time.time()
    with pytest.raises(BackendError) as err:
        backend(server.url, tokenizer_dir, max_retries=1).generate_batch([("q0", 0)], GREEDY, 0)
    one_line_service_error(err.value, f"the connection to {server.url}/completions failed "
                           "(1 retries)")
    assert len(server.requests) == 2 and time.time() - t0 < 10


def test_one_bad_reply_fails_the_whole_batch_and_returns_nothing_of_it(server, tokenizer_dir,
                                                                       key):
    """The pipeline stores a batch whole or not at all; a partial batch never comes back."""
    server.default = None
    server.decide = lambda path, body: (("json", {"choices": []}) if body["seed"] % 4 == 0
                                        else ("ok", "a2"))
    b = backend(server.url, tokenizer_dir, concurrency=4)
    for seed in range(20):  # some batch seed gives one sample a seed divisible by 4
        try:
            b.generate_batch([("q0", i) for i in range(4)], GREEDY, seed)
        except BackendError as exc:
            one_line_service_error(exc, server.url, "'choices' is empty")
            return
    pytest.fail("no request seed was divisible by 4")


def test_url_credentials_never_shown(server, tokenizer_dir, key):
    password = "pw-" + secrets.token_hex(8)
    url = f"http://alice:{password}@127.0.0.1:{server.port}/v1"
    shown = f"http://alice:{password}@127.0.0.1:{server.port}/v1".replace(
        f"alice:{password}", "<redacted>")
    b = backend(url, tokenizer_dir)
    (got,) = b.generate_batch([("q0", 0)], GREEDY, 0)  # it still connects
    assert got.text == "a1"
    server.default = ("body", f"oops {password} at {url}".encode(), "text/plain")
    with pytest.raises(BackendError) as err:
        b.generate_batch([("q0", 0)], GREEDY, 0)
    text = one_line_service_error(err.value, f"{shown}/completions")
    for seen in (text, repr(b), json.dumps(b.fingerprint()), repr(vars(b))):
        assert password not in seen and key not in seen, seen
    assert b.fingerprint()["base_url"] == shown


# ---------------------------------------------------------------------------- parse_reply

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["choices", "text", "message", "content", "token_ids",
                         "finish_reason", "x"]), inner, max_size=4),
    max_leaves=15)


@settings(max_examples=300, deadline=None)
@given(obj=_json, endpoint=st.sampled_from(["completions", "chat"]))
def test_parse_reply_accepts_a_completion_or_says_what_is_wrong(obj, endpoint):
    try:
        r = parse_reply(json.dumps(obj).encode(), endpoint)
    except MalformedReply as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert isinstance(r.text, str)
    assert r.token_ids is None or all(isinstance(i, int) for i in r.token_ids)


# ---------------------------------------------------------------------------- the LLM judge

def chat_backend(url: str, batch_size: int = 1, max_retries: int = 0) -> OpenAIChatBackend:
    return OpenAIChatBackend("judge-model", url, "SPO_HOSTILE_KEY", timeout=5,
                             max_retries=max_retries, batch_size=batch_size)


MESSAGES = [{"role": "user", "content": "which is better?"}]


@pytest.mark.parametrize("case, reply, fragment", MALFORMED + CHAT_ONLY + [
    ("logprobs-garbage", ("json", {"choices": [{"message": {"content": "m"},
                                                "logprobs": {"content": "m"}}]}),
     "logprobs.content is not a list"),
    ("logprob-not-a-number", ("json", {"choices": [{"message": {"content": "m"}, "logprobs": {
        "content": [{"token": "m", "top_logprobs": [{"token": "m", "logprob": "x"}]}]}}]}),
     "top_logprobs: an entry without"),
    ("logprob-overflows", ("json", {"choices": [{"message": {"content": "m"}, "logprobs": {
        "content": [{"token": "m", "top_logprobs": [{"token": "m", "logprob": 1e6}]}]}}]}),
     "top_logprobs: an entry without"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_judge_call_with_malformed_reply_fails_with_its_reason(server, key, case, reply,
                                                               fragment):
    server.script = [reply]  # the first call; the second gets a proper answer
    good, bad = None, None
    replies = chat_backend(server.url).complete([MESSAGES, MESSAGES], 4, {"first": "m",
                                                "second": "M"}, logprobs=True)
    bad, good = replies
    assert good.text == "a1" and good.error is None
    assert bad.text is None
    assert f"{server.url}/chat/completions sent a malformed reply: " in bad.error
    assert fragment in bad.error and "\n" not in bad.error and key not in bad.error


def test_judge_batch_where_every_call_fails_is_a_service_error(server, key):
    server.default = ("body", f"proxy error; you sent Bearer {key}".encode(), "text/plain")
    with pytest.raises(JudgeServiceError) as err:
        chat_backend(server.url, batch_size=3).complete([MESSAGES] * 3, 4, {"first": "m",
                                                        "second": "M"}, logprobs=False)
    text = one_line_service_error(err.value, f"{server.url}/chat/completions",
                                  "all 3 calls of a batch failed", "not JSON")
    assert key not in text and "<redacted>" in text


def test_judge_server_that_disconnects_is_retried_then_a_service_error(server, key):
    server.default = ("disconnect",)
    with pytest.raises(JudgeServiceError) as err:
        chat_backend(server.url, max_retries=1).complete([MESSAGES], 4, {"first": "m",
                                                         "second": "M"}, logprobs=False)
    one_line_service_error(err.value, f"the connection to {server.url}/chat/completions "
                           "failed (1 retries)")
    assert len(server.requests) == 2


def test_judge_request_refused_with_400_is_a_failed_call_not_a_service_error(server, key):
    server.default = ("status", 400)  # e.g. too long for the context: this request's fault
    (reply,) = chat_backend(server.url).complete([MESSAGES], 4, {"first": "m", "second": "M"},
                                                 logprobs=False)
    assert reply.text is None and "answered HTTP 400" in reply.error


def test_judge_credentials_never_shown(server, key):
    password = "pw-" + secrets.token_hex(8)
    b = chat_backend(f"http://bob:{password}@127.0.0.1:{server.port}/v1")
    server.default = ("status", 400)
    (reply,) = b.complete([MESSAGES], 4, {"first": "m", "second": "M"}, logprobs=False)
    for seen in (reply.error, repr(b), repr(vars(b))):
        assert password not in seen and key not in seen, seen
    assert f"http://<redacted>@127.0.0.1:{server.port}/v1/chat/completions" in reply.error


def test_malformed_judge_reply_is_stored_as_a_failed_judgment(server, key, tmp_path):
    """Through the judge stage's own code: a call with a malformed reply fails its judgment
    with the reason; the other judgments of the batch are made and stored."""
    from evaluators.scoring import pairwise_judgments
    from harness.store import Store
    from harness.units import Units, judgment_key

    server.default = None

    def decide(path: str, body: dict) -> Action:
        user = body["messages"][-1]["content"]
        if "BROKEN" in user:
            return ("json", {"choices": []})
        return ("ok", "m")  # "m": the answer shown first is better (alpaca_eval)

    server.decide = decide
    judge = LLMJudge(None, template="alpaca_eval", model="judge-model", backend="openai",
                     base_url=server.url, api_key_env="SPO_HOSTILE_KEY", max_retries=0,
                     timeout=5, batch_size=2, soft=False)
    base = [{"key": f"b{i}", "prompt_id": f"p{i}", "sample_index": 0, "prompt": f"prompt {i}",
             "text": f"base {i}", "token_ids": [], "info": {}} for i in range(3)]
    cand = [{**g, "key": f"c{i}", "text": "BROKEN" if i == 1 else f"cand {i}"}
            for i, g in enumerate(base)]
    store = Store(tmp_path / "results")
    assert pairwise_judgments(Units(store, [], 1, {}, 0), judge, base, cand) == (3, 0)
    keys = [judgment_key(judge.fingerprint, c["prompt"], b["text"], c["text"])
            for b, c in zip(base, cand)]
    rows = store.judgments(keys)
    assert [rows[k]["status"] for k in (keys[0], keys[2])] == ["ok", "ok"]
    status = rows[keys[1]]["status"]
    assert status.startswith("failed: ") and "'choices' is empty" in status
    assert f"{server.url}/chat/completions" in status and key not in status


# ---------------------------------------------------------------------------- the CLI

def test_cli_malformed_server_exits_1_in_one_line_and_keeps_finished_batches(
        tmp_path, server, monkeypatch):
    """Two batches are answered, then garbage: exit 1, one line naming the URL (credentials
    redacted) and the reason; the two batches are stored and the rerun only does the rest."""
    key = "sk-hostile-" + secrets.token_hex(16)
    password = "pw-" + secrets.token_hex(8)
    monkeypatch.setitem(conftest.ENV, "SPO_HOSTILE_PIPELINE_KEY", key)
    url = f"http://carol:{password}@127.0.0.1:{server.port}/v1"
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC.replace(
        "generation:\n",
        "generation:\n  backend: openai\n"
        f"  options: {{base_url: '{url}', api_key_env: SPO_HOSTILE_PIPELINE_KEY, "
        "max_retries: 0, timeout: 5}\n"))
    results = tmp_path / "results"
    args = ("run", spec, "--results-dir", results, "--set", "training.epochs=1",
            "--set", "methods=[{name: dpo, params: {beta: 1}}]")
    # 2 models x 3 prompts x 4 samples = 24 generations in batches of 4: answer 2 batches
    server.script = [("ok", "a1")] * 8
    server.default = ("body", b"<html>Service Unavailable</html>", "text/html")
    line = refused(*args, cwd=tmp_path, results=results, code=1, store_unchanged=False,
                   contains=(f"http://<redacted>@127.0.0.1:{server.port}/v1/completions",
                             "sent a malformed reply", "the body is not JSON"))
    assert password not in line and key not in line
    assert table_counts(results)["generations"] == 8

    server.default = ("ok", "a1")
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    counts = json.loads((results / "run.json").read_text())["counts"]
    assert counts["train"]["computed"] == 0 and counts["generate"]["computed"] == 16
    # (with credentials in the URL the HTTP client sends them as Basic auth, not the key)
    assert all(r["auth"].startswith("Basic ") for r in server.requests)
    for p in results.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert key.encode() not in data and password.encode() not in data, p


def test_a_judge_service_error_stops_the_stage_and_stores_nothing(tmp_path):
    """A judge whose server fails every call raises ServiceError: the stage stops (the CLI
    exits 1) instead of filling the store with failures; finished judgments stay."""
    from evaluators.scoring import pairwise_judgments
    from harness.errors import ServiceError
    from harness.store import Store
    from harness.units import Units

    class DownJudge:
        fingerprint = {"judge": "down"}

        def judge_pairs(self, pairs):
            raise JudgeServiceError("http://127.0.0.1:9/v1: every call failed")

    base = [{"key": f"b{i}", "prompt_id": f"p{i}", "sample_index": 0, "prompt": f"prompt {i}",
             "text": f"base {i}", "token_ids": [], "info": {}} for i in range(3)]
    cand = [{**g, "key": f"c{i}", "text": f"cand {i}"} for i, g in enumerate(base)]
    store = Store(tmp_path / "results")
    with pytest.raises(ServiceError):
        pairwise_judgments(Units(store, [], 1, {}, 0), DownJudge(), base, cand)
    assert store.conn.execute("SELECT count(*) FROM judgments").fetchone()[0] == 0
