"""`bandit`: prompts with an enumerable set of one-word answers and a hidden reward table.

Because every possible answer can be listed, the trained policy's exact distribution over
answers is computed from its logits, and compared with each method's theoretical optimum
(SPO: softmax(r/alpha); DPO: pi_ref * exp(r/beta) / Z).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.hashing import content_hash
from harness.numeric import sigmoid
from harness.spec import SEED_LIMITS
from harness.tasks.base import Progress, Prompt, Task, TaskAssets


@dataclass
class BanditOptions:
    """Options of the bandit task; each field's metadata declares its valid range, checked
    when the spec loads (harness.spec)."""

    n_prompts: int = field(default=8, metadata={"help": "number of prompts (contexts)", "ge": 1})
    n_arms: int = field(default=8, metadata={"help": "answers per prompt (at least 2)", "ge": 2})
    # <= 50: true-reward gaps stay far below the 709 where exp() overflows in the BT labels
    reward_std: float = field(default=1.0, metadata={
        "help": "std of the true rewards, in (0, 50]", "gt": 0, "le": 50})
    # >= 0.01: the reference logits N(0,1)/temperature stay far below exp()'s overflow
    reference_temperature: float = field(default=1.0, metadata={
        "help": "the SFT data policy is softmax(N(0,1)/temperature); at least 0.01",
        "ge": 0.01})
    labels: str = field(default="soft", metadata={
        "help": "'soft': every pair once with P(chosen > rejected); 'sampled': Bradley-Terry "
                "draws; 'ranked': full rankings of the answers drawn from Plackett-Luce",
        "choices": ("soft", "sampled", "ranked")})
    pairs_per_prompt: int = field(default=64, metadata={
        "help": "pairs (or rankings) per prompt when sampled or ranked", "ge": 1})
    sft_samples_per_prompt: int = field(default=512, metadata={
        "help": "SFT examples per prompt", "ge": 1})
    sft_epochs: int = field(default=4, metadata={"help": "SFT epochs", "ge": 1})
    hidden_size: int = field(default=64, metadata={
        "help": "tiny model width; a multiple of 4, its number of attention heads",
        "ge": 4, "multiple_of": 4})
    num_layers: int = field(default=2, metadata={"help": "tiny model depth", "ge": 1})
    seed: int = field(default=0, metadata={"help": "seed of rewards, reference and pairs",
                                           **SEED_LIMITS})
    # Preference dimensions (harness/dimensions.py). At their defaults they stay out of
    # every content key (`key_default`), so one dimension is exactly the bandit before them.
    dimensions: int = field(default=1, metadata={
        "help": "reward tables per prompt, dim1..dimK; with K >= 2 each pair row is labelled "
                "per dimension (its `dimension`), the oracle's reward is their sum", "ge": 1,
        "le": 16, "key_default": True})
    dimension_correlation: float = field(default=0.0, metadata={
        "help": "correlation of each further table with dim1's, in [-1, 1] (0: independent)",
        "ge": -1, "le": 1, "key_default": True})


_sigmoid = sigmoid  # stable for any finite x


class BanditTask(Task):
    name = "bandit"
    Options = BanditOptions

    def __init__(self, options: BanditOptions, store) -> None:
        super().__init__(options, store)
        o = options
        from harness.errors import InputError
        if o.labels not in ("soft", "sampled", "ranked"):
            raise InputError("task_options.labels must be 'soft', 'sampled' or 'ranked'")
        if o.dimensions > 1 and o.labels == "ranked":
            raise InputError("task_options.labels 'ranked' takes one dimension; with "
                             "dimensions >= 2 use 'soft' or 'sampled'",
                             field="task_options.labels")
        rng = np.random.default_rng(o.seed)
        self.prompts = [f"q{i}" for i in range(o.n_prompts)]
        self.arms = [f"a{j}" for j in range(o.n_arms)]
        self.reward_table = rng.normal(0.0, o.reward_std, size=(o.n_prompts, o.n_arms))
        logits = rng.normal(0.0, 1.0, size=(o.n_prompts, o.n_arms)) / o.reference_temperature
        self.data_policy = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        self._rng = rng
        # dim1 is the table above (drawn first, as without dimensions); the others from
        # their own stream, each correlated with dim1's by dimension_correlation
        self.dimension_tables = [self.reward_table]
        if o.dimensions > 1:
            noise = np.random.default_rng([o.seed, 3]).normal(
                0.0, o.reward_std, size=(o.dimensions - 1, o.n_prompts, o.n_arms))
            c = o.dimension_correlation
            self.dimension_tables += [c * self.reward_table + np.sqrt(1 - c * c) * z
                                      for z in noise]
            # the oracle's (judge and scorer) reward is the sum over the dimensions
            self.reward_table = np.sum(self.dimension_tables, axis=0)

    @staticmethod
    def option_dimensions(options: BanditOptions) -> list[str]:
        return [f"dim{d + 1}" for d in range(options.dimensions)] if options.dimensions > 1 \
            else []

    def dimension_rewards(self, prompt: str, completions: list[str]) -> dict[str, list[float]]:
        p = self.prompts.index(prompt)
        out = {}
        for name, table in zip(self.dimensions, self.dimension_tables):
            floor = float(table[p].min()) - 1.0  # outside the arms: below every arm
            out[name] = [float(table[p][self.arms.index(c.strip())]) if c.strip() in self.arms
                         else floor for c in completions]
        return out

    def true_dimension_rewards(self, prompt: str) -> dict[str, np.ndarray] | None:
        p = self.prompts.index(prompt)
        return {name: table[p] for name, table in zip(self.dimensions, self.dimension_tables)}

    @property
    def bt_scale(self) -> float:
        return 1.0

    def enumerable_responses(self, prompt: str) -> list[str]:
        return list(self.arms)

    def rewards(self, prompt: str, completions: list[str]) -> list[float]:
        row = self.reward_table[self.prompts.index(prompt)]
        floor = self.outside_reward(prompt)
        return [float(row[self.arms.index(c.strip())]) if c.strip() in self.arms else floor
                for c in completions]

    def outside_reward(self, prompt: str) -> float:
        # anything that is not an arm scores below every arm
        return float(self.reward_table[self.prompts.index(prompt)].min()) - 1.0

    def true_rewards(self, prompt: str) -> np.ndarray:
        return self.reward_table[self.prompts.index(prompt)]

    # --------------------------------------------------------------------- data

    def _pairs(self) -> list[dict[str, Any]]:
        if self.options.dimensions == 1:
            return self._dimension_pairs(self.reward_table, np.random.default_rng(
                [self.options.seed, 1]))
        # one dataset per dimension, dimension by dimension: its pairs labelled by its table
        rows = []
        for d, (name, table) in enumerate(zip(self.dimensions, self.dimension_tables)):
            rng = np.random.default_rng([self.options.seed, 1] if d == 0
                                        else [self.options.seed, 1, d])
            rows += [{**r, "dimension": name} for r in self._dimension_pairs(table, rng)]
        return rows

    def _dimension_pairs(self, table: np.ndarray, rng: np.random.Generator
                         ) -> list[dict[str, Any]]:
        o, rows = self.options, []
        for p, prompt in enumerate(self.prompts):
            r = table[p]
            if o.labels == "ranked":
                # Plackett-Luce with weights exp(r): sorting r + Gumbel noise draws a ranking
                for _ in range(o.pairs_per_prompt):
                    order = np.argsort(-(r + rng.gumbel(size=o.n_arms)), kind="stable")
                    rows.append({"prompt": prompt, "responses": [self.arms[a] for a in order],
                                 "ranked": True})
            elif o.labels == "soft":
                for i, j in itertools.combinations(range(o.n_arms), 2):
                    w, l_ = (i, j) if r[i] >= r[j] else (j, i)
                    rows.append({"prompt": prompt, "chosen": self.arms[w],
                                 "rejected": self.arms[l_],
                                 "soft_label": _sigmoid(r[w] - r[l_])})
            else:
                for _ in range(o.pairs_per_prompt):
                    i, j = rng.choice(o.n_arms, size=2, replace=False)
                    w, l_ = (i, j) if rng.random() < _sigmoid(r[i] - r[j]) else (j, i)
                    rows.append({"prompt": prompt, "chosen": self.arms[w],
                                 "rejected": self.arms[l_]})
        return rows

    def prepare(self, progress: Progress) -> TaskAssets:
        import torch

        from harness.tasks.tiny_models import save_model, tiny_llama, word_tokenizer
        from trainers.sft import train_sft

        o = self.options
        # the reference depends on neither the labels nor the rewards' dimensions
        ref_key = content_hash({"task": "bandit", "completion_eos": False, "options": {
            k: v for k, v in vars(o).items() if k not in (
                "labels", "pairs_per_prompt", "dimensions", "dimension_correlation")}})
        found = self.store.get_artifact(ref_key)
        if found is None:
            torch.set_num_threads(max(1, torch.get_num_threads()))
            tok = word_tokenizer(self.prompts + self.arms)
            model = tiny_llama(tok, hidden_size=o.hidden_size, num_layers=o.num_layers,
                               num_heads=4, max_positions=16, seed=o.seed)
            rng = np.random.default_rng([o.seed, 2])
            examples = []
            for p, prompt in enumerate(self.prompts):
                draws = rng.choice(o.n_arms, size=o.sft_samples_per_prompt, p=self.data_policy[p])
                examples += [(prompt, self.arms[a]) for a in draws]
            train_sft(model, tok, examples, epochs=o.sft_epochs, batch_size=64,
                      learning_rate=3e-3, max_length=8, seed=o.seed, add_eos=False,
                      desc="bandit sft", show_progress=self.show_progress)
            staging = self.store.staging_dir("reference", ref_key)
            save_model(model, tok, staging)
            path = self.store.commit_artifact("reference", ref_key, staging, {"task": "bandit"})
            progress("reference", True)
        else:
            path = found["path"]
            progress("reference", False)
        return TaskAssets(reference_dir=path, reference_key=ref_key, pairs=self._pairs(),
                          eval_prompts=[Prompt(id=f"{i:04d}", text=p)
                                        for i, p in enumerate(self.prompts)],
                          reg_prompts=list(self.prompts), completion_eos=False)
