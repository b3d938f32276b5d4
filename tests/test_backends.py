"""The `vllm` and `openai` generation backends, against real engines and a fault injector.

- vLLM's offline engine runs in `.venv-vllm` (scripts/install_vllm.sh: vLLM's CPU build pins
  its own torch/transformers), in a subprocess that prints its completions as JSON;
- the `openai` backend talks to a real vLLM OpenAI-compatible server on loopback, started
  once for this module from `.venv-vllm`;
- HFBackend, in this process, is the reference: greedy decoding must give the same token ids
  and texts on every backend, because all of them condition on `encode_prompt`'s ids;
- retries, timeouts, the concurrency limit and the API key's secrecy are checked against a
  stdlib HTTP server that answers 429/500/stalls on cue and records what it was sent.

The vLLM parts skip, saying why, where `.venv-vllm` is missing or vLLM does not import there.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import socket
import subprocess
import threading
import time
import traceback
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evaluators.generation import BACKENDS, HFBackend, SamplingParams
from evaluators.openai_backend import BackendError, OpenAIBackend
from tests.conftest import (
    CLI,
    ENV,
    N_GENERATIONS,
    REPO,
    TINY_SPEC,
    describe,
    store_contents,
    table_counts,
    write_spec,
)
from trainers.tokenize import encode_prompt

VLLM_PY = REPO / ".venv-vllm" / "bin" / "python"
VLLM_ENV = {**ENV, "VLLM_CPU_KVCACHE_SPACE": "1", "TQDM_DISABLE": "1"}  # 1 GiB KV cache: enough

PROMPTS = ["the big cat", "the small", "the red fox sat on the", "the happy dog jumped under the",
           "the slow bird hid near", "one two", "three four five", "seven"]
GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0)
SHORT = SamplingParams(max_new_tokens=3, temperature=0.0)      # cut before EOS: finished=False
SAMPLING = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.95)
SAMPLE_REQUESTS = [("the big cat", i) for i in range(6)] + [("three", i) for i in range(2)]
# Chat template of the test model: BOS + the user's text, so chat-rendered prompts are the same
# ids as plain ones and the `chat` endpoint can be compared with the others.
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"


def as_dicts(completions) -> list[dict]:
    return [asdict(c) for c in completions]


# ------------------------------------------------------------------ the model

def corpus(rng: random.Random) -> list[str]:
    """Sentences with structure a 2-layer model learns in seconds: template sentences (short
    greedy answers, diverse samples) and counting runs (long greedy answers ending in EOS)."""
    adj = "big small red blue happy sad fast slow".split()
    noun = "cat dog bird fox mat tree hat box".split()
    verb = "sat ran slept jumped sang hid".split()
    nums = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
            "fifteen sixteen").split()

    def sentence() -> str:
        s = f"the {rng.choice(adj)} {rng.choice(noun)} {rng.choice(verb)}"
        for _ in range(rng.randint(0, 6)):
            s += f" {rng.choice('on under near behind'.split())} the {rng.choice(adj)} {rng.choice(noun)}"
        return s + "."

    def count() -> str:
        a = rng.randrange(0, 8)
        return " ".join(nums[a:rng.randrange(a + 8, len(nums) + 1)]) + "."

    return [sentence() if i % 2 else count() for i in range(800)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama (head_dim 32: vLLM's CPU attention has no kernel for 16) with a BPE
    tokenizer and a chat template, SFT'd for a few seconds so its greedy choices are clear."""
    from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama
    from trainers.sft import train_sft

    texts = corpus(random.Random(0))
    tok = bpe_tokenizer(texts, 400)
    tok.chat_template = CHAT_TEMPLATE
    model = tiny_llama(tok, hidden_size=64, num_layers=2, num_heads=2, max_positions=256, seed=0)
    examples = [(" ".join(t.split()[:3]), " " + " ".join(t.split()[3:])) for t in texts]
    train_sft(model, tok, examples, epochs=5, batch_size=32, learning_rate=1e-2, max_length=48,
              seed=0)
    folder = tmp_path_factory.mktemp("backends") / "tiny"
    save_model(model.eval(), tok, folder)
    return folder


@pytest.fixture(scope="module")
def hf_reference(model_dir) -> dict[str, list[dict]]:
    hf = HFBackend(str(model_dir))
    requests = [(p, 0) for p in PROMPTS]
    return {"greedy": as_dicts(hf.generate_batch(requests, GREEDY, 0)),
            "short": as_dicts(hf.generate_batch(requests, SHORT, 0))}


def test_reference_is_a_meaningful_comparison(hf_reference):
    greedy = hf_reference["greedy"]
    assert all(c["finished"] for c in greedy), greedy
    assert max(len(c["token_ids"]) for c in greedy) >= 10, greedy  # long answers, not just EOS
    assert not any(c["finished"] for c in hf_reference["short"])


# ------------------------------------------------------------------ vLLM offline, in .venv-vllm

@pytest.fixture(scope="module")
def vllm_venv() -> Path:
    """Listed first by the fixtures that need it, so a missing venv skips before any build."""
    if not VLLM_PY.exists():
        pytest.skip(f"{VLLM_PY} missing: run `bash scripts/install_vllm.sh` for the vLLM tests")
    return VLLM_PY


VLLM_SCRIPT = r"""
import dataclasses, json, sys, time

def main():
    t0 = time.time()
    try:
        import vllm  # noqa: F401
    except Exception as exc:
        print("NO_VLLM", repr(exc)); sys.exit(3)
    import psutil
    from evaluators.generation import SamplingParams
    from evaluators.vllm_backend import VLLMBackend
    out = {"engines": []}
    for job in json.loads(sys.argv[1]):
        if job.get("expect_error"):
            try:
                VLLMBackend(job["model_dir"], max_model_len=256)
                out["engines"].append({"error": None})
            except Exception as exc:
                out["engines"].append({"error": f"{type(exc).__name__}: {exc}"})
            continue
        backend = VLLMBackend(job["model_dir"], max_model_len=256)  # closes the one before
        out["startup_s"] = out.get("startup_s", time.time() - t0)
        res = {}
        for name, (requests, params, seed) in job["calls"].items():
            got = backend.generate_batch([tuple(r) for r in requests], SamplingParams(**params),
                                         seed)
            res[name] = [dataclasses.asdict(c) for c in got]
        out["engines"].append(res)
    out["engine_processes"] = sum(p.name() == "VLLM::EngineCore" and p.status() != "zombie"
                                  for p in psutil.Process().children(recursive=True))
    print("RESULT " + json.dumps(out), flush=True)

if __name__ == "__main__":
    main()
"""


@pytest.fixture(scope="module")
def lora_dir(model_dir) -> Path:
    """A PEFT LoRA adapter on the tiny model, with random (non-zero) B so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)
    folder = model_dir.parent / "lora"
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def head16_dir(model_dir) -> Path:
    """The bandit task's shape (hidden 64, 4 heads): head size 16, which vLLM's CPU lacks."""
    from harness.base_models import load_tokenizer
    from harness.tasks.tiny_models import save_model, tiny_llama

    tok = load_tokenizer(model_dir)
    folder = model_dir.parent / "head16"
    save_model(tiny_llama(tok, hidden_size=64, num_layers=1, num_heads=4, max_positions=64,
                          seed=0), tok, folder)
    return folder


@pytest.fixture(scope="module")
def vllm_offline(vllm_venv, model_dir, lora_dir, head16_dir) -> dict:
    """One subprocess in .venv-vllm: an engine on the model, then one on the LoRA adapter
    (and, before both, a model whose head size vLLM's CPU build cannot run)."""
    greedy = [[p, 0] for p in PROMPTS]
    calls = {"greedy": (greedy, asdict(GREEDY), 0), "short": (greedy, asdict(SHORT), 0),
             "sample_a": (SAMPLE_REQUESTS, asdict(SAMPLING), 11),
             "sample_a_again": (SAMPLE_REQUESTS, asdict(SAMPLING), 11),
             "sample_b": (SAMPLE_REQUESTS, asdict(SAMPLING), 12)}
    jobs = [{"model_dir": str(head16_dir), "expect_error": True},
            {"model_dir": str(model_dir), "calls": calls},
            {"model_dir": str(lora_dir), "calls": {"greedy": (greedy, asdict(GREEDY), 0)}}]
    proc = subprocess.run([str(VLLM_PY), "-c", VLLM_SCRIPT, json.dumps(jobs)], cwd=REPO,
                          env=VLLM_ENV, capture_output=True, text=True, timeout=420)
    if proc.returncode == 3 and "NO_VLLM" in proc.stdout:
        pytest.skip(f"vllm does not import in .venv-vllm: {proc.stdout.strip()[-300:]}")
    assert proc.returncode == 0, describe(proc)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    print(f"vLLM engine up in {out['startup_s']:.1f} s")
    head16, base, lora = out["engines"]
    return {**base, "lora": lora, "head16": head16, "engine_processes": out["engine_processes"]}


def test_vllm_greedy_equals_hf(vllm_offline, hf_reference):
    assert vllm_offline["greedy"] == hf_reference["greedy"]
    assert vllm_offline["short"] == hf_reference["short"]


def test_vllm_lora_adapter_equals_hf_merged(vllm_offline, lora_dir, hf_reference):
    """An adapter folder as model_dir: vLLM applies it with a LoRARequest on its base model,
    HFBackend merges it; greedy outputs agree, and differ from the base model's."""
    hf = as_dicts(HFBackend(str(lora_dir)).generate_batch([(p, 0) for p in PROMPTS], GREEDY, 0))
    assert vllm_offline["lora"]["greedy"] == hf
    assert hf != hf_reference["greedy"]


def test_vllm_unsupported_head_size_is_a_clear_input_error(vllm_offline):
    error = vllm_offline["head16"]["error"]
    assert error and error.startswith("InputError:") and "heads of size 16" in error, error
    assert "use backend 'hf'" in error


def test_vllm_keeps_one_engine_per_process(vllm_offline):
    assert vllm_offline["engine_processes"] == 1  # the second backend closed the first


def test_vllm_sampling_is_seeded(vllm_offline, model_dir):
    a, again, b = (vllm_offline[k] for k in ("sample_a", "sample_a_again", "sample_b"))
    assert a == again
    assert a != b
    assert len({c["text"] for c in a[:6]}) >= 3, a  # sample i of a prompt has its own seed
    # token ids and text agree as HFBackend would store them
    from harness.base_models import load_tokenizer

    tok = load_tokenizer(model_dir)
    for c in a + b:
        assert tok.eos_token_id not in c["token_ids"]
        assert tok.decode(c["token_ids"], skip_special_tokens=True) == c["text"]


# ------------------------------------------------------------------ a real vLLM server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(vllm_venv, model_dir, tmp_path_factory) -> Iterator[dict]:
    """vLLM's OpenAI-compatible server on a free loopback port, up for this module."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [str(VLLM_PY), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager", "--max-model-len", "256", "--dtype", "float32",
           "--gpu-memory-utilization", "0.3"]
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=VLLM_ENV, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        while True:
            if proc.poll() is not None:
                tail = log.read_text()[-3000:]
                if "No module named 'vllm'" in tail:
                    pytest.skip("vllm does not import in .venv-vllm")
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{tail}")
            if time.time() - t0 > 300:
                pytest.fail(f"vLLM server not up after 300 s:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:  # not listening yet
                pass
            time.sleep(0.5)
        yield {"url": url, "startup_s": time.time() - t0}
    finally:
        if proc.poll() is None:  # SIGTERM lets it stop its engine process; the group is ours
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_server_greedy_equals_hf(vllm_server, model_dir, hf_reference):
    print(f"vLLM server up in {vllm_server['startup_s']:.1f} s")
    backend = BACKENDS.get("openai")(str(model_dir), base_url=vllm_server["url"], model="tiny")
    requests = [(p, 0) for p in PROMPTS]
    assert as_dicts(backend.generate_batch(requests, GREEDY, 0)) == hf_reference["greedy"]
    assert as_dicts(backend.generate_batch(requests, SHORT, 0)) == hf_reference["short"]


def test_server_chat_endpoint_equals_hf(vllm_server, model_dir, hf_reference):
    """Chat messages rendered by the server's template; ids are the text re-tokenized."""
    backend = OpenAIBackend(str(model_dir), base_url=vllm_server["url"], model="tiny",
                            endpoint="chat")
    got = as_dicts(backend.generate_batch([(p, 0) for p in PROMPTS], GREEDY, 0))
    assert got == hf_reference["greedy"]


def test_server_samples_are_seeded(vllm_server, model_dir, vllm_offline):
    backend = OpenAIBackend(str(model_dir), base_url=vllm_server["url"], model="tiny",
                            concurrency=4)
    a = as_dicts(backend.generate_batch(SAMPLE_REQUESTS, SAMPLING, 11))
    assert a == as_dicts(backend.generate_batch(SAMPLE_REQUESTS, SAMPLING, 11))
    assert a != as_dicts(backend.generate_batch(SAMPLE_REQUESTS, SAMPLING, 12))
    assert len({c["text"] for c in a[:6]}) >= 3, a
    # The server samples request i with the seed the offline engine gives it: same samples.
    assert a == vllm_offline["sample_a"]


# ------------------------------------------------------------------ fault injection

class FakeServer:
    """An OpenAI-compatible endpoint on loopback that fails on cue.

    `script` is consumed one entry per request: ("status", code), ("stall", seconds) or
    ("ok", text); when it is empty every request gets `default`. It records each request's
    Authorization header and the most requests it ever had in flight at once.
    """

    def __init__(self, default=("ok", "a1"), delay: float = 0.0) -> None:
        self.script: list[tuple] = []
        self.default, self.delay = default, delay
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "body": body,
                                          "auth": self.headers.get("Authorization")})
                    action = fake.script.pop(0) if fake.script else fake.default
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay)
                    fake.answer(self, action, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up: fine
                    pass
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler, action: tuple, body: dict) -> None:
        kind, arg = action
        if kind == "stall":
            time.sleep(arg)
            kind, arg = self.default
        if kind == "status":  # an error body that echoes the request's headers, key included
            payload = {"error": {"message": f"overloaded; you sent {dict(handler.headers)}",
                                 "type": "server_error", "code": arg}}
            status = arg
        elif handler.path.endswith("/chat/completions"):
            payload = {"id": "c", "object": "chat.completion", "created": 0,
                       "model": body["model"],
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": arg}}]}
            status = 200
        else:
            payload = {"id": "c", "object": "text_completion", "created": 0,
                       "model": body["model"],
                       "choices": [{"index": 0, "text": arg, "finish_reason": "stop",
                                    "logprobs": None}]}
            status = 200
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def word_tokenizer_dir(tmp_path_factory) -> Path:
    """A tokenizer-only folder: the fake server's answers are words of its vocabulary."""
    from harness.tasks.tiny_models import word_tokenizer

    folder = tmp_path_factory.mktemp("wordtok")
    word_tokenizer(["a0", "a1", "a2", "a3", "q0", "q1", "q2"]).save_pretrained(folder)
    return folder


@pytest.fixture
def secret_key(monkeypatch) -> tuple[str, str]:
    name, key = "SPO_TEST_API_KEY", "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv(name, key)
    return name, key


def backend_for(fake: FakeServer, folder: Path, key_env: str = "SPO_TEST_API_KEY", **options):
    return OpenAIBackend(str(folder), base_url=fake.url, model="m", api_key_env=key_env,
                         **options)


def test_retries_429_then_500_then_succeeds(fake, word_tokenizer_dir, secret_key):
    fake.script = [("status", 429), ("status", 500), ("ok", "a2")]
    backend = backend_for(fake, word_tokenizer_dir, max_retries=3)
    t0 = time.time()
    (got,) = backend.generate_batch([("q0", 0)], GREEDY, 0)
    assert (got.text, got.finished) == ("a2", True)
    assert got.token_ids == backend.tokenizer("a2", add_special_tokens=False)["input_ids"]
    assert len(fake.requests) == 3
    # exponential backoff: 0.5 s then 1 s, each less at most 25% jitter
    assert time.time() - t0 >= 0.75 * 1.5
    # the key is sent to the server, and the prompt as encode_prompt's token ids
    assert fake.requests[0]["auth"] == f"Bearer {secret_key[1]}"
    assert fake.requests[0]["body"]["prompt"] == encode_prompt(backend.tokenizer, "q0")


def test_a_stall_longer_than_the_timeout_is_retried(fake, word_tokenizer_dir, secret_key):
    fake.script = [("stall", 3.0)]
    backend = backend_for(fake, word_tokenizer_dir, timeout=0.5, max_retries=2)
    (got,) = backend.generate_batch([("q0", 0)], GREEDY, 0)
    assert got.text == "a1"
    assert len(fake.requests) == 2


def test_stalls_past_max_retries_raise_a_clear_error(fake, word_tokenizer_dir, secret_key):
    fake.script = [("stall", 3.0)] * 2
    backend = backend_for(fake, word_tokenizer_dir, timeout=0.4, max_retries=1)
    with pytest.raises(BackendError, match=r"did not answer within 0\.4 s \(1 retries\)") as err:
        backend.generate_batch([("q0", 0)], GREEDY, 0)
    assert fake.url in str(err.value)
    assert len(fake.requests) == 2


def test_failure_after_retries_names_url_and_status_never_the_key(fake, word_tokenizer_dir,
                                                                  secret_key):
    name, key = secret_key
    fake.default = ("status", 503)  # and its error message echoes the Authorization header
    backend = backend_for(fake, word_tokenizer_dir, max_retries=1)
    with pytest.raises(BackendError) as err:
        backend.generate_batch([("q0", 0), ("q1", 0)], GREEDY, 0)
    text = str(err.value)
    assert f"{fake.url}/completions answered HTTP 503 after 1 retries" in text
    assert "<redacted>" in text  # the echo was there, and the key was taken out of it
    traceback_text = "".join(traceback.format_exception(err.value))
    for seen in (traceback_text, repr(backend), json.dumps(backend.fingerprint()),
                 repr(vars(backend))):
        assert key not in seen
    assert backend.fingerprint()["api_key_env"] == name
    assert all(r["auth"] == f"Bearer {key}" for r in fake.requests)


def test_no_key_in_the_environment_sends_the_local_placeholder(fake, word_tokenizer_dir,
                                                               monkeypatch):
    monkeypatch.delenv("SPO_TEST_UNSET_KEY", raising=False)
    backend_for(fake, word_tokenizer_dir, key_env="SPO_TEST_UNSET_KEY").generate_batch(
        [("q0", 0)], GREEDY, 0)
    assert fake.requests[0]["auth"] == "Bearer EMPTY"


def test_concurrency_limit_is_honoured(word_tokenizer_dir, secret_key):
    fake = FakeServer(delay=0.2)
    try:
        backend = backend_for(fake, word_tokenizer_dir, concurrency=3)
        got = backend.generate_batch([("q0", i) for i in range(12)], SAMPLING, 7)
    finally:
        fake.close()
    assert len(got) == 12 and len(fake.requests) == 12
    assert fake.max_in_flight == 3
    # one request per sample (n=1), each with its own seed
    assert {r["body"]["n"] for r in fake.requests} == {1}
    assert len({r["body"]["seed"] for r in fake.requests}) == 12


def test_chat_endpoint_sends_messages(fake, word_tokenizer_dir, secret_key):
    backend = backend_for(fake, word_tokenizer_dir, endpoint="chat")
    (got,) = backend.generate_batch([("q1", 0)], SAMPLING, 3)
    body = fake.requests[0]["body"]
    assert fake.requests[0]["path"].endswith("/chat/completions")
    assert body["messages"] == [{"role": "user", "content": "q1"}]
    assert "return_token_ids" not in body  # hosted chat APIs reject unknown fields
    assert (got.text, got.finished) == ("a1", True)


def test_bad_options_are_input_errors(word_tokenizer_dir):
    from harness.errors import InputError

    with pytest.raises(InputError, match="endpoint"):
        OpenAIBackend(str(word_tokenizer_dir), endpoint="responses")
    with pytest.raises(InputError, match="not a local folder"):
        OpenAIBackend("gpt-somebody")  # token-id prompts need the tokenizer


# ------------------------------------------------------------------ through the pipeline

def test_pipeline_with_openai_backend_loses_nothing_and_stores_no_key(tmp_path, fake):
    """A run whose server fails stores no generation; the rerun completes from the store.

    Nothing under the results folder, nor the CLI's output, contains the key.
    """
    key = "sk-test-" + secrets.token_hex(16)
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC.replace(
        "generation:\n",
        "generation:\n  backend: openai\n"
        f"  options: {{base_url: '{fake.url}', api_key_env: SPO_TEST_PIPELINE_KEY, "
        "max_retries: 1, timeout: 5}\n"))
    env = {**ENV, "SPO_TEST_PIPELINE_KEY": key}
    run = [*CLI, "run", str(spec), "--results-dir", str(tmp_path / "results"), "--quiet"]

    fake.default = ("status", 503)
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 1 and "Traceback" not in first.stderr, describe(first)
    assert f"{fake.url}/completions answered HTTP 503" in first.stderr
    assert "run the same command to resume" in first.stderr
    assert table_counts(tmp_path / "results")["generations"] == 0

    fake.default = ("ok", "a1")
    second = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, describe(second)
    counts = json.loads((tmp_path / "results" / "run.json").read_text())["counts"]
    assert counts["train"]["computed"] == 0 and counts["generate"]["computed"] == 36

    assert all(r["auth"] == f"Bearer {key}" for r in fake.requests)
    for proc in (first, second):
        assert key not in proc.stdout + proc.stderr
    written = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert written
    assert not [p for p in written if key.encode() in p.read_bytes()]

@pytest.mark.slow
def test_pipeline_with_vllm_backend_stores_what_hf_stores(vllm_venv, tmp_path):
    """The whole tiny bandit run in .venv-vllm, greedy, once with `hf` and once with `vllm`
    (head size 32: hidden 128): every stored generation, score and judgment is the same.
    The vllm run builds one engine per model, each closing the one before."""
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC
                      .replace("sft_epochs: 2}", "sft_epochs: 2, hidden_size: 128}")
                      .replace("  max_new_tokens: 2\n", "  max_new_tokens: 2\n  temperature: 0\n"))
    results = {}
    for backend in ("hf", "vllm"):
        results[backend] = tmp_path / backend
        proc = subprocess.run(
            [str(vllm_venv), "-m", "harness", "run", str(spec), "--results-dir",
             str(results[backend]), "--set", f"generation.backend={backend}", "--quiet"],
            cwd=tmp_path, env=VLLM_ENV, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, describe(proc)
    hf, vllm = (store_contents(results[k]) for k in ("hf", "vllm"))
    assert len(vllm["generations"]) == N_GENERATIONS
    assert vllm == hf
