"""Prompt/completion tokenization and padding shared by training, scoring and SFT."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    prompt_ids: list[int]
    completion_ids: list[int]


TRUNCATION_MODES = ("keep_completion", "keep_start", "keep_end")


@dataclass(frozen=True)
class Truncation:
    """How a prompt + completion is cut to `max_length` tokens.

    - `keep_completion` (ours, the default): the completion is kept (up to max_length - 1
      tokens) and the prompt is cut from the left, so the tokens nearest the answer stay;
    - `keep_start` / `keep_end`: TRL's `DataCollatorForPreference`, on the whole sequence:
      its first / last `max_length` tokens. With `keep_start` a prompt that fills
      max_length leaves no completion token (TRL drops such rows; `encode` refuses them).
    `max_prompt_length` first cuts the prompt to its last N tokens (TRL < 0.20's option).
    """

    max_length: int
    mode: str = "keep_completion"
    max_prompt_length: int | None = None

    def key(self) -> dict | int:
        """What enters content keys: the bare max_length for the default, so keys made
        before truncation modes existed stay as they were."""
        if self.mode == "keep_completion" and self.max_prompt_length is None:
            return self.max_length
        return {"max_length": self.max_length, "mode": self.mode,
                "max_prompt_length": self.max_prompt_length}


def as_truncation(value: int | Truncation) -> Truncation:
    return value if isinstance(value, Truncation) else Truncation(value)


def truncate(prompt_ids: list[int], completion_ids: list[int],
             cut: int | Truncation) -> Encoded:
    """The two parts of one sequence cut as `cut` says (see `Truncation`)."""
    cut = as_truncation(cut)
    if cut.max_prompt_length is not None:
        prompt_ids = prompt_ids[max(0, len(prompt_ids) - cut.max_prompt_length):]
    n = cut.max_length
    if cut.mode == "keep_completion":
        completion_ids = completion_ids[:n - 1]
        keep = n - len(completion_ids)
        if len(prompt_ids) > keep:
            prompt_ids = prompt_ids[len(prompt_ids) - keep:]
    elif cut.mode == "keep_start":
        if len(prompt_ids) >= n:
            raise ValueError(f"the prompt alone has {len(prompt_ids)} tokens, and "
                             f"truncation_mode keep_start keeps the first {n} (max_length): no "
                             "completion token would be left (raise max_length, or use "
                             "keep_end or keep_completion)")
        completion_ids = completion_ids[:n - len(prompt_ids)]
    elif cut.mode == "keep_end":
        over = len(prompt_ids) + len(completion_ids) - n
        if over > 0:
            dropped = min(over, len(prompt_ids))
            prompt_ids = prompt_ids[dropped:]
            completion_ids = completion_ids[over - dropped:]
            if not prompt_ids:  # the kept sequence's first token is context, never scored
                prompt_ids, completion_ids = completion_ids[:1], completion_ids[1:]
    else:
        raise ValueError(f"unknown truncation mode {cut.mode!r}; one of "
                         f"{', '.join(TRUNCATION_MODES)}")
    return Encoded(prompt_ids, completion_ids)


def encode(tokenizer, prompt: str | list[dict], completion: str, max_length: int | Truncation,
           add_eos: bool = True) -> Encoded:
    """Prompt (see `encode_prompt`), then completion (+ EOS), cut to `max_length` (an int:
    the prompt is cut from the left; a `Truncation`: as it says)."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if add_eos:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    return truncate(prompt_ids, completion_ids, max_length)


def uses_chat_template(tokenizer) -> bool:
    """Instruct models (a tokenizer with a chat template) see prompts as a user turn."""
    return bool(getattr(tokenizer, "chat_template", None))


NO_TEMPLATE = ("conversational rows need a tokenizer with a chat template, and this model's "
               "has none: use an instruct base model (e.g. smollm2-135m-instruct), set a "
               "chat_template in its tokenizer_config.json, or give the prompts as text")


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """A conversation as the text the completion follows, as TRL's `apply_chat_template`
    renders a prompt: with the generation prompt after a user or tool turn, continuing the
    final message after an assistant turn (a prefilled answer)."""
    if not uses_chat_template(tokenizer):
        raise ValueError(NO_TEMPLATE)
    prefill = messages[-1]["role"] == "assistant"
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=not prefill,
                                         continue_final_message=prefill)


def conversation_problem(tokenizer, messages: list[dict], completion: str) -> str | None:
    """Why the prompt/completion split of a conversational row is not prefix-consistent,
    or None: the rendered conversation (prompt + the final assistant turn) must start with
    the rendered prompt, and go on with the completion's text, so that the tokens trained
    on are the tokens the model is prompted with at generation."""
    prompt = render_prompt(tokenizer, messages)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": completion}], tokenize=False)
    if not full.startswith(prompt):
        return ("the chat template renders this conversation without the rendered prompt "
                "as its start (prompt/completion split not prefix-consistent)")
    if not full[len(prompt):].startswith(completion):
        return ("the chat template does not render the completion right after the prompt "
                "(it rewrites or precedes the final assistant turn)")
    return None


def encode_prompt(tokenizer, prompt: str | list[dict]) -> list[int]:
    """The token ids a completion is conditioned on; one definition for every stage.

    A conversation (a list of messages): `render_prompt`'s text, tokenized without special
    tokens, which is TRL's `maybe_apply_chat_template` followed by its tokenization.
    Text with a chat template: the template's rendering of one user turn plus the generation
    prompt (the template brings its own special tokens, so no BOS is added twice). Without:
    BOS (when the tokenizer has one) + the prompt's tokens. The completion then ends with
    the tokenizer's EOS, which for chat models is the end-of-turn token.
    """
    if isinstance(prompt, list):
        return tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    if uses_chat_template(tokenizer):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                            add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # some versions return a BatchEncoding
            ids = ids["input_ids"]
        return list(ids)
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    return bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]


def pad_batch(items: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input_ids, attention_mask and completion_mask (1 on completion tokens)."""
    length = max(len(e.prompt_ids) + len(e.completion_ids) for e in items)
    ids = torch.full((len(items), length), pad_id, dtype=torch.long)
    attn = torch.zeros((len(items), length), dtype=torch.long)
    comp = torch.zeros((len(items), length), dtype=torch.long)
    for i, e in enumerate(items):
        seq = e.prompt_ids + e.completion_ids
        ids[i, :len(seq)] = torch.tensor(seq)
        attn[i, :len(seq)] = 1
        comp[i, len(e.prompt_ids):len(seq)] = 1
    return {"input_ids": ids, "attention_mask": attn, "completion_mask": comp}


def left_pad(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompts), length), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, length - len(p):] = torch.tensor(p)
        attn[i, length - len(p):] = 1
    return {"input_ids": ids, "attention_mask": attn}
