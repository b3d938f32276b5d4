"""What a task provides to the pipeline.

A task owns its data and its ground truth: it builds (once, cached in the store) a
tokenizer and a tiny model in Hugging Face format, trains the SFT reference, labels
preference pairs from its true reward, and knows the reward of any answer. Everything
after `prepare` sees only ordinary Hugging Face folders and lists of dicts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.store import Store


@dataclass
class Prompt:
    """A held-out prompt: text, or a conversation (messages {"role", "content"} ending with
    the user turn to answer; the chat template renders it, and judges read its earlier
    turns as the history). Units are keyed by its content either way."""

    id: str
    text: str | list[dict[str, str]]


@dataclass
class TaskAssets:
    reference_dir: Path          # the SFT reference model + tokenizer, Hugging Face format
    reference_key: str           # content key of that model
    pairs: list[dict[str, Any]]  # TRL-style rows: prompt, chosen, rejected[, soft_label]
    eval_prompts: list[Prompt]   # held-out prompts for generation
    reg_prompts: list[str]       # prompts for SPO's KL regularizer (not the eval set)
    # Whether a completion ends with EOS. The bandit's answers are single tokens without
    # EOS, so that no probability mass can hide in an EOS decision outside the answer set.
    completion_eos: bool = True


Progress = Callable[[str, bool], None]  # (unit name, computed?) -> None


class Task(ABC):
    name: ClassVar[str]
    Options: ClassVar[type]
    # Whether the task can start from a real base model instead of its own tiny one.
    accepts_base_model: ClassVar[bool] = False

    def __init__(self, options: Any, store: Store) -> None:
        self.options = options
        self.store = store
        # A plain Hugging Face folder when the spec names a real base model (set by the
        # pipeline before `prepare`); None = build the task's own tiny model.
        self.base_model_dir: Path | None = None
        # Progress bars of the task's own long work (its SFT); the pipeline sets it.
        self.show_progress = True
        # True when the spec's data.train replaces the task's pairs (set before `prepare`):
        # a task whose pairs cost work (sampling) may then skip making them.
        self.pairs_given = False

    @abstractmethod
    def prepare(self, progress: Progress) -> TaskAssets:
        """Build (or take from the store) the model, SFT reference, pairs and prompts."""

    @abstractmethod
    def rewards(self, prompt: str, completions: list[str]) -> list[float]:
        """The true reward of each completion."""

    @property
    @abstractmethod
    def bt_scale(self) -> float:
        """P(a beats b) = sigmoid(bt_scale * (r_a - r_b)): the oracle's Bradley-Terry scale."""

    def enumerable_responses(self, prompt: str) -> list[str] | None:
        """All possible responses, where the response space is enumerable (bandit)."""
        return None

    def outside_reward(self, prompt: str) -> float | None:
        """The reward of any answer outside `enumerable_responses` (None: not defined).

        A sampled answer can leak outside the enumerable set; where the task scores such
        answers with one known value, the exact win rate counts the leaked mass with it, so
        the truth is the value the sampled estimate converges to.
        """
        return None
