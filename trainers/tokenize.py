"""Prompt/completion tokenization and padding shared by training, scoring and SFT."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Encoded:
    prompt_ids: list[int]
    completion_ids: list[int]


def encode(tokenizer, prompt: str, completion: str, max_length: int,
           add_eos: bool = True) -> Encoded:
    """Prompt (see `encode_prompt`), then completion (+ EOS); the prompt is cut from the left."""
    prompt_ids = encode_prompt(tokenizer, prompt)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if add_eos:
        completion_ids = completion_ids + [tokenizer.eos_token_id]
    completion_ids = completion_ids[:max_length - 1]
    keep = max_length - len(completion_ids)
    if len(prompt_ids) > keep:
        prompt_ids = prompt_ids[len(prompt_ids) - keep:]
    return Encoded(prompt_ids, completion_ids)


def uses_chat_template(tokenizer) -> bool:
    """Instruct models (a tokenizer with a chat template) see prompts as a user turn."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """The token ids a completion is conditioned on; one definition for every stage.

    With a chat template: the template's rendering of one user turn plus the generation
    prompt (the template brings its own special tokens, so no BOS is added twice). Without:
    BOS (when the tokenizer has one) + the prompt's tokens. The completion then ends with
    the tokenizer's EOS, which for chat models is the end-of-turn token.
    """
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
