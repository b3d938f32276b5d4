"""`sentiment`: continue an opening of a Shakespeare line so that it reads positive.

As in the DPO paper's controlled-sentiment experiment: a tiny model is trained on the
corpus (the SFT reference), pairs of its continuations are labelled by an independent
sentiment scorer (VADER), and the true reward of a continuation is VADER's compound score.

With `dimensions: 2` a second true reward joins it, brevity (`brevity_reward`), which
conflicts in part with sentiment: VADER's compound score grows with the number of
sentiment-bearing words, so the more positive continuation is often the longer one. Each
prompt's candidates then give one pair per dimension (best against worst by that
dimension's reward, labelled by its Bradley-Terry probability), and the oracle's reward,
which the judge and the `mean_reward` column use, is the sum of the two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import InputError
from harness.hashing import content_hash
from harness.numeric import sigmoid
from harness.spec import SEED_LIMITS
from harness.tasks.base import Progress, Prompt, Task, TaskAssets


@dataclass
class SentimentOptions:
    """Options of the sentiment task; each field's metadata declares its valid range, checked
    when the spec loads (harness.spec)."""

    prompt_words: int = field(default=3, metadata={
        "help": "words of a line given as the prompt", "ge": 1})
    n_train_prompts: int = field(default=256, metadata={
        "help": "prompts to build pairs on", "ge": 1})
    n_eval_prompts: int = field(default=64, metadata={"help": "held-out prompts", "ge": 1})
    n_reg_prompts: int = field(default=256, metadata={
        "help": "prompts for SPO's KL regularizer", "ge": 1})
    candidates_per_prompt: int = field(default=4, metadata={
        "help": "SFT samples per prompt; the best and worst form the pair (at least 2)",
        "ge": 2})
    completion_tokens: int = field(default=20, metadata={
        "help": "tokens per sampled continuation", "ge": 1})
    labels: str = field(default="sampled", metadata={
        "help": "'sampled': Bradley-Terry draw decides chosen; 'soft': best is chosen, with P as soft_label",
        "choices": ("soft", "sampled")})
    # <= 100: with VADER scores in [-1, 1], bt_scale * gap stays below exp()'s overflow
    bt_scale: float = field(default=5.0, metadata={
        "help": "P(a beats b) = sigmoid(bt_scale * (vader(a) - vader(b))); in (0, 100]",
        "gt": 0, "le": 100})
    sft_lines: int = field(default=12000, metadata={"help": "corpus lines used for SFT", "ge": 1})
    sft_epochs: int = field(default=2, metadata={"help": "SFT epochs", "ge": 1})
    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary size", "ge": 1})
    hidden_size: int = field(default=128, metadata={
        "help": "tiny model width; a multiple of 4, its number of attention heads",
        "ge": 4, "multiple_of": 4})
    num_layers: int = field(default=4, metadata={"help": "tiny model depth", "ge": 1})
    seed: int = field(default=0, metadata={"help": "seed of splits, model, SFT and pairs",
                                           **SEED_LIMITS})
    # Preference dimensions (harness/dimensions.py); at the default, out of every key
    dimensions: int = field(default=1, metadata={
        "help": "1: sentiment only; 2: sentiment and brevity (1 - words/10, clipped to "
                "[-1, 1]), each pair row labelled per dimension, the oracle's reward their sum",
        "ge": 1, "le": 2, "key_default": True})

DIMENSIONS = ("sentiment", "brevity")
BREVITY_WORDS = 10  # a continuation of this many words scores 0; none scores 1, 20+ score -1


def brevity_reward(text: str) -> float:
    """1 - words/10, clipped to [-1, 1]: on VADER's scale, shorter is better."""
    return float(min(1.0, max(-1.0, 1.0 - len(text.split()) / BREVITY_WORDS)))


_sigmoid = sigmoid  # stable for any finite x


class SentimentTask(Task):
    name = "sentiment"
    Options = SentimentOptions
    accepts_base_model = True

    def __init__(self, options: SentimentOptions, store) -> None:
        super().__init__(options, store)
        if options.labels not in ("soft", "sampled"):
            raise InputError("task_options.labels must be 'soft' or 'sampled'")
        self._analyzer = None

    @property
    def bt_scale(self) -> float:
        return self.options.bt_scale

    def sentiment_rewards(self, completions: list[str]) -> list[float]:
        """VADER's compound score of each completion, in [-1, 1]."""
        if self._analyzer is None:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            self._analyzer = SentimentIntensityAnalyzer()
        return [self._analyzer.polarity_scores(c)["compound"] for c in completions]

    def rewards(self, prompt: str, completions: list[str]) -> list[float]:
        if self.options.dimensions == 1:
            return self.sentiment_rewards(completions)
        return [float(sum(r)) for r in zip(*self.dimension_rewards(prompt, completions).values())]

    @staticmethod
    def option_dimensions(options: SentimentOptions) -> list[str]:
        return list(DIMENSIONS[:options.dimensions]) if options.dimensions > 1 else []

    def dimension_rewards(self, prompt: str, completions: list[str]) -> dict[str, list[float]]:
        if self.options.dimensions == 1:
            return {}
        return {"sentiment": self.sentiment_rewards(completions),
                "brevity": [brevity_reward(c) for c in completions]}

    def _splits(self) -> dict[str, list[str]]:
        from harness.tasks.corpus import verse_lines

        o = self.options
        lines = verse_lines(min_words=o.prompt_words + 3)
        order = np.random.default_rng(o.seed).permutation(len(lines))
        lines = [lines[i] for i in order]
        sizes = {"eval": o.n_eval_prompts, "reg": o.n_reg_prompts, "train": o.n_train_prompts}
        out, start = {}, 0
        for name, n in sizes.items():
            out[name] = lines[start:start + n]
            start += n
        out["sft"] = lines[start:start + o.sft_lines]
        return out

    def _split_line(self, line: str) -> tuple[str, str]:
        words = line.split()
        k = self.options.prompt_words
        return " ".join(words[:k]), " " + " ".join(words[k:])

    def prepare(self, progress: Progress) -> TaskAssets:
        o = self.options
        splits = self._splits()
        model_opts = {k: getattr(o, k) for k in ("prompt_words", "sft_lines", "sft_epochs",
                                                 "vocab_size", "hidden_size", "num_layers", "seed",
                                                 "n_eval_prompts", "n_reg_prompts",
                                                 "n_train_prompts")}
        if self.base_model_dir is not None:
            # A real base model is the reference as it is (an instruct model needs no SFT
            # on the corpus to continue a line); pairs are sampled from it.
            from harness.base_models import model_fingerprint

            path = Path(self.base_model_dir)
            ref_key = content_hash({"task": "sentiment", "base_model": model_fingerprint(path)})
            progress("reference", False)
        else:
            ref_key = content_hash({"task": "sentiment", "reference": model_opts})
            found = self.store.get_artifact(ref_key)
            if found is None:
                path = self._build_reference(ref_key, splits["sft"])
                progress("reference", True)
            else:
                path = found["path"]
                progress("reference", False)

        pair_opts = {k: getattr(o, k) for k in ("candidates_per_prompt", "completion_tokens",
                                                "labels", "bt_scale")}
        if o.dimensions > 1:  # absent at the default: the keys from before dimensions hold
            pair_opts["dimensions"] = o.dimensions
        if self.base_model_dir is not None:
            # the tiny reference's key holds the prompt split already; a base model's does
            # not, and its pairs come from the split's training prompts
            pair_opts["split"] = {k: model_opts[k] for k in (
                "prompt_words", "seed", "n_eval_prompts", "n_reg_prompts", "n_train_prompts")}
        pairs_key = content_hash({"task": "sentiment", "pairs": pair_opts, "reference": ref_key})
        found = self.store.get_artifact(pairs_key)
        if self.pairs_given:  # the spec's data.train replaces them: sample none
            pairs = []
            progress("pairs", False)
        elif found is None:
            pairs = self._build_pairs(path, [self._split_line(s)[0] for s in splits["train"]])
            staging = self.store.staging_dir("pairs", pairs_key)
            import json
            (staging / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs))
            self.store.commit_artifact("pairs", pairs_key, staging, {"n": len(pairs)})
            progress("pairs", True)
        else:
            import json
            pairs = [json.loads(s) for s in (found["path"] / "pairs.jsonl").read_text().splitlines()]
            progress("pairs", False)
        return TaskAssets(
            reference_dir=path, reference_key=ref_key, pairs=pairs,
            eval_prompts=[Prompt(id=f"{i:04d}", text=self._split_line(s)[0])
                          for i, s in enumerate(splits["eval"])],
            reg_prompts=[self._split_line(s)[0] for s in splits["reg"]])

    def _build_reference(self, key: str, lines: list[str]):
        from harness.tasks.tiny_models import bpe_tokenizer, save_model, tiny_llama
        from trainers.sft import train_sft

        o = self.options
        tok = bpe_tokenizer(lines, o.vocab_size)
        model = tiny_llama(tok, hidden_size=o.hidden_size, num_layers=o.num_layers, num_heads=4,
                           max_positions=128, seed=o.seed)
        examples = [self._split_line(s) for s in lines]
        train_sft(model, tok, examples, epochs=o.sft_epochs, batch_size=32, learning_rate=2e-3,
                  max_length=48, seed=o.seed, loss_on_prompt=True, desc="sentiment sft",
                  show_progress=self.show_progress)
        staging = self.store.staging_dir("reference", key)
        save_model(model, tok, staging)
        return self.store.commit_artifact("reference", key, staging, {"task": "sentiment"})

    def _build_pairs(self, reference_dir, prompts: list[str]) -> list[dict[str, Any]]:
        """Sample candidates from the reference; best vs worst by VADER, labelled by BT
        (with dimensions: one such pair per dimension, by that dimension's reward)."""
        from evaluators.generation import HFBackend, SamplingParams

        o = self.options
        backend = HFBackend(str(reference_dir))
        params = SamplingParams(max_new_tokens=o.completion_tokens, temperature=1.0, top_p=1.0)
        texts = backend.generate([(p, i) for p in prompts for i in range(o.candidates_per_prompt)],
                                 params, batch_size=64, seed=o.seed, desc="sentiment pairs",
                                 progress=self.show_progress)
        rng = np.random.default_rng([o.seed, 3])
        by_dimension: dict[str | None, list[dict[str, Any]]] = {}
        for n, prompt in enumerate(prompts):
            cands = [t.text for t in texts[n * o.candidates_per_prompt:(n + 1) * o.candidates_per_prompt]]
            scored = (self.dimension_rewards(prompt, cands) if o.dimensions > 1
                      else {None: self.sentiment_rewards(cands)})
            for dimension, r in scored.items():
                row = self._pair(prompt, cands, r, rng)
                if row is not None:
                    extra = {} if dimension is None else {"dimension": dimension}
                    by_dimension.setdefault(dimension, []).append({**row, **extra})
        # dimension by dimension, as one dataset per dimension would give them
        return [row for rows in by_dimension.values() for row in rows]

    def _pair(self, prompt: str, cands: list[str], r: list[float],
              rng: np.random.Generator) -> dict[str, Any] | None:
        """Best against worst by `r`, labelled by BT; None without a preference signal."""
        o = self.options
        hi, lo = int(np.argmax(r)), int(np.argmin(r))
        if r[hi] == r[lo] or cands[hi] == cands[lo]:
            return None  # no preference signal in this prompt's samples
        p_hi = _sigmoid(o.bt_scale * (r[hi] - r[lo]))
        if o.labels == "soft":
            return {"prompt": prompt, "chosen": cands[hi], "rejected": cands[lo],
                    "soft_label": p_hi}
        w, l_ = (hi, lo) if rng.random() < p_hi else (lo, hi)
        return {"prompt": prompt, "chosen": cands[w], "rejected": cands[l_]}
