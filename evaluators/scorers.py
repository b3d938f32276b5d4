"""Pointwise scorers: a number for each (prompt, completion).

A scorer is built from the spec (`name` + `params`) with the task at hand, and carries a
`fingerprint` that goes into the key of every score it makes, so changing a scorer's
settings never returns a stale cached value.
"""

from __future__ import annotations

from typing import Any, Protocol

from harness.registry import Registry
from harness.tasks.base import Task


class Scorer(Protocol):
    fingerprint: dict[str, Any]

    def score(self, prompt: str, completions: list[str]) -> list[float]: ...


SCORERS: Registry[type] = Registry("scorer", "spo_harness.scorers")


@SCORERS.register("oracle")
class OracleRewardScorer:
    """The task's true reward (bandit: the hidden table; sentiment: VADER compound)."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.fingerprint = {"scorer": "oracle", "task": task.name,
                            "options": vars(task.options)}

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        return self.task.rewards(prompt, completions)


@SCORERS.register("length")
class LengthScorer:
    """Length of the completion in whitespace-separated words."""

    def __init__(self, task: Task) -> None:
        self.fingerprint = {"scorer": "length", "unit": "words"}

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        return [float(len(c.split())) for c in completions]
