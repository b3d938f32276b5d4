"""LLM-as-judge: a pairwise judge that is a prompt template (data) plus a chat model.

The template (`judge_templates/*.yaml`, or the path of your own file) holds the system and
user text with {instruction}, {output_1}, {output_2} and how to read the verdict: one label
for "the answer shown first is better", one for the second, optionally one for a tie, and a
regex that finds the label in the judge's answer. Nothing in a template is executed.

Backends: `hf` (a local Hugging Face folder, or a base-model name such as
`smollm2-135m-instruct`; batched greedy `generate`) and `openai` (any OpenAI-compatible
server). With `soft: true` the preference is read from the label tokens' probabilities at
the verdict (AlpacaEval's weighted annotators do this), else from the parsed verdict
(1 / 0 / 0.5). Position bias: `both` asks in both orders and averages (Arena-Hard, MT-Bench),
`random` asks once in an order drawn per pair from `seed` (AlpacaEval).

The judge's fingerprint holds the template text, the model's content hash (or served name),
the backend, decoding and position settings, so editing a template makes new calls; API
keys, URLs, timeouts and batch sizes are not part of it (they do not change a verdict).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from evaluators.judges import JUDGES, BatchedPairJudge
from harness.errors import InputError, ServiceError
from harness.hashing import seed_from
from harness.tasks.base import Task

TEMPLATE_DIR = Path(__file__).resolve().parent / "judge_templates"
PLACEHOLDERS = ("instruction", "output_1", "output_2")
_PLACEHOLDER_RE = re.compile(r"\{(instruction|output_1|output_2)\}")
_VERDICT_KEYS = {"first", "second", "tie", "regex", "pick", "logprobs_at", "max_new_tokens"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_SECOND_WINS = {"first": 0.0, "second": 1.0, "tie": 0.5}  # P(answer shown second wins)

Messages = list[dict[str, str]]


# ---------------------------------------------------------------------------- templates

@dataclass(frozen=True)
class Verdict:
    first: str                 # label: the answer shown first ({output_1}) is better
    second: str                # label: the answer shown second ({output_2}) is better
    tie: str | None            # label for a tie, if the template has one
    regex: str                 # group 1 of a match is a label
    pick: str = "first"        # which match counts: first | last | priority (first/second/tie)
    logprobs_at: str = "verdict"  # soft: read label probabilities at first_token | verdict
    max_new_tokens: int = 16

    def labels(self) -> dict[str, str]:
        out = {"first": self.first, "second": self.second}
        if self.tie is not None:
            out["tie"] = self.tie
        return out


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    system: str
    user: str
    verdict: Verdict

    def render(self, instruction: str, output_1: str, output_2: str) -> Messages:
        """Chat messages with the placeholders filled in one pass (inserted text is not
        scanned again, so an answer containing "{output_2}" stays as it is)."""
        values = {"instruction": instruction, "output_1": output_1, "output_2": output_2}

        def fill(text: str) -> str:
            return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)

        messages = [{"role": "system", "content": fill(self.system)}] if self.system else []
        return messages + [{"role": "user", "content": fill(self.user)}]

    def parse(self, text: str | None) -> tuple[str | None, int | None]:
        """(verdict key 'first'|'second'|'tie', char offset of its label) or (None, None)."""
        if not text:
            return None, None
        by_label = {v: k for k, v in self.verdict.labels().items()}
        found = [(by_label[m.group(1)], m.start(1)) for m in re.finditer(self.verdict.regex, text)
                 if m.group(1) in by_label]
        if not found:
            return None, None
        if self.verdict.pick == "last":
            return found[-1]
        if self.verdict.pick == "priority":  # FastChat: "[[A]]" anywhere beats "[[B]]", ...
            order = list(self.verdict.labels())
            return min(found, key=lambda f: (order.index(f[0]), f[1]))
        return found[0]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "system": self.system, "user": self.user,
                "verdict": asdict(self.verdict)}


def template_path(name_or_path: str) -> Path:
    """A built-in template name (alpaca_eval, mt_bench) or the path of a YAML file."""
    builtin = TEMPLATE_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and builtin.exists():
        return builtin
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.yaml"))
    raise InputError(f"judge template '{name_or_path}' is neither a built-in template "
                     f"({', '.join(known)}) nor a YAML file")


def load_template(name_or_path: str) -> JudgeTemplate:
    """Load and validate a template; plain YAML only (safe_load: no tags, no code)."""
    path = template_path(name_or_path)
    where = str(path)
    data = yaml_safe_load(_template_text(path), where)
    if not isinstance(data, dict):
        raise InputError("a judge template is a mapping with system, user and verdict", file=where)
    unknown = set(data) - {"name", "system", "user", "verdict"}
    if unknown:
        raise InputError(f"unknown keys {sorted(unknown, key=str)}", file=where)
    for key in ("system", "user"):
        if not isinstance(data.get(key, ""), str):
            raise InputError("must be a string", file=where, field=key)
    user, system = data.get("user", ""), data.get("system") or ""
    for key, text in (("system", system), ("user", user)):
        if _SURROGATE.search(text):  # YAML's "\ud800" escape gives one: not sendable text
            raise InputError("holds a lone surrogate (e.g. \\ud800): not valid Unicode",
                             file=where, field=key)
    missing = ["{" + p + "}" for p in PLACEHOLDERS if "{" + p + "}" not in system + user]
    if missing:
        raise InputError(f"the template text never uses {', '.join(missing)}", file=where,
                         field="user")
    v = data.get("verdict")
    if not isinstance(v, dict):
        raise InputError("verdict: a mapping with first, second, regex, ...", file=where,
                         field="verdict")
    if set(v) - _VERDICT_KEYS:
        raise InputError(f"unknown keys {sorted(set(v) - _VERDICT_KEYS, key=str)}", file=where,
                         field="verdict")
    try:
        verdict = Verdict(**{k: v[k] for k in v})
    except TypeError as exc:
        raise InputError(str(exc), file=where, field="verdict") from None
    _check_verdict(verdict, where)
    return JudgeTemplate(str(data.get("name") or path.stem), system, user, verdict)


def _template_text(path: Path) -> str:
    """The file's text; a non-UTF-8 byte is reported with its line (as data files are)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", file=str(path)) from None
    try:
        return data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is fine
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", file=str(path),
                         line=line) from None


def yaml_safe_load(text: str, where: str) -> Any:
    """`yaml.safe_load`, with a parse error as ONE line naming the file and line.

    PyYAML's own message spans several lines and quotes the file around the error; here it
    is reduced to what went wrong ("expected ',' or ']', but got ':'") and where.
    """
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = "; ".join(" ".join(str(p).split()) for p in (exc.problem, exc.context) if p)
        raise InputError(f"not valid YAML: {what or type(exc).__name__}", file=where,
                         line=mark.line + 1 if mark is not None else None) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (e.g. NUL)
        line = text[:exc.position].count("\n") + 1
        raise InputError(f"not valid YAML: character #x{exc.character:04x} is not allowed",
                         file=where, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {' '.join(str(exc).split())}", file=where) from None
    except RecursionError:
        raise InputError("not valid YAML: nested too deeply", file=where) from None


def _check_verdict(v: Verdict, where: str) -> None:
    def bad(f: str, msg: str) -> InputError:
        return InputError(msg, file=where, field=f"verdict.{f}")

    labels = [v.first, v.second] + ([v.tie] if v.tie is not None else [])
    if not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
        raise bad("first", "labels must be distinct non-empty strings")
    try:
        groups = re.compile(v.regex).groups
    except (re.error, TypeError) as exc:
        raise bad("regex", f"not a regular expression: {exc}") from None
    if groups < 1:
        raise bad("regex", "needs a capture group (group 1 = the label)")
    if v.pick not in ("first", "last", "priority"):
        raise bad("pick", "must be first, last or priority")
    if v.logprobs_at not in ("first_token", "verdict"):
        raise bad("logprobs_at", "must be first_token or verdict")
    if not isinstance(v.max_new_tokens, int) or v.max_new_tokens < 1:
        raise bad("max_new_tokens", "must be a positive integer")


# ---------------------------------------------------------------------------- replies

@dataclass
class Reply:
    """One judge call's answer, backend-neutral."""
    text: str | None                       # None: the call failed
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # per generated token: probability of each label key ('first', 'second', 'tie') there,
    # and the label key of the token actually emitted (None: not a label token)
    label_probs: list[dict[str, float]] = field(default_factory=list)
    emitted: list[str | None] = field(default_factory=list)
    token_at: Callable[[int], int | None] = lambda offset: None  # char offset -> token index


def second_wins(template: JudgeTemplate, reply: Reply,
                soft: bool) -> tuple[float | None, str | None, bool]:
    """(P(answer shown second wins), parsed verdict key, whether log-probs were used)."""
    verdict, offset = template.parse(reply.text)
    if soft and reply.label_probs:
        at_first = template.verdict.logprobs_at == "first_token"
        pos = 0 if at_first else (reply.token_at(offset) if offset is not None else None)
        # at the verdict, the emitted token must be a label: then the distribution there is
        # the model's choice between the labels
        if pos is not None and pos < len(reply.label_probs) and (at_first or reply.emitted[pos]):
            q = reply.label_probs[pos]
            total = sum(q.values())
            if total > 0:
                return (q.get("second", 0.0) + 0.5 * q.get("tie", 0.0)) / total, verdict, True
    if verdict is None:
        return None, None, False
    return _SECOND_WINS[verdict], verdict, False


def longer(baseline: str, candidate: str) -> str:
    """Which answer is longer, in whitespace-separated words."""
    b, c = len(baseline.split()), len(candidate.split())
    return "candidate" if c > b else "baseline" if b > c else "equal"


# ---------------------------------------------------------------------------- backends

class HFChatBackend:
    """Local chat model: batched greedy generation, label log-probs from the raw logits."""

    def __init__(self, folder: Path, batch_size: int, device: str | None = None) -> None:
        import torch

        from harness.base_models import load_causal_lm, load_tokenizer

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = load_tokenizer(folder)
        self.model = load_causal_lm(folder).to(self.device).eval()
        self.batch_size = batch_size
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None \
            else self.tok.eos_token_id

    def encode(self, messages: Messages) -> list[int]:
        tok = self.tok
        if getattr(tok, "chat_template", None):
            try:
                text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception:  # templates without a system role (e.g. Gemma): fold it in
                merged = [{"role": "user",
                           "content": "\n\n".join(m["content"] for m in messages)}]
                text = tok.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
            # the template brings its own special tokens (as apply_chat_template(tokenize=True))
            return tok(text, add_special_tokens=False)["input_ids"]
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        bos = [] if tok.bos_token_id is None else [tok.bos_token_id]
        return bos + tok(text, add_special_tokens=False)["input_ids"]

    def label_ids(self, labels: dict[str, str]) -> dict[str, list[int]]:
        """Token ids that spell each label on their own (with or without a leading space)."""
        out: dict[str, list[int]] = {}
        for key, label in labels.items():
            spellings = [self.tok(v, add_special_tokens=False)["input_ids"]
                         for v in (label, " " + label)]
            out[key] = sorted({s[0] for s in spellings if len(s) == 1})
        return out

    def complete(self, requests: list[Messages], max_new_tokens: int,
                 labels: dict[str, str], logprobs: bool) -> list[Reply]:
        replies: list[Reply] = []
        ids = self.label_ids(labels)
        for i in range(0, len(requests), self.batch_size):
            try:
                replies += self._batch(requests[i:i + self.batch_size], max_new_tokens, ids,
                                       logprobs)
            except Exception as exc:  # e.g. out of memory: these calls fail, are retried later
                err = f"{type(exc).__name__}: {exc}"[:300]
                replies += [Reply(None, err) for _ in requests[i:i + self.batch_size]]
        return replies

    def _batch(self, requests: list[Messages], max_new_tokens: int,
               ids: dict[str, list[int]], logprobs: bool) -> list[Reply]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from trainers.tokenize import left_pad

        prompts = [self.encode(m) for m in requests]
        batch = {k: v.to(self.device) for k, v in left_pad(prompts, self.pad_id).items()}
        flat = [i for key in ids for i in ids[key]]
        recorder = _LabelRecorder(flat)
        # An explicit greedy config: no processor from the model's generation_config, so the
        # recorder sees the model's raw next-token logits.
        config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                                  pad_token_id=self.pad_id, eos_token_id=self.tok.eos_token_id)
        with torch.no_grad():
            out = self.model.generate(**batch, generation_config=config,
                                      logits_processor=LogitsProcessorList([recorder]))
        steps = torch.stack(recorder.steps, 1) if recorder.steps else None  # (B, T, n_ids)
        replies = []
        for row, prompt in enumerate(prompts):
            gen = out[row, batch["input_ids"].shape[1]:].tolist()
            ended = self.tok.eos_token_id in gen
            n = gen.index(self.tok.eos_token_id) + 1 if ended else len(gen)  # EOS counts
            text_ids = gen[:n - 1] if ended else gen  # token i of the text = generation step i
            reply = Reply(self.tok.decode(text_ids, skip_special_tokens=True),
                          prompt_tokens=len(prompt), completion_tokens=n,
                          token_at=self._offset_finder(text_ids))
            if logprobs and steps is not None:
                probs, col, mass = steps[row, :n].exp(), 0, {}
                for key, key_ids in ids.items():  # every spelling of a label counts for it
                    mass[key] = probs[:, col:col + len(key_ids)].sum(-1).tolist()
                    col += len(key_ids)
                reply.label_probs = [{k: mass[k][t] for k in ids} for t in range(n)]
                reply.emitted = [next((k for k in ids if t in ids[k]), None) for t in gen[:n]]
            replies.append(reply)
        return replies

    def _offset_finder(self, ids: list[int]) -> Callable[[int], int | None]:
        def token_at(offset: int) -> int | None:
            # smallest k whose decoded prefix ids[:k+1] reaches past `offset` (binary search;
            # prefix lengths grow with k)
            lo, hi = 0, len(ids)
            while lo < hi:
                mid = (lo + hi) // 2
                if len(self.tok.decode(ids[:mid + 1], skip_special_tokens=True)) > offset:
                    hi = mid
                else:
                    lo = mid + 1
            return lo if lo < len(ids) else None
        return token_at


class _LabelRecorder:
    """A logits processor that keeps log-softmax(logits)[label ids] at every step."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.steps = ids, []

    def __call__(self, input_ids, scores):
        import torch

        self.steps.append(torch.log_softmax(scores.float(), -1)[:, self.ids].cpu())
        return scores


class JudgeServiceError(ServiceError):
    """No call of a judge batch got a proper answer from the server (after the client's
    retries): the server is down, misconfigured or not OpenAI-compatible."""


class OpenAIChatBackend:
    """An OpenAI-compatible chat server; calls run `batch_size` at a time in threads.

    A call that fails (an HTTP error after the client's retries, a timeout, a lost
    connection, or a 200 reply that is no chat completion) becomes a failed `Reply` whose
    error names the URL (credentials redacted) and what was wrong; the pipeline stores it as
    a failed judgment and retries it on the next run. A batch in which *every* call failed
    for such a reason raises `JudgeServiceError`: the server is not answering at all.
    """

    def __init__(self, model: str, base_url: str | None, api_key_env: str, timeout: float,
                 max_retries: int, batch_size: int) -> None:
        import openai

        from evaluators.openai_backend import api_key_from_env
        from harness.secrets import redact_url, register_url_credentials

        if base_url:
            register_url_credentials(base_url)
        # the key (registered for redaction by api_key_from_env) lives only in the client
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key_from_env(api_key_env),
                                    timeout=timeout, max_retries=max_retries)
        self.url = redact_url(f"{str(self.client.base_url).rstrip('/')}/chat/completions")
        self.timeout, self.max_retries = timeout, max_retries
        self.model, self.batch_size = model, batch_size

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r})"

    def complete(self, requests: list[Messages], max_new_tokens: int,
                 labels: dict[str, str], logprobs: bool) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=max(1, self.batch_size)) as pool:
            results = list(pool.map(lambda m: self._one(m, max_new_tokens, labels, logprobs),
                                    requests))
        if results and all(service_fault for _, service_fault in results):
            raise JudgeServiceError(f"llm judge: all {len(results)} calls of a batch failed; "
                                    f"the first: {results[0][0].error}")
        return [reply for reply, _ in results]

    def _one(self, messages: Messages, max_new_tokens: int, labels: dict[str, str],
             logprobs: bool) -> tuple[Reply, bool]:
        """The call's reply, and whether it failed for the server's sake (not this request's)."""
        import openai

        from evaluators.openai_backend import MalformedReply, one_line, parse_reply
        from harness.secrets import redact

        def failed(message: str, service_fault: bool = True) -> tuple[Reply, bool]:
            return Reply(None, one_line(redact(message))), service_fault

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "max_tokens": max_new_tokens, "temperature": 0}
        if logprobs:
            kwargs.update(logprobs=True, top_logprobs=20)
        url = self.url
        try:
            raw = self.client.chat.completions.with_raw_response.create(**kwargs)
            parsed = parse_reply(raw.http_response.content, "chat")
            return self._reply(parsed, labels), False
        except openai.APIStatusError as err:
            # 400/413/422 refuse this request (e.g. too long for the context); anything else
            # (401 bad key, 404 unknown model, 429/5xx after the retries) is the server's
            request_fault = err.status_code in (400, 413, 422)
            return failed(f"{url} answered HTTP {err.status_code}: {err.message}",
                          not request_fault)
        except openai.APITimeoutError:
            return failed(f"{url} did not answer within {self.timeout:g} s "
                          f"({self.max_retries} retries)")
        except openai.APIConnectionError as err:
            return failed(f"the connection to {url} failed ({self.max_retries} retries): "
                          f"{err.__cause__ or err!r}")
        except openai.APIError as err:
            return failed(f"{url}: {type(err).__name__}: {err}")
        except MalformedReply as err:
            return failed(f"{url} sent a malformed reply: {err}")

    @staticmethod
    def _reply(parsed: Any, labels: dict[str, str]) -> Reply:
        """A checked reply's text, token counts and label probabilities per token."""
        from evaluators.openai_backend import MalformedReply

        text = parsed.text
        usage = parsed.body.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        prompt_tokens, completion_tokens = (
            c if isinstance(c, int) and not isinstance(c, bool) and c >= 0 else 0
            for c in (usage.get("prompt_tokens"), usage.get("completion_tokens")))
        reply = Reply(text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        lp = parsed.choice.get("logprobs")
        content = (lp.get("content") if isinstance(lp, dict) else None) or []
        if not isinstance(content, list):
            raise MalformedReply("choices[0].logprobs.content is not a list")
        tokens: list[str] = []
        by_label = {v: k for k, v in labels.items()}
        for i, c in enumerate(content):
            where = f"choices[0].logprobs.content[{i}]"
            if not isinstance(c, dict) or not isinstance(c.get("token"), str):
                raise MalformedReply(f"{where} has no 'token' string")
            top = c.get("top_logprobs") or []
            if not isinstance(top, list):
                raise MalformedReply(f"{where}.top_logprobs is not a list")
            mass: dict[str, float] = {}
            for t in top:  # "m" and " m" both spell the label m
                if not (isinstance(t, dict) and isinstance(t.get("token"), str)
                        and _is_logprob(t.get("logprob"))):
                    raise MalformedReply(f"{where}.top_logprobs: an entry without a 'token' "
                                         f"string and a 'logprob' number <= 0")
                key = by_label.get(t["token"].strip())
                if key is not None:
                    mass[key] = mass.get(key, 0.0) + math.exp(t["logprob"])
            tokens.append(c["token"])
            reply.label_probs.append(mass)
            reply.emitted.append(by_label.get(c["token"].strip()))
        if tokens and "".join(tokens) == text:  # offsets are only exact if tokens spell the text
            ends = [len("".join(tokens[:i + 1])) for i in range(len(tokens))]
            reply.token_at = lambda off: next((i for i, e in enumerate(ends) if e > off), None)
        return reply


def _is_logprob(value: Any) -> bool:
    """A log-probability as JSON gives one: a number <= 0 (-inf allowed: probability 0)."""
    # a little above 0 is float rounding; far above it, exp() would overflow: malformed
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and not math.isnan(value) and value <= 1e-3)


# ---------------------------------------------------------------------------- the judge

def _resolve_model(model: str) -> Path:
    from harness.base_models import check_model_folder, resolve_base_model

    path = Path(model).expanduser()
    return check_model_folder(path.resolve()) if path.is_dir() else resolve_base_model(model)


@JUDGES.register("llm")
class LLMJudge(BatchedPairJudge):
    """An LLM asked which of two answers is better; returns P(candidate beats baseline)."""

    # Annotated limits are checked when the spec loads (harness.spec.check_params)
    def __init__(self, task: Task | None, template: str = "alpaca_eval",
                 model: str = "smollm2-135m-instruct",
                 backend: Annotated[str, {"choices": ("hf", "openai")}] = "hf",
                 position: Annotated[str, {"choices": ("both", "random")}] = "both",
                 seed: Annotated[int, {"ge": 0, "le": 2**32 - 1}] = 0, soft: bool = True,
                 batch_size: Annotated[int, {"ge": 1}] = 8, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY",
                 timeout: Annotated[float, {"gt": 0}] = 60.0,
                 max_retries: Annotated[int, {"ge": 0}] = 2, device: str | None = None) -> None:
        if backend not in ("hf", "openai"):
            raise InputError(f"llm judge: backend must be 'hf' or 'openai', not '{backend}'")
        if position not in ("both", "random"):
            raise InputError(f"llm judge: position must be 'both' or 'random', not '{position}'")
        self.template = load_template(template)
        self.backend_name, self.position, self.seed, self.soft = backend, position, seed, soft
        self._make_backend: Callable[[], Any]
        if backend == "hf":
            from harness.base_models import model_fingerprint

            folder = _resolve_model(model)
            model_id: Any = {"content": model_fingerprint(folder)}  # not its path: portable
            self._make_backend = lambda: HFChatBackend(folder, batch_size, device)
        else:
            model_id = model  # the served model's name: all a server tells us about it
            self._make_backend = lambda: OpenAIChatBackend(model, base_url, api_key_env, timeout,
                                                           max_retries, batch_size)
        self._backend: Any = None  # loaded on the first call: building the judge stays cheap
        self.fingerprint = {"judge": "llm", "version": 1, "backend": backend, "model": model_id,
                            "template": self.template.as_dict(), "position": position,
                            "seed": seed if position == "random" else None, "soft": soft,
                            "decoding": {"temperature": 0,
                                         "top_logprobs": 20 if soft and backend == "openai"
                                         else None}}

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def swapped(self, prompt: str, baseline: str, candidate: str) -> bool:
        """position random: whether the candidate is shown first (a seeded coin per pair)."""
        return bool(seed_from("llm-judge-order", self.seed, prompt, baseline, candidate) & 1)

    def judge_pairs(self, pairs: list[tuple[str, str, str]]) -> list[tuple[float | None, dict]]:
        """(prompt, baseline, candidate) triples, across prompts, judged in batched calls."""
        plans: list[list[bool]] = []  # per pair: for each call, is the candidate shown second?
        requests: list[Messages] = []
        for prompt, b, c in pairs:
            if b == c:  # identical answers are a tie without asking (as AlpacaEval does)
                orders = []
            elif self.position == "both":
                orders = [True, False]
            else:
                orders = [not self.swapped(prompt, b, c)]
            plans.append(orders)
            requests += [self.template.render(prompt, b, c) if second
                         else self.template.render(prompt, c, b) for second in orders]
        v = self.template.verdict
        replies = self.backend.complete(requests, v.max_new_tokens, v.labels(), self.soft) \
            if requests else []
        out, i = [], 0
        for (_, b, c), orders in zip(pairs, plans):
            out.append(self._combine(b, c, orders, replies[i:i + len(orders)]))
            i += len(orders)
        return out

    def _combine(self, b: str, c: str, orders: list[bool],
                 replies: list[Reply]) -> tuple[float | None, dict[str, Any]]:
        info: dict[str, Any] = {
            "judge": "llm", "calls": len(replies),
            "prompt_tokens": sum(r.prompt_tokens for r in replies),
            "completion_tokens": sum(r.completion_tokens for r in replies),
            "orders": ["baseline_first" if s else "candidate_first" for s in orders],
            "raw": [r.text for r in replies], "verdicts": [], "p_calls": [], "soft": [],
            "flipped": None, "swapped": (not orders[0]) if self.position == "random" and orders
            else None, "longer": longer(b, c)}
        if not orders:
            info["identical"] = True
            return 0.5, info
        errors = [r.error for r in replies if r.error]
        if errors:
            info["error"] = errors[0]
        winners = []
        for second, reply in zip(orders, replies):
            p2, verdict, used_soft = second_wins(self.template, reply, self.soft)
            p = None if p2 is None else (p2 if second else 1.0 - p2)  # -> P(candidate wins)
            info["verdicts"].append(verdict)
            info["p_calls"].append(p)
            info["soft"].append(used_soft)
            winners.append(_winner(verdict, second, p))
        if any(p is None for p in info["p_calls"]):  # both orders or nothing (as Arena-Hard)
            return None, info
        if len(winners) == 2 and None not in winners:
            info["flipped"] = winners[0] != winners[1]
        return sum(info["p_calls"]) / len(info["p_calls"]), info


def _winner(verdict: str | None, candidate_second: bool, p: float | None) -> str | None:
    """'candidate' | 'baseline' | 'tie' of one call: its parsed verdict, else sign(P - 1/2)."""
    if verdict is not None:
        if verdict == "tie":
            return "tie"
        return "candidate" if (verdict == "second") == candidate_second else "baseline"
    if p is None:
        return None
    return "candidate" if p > 0.5 else "baseline" if p < 0.5 else "tie"
