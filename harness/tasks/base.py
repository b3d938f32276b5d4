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

    # ------------------------------------------ preference dimensions (harness/dimensions.py)

    @staticmethod
    def option_dimensions(options: Any) -> list[str]:
        """The names of the task's preference dimensions under `options`, in order; [] for
        a task with one unnamed reward (its pairs carry no `dimension`)."""
        return []

    @property
    def dimensions(self) -> list[str]:
        return self.option_dimensions(self.options)

    def dimension_rewards(self, prompt: str, completions: list[str]) -> dict[str, list[float]]:
        """Each dimension's true reward of each completion ({} without dimensions)."""
        return {}

    def true_dimension_rewards(self, prompt: str) -> dict[str, Any] | None:
        """Each dimension's reward of every enumerable response (None: not enumerable)."""
        return None

    def outside_reward(self, prompt: str) -> float | None:
        """The reward of any answer outside `enumerable_responses` (None: not defined).

        A sampled answer can leak outside the enumerable set; where the task scores such
        answers with one known value, the exact win rate counts the leaked mass with it, so
        the truth is the value the sampled estimate converges to.
        """
        return None


def options_key(task: Task) -> dict[str, Any]:
    """The task's options as content keys see them: a field whose metadata says
    `key_default` is left out while it holds its default, so an option added later leaves
    every key made before it unchanged (the bandit's `dimensions`)."""
    import dataclasses

    options = vars(task.options)
    if not dataclasses.is_dataclass(task.options):
        return options
    skip = {f.name for f in dataclasses.fields(task.options)
            if f.metadata.get("key_default") and options.get(f.name) == f.default}
    return {k: v for k, v in options.items() if k not in skip}
