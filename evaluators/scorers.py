"""Pointwise scorers: a number for each (prompt, completion).

A scorer is built from the spec (`name` + `params`) with the task at hand, and carries a
`fingerprint` that goes into the key of every score it makes, so changing a scorer's
settings never returns a stale cached value.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from harness.registry import Registry
from harness.tasks.base import Task, options_key


class Scorer(Protocol):
    fingerprint: dict[str, Any]

    def score(self, prompt: str, completions: list[str]) -> list[float]: ...


SCORERS: Registry[type] = Registry("scorer", "spo_harness.scorers")


@SCORERS.register("oracle")
class OracleRewardScorer:
    """The task's true reward (bandit: the hidden table; sentiment: VADER compound)."""

    def __init__(self, task: Task, dimension: str | None = None) -> None:
        from harness.errors import InputError

        if dimension is not None and dimension not in task.dimensions:
            raise InputError(f"oracle scorer: task '{task.name}' has no dimension "
                             f"'{dimension}' (its dimensions: "
                             f"{', '.join(task.dimensions) or 'none'})")
        self.task, self.dimension = task, dimension
        self.fingerprint = {"scorer": "oracle", "task": task.name,
                            "options": options_key(task)}
        if dimension is not None:  # one dimension's true reward (harness/dimensions.py)
            self.fingerprint["dimension"] = dimension

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        if self.dimension is not None:
            return self.task.dimension_rewards(prompt, completions)[self.dimension]
        return self.task.rewards(prompt, completions)


@SCORERS.register("length")
class LengthScorer:
    """Length of the completion in whitespace-separated words."""

    def __init__(self, task: Task) -> None:
        self.fingerprint = {"scorer": "length", "unit": "words"}

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        return [float(len(c.split())) for c in completions]


@SCORERS.register("vader")
class VaderScorer:
    """VADER sentiment, compound score in [-1, 1] (vaderSentiment's lexicon, any task)."""

    def __init__(self, task: Task) -> None:
        from importlib.metadata import version

        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()
        self.fingerprint = {"scorer": "vader", "version": version("vaderSentiment")}

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        return [self.analyzer.polarity_scores(c)["compound"] for c in completions]


@SCORERS.register("dpo_implicit")
class DPOImplicitRewardScorer:
    """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)) of a trained policy.

    `model` is the policy folder (e.g. a DPO checkpoint: results/<name>/artifacts/...),
    `reference` the model it was trained from; default: the experiment's base model when it
    is a real one. The completion is scored with EOS appended, as it was trained (RewardBench
    scores DPO models the same way, with the reference's log-probs subtracted).
    """

    # Annotated limits are checked when the spec loads (harness.spec.check_params)
    def __init__(self, task: Task, model: str, reference: str | None = None,
                 beta: Annotated[float, {"gt": 0}] = 0.1,
                 batch_size: Annotated[int, {"ge": 1}] = 16,
                 max_length: Annotated[int, {"ge": 1}] = 512) -> None:
        from pathlib import Path

        from harness.base_models import model_fingerprint

        reference = reference or (str(task.base_model_dir) if task.base_model_dir else None)
        if reference is None:
            raise ValueError("dpo_implicit needs `reference` (the policy's reference model "
                             "folder) when the base model is the task's tiny one")
        self.model_dir, self.reference_dir = Path(model), Path(reference)
        self.beta, self.batch_size, self.max_length = float(beta), batch_size, max_length
        self._models = None
        self.fingerprint = {"scorer": "dpo_implicit", "beta": self.beta,
                            "model": model_fingerprint(self.model_dir),
                            "reference": model_fingerprint(self.reference_dir),
                            "max_length": max_length}

    def _load(self):
        if self._models is None:
            from harness.base_models import load_causal_lm, load_tokenizer

            self._models = (load_tokenizer(self.model_dir),
                            load_causal_lm(self.model_dir).eval(),
                            load_causal_lm(self.reference_dir).eval())
        return self._models

    def score(self, prompt: str, completions: list[str]) -> list[float]:
        from trainers.logprobs import batched_completion_logps
        from trainers.tokenize import encode

        tok, policy, reference = self._load()
        enc = [encode(tok, prompt, c, self.max_length) for c in completions]
        pol = batched_completion_logps(policy, enc, tok.pad_token_id, self.batch_size)
        ref = batched_completion_logps(reference, enc, tok.pad_token_id, self.batch_size)
        return (self.beta * (pol - ref)).tolist()


# built-in components defined in their own modules register on import
import evaluators.reward_model  # noqa: E402,F401  (registers "reward_model")
