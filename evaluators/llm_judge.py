"""LLM-as-judge: a pairwise judge that is a prompt template (data) plus a chat model.

The template (`judge_templates/*.yaml`, or the path of your own file) holds the system and
user text with {instruction}, {output_1}, {output_2} and how to read the verdict: one label
for "the answer shown first is better", one for the second, optionally one for a tie, and a
regex that finds the label in the judge's answer. Nothing in a template is executed. A
template with `turns: 2` (mt_bench_multi_turn) holds two-turn conversations instead, filled
from an eval conversation (user, assistant, user: the history, then the model's answer) or
from the task's `conversation_turns(prompt, answer) -> (questions, answers)`; a single-turn
template reads a conversation's one user turn (`turns_problem` says what each accepts).

Backends: `hf` (a local Hugging Face folder, or a base-model name such as
`smollm2-135m-instruct`; batched greedy `generate`) and `openai` (any OpenAI-compatible
server). With `soft: true` the preference is read from the label tokens' probabilities at
the verdict (AlpacaEval's weighted annotators do this), else from the parsed verdict
(1 / 0 / 0.5). Position bias: `both` asks in both orders and averages (ours; `combine:
agreement` applies MT-Bench's rule instead), `random` asks once in an order drawn per pair
from `seed` (ours), `instruction` once in an order drawn per instruction as AlpacaEval does.

Protocols (`protocol: alpaca_eval_2 | alpaca_eval_2_clf | mt_bench_pair |
mt_bench_pair_multi_turn`, see PROTOCOLS) fix the template text, decoding, label tokens,
position handling, order combination and token budget to the anchor's; an explicit option
that disagrees with the protocol is an input error.

The judge's fingerprint holds the template text, the model's content hash (or served name),
the backend, decoding and position settings and the protocol, so editing a template makes
new calls; API keys, URLs, timeouts and batch sizes are not part of it (they do not change a
verdict).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import yaml

from evaluators.judges import JUDGES, BatchedPairJudge
from harness.errors import InputError, ServiceError
from harness.hashing import seed_from
from harness.tasks.base import Task
from harness.trl_formats import conversation_turns, last_question, user_turns

TEMPLATE_DIR = Path(__file__).resolve().parent / "judge_templates"
PLACEHOLDERS = ("instruction", "output_1", "output_2")
TURN_PLACEHOLDERS = ("question_1", "question_2", "answer_a_1", "answer_a_2", "answer_b_1",
                     "answer_b_2")  # FastChat's pair-v2-multi-turn
_PLACEHOLDER_RE = re.compile(r"\{(instruction|output_1|output_2)\}")
_TURN_PLACEHOLDER_RE = re.compile(r"\{(question_[12]|answer_[ab]_[12])\}")
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
    turns: int = 1             # 2: two-turn conversations ({question_1}, {answer_a_1}, ...)

    def render(self, instruction: str, output_1: str, output_2: str) -> Messages:
        """Chat messages with the placeholders filled in one pass (inserted text is not
        scanned again, so an answer containing "{output_2}" stays as it is)."""
        if self.turns != 1:
            raise ValueError(f"template {self.name} holds {self.turns}-turn conversations: "
                             "use render_turns")
        return self._fill({"instruction": instruction, "output_1": output_1,
                           "output_2": output_2}, _PLACEHOLDER_RE)

    def render_turns(self, questions: Sequence[str], answers_1: Sequence[str],
                     answers_2: Sequence[str]) -> Messages:
        """A two-turn template filled with both questions and each assistant's two answers
        (answers_1 are shown first, as assistant A), in one pass as `render`."""
        if self.turns != 2:
            raise ValueError(f"template {self.name} is single-turn: use render")
        (q1, q2), (a1, a2), (b1, b2) = questions, answers_1, answers_2
        return self._fill({"question_1": q1, "question_2": q2, "answer_a_1": a1,
                           "answer_a_2": a2, "answer_b_1": b1, "answer_b_2": b2},
                          _TURN_PLACEHOLDER_RE)

    def _fill(self, values: dict[str, str], pattern: re.Pattern[str]) -> Messages:
        def fill(text: str) -> str:
            return pattern.sub(lambda m: values[m.group(1)], text)

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
        out = {"name": self.name, "system": self.system, "user": self.user,
               "verdict": asdict(self.verdict)}
        if self.turns != 1:  # single-turn fingerprints stay as they were
            out["turns"] = self.turns
        return out


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
    unknown = set(data) - {"name", "system", "user", "verdict", "turns"}
    if unknown:
        raise InputError(f"unknown keys {sorted(unknown, key=str)}", file=where)
    turns = data.get("turns", 1)
    if turns not in (1, 2) or isinstance(turns, bool):
        raise InputError("must be 1 (a question and two answers) or 2 (two-turn "
                         "conversations)", file=where, field="turns")
    for key in ("system", "user"):
        if not isinstance(data.get(key, ""), str):
            raise InputError("must be a string", file=where, field=key)
    user, system = data.get("user", ""), data.get("system") or ""
    for key, text in (("system", system), ("user", user)):
        if _SURROGATE.search(text):  # YAML's "\ud800" escape gives one: not sendable text
            raise InputError("holds a lone surrogate (e.g. \\ud800): not valid Unicode",
                             file=where, field=key)
    names = PLACEHOLDERS if turns == 1 else TURN_PLACEHOLDERS
    missing = ["{" + p + "}" for p in names if "{" + p + "}" not in system + user]
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
    return JudgeTemplate(str(data.get("name") or path.stem), system, user, verdict, turns)


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
    # per generated token: the top-k (token text, log-prob) as the server lists them, when
    # the call asked for them (protocols that read exact tokens, as AlpacaEval does)
    top_logprobs: list[list[tuple[str, float]]] = field(default_factory=list)


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


def _logsumexp(values: list[float]) -> float:
    """log(sum(exp(v))), as scipy.special.logsumexp computes it (max-shifted; all -inf ->
    -inf)."""
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


def alpaca_eval_preference(top_logprobs: list[tuple[str, float]], first: str, second: str,
                           binarize: bool) -> float | None:
    """AlpacaEval's preference (1 = output shown first wins, 2 = shown second wins) from one
    token's top log-probs: alpaca_eval 0.6.6 `completion_parsers.logprob_parser` with
    numerator_token = `first`, denominator_tokens = [first, second].

    Exact tokens only; a label missing from the list has log-prob -inf; neither listed ->
    None (AlpacaEval's NaN: no annotation). Soft (weighted_alpaca_eval_gpt4_turbo):
    2 - p(first) / (p(first) + p(second)). Binarized (alpaca_eval_clf_gpt4_turbo): 1 if
    log p(first) > log p(second), else 2, so equal log-probs go to the second.
    """
    wanted = [second, first]  # denominator_tokens + [numerator_token]
    listed = {tok: lp for tok, lp in top_logprobs if tok in wanted}  # a repeat: the last wins
    if not listed:
        return None
    numerator = listed.get(first, -math.inf)
    if binarize:
        return 1.0 if numerator > listed.get(second, -math.inf) else 2.0
    denominator = _logsumexp([listed.get(t, -math.inf) for t in (first, second)])
    return 2.0 - math.exp(numerator - denominator)


def alpaca_eval_switched(instruction: str, seed: int) -> bool:
    """Whether AlpacaEval shows the model's output first: `RandomSwitchTwoColumnsProcessor`
    as `SinglePairwiseAnnotator` sets it up (seeded on the instruction only, switch column
    "is_switched_outputs", the annotator's seed; `alpaca_eval.evaluate` uses seed 0)."""
    return random.Random("is_switched_outputs" + instruction + str(seed)).choices(
        [False, True], k=1)[0]


# ---------------------------------------------------------------------------- protocols

@dataclass(frozen=True)
class Protocol:
    """One anchor's judging protocol: what `protocol: NAME` fixes."""
    name: str
    anchor: str                # where it comes from
    template: str              # built-in template with the anchor's text
    position: str              # "instruction": one order per instruction | "both"
    soft: bool
    combine: str               # "single" (one call) | "agreement" (MT-Bench's rule)
    reader: str                # "logprob_weighted" | "logprob_clf" | "verdict"
    max_new_tokens: int
    temperature: float
    top_logprobs: int | None   # exact tokens among the top k of the first generated token


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("alpaca_eval_2", "alpaca_eval 0.6.6 weighted_alpaca_eval_gpt4_turbo",
             "alpaca_eval", "instruction", True, "single", "logprob_weighted", 1, 1.0, 5),
    Protocol("alpaca_eval_2_clf", "alpaca_eval 0.6.6 alpaca_eval_clf_gpt4_turbo",
             "alpaca_eval", "instruction", False, "single", "logprob_clf", 1, 1.0, 5),
    Protocol("mt_bench_pair", "FastChat@0e6d3e4 llm_judge pair-v2",
             "mt_bench", "both", False, "agreement", "verdict", 2048, 0.0, None),
    Protocol("mt_bench_pair_multi_turn", "FastChat@0e6d3e4 llm_judge pair-v2-multi-turn",
             "mt_bench_multi_turn", "both", False, "agreement", "verdict", 2048, 0.0, None),
)}

POSITIONS = ("both", "random", "instruction")
COMBINES = ("mean", "agreement")
# what a judge without a protocol does (ours): see the README's preset table
_OURS = {"template": "alpaca_eval", "position": "both", "seed": 0, "soft": True,
         "combine": "mean", "max_new_tokens": None}


@dataclass(frozen=True)
class JudgeSettings:
    protocol: str | None
    template: str
    position: str
    seed: int
    soft: bool
    combine: str               # mean | agreement | single
    reader: str                # labels (ours) | logprob_weighted | logprob_clf | verdict
    max_new_tokens: int | None  # None: the template's
    temperature: float
    top_logprobs: int | None


def resolve_settings(protocol: str | None = None, **explicit: Any) -> JudgeSettings:
    """The judge's settings from `protocol` and the options given explicitly (None = not
    given). Without a protocol, the defaults are ours (_OURS). With one, every option it
    fixes takes the anchor's value, and an explicit option with another value is an
    InputError (one line): the protocol would no longer be the anchor's."""
    unknown = set(explicit) - set(_OURS)
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}")
    given = {k: v for k, v in explicit.items() if v is not None}
    if given.get("position") not in (None, *POSITIONS):
        raise InputError(f"llm judge: position must be one of {', '.join(POSITIONS)}, "
                         f"not '{given['position']}'")
    if given.get("combine") not in (None, *COMBINES):
        raise InputError(f"llm judge: combine must be one of {', '.join(COMBINES)}, "
                         f"not '{given['combine']}'")
    if protocol is None:
        o = {**_OURS, **given}
        if o["combine"] == "agreement" and o["position"] != "both":
            raise InputError("llm judge: combine: agreement needs both orders (position: both), "
                             f"not position: {o['position']}")
        return JudgeSettings(None, o["template"], o["position"], o["seed"], o["soft"],
                             o["combine"] if o["position"] == "both" else "single", "labels",
                             o["max_new_tokens"], 0.0, None)
    if protocol not in PROTOCOLS:
        raise InputError(f"llm judge: unknown protocol '{protocol}'; one of "
                         f"{', '.join(PROTOCOLS)}")
    p = PROTOCOLS[protocol]
    for key, value in given.items():
        if key == "seed":  # AlpacaEval's own option (the annotator's seed); MT-Bench has none
            if p.position != "instruction":
                raise InputError(f"llm judge: protocol '{protocol}' asks in both orders, so "
                                 f"seed: {value} has no effect; drop it")
            continue
        fixed = getattr(p, key)
        if value != fixed:
            raise InputError(f"llm judge: protocol '{protocol}' ({p.anchor}) fixes {key} to "
                             f"{fixed!r}; drop {key}: {value!r}, or drop the protocol to "
                             "use our own variant")
    return JudgeSettings(protocol, p.template, p.position, given.get("seed", 0), p.soft,
                         p.combine, p.reader, p.max_new_tokens, p.temperature, p.top_logprobs)


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
                 labels: dict[str, str], logprobs: bool, top_logprobs: int | None = None,
                 temperature: float = 0.0) -> list[Reply]:
        """Greedy replies. `top_logprobs`: also the top-k (token text, log-prob) of every
        step, from the raw logits, i.e. the temperature-1 distribution that an API reports
        whatever temperature it samples at (so `temperature` changes nothing here)."""
        replies: list[Reply] = []
        ids = self.label_ids(labels)
        for i in range(0, len(requests), self.batch_size):
            try:
                replies += self._batch(requests[i:i + self.batch_size], max_new_tokens, ids,
                                       logprobs, top_logprobs)
            except Exception as exc:  # e.g. out of memory: these calls fail, are retried later
                err = f"{type(exc).__name__}: {exc}"[:300]
                replies += [Reply(None, err) for _ in requests[i:i + self.batch_size]]
        return replies

    def _batch(self, requests: list[Messages], max_new_tokens: int,
               ids: dict[str, list[int]], logprobs: bool,
               top_logprobs: int | None = None) -> list[Reply]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        from trainers.tokenize import left_pad

        prompts = [self.encode(m) for m in requests]
        batch = {k: v.to(self.device) for k, v in left_pad(prompts, self.pad_id).items()}
        flat = [i for key in ids for i in ids[key]]
        recorder = _LabelRecorder(flat, top_logprobs)
        # An explicit greedy config: no processor from the model's generation_config, so the
        # recorder sees the model's raw next-token logits.
        config = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens,
                                  pad_token_id=self.pad_id, eos_token_id=self.tok.eos_token_id)
        with torch.no_grad():
            out = self.model.generate(**batch, generation_config=config,
                                      logits_processor=LogitsProcessorList([recorder]))
        steps = torch.stack(recorder.steps, 1) if recorder.steps else None  # (B, T, n_ids)
        top = ((torch.stack(recorder.top_values, 1), torch.stack(recorder.top_ids, 1))
               if recorder.top_values else None)  # (B, T, k) each
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
            if top is not None:
                values, top_ids = top[0][row, :n].tolist(), top[1][row, :n].tolist()
                reply.top_logprobs = [[(self.tok.decode([i]), v) for i, v in zip(ti, tv)]
                                      for ti, tv in zip(top_ids, values)]
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
    """A logits processor that keeps log-softmax(logits)[label ids] at every step, and the
    top-k log-probs with their token ids if `top_k` is set."""

    def __init__(self, ids: list[int], top_k: int | None = None) -> None:
        self.ids, self.steps, self.top_k = ids, [], top_k
        self.top_values: list[Any] = []
        self.top_ids: list[Any] = []

    def __call__(self, input_ids, scores):
        import torch

        logp = torch.log_softmax(scores.float(), -1)
        self.steps.append(logp[:, self.ids].cpu())
        if self.top_k:
            values, ids = logp.topk(min(self.top_k, logp.shape[-1]), -1)
            self.top_values.append(values.cpu())
            self.top_ids.append(ids.cpu())
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
                 labels: dict[str, str], logprobs: bool, top_logprobs: int | None = None,
                 temperature: float = 0.0) -> list[Reply]:
        """`top_logprobs`: ask for (and keep) the top-k log-probs of every token, k as given
        (a protocol's); else, with `logprobs`, the top 20 to find the labels in."""
        with ThreadPoolExecutor(max_workers=max(1, self.batch_size)) as pool:
            results = list(pool.map(lambda m: self._one(m, max_new_tokens, labels, logprobs,
                                                        top_logprobs, temperature),
                                    requests))
        if results and all(service_fault for _, service_fault in results):
            raise JudgeServiceError(f"llm judge: all {len(results)} calls of a batch failed; "
                                    f"the first: {results[0][0].error}")
        return [reply for reply, _ in results]

    def _one(self, messages: Messages, max_new_tokens: int, labels: dict[str, str],
             logprobs: bool, top_logprobs: int | None = None,
             temperature: float = 0.0) -> tuple[Reply, bool]:
        """The call's reply, and whether it failed for the server's sake (not this request's)."""
        import openai

        from evaluators.openai_backend import MalformedReply, one_line, parse_reply
        from harness.secrets import redact

        def failed(message: str, service_fault: bool = True) -> tuple[Reply, bool]:
            return Reply(None, one_line(redact(message))), service_fault

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "max_tokens": max_new_tokens,
                                  "temperature": temperature if temperature else 0}
        if top_logprobs:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        elif logprobs:
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
            reply.top_logprobs.append([(t["token"], float(t["logprob"])) for t in top])
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


# ---------------------------------------------------------------------------- prompts and turns

PromptValue = str | list[dict[str, str]]  # eval prompt text, or a conversation (Prompt.text)


def judge_turns(params: dict[str, Any]) -> int:
    """How many turns the template of an llm judge with these spec params judges (1 or 2)."""
    st = resolve_settings(params.get("protocol"), template=params.get("template"))
    return load_template(st.template).turns


def turns_problem(turns: int, task: Any, prompt: PromptValue) -> str | None:
    """Why a judge of `turns`-turn templates cannot judge answers to `prompt`, or None.

    A single-turn template (AlpacaEval, MT-Bench pair-v2) reads one instruction: text, or a
    conversation with one user turn (its system messages are the model's alone). A two-turn
    template (MT-Bench pair-v2-multi-turn) reads both questions and both answers: a
    conversation user, assistant, user (the assistant turn is the history both models
    answer after), or text from a task that splits it (`conversation_turns`).
    """
    n = user_turns(prompt)
    if turns == 1:
        if n == 1:
            return None
        return (f"is a conversation of {n} user turns; this judge's template reads one "
                "instruction (use protocol mt_bench_pair_multi_turn for two turns)")
    if isinstance(prompt, list):
        if n == 2:
            return None
        return (f"is a conversation of {n} user turn{'s' if n != 1 else ''}; FastChat's "
                "pair-v2-multi-turn judges two (user, assistant, user)")
    if callable(getattr(task, "conversation_turns", None)):
        return None
    name = getattr(task, "name", None)
    return ("is one turn of text, and two-turn judging (FastChat's pair-v2-multi-turn) needs "
            "two: give eval prompts as conversations (user, assistant, user)"
            f"{f', or a task with turns (task {name!r} has no conversation_turns)' if name else ''}"
            ", or use protocol mt_bench_pair")


# ---------------------------------------------------------------------------- the judge

def _resolve_model(model: str) -> Path:
    from harness.base_models import check_model_folder, resolve_base_model

    path = Path(model).expanduser()
    return check_model_folder(path.resolve()) if path.is_dir() else resolve_base_model(model)


@JUDGES.register("llm")
class LLMJudge(BatchedPairJudge):
    """An LLM asked which of two answers is better; returns P(candidate beats baseline).

    Options left out (None) take the protocol's value, or ours without a protocol:
    template alpaca_eval, position both, seed 0, soft true, combine mean, the template's
    max_new_tokens.
    """

    # Annotated limits are checked when the spec loads (harness.spec.check_params)
    def __init__(self, task: Task | None, template: str | None = None,
                 model: str = "smollm2-135m-instruct",
                 backend: Annotated[str, {"choices": ("hf", "openai")}] = "hf",
                 position: Annotated[str | None, {"choices": POSITIONS}] = None,
                 seed: Annotated[int | None, {"ge": 0, "le": 2**32 - 1}] = None,
                 soft: bool | None = None,
                 combine: Annotated[str | None, {"choices": COMBINES}] = None,
                 max_new_tokens: Annotated[int | None, {"ge": 1}] = None,
                 protocol: Annotated[str | None, {"choices": tuple(PROTOCOLS)}] = None,
                 batch_size: Annotated[int, {"ge": 1}] = 8, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY",
                 timeout: Annotated[float, {"gt": 0}] = 60.0,
                 max_retries: Annotated[int, {"ge": 0}] = 2, device: str | None = None) -> None:
        if backend not in ("hf", "openai"):
            raise InputError(f"llm judge: backend must be 'hf' or 'openai', not '{backend}'")
        st = resolve_settings(protocol, template=template, position=position, seed=seed,
                              soft=soft, combine=combine, max_new_tokens=max_new_tokens)
        self.settings = st
        loaded = load_template(st.template)
        if st.max_new_tokens is not None and st.max_new_tokens != loaded.verdict.max_new_tokens:
            loaded = replace(loaded, verdict=replace(loaded.verdict,
                                                     max_new_tokens=st.max_new_tokens))
        self.template = loaded
        self.task = task
        self.backend_name, self.position, self.seed, self.soft = (backend, st.position, st.seed,
                                                                  st.soft)
        self.protocol = protocol
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
        ours = st.protocol is None
        self.fingerprint = {
            "judge": "llm", "version": 1, "backend": backend, "model": model_id,
            "template": self.template.as_dict(), "position": st.position,
            "seed": st.seed if st.position in ("random", "instruction") else None,
            "soft": st.soft,
            "decoding": {"temperature": 0 if ours else st.temperature,
                         "top_logprobs": (20 if st.soft and backend == "openai" else None)
                         if ours else st.top_logprobs}}
        # keys that only a non-default setting adds, so judgments cached by judges without
        # them (a template of your own, say) keep their keys
        if st.combine == "agreement":
            self.fingerprint["combine"] = "agreement"
        if not ours:
            self.fingerprint["protocol"] = st.protocol
            self.fingerprint["reader"] = st.reader

    @property
    def backend(self) -> Any:
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def swapped(self, prompt: PromptValue, baseline: str, candidate: str) -> bool:
        """Whether the candidate is shown first in the one order asked: position random, a
        seeded coin per pair (ours); position instruction, AlpacaEval's coin per instruction
        (the same order for every model's answer to that instruction: a conversation's is
        its user turn, the instruction the single-turn template shows)."""
        if self.position == "instruction":
            return alpaca_eval_switched(last_question(prompt), self.seed)
        return bool(seed_from("llm-judge-order", self.seed, prompt, baseline, candidate) & 1)

    def prompt_problem(self, prompt: PromptValue) -> str | None:
        """Why this judge cannot judge answers to `prompt`, or None (see `turns_problem`)."""
        return turns_problem(self.template.turns, self.task, prompt)

    def _render(self, prompt: PromptValue, first: str, second: str) -> Messages:
        problem = self.prompt_problem(prompt)
        if problem:
            raise ValueError(problem)
        if self.template.turns == 1:
            return self.template.render(last_question(prompt), first, second)
        q_first, a_first = self._turns(prompt, first)
        q_second, a_second = self._turns(prompt, second)
        if list(q_first) != list(q_second):
            raise ValueError("the two conversations have different questions")
        return self.template.render_turns(q_first, a_first, a_second)

    def _turns(self, prompt: PromptValue, answer: str) -> tuple[list[str], list[str]]:
        """Both questions and this answer's two turns: from the conversation itself (its
        earlier assistant turn is the history both answers share), else from the task."""
        if isinstance(prompt, list):
            questions, answers = conversation_turns(prompt, answer)
        else:
            questions, answers = self.task.conversation_turns(prompt, answer)  # type: ignore[union-attr]
        questions, answers = list(questions), list(answers)
        if len(questions) != 2 or len(answers) != 2:  # FastChat skips such questions
            raise ValueError(f"{self.template.name} needs 2 questions and 2 answers, the task "
                             f"gave {len(questions)} and {len(answers)}")
        return questions, answers

    def judge_pairs(self, pairs: list[tuple[PromptValue, str, str]]
                    ) -> list[tuple[float | None, dict]]:
        """(prompt, baseline, candidate) triples, across prompts, judged in batched calls."""
        plans: list[list[bool]] = []  # per pair: for each call, is the candidate shown second?
        problems: list[str | None] = []
        requests: list[Messages] = []
        for prompt, b, c in pairs:
            if b == c:  # identical answers are a tie without asking (as AlpacaEval does)
                orders = []
            elif self.position == "both":
                orders = [True, False]
            else:
                orders = [not self.swapped(prompt, b, c)]
            try:
                rendered = [self._render(prompt, b, c) if second else self._render(prompt, c, b)
                            for second in orders]
                problems.append(None)
            except ValueError as exc:  # a conversation the template cannot take: this pair
                rendered, orders = [], []  # fails (recorded, retried), the others go on
                problems.append(str(exc))
            plans.append(orders)
            requests += rendered
        v, st = self.template.verdict, self.settings
        extra = {} if st.top_logprobs is None else {"top_logprobs": st.top_logprobs,
                                                    "temperature": st.temperature}
        logprobs = self.soft and st.reader == "labels"
        replies = self.backend.complete(requests, v.max_new_tokens, v.labels(), logprobs,
                                        **extra) if requests else []
        out, i = [], 0
        for (_, b, c), orders, problem in zip(pairs, plans, problems):
            if problem is not None:
                out.append((None, {"judge": "llm", "calls": 0, "error": problem,
                                   "longer": longer(b, c)}))
                continue
            out.append(self._combine(b, c, orders, replies[i:i + len(orders)]))
            i += len(orders)
        return out

    def _p_second(self, reply: Reply) -> tuple[float | None, str | None, bool, str | None]:
        """(P(answer shown second wins), parsed verdict, log-probs used, why no P)."""
        reader = self.settings.reader
        if reader in ("labels", "verdict"):
            p2, verdict, used = second_wins(self.template, reply, self.soft and reader == "labels")
            return p2, verdict, used, None
        verdict = self.template.parse(reply.text)[0]  # shown for information only
        if reply.text is None:
            return None, verdict, False, None
        if not reply.top_logprobs:
            return None, verdict, False, "the reply has no log-probs"
        v = self.template.verdict
        # AlpacaEval reads the first generated token (max_tokens 1)
        pref = alpaca_eval_preference(reply.top_logprobs[0], v.first, v.second,
                                      binarize=reader == "logprob_clf")
        if pref is None:
            return None, verdict, False, (f"neither '{v.first}' nor '{v.second}' among the "
                                          f"top-{self.settings.top_logprobs} log-probs")
        return pref - 1.0, verdict, True, None

    def _combine(self, b: str, c: str, orders: list[bool],
                 replies: list[Reply]) -> tuple[float | None, dict[str, Any]]:
        info: dict[str, Any] = {
            "judge": "llm", "calls": len(replies),
            "prompt_tokens": sum(r.prompt_tokens for r in replies),
            "completion_tokens": sum(r.completion_tokens for r in replies),
            "orders": ["baseline_first" if s else "candidate_first" for s in orders],
            "raw": [r.text for r in replies], "verdicts": [], "p_calls": [], "soft": [],
            "flipped": None, "swapped": (not orders[0]) if self.position != "both" and orders
            else None, "longer": longer(b, c)}
        if self.protocol:
            info["protocol"] = self.protocol
        if not orders:
            info["identical"] = True
            return 0.5, info
        errors = [r.error for r in replies if r.error]
        if errors:
            info["error"] = errors[0]
        winners = []
        for second, reply in zip(orders, replies):
            p2, verdict, used_soft, why = self._p_second(reply)
            if why and "error" not in info:
                info["error"] = why
            p = None if p2 is None else (p2 if second else 1.0 - p2)  # -> P(candidate wins)
            info["verdicts"].append(verdict)
            info["p_calls"].append(p)
            info["soft"].append(used_soft)
            winners.append(_winner(verdict, second, p))
        if any(p is None for p in info["p_calls"]):  # both orders or nothing (as Arena-Hard,
            return None, info                        # and MT-Bench drops an "error" game)
        if len(winners) == 2 and None not in winners:
            info["flipped"] = winners[0] != winners[1]
        if self.settings.combine == "agreement":
            # MT-Bench (show_result.py display_result_pairwise): a tie if game 1 is a tie or
            # the two games disagree, else game 1's winner
            w1, w2 = winners
            return (0.5 if w1 == "tie" or w1 != w2 else 1.0 if w1 == "candidate" else 0.0), info
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
