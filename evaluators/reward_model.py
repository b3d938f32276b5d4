"""Reward models (sequence classifiers with one output) as a scorer and as a pairwise judge.

Loading and formatting follow RewardBench 0.1.5 (`RewardBenchPipeline`): the (prompt,
response) pair is rendered as a user/assistant chat with the tokenizer's chat template when it
has one, and a rendered text that already starts with the BOS token is tokenized without
special tokens, so BOS is never doubled (a doubled BOS measurably shifts RM accuracy:
allenai/reward-bench#164, #226, PR #94). The reward is read where the model's own
`...ForSequenceClassification` head reads it (its last non-pad token), as its trainer did.
`trust_remote_code` is never set: only architectures transformers knows are loaded.

As a judge: P(candidate beats baseline) = sigmoid(r_candidate - r_baseline), the
Bradley-Terry probability RewardBench and reward-model training assume.

Fingerprints hold a content hash of every file in the model folder (`harness.base_models.model_fingerprint`):
a reward model retrained into the same folder has the same config and the same file sizes,
so names, sizes or configs alone would return its predecessor's cached scores. Hashing costs
about a second per GB once per process (memoised on each file's size and mtime); moving or
copying the folder keeps the hash, so a copied results store keeps its cached judgments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from evaluators.judges import JUDGES, BatchedPairJudge
from evaluators.scorers import SCORERS
from harness.base_models import model_fingerprint
from harness.errors import InputError
from harness.numeric import sigmoid
from harness.tasks.base import Task


def load_reward_model(folder: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of a local `AutoModelForSequenceClassification` folder, eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, local_files_only=True, trust_remote_code=False, dtype=torch.float32)
    if model.config.num_labels != 1:
        raise InputError(f"reward model '{folder}' has {model.config.num_labels} outputs; "
                         "a reward model has one (num_labels=1)")
    if tok.pad_token is None:  # as RewardBench: batches need a pad token
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    return model.to(device).eval(), tok


def render_conversation(tokenizer: Any, prompt: str | list[dict], response: str) -> str:
    """The text a reward model scores: a user/assistant chat (a conversation prompt with its
    history, then the response as the final assistant turn), or prompt then response."""
    if getattr(tokenizer, "chat_template", None):
        turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return tokenizer.apply_chat_template(
            [*turns, {"role": "assistant", "content": response}], tokenize=False)
    if not isinstance(prompt, str):  # RewardBench's plain form holds one exchange
        raise InputError("reward model: a conversation prompt needs a tokenizer with a "
                         "chat template (this one has none)")
    # plain text: one space between them unless one side already brings whitespace
    joiner = "" if not prompt or not response or prompt[-1].isspace() \
        or response[0].isspace() else " "
    return prompt + joiner + response


def encode_conversation(tokenizer: Any, text: str, max_length: int) -> list[int]:
    """Token ids with exactly one BOS: none added when the text already starts with it."""
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special, truncation=True,
                     max_length=max_length)["input_ids"]


def reward_scores(model: Any, tokenizer: Any, prompts: list[str], responses: list[str],
                  batch_size: int = 8, max_length: int = 2048) -> list[float]:
    """One reward per (prompt, response), in right-padded batches."""
    import torch

    ids = [encode_conversation(tokenizer, render_conversation(tokenizer, p, r), max_length)
           for p, r in zip(prompts, responses)]
    out: list[float] = []
    device = next(model.parameters()).device
    for i in range(0, len(ids), batch_size):
        chunk = ids[i:i + batch_size]
        width = max(len(x) for x in chunk)
        input_ids = torch.full((len(chunk), width), model.config.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, x in enumerate(chunk):
            input_ids[j, :len(x)], mask[j, :len(x)] = torch.tensor(x), 1
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
        out += logits[:, 0].float().tolist()
    return out


_sigmoid = sigmoid  # rewards far apart must not overflow


class _RewardModel:
    """A reward model folder, loaded on first use (building a scorer or judge stays cheap)."""

    def __init__(self, model: str, batch_size: int, max_length: int, device: str | None) -> None:
        from harness.base_models import check_model_folder

        self.folder = check_model_folder(Path(model).expanduser().resolve())
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.content = model_fingerprint(self.folder)
        self._loaded: tuple[Any, Any] | None = None

    def scores(self, prompts: list[str], responses: list[str]) -> list[float]:
        if self._loaded is None:
            self._loaded = load_reward_model(self.folder, self.device)
        model, tok = self._loaded
        return reward_scores(model, tok, prompts, responses, self.batch_size, self.max_length)

    def token_count(self, prompt: str, response: str) -> int:
        tok = self._loaded[1] if self._loaded else None
        if tok is None:
            return 0
        return len(encode_conversation(tok, render_conversation(tok, prompt, response),
                                       self.max_length))


@SCORERS.register("reward_model")
class RewardModelScorer:
    """The scalar output of a local sequence-classification reward model."""

    # Annotated limits are checked when the spec loads (harness.spec.check_params)
    def __init__(self, task: Task | None, model: str, batch_size: Annotated[int, {"ge": 1}] = 8,
                 max_length: Annotated[int, {"ge": 1}] = 2048,
                 device: str | None = None) -> None:
        self.rm = _RewardModel(model, batch_size, max_length, device)
        self.fingerprint = {"scorer": "reward_model", "version": 1, "model": self.rm.content,
                            "max_length": max_length}

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        return self.rm.scores([prompt] * len(completions), completions)


@JUDGES.register("reward_model")
class RewardModelJudge(BatchedPairJudge):
    """P(candidate beats baseline) = sigmoid(r_candidate - r_baseline)."""

    # Annotated limits are checked when the spec loads (harness.spec.check_params)
    def __init__(self, task: Task | None, model: str, batch_size: Annotated[int, {"ge": 1}] = 8,
                 max_length: Annotated[int, {"ge": 1}] = 2048,
                 device: str | None = None) -> None:
        self.rm = _RewardModel(model, batch_size, max_length, device)
        self.fingerprint = {"judge": "reward_model", "version": 1, "model": self.rm.content,
                            "max_length": max_length}

    def judge_pairs(self, pairs: list[tuple[str, str, str]]) -> list[tuple[float | None, dict]]:
        """Every baseline and candidate of the batch scored in one pass of batched forwards."""
        from evaluators.llm_judge import longer  # not at the top: judges.py registers both

        todo = [(p, b, c) for p, b, c in pairs if b != c]
        r = self.rm.scores([p for p, _, _ in todo for _ in (0, 1)],
                           [x for _, b, c in todo for x in (b, c)]) if todo else []
        rewards = {(p, b, c): (r[2 * i], r[2 * i + 1]) for i, (p, b, c) in enumerate(todo)}
        out = []
        for p, b, c in pairs:
            info: dict[str, Any] = {"judge": "reward_model", "longer": longer(b, c)}
            if b == c:  # identical answers are a tie, as for every judge here
                out.append((0.5, {**info, "calls": 0, "identical": True}))
                continue
            rb, rc = rewards[(p, b, c)]
            info.update(calls=2, reward_baseline=rb, reward_candidate=rc,
                        prompt_tokens=self.rm.token_count(p, b) + self.rm.token_count(p, c),
                        completion_tokens=0)
            out.append((_sigmoid(rc - rb), info))
        return out
