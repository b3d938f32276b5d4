"""Pairwise judges: the probability that a candidate answer beats the baseline's.

The judgment is stored as p = P(candidate > baseline) in [0, 1]; AlpacaEval's
`preference` is 1 + p (1 = baseline wins, 2 = candidate wins, 1.5 = tie).
A judge returns None for a judgment it could not make; the pipeline records that as a
failure, counts it in the report and retries it on the next run.
"""

from __future__ import annotations

from typing import Any, Protocol

from harness.numeric import sigmoid
from harness.registry import Registry
from harness.tasks.base import Task, options_key


class PairwiseJudge(Protocol):
    fingerprint: dict[str, Any]

    def judge(self, prompt: str, baseline: list[str], candidate: list[str]) -> list[float | None]: ...


JUDGES: Registry[type] = Registry("judge", "spo_harness.judges")


class BatchedPairJudge:
    """Base for judges that judge (prompt, baseline, candidate) triples in batches.

    Subclasses implement `judge_pairs`, returning (P(candidate wins) or None, info) per
    triple; `judge` and `judge_detailed` (what the pipeline stores) follow from it.
    """

    def judge_pairs(self, pairs: list[tuple[str, str, str]]) -> list[tuple[float | None, dict]]:
        raise NotImplementedError

    def judge(self, prompt: str, baseline: list[str], candidate: list[str]) -> list[float | None]:
        return [p for p, _ in self.judge_detailed(prompt, baseline, candidate)]

    def judge_detailed(self, prompt: str, baseline: list[str],
                       candidate: list[str]) -> list[tuple[float | None, dict[str, Any]]]:
        return self.judge_pairs([(prompt, b, c) for b, c in zip(baseline, candidate)])


@JUDGES.register("oracle")
class OracleBTJudge:
    """Bradley-Terry probability from the task's true rewards: sigmoid(s (r_cand - r_base)).

    `dimension`: judge by one preference dimension's true reward instead of the task's
    (harness/dimensions.py); its columns are `oracle.<dimension>:win_rate`, ...
    """

    def __init__(self, task: Task, scale: float | None = None,
                 dimension: str | None = None) -> None:
        from harness.errors import InputError

        if dimension is not None and dimension not in task.dimensions:
            raise InputError(f"oracle judge: task '{task.name}' has no dimension "
                             f"'{dimension}' (its dimensions: "
                             f"{', '.join(task.dimensions) or 'none'})")
        self.task, self.dimension = task, dimension
        self.scale = task.bt_scale if scale is None else float(scale)
        self.fingerprint = {"judge": "oracle-bt", "task": task.name, "scale": self.scale,
                            "options": options_key(task)}
        if dimension is not None:  # absent otherwise: the task's judge keeps its key
            self.fingerprint["dimension"] = dimension

    def _rewards(self, prompt: str, completions: list[str]) -> list[float]:
        if self.dimension is not None:
            return self.task.dimension_rewards(prompt, completions)[self.dimension]
        return self.task.rewards(prompt, completions)

    def judge(self, prompt: str, baseline: list[str], candidate: list[str]) -> list[float | None]:
        rb = self._rewards(prompt, baseline)
        rc = self._rewards(prompt, candidate)
        out: list[float | None] = []
        for b, c, x, y in zip(baseline, candidate, rb, rc):
            # identical answers are a tie whatever the judge thinks (as AlpacaEval does)
            out.append(0.5 if b == c else sigmoid(self.scale * (y - x)))
        return out


# built-in components defined in their own modules register on import
import evaluators.llm_judge  # noqa: E402,F401  (registers "llm")
import evaluators.reward_model  # noqa: E402,F401  (registers "reward_model")
