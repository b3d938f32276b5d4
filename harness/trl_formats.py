"""TRL's dataset formats, as `trl/data_utils.py` defines them, on one row at a time.

Standard rows hold text; conversational rows hold lists of messages (`{"role", "content"}`)
and `is_conversational` decides which, by the first element, as TRL does. A preference row
whose prompt is implicit (no `prompt`, or a text prompt beside conversational completions)
gets the longest shared prefix of `chosen` and `rejected` as its prompt, as TRL's
`maybe_extract_prompt` does. Paired rows become unpaired KTO rows the way
`unpair_preference_dataset` orders them.

Normalized rows keep a conversational prompt as its message list (the chat template renders
it at tokenization, `trainers.tokenize.encode_prompt`) and every completion as text: the
content of the final assistant turn, which is what generation produces and scoring sees.
"""

from __future__ import annotations

from typing import Any

from harness.datasets_io import Where, show

Message = dict[str, Any]
PROMPT_ROLES = ("user", "tool", "assistant")  # what a prompt may end with (TRL's rule)
# TRL's `unpair_preference_dataset` maps in batches (`Dataset.map`'s default size): each
# batch lists its chosen completions, then its rejected ones.
UNPAIR_BATCH = 1000


def is_conversational(value: Any) -> bool:
    """A list of messages: TRL looks at the first element only, and so do we."""
    return (isinstance(value, list) and bool(value) and isinstance(value[0], dict)
            and "role" in value[0])


def messages(value: Any, where: Where, field: str) -> list[Message]:
    """A validated message list. Keys whose value is null are dropped: Arrow gives every
    message of a column the union of their keys, filling the missing ones with null."""
    if not is_conversational(value):
        raise where.error("must be a non-empty list of messages {'role', 'content'}", field)
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise where.error(f"message {i} is not a mapping {{'role', 'content'}}", field)
        m = {k: v for k, v in m.items() if v is not None}
        if not isinstance(m.get("role"), str) or not m["role"]:
            raise where.error(f"message {i}: 'role' must be a non-empty string", field)
        if not isinstance(m.get("content"), str):
            raise where.error(f"message {i}: 'content' must be a string", field)
        out.append(m)
    return out


def prompt_value(value: Any, where: Where, field: str = "prompt") -> str | list[Message]:
    """A prompt: non-empty text, or messages ending with a user, tool or assistant turn."""
    if isinstance(value, str):
        if not value:
            raise where.error("must be a non-empty string", field)
        return value
    if not isinstance(value, list):
        raise where.error("must be a non-empty string or a list of messages", field)
    turns = messages(value, where, field)
    if turns[-1]["role"] not in PROMPT_ROLES:
        raise where.error(f"the last message's role is {show(turns[-1]['role'])}: a prompt "
                          f"ends with a {', '.join(PROMPT_ROLES)} turn", field)
    return turns


def completion_value(value: Any, where: Where, field: str) -> str:
    """A completion as text: a string, or exactly one assistant message (its content)."""
    if isinstance(value, str):
        if not value:
            raise where.error("must be a non-empty string", field)
        return value
    if not is_conversational(value):
        raise where.error("must be a non-empty string or one assistant message", field)
    turns = messages(value, where, field)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        roles = ", ".join(m["role"] for m in turns)
        raise where.error(f"the completion must be the final assistant turn alone, got "
                          f"turns ({roles}); earlier turns belong in the prompt", field)
    if not turns[0]["content"]:
        raise where.error("the assistant message is empty", field)
    return turns[0]["content"]


def extract_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """(prompt, chosen, rejected): the longest shared prefix, TRL's `extract_prompt`.

    Elements are characters of text or messages of conversations. As TRL: a space just
    before the first difference stays with the completions; when one is a prefix of the
    other the prompt stops one element short of the shorter.
    """
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if idx > 0 and chosen[idx - 1] == " ":  # TRL would read chosen[-1] at idx 0
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


def preference_parts(row: dict[str, Any], where: Where) -> tuple[Any, Any, Any, bool]:
    """(prompt, chosen, rejected, prompt given) as TRL's `maybe_extract_prompt` reads them:
    an explicit prompt when prompt and completions are both text or both conversations,
    else the prompt implicit in chosen and rejected (a text prompt beside conversational
    completions, as in UltraFeedback-binarized, is then not used)."""
    for key in ("chosen", "rejected"):
        if key not in row:
            raise where.error("missing field", key)
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" in row and is_conversational(row["prompt"]) == is_conversational(chosen):
        return row["prompt"], chosen, rejected, True
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not (isinstance(value, str) and value) and not is_conversational(value):
            raise where.error("must be a non-empty string or a list of messages", key)
    if is_conversational(chosen) != is_conversational(rejected):
        raise where.error("chosen and rejected must both be text or both be conversations",
                          "rejected")
    if is_conversational(chosen):
        chosen, rejected = (messages(v, where, k) for k, v in
                            (("chosen", chosen), ("rejected", rejected)))
    prompt, chosen, rejected = extract_prompt(chosen, rejected)
    if not prompt:
        raise where.error("missing field: no 'prompt', and chosen and rejected share no "
                          "prefix to take as the implicit prompt", "prompt")
    return prompt, chosen, rejected, False


def unpair_order(n: int, batch: int = UNPAIR_BATCH) -> list[tuple[int, bool]]:
    """(pair index, desirable) of each unpaired row, in TRL's order: per batch of `batch`
    pairs, its chosen completions, then its rejected ones."""
    out: list[tuple[int, bool]] = []
    for start in range(0, n, batch):
        block = range(start, min(start + batch, n))
        out += [(i, True) for i in block] + [(i, False) for i in block]
    return out


def unpair(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired rows as unpaired KTO rows {prompt, completion, label}, TRL's order."""
    return [{"prompt": pairs[i]["prompt"],
             "completion": pairs[i]["chosen" if good else "rejected"], "label": good}
            for i, good in unpair_order(len(pairs))]


def dialogue_problem(turns: list[Message]) -> str | None:
    """Why a conversation cannot be an eval prompt, or None: after any system messages the
    turns alternate user, assistant, user, ... and end with a user turn (the one the model
    answers; a judge reads the earlier turns as the history)."""
    roles = [m["role"] for m in turns]
    start = next((i for i, r in enumerate(roles) if r != "system"), len(roles))
    rest = roles[start:]
    if not rest:
        return "holds system messages only: an eval prompt ends with a user turn"
    for i, role in enumerate(rest):
        want = "user" if i % 2 == 0 else "assistant"
        if role != want:
            return (f"message {start + i} is a {show(role)} turn where a {want} turn belongs: "
                    "an eval conversation alternates user and assistant turns after any "
                    "system messages, and ends with a user turn")
    if rest[-1] != "user":
        return "the last message is an assistant turn: an eval prompt ends with a user turn"
    return None


def conversation_turns(prompt: list[Message], answer: str) -> tuple[list[str], list[str]]:
    """(questions, answers) of an eval conversation answered by `answer`: the user turns'
    contents, and the earlier assistant turns' contents followed by the answer (system
    messages are not turns). The prompt passed `dialogue_problem`."""
    questions = [m["content"] for m in prompt if m["role"] == "user"]
    answers = [m["content"] for m in prompt if m["role"] == "assistant"]
    return questions, answers + [answer]


def user_turns(prompt: str | list[Message]) -> int:
    """How many user turns a prompt holds (text is one)."""
    return 1 if isinstance(prompt, str) else sum(m["role"] == "user" for m in prompt)


def last_question(prompt: str | list[Message]) -> str:
    """The text a single-turn judge reads as the instruction: the prompt, or the content of
    a conversation's final user turn (its system messages are the model's, not the
    judge's; AlpacaEval and MT-Bench instructions carry none)."""
    if isinstance(prompt, str):
        return prompt
    return [m["content"] for m in prompt if m["role"] == "user"][-1]
