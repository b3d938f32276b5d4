"""The `openai` generation backend: any OpenAI-compatible server (vLLM's, hosted APIs).

endpoint "completions" sends the prompt as token ids from `encode_prompt` (so the server
conditions on exactly what `hf` and `vllm` condition on) and, on vLLM, asks for the
completion's token ids back (`return_token_ids`); the text is then decoded here as `HFBackend`
decodes it. endpoint "chat" sends one user message, for chat-only hosted APIs; the server
applies its own template, and token ids are the server's where it returns them, else the
text re-tokenized with the model's tokenizer.

Every request is its own: n=1 with its own seed, `request_seed(seed, request)` (as the vLLM
backend gives it), so sample i depends neither on how many were asked for nor on its batch. Retries are the openai client's own:
on connection errors, timeouts, 408/409/429 and 5xx, up to `max_retries` times, with
exponential backoff (0.5 s doubling to at most 8 s, minus up to 25% jitter; a Retry-After of
at most two minutes is honoured instead). A request that still fails raises `BackendError`
naming the URL and the HTTP status, so the pipeline stores nothing of that batch and the
next run asks again. So does a 200 reply that is not what the API promises (not JSON, no
`choices`, no text: a proxy's error page, a wrong URL, a broken server), which `parse_reply`
checks field by field instead of trusting the client's lenient models.

The API key is read from the environment variable named by `api_key_env` when a batch is
sent and is never kept on the backend: it is not in its repr, fingerprint or errors. Reading
it registers it with `harness.secrets`, whose `redact` takes it out of every error, and the
credentials of a `base_url` such as `http://user:password@host/v1` are kept only inside a
`Secret` and shown everywhere else as `http://<redacted>@host/v1`.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from evaluators.generation import (
    BACKENDS,
    Completion,
    HFBackend,
    Request,
    SamplingParams,
    request_seed,
)
from harness.errors import InputError, ServiceError
from harness.secrets import Secret, redact, redact_url, register_secret, register_url_credentials

__all__ = ["BackendError", "MalformedReply", "OpenAIBackend", "ParsedReply", "api_key_from_env",
           "parse_reply", "redact"]


class BackendError(ServiceError):
    """A generation request that failed for good (after the client's retries)."""


@BACKENDS.register("openai")
class OpenAIBackend:
    """Options (the spec's `generation.options`):
      base_url: the server's API root (default: a local vLLM server on port 8000).
      model: the served model name (default: `model_dir`, vLLM's name for `--model DIR`).
      api_key_env: name of the environment variable holding the API key; unset means the
        placeholder "EMPTY" that local servers accept.
      endpoint: "completions" (token-id prompts; needs the tokenizer in `model_dir`) or "chat".
      concurrency: requests in flight at once.
      timeout: seconds per request attempt; max_retries: retries after the first attempt.
      return_token_ids: ask for the vLLM extra `return_token_ids` (default: on for
        "completions", off for "chat"; hosted APIs reject unknown fields).
    """

    def __init__(self, model_dir: str, base_url: str = "http://127.0.0.1:8000/v1",
                 model: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 endpoint: str = "completions", concurrency: int = 8, timeout: float = 60.0,
                 max_retries: int = 5, return_token_ids: bool | None = None) -> None:
        if endpoint not in ("completions", "chat"):
            raise InputError(f"openai backend: endpoint must be 'completions' or 'chat', "
                             f"not {endpoint!r}", field="generation.options.endpoint")
        if concurrency < 1 or timeout <= 0 or max_retries < 0:
            raise InputError("openai backend: concurrency >= 1, timeout > 0 and max_retries >= 0 "
                             "are required", field="generation.options")
        register_url_credentials(base_url)
        self._base_url = Secret(base_url.rstrip("/"))  # what is connected to, credentials and all
        self.base_url = redact_url(self._base_url.reveal())  # what is shown and fingerprinted
        self.model = model or str(model_dir)
        self.api_key_env = api_key_env
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.return_token_ids = endpoint == "completions" if return_token_ids is None \
            else return_token_ids
        self.tokenizer = None
        if Path(model_dir).is_dir():
            from harness.base_models import load_tokenizer

            self.tokenizer = load_tokenizer(Path(model_dir))
        elif endpoint == "completions":
            raise InputError(f"openai backend: endpoint 'completions' tokenizes prompts with the "
                             f"model's tokenizer, and {model_dir} is not a local folder")

    def fingerprint(self) -> dict[str, Any]:
        """What determines the outputs (the key's variable name, never its value)."""
        return {"backend": "openai", "base_url": self.base_url, "model": self.model,
                "endpoint": self.endpoint, "api_key_env": self.api_key_env}

    def __repr__(self) -> str:
        return (f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, "
                f"endpoint={self.endpoint!r}, api_key_env={self.api_key_env!r})")

    def generate_batch(self, requests: list[Request], params: SamplingParams,
                       seed: int) -> list[Completion]:
        coro = self._batch(requests, params, seed)
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # the usual case: no loop in this thread
            return asyncio.run(coro)
        from concurrent.futures import ThreadPoolExecutor  # called from async code: own thread

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()

    generate = HFBackend.generate  # the same fixed, content-seeded batches

    async def _batch(self, requests: list[Request], params: SamplingParams,
                     seed: int) -> list[Completion]:
        from openai import AsyncOpenAI

        key = api_key_from_env(self.api_key_env)
        gate = asyncio.Semaphore(self.concurrency)
        async with AsyncOpenAI(base_url=self._base_url.reveal(), api_key=key,
                               timeout=self.timeout, max_retries=self.max_retries) as client:
            async def one(request: Request) -> Completion:
                async with gate:
                    # the seed VLLMBackend gives this request, so a vLLM server samples as it does
                    return await self._request(client, request[0], params,
                                               request_seed(seed, request))

            return list(await asyncio.gather(*(one(r) for r in requests)))

    async def _request(self, client, prompt: str | list[dict], params: SamplingParams,
                       seed: int) -> Completion:
        import openai

        greedy = params.temperature == 0
        common: dict[str, Any] = {
            "model": self.model, "n": 1, "seed": seed,
            "temperature": 0.0 if greedy else params.temperature,
            "top_p": 1.0 if greedy else params.top_p}
        extra: dict[str, Any] = {}
        if self.return_token_ids:
            extra["return_token_ids"] = True
        if params.min_new_tokens:  # vLLM's server extension (EOS banned until then)
            extra["min_tokens"] = params.min_new_tokens
        if extra:
            common["extra_body"] = extra
        url = f"{self.base_url}/{'chat/completions' if self.endpoint == 'chat' else 'completions'}"
        try:
            # the raw reply, parsed by `parse_reply`: the client's models accept any JSON
            # (missing fields become None), so a wrong reply would pass as an empty text
            if self.endpoint == "chat":
                raw = await client.chat.completions.with_raw_response.create(
                    messages=([{"role": "user", "content": prompt}]
                              if isinstance(prompt, str) else prompt),
                    max_completion_tokens=params.max_new_tokens, **common)
            else:
                from trainers.tokenize import encode_prompt

                raw = await client.completions.with_raw_response.create(
                    prompt=encode_prompt(self.tokenizer, prompt),
                    max_tokens=params.max_new_tokens, **common)
            reply = parse_reply(raw.http_response.content, self.endpoint)
        except openai.APIStatusError as err:
            retried = err.status_code in (408, 409, 429) or err.status_code >= 500
            raise BackendError(redact(
                f"openai backend: {url} answered HTTP {err.status_code}"
                + (f" after {self.max_retries} retries" if retried else "")
                + f": {one_line(err.message)}")) from None
        except openai.APITimeoutError:
            raise BackendError(f"openai backend: {url} did not answer within {self.timeout:g} s "
                               f"({self.max_retries} retries)") from None
        except openai.APIConnectionError as err:
            raise BackendError(redact(f"openai backend: the connection to {url} failed "
                                      f"({self.max_retries} retries): "
                                      f"{one_line(repr(err.__cause__ or err))}")) from None
        except openai.APIError as err:  # any other client-side failure of the exchange
            raise BackendError(redact(f"openai backend: {url}: {type(err).__name__}: "
                                      f"{one_line(str(err))}")) from None
        except MalformedReply as err:  # a 200 that is not a completion: not retried here
            raise BackendError(redact(f"openai backend: {url} sent a malformed reply: {err}")
                               ) from None
        return self._completion(reply.text, reply.token_ids, reply.finish_reason == "stop")

    def _completion(self, text: str, ids: list[int] | None, finished: bool) -> Completion:
        done = self._decoded(text, ids, finished)
        if redact(done.text) == done.text:
            return done
        # the server echoed a secret (a key, URL credentials) into the completion: keep the
        # redacted text and, as its tokens, that text re-tokenized (no tokenizer: none), so
        # the stored token ids do not spell the secret either
        text = redact(done.text)
        tok = self.tokenizer
        ids = list(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else []
        return Completion(text, ids, finished)

    def _decoded(self, text: str, ids: list[int] | None, finished: bool) -> Completion:
        tok = self.tokenizer
        if ids is None:  # the server gave text only: its tokens are the text re-tokenized
            ids = tok(text, add_special_tokens=False)["input_ids"] if tok is not None else []
            return Completion(text, list(ids), finished)
        ids = list(ids)
        if tok is None:  # a hosted chat model without a local tokenizer
            return Completion(text, ids, finished)
        if ids and ids[-1] == tok.eos_token_id:  # vLLM returns the EOS; Completion leaves it out
            ids = ids[:-1]
        # decoded here, exactly as HFBackend decodes, so the stored text is backend-independent
        return Completion(tok.decode(ids, skip_special_tokens=True), ids, finished)


def api_key_from_env(name: str) -> str:
    """The key in environment variable `name`; "EMPTY" (what local servers accept) if unset.

    Read at the moment of use and never kept in a fingerprint, repr or result; registered
    with `harness.secrets`, so `redact` removes it from anything printed or stored.
    """
    key = os.environ.get(name) or "EMPTY"
    register_secret(key)
    return key


# ---------------------------------------------------------------------------- replies

class MalformedReply(ValueError):
    """A 200 reply that is not the completion the API promises; the message says why."""


@dataclass(frozen=True)
class ParsedReply:
    """The first choice of a checked reply, and the reply itself (usage, logprobs, ...)."""
    text: str
    token_ids: list[int] | None  # vLLM's `return_token_ids`, where the server sent them
    finish_reason: str | None
    choice: dict[str, Any]
    body: dict[str, Any]


def parse_reply(body: bytes, endpoint: Literal["completions", "chat"]) -> ParsedReply:
    """Check a completions / chat completions reply body; `MalformedReply` says what is wrong.

    The text must be a string: `choices[0].text`, or `choices[0].message.content` (a null
    content, as a refusal or a tool call has, is no completion either).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedReply(f"the body is not JSON: {snippet(body)}") from None
    if not isinstance(data, dict):
        raise MalformedReply(f"the body is JSON but not an object: {snippet(body)}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        keys = ", ".join(one_line(repr(k), 30) for k in list(data)[:8])
        raise MalformedReply("no 'choices' list in the reply "
                             + (f"(its keys: {keys})" if data else "(an empty object)"))
    if not choices:
        raise MalformedReply("'choices' is empty")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise MalformedReply(f"choices[0] is {type(choice).__name__}, not an object")
    if endpoint == "chat":
        message = choice.get("message")
        if not isinstance(message, dict):
            raise MalformedReply("choices[0].message is missing or not an object")
        text, where = message.get("content"), "choices[0].message.content"
        present = "content" in message
    else:
        text, where, present = choice.get("text"), "choices[0].text", "text" in choice
    if not isinstance(text, str):
        raise MalformedReply(f"{where} is {'missing' if not present else _kind(text)}, "
                             f"not a string")
    ids = choice.get("token_ids")
    # ids past a tokenizer's vocabulary decode to "" (as they would from HFBackend), but one
    # past 2**31 cannot be decoded at all
    if ids is not None and not (isinstance(ids, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**31 for i in ids)):
        raise MalformedReply("choices[0].token_ids is not a list of token ids")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise MalformedReply(f"choices[0].finish_reason is {_kind(finish)}, not a string")
    return ParsedReply(text, ids, finish, choice, data)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (servers' messages may hold newlines), cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 3] + "..."


def snippet(body: bytes, limit: int = 60) -> str:
    """The start of a reply body for an error message: redacted *before* it is cut (so no
    prefix of a secret survives), on one line, quoted."""
    text = one_line(redact(body.decode("utf-8", errors="replace")), limit)
    return repr(text) if text else "(empty)"
