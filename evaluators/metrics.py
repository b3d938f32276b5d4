"""Diversity and distribution metrics over the samples of one model."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np


def _ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique n-grams / all n-grams pooled over `texts` (whitespace words); None if no n-gram."""
    grams = [g for t in texts for g in _ngrams(t.split(), n)]
    return len(set(grams)) / len(grams) if grams else None


def per_prompt_distinct_n(samples: list[tuple[str, str]], n: int) -> float | None:
    """distinct-n over the N samples of each prompt, averaged over prompts (Kirk et al. 2023)."""
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for prompt_id, text in samples:
        by_prompt[prompt_id].append(text)
    values = [v for v in (distinct_n(t, n) for t in by_prompt.values()) if v is not None]
    return float(np.mean(values)) if values else None


def exact_distribution_metrics(logprobs: np.ndarray, rewards: np.ndarray,
                               target_logprobs: np.ndarray | None) -> dict[str, float | None]:
    """Entropy, expected reward and KL(pi || target) of a distribution over an enumerable set.

    `logprobs` are the policy's sequence log-probs of every response; they are renormalised
    over the set (the mass the model leaks outside it is reported separately).
    """
    logprobs = np.asarray(logprobs, dtype=float)
    lse = float(np.logaddexp.reduce(logprobs))   # log of the mass, without underflow
    mass = float(np.exp(lse))
    logp = logprobs - lse
    p = np.exp(logp)
    nz = p > 0                                   # 0 * log 0 = 0
    out: dict[str, float | None] = {
        "exact_entropy": float(-(p[nz] * logp[nz]).sum()),
        "exact_expected_reward": float((p * rewards).sum()),
        "exact_support_mass": mass,
        "exact_kl_to_target": None,
    }
    if target_logprobs is not None:
        t = np.asarray(target_logprobs, dtype=float)
        out["exact_kl_to_target"] = float((p[nz] * (logp[nz] - t[nz])).sum())
    return out


def self_bleu(samples: list[tuple[str, str]]) -> float | None:
    """Self-BLEU (Zhu et al. 2018): BLEU of each sample against the other samples of its prompt.

    sacrebleu's sentence BLEU (0-100, default smoothing), averaged over samples, then over
    prompts with at least two samples. Higher means less diverse.
    """
    import sacrebleu

    by_prompt: dict[str, list[str]] = defaultdict(list)
    for prompt_id, text in samples:
        by_prompt[prompt_id].append(text)
    values = []
    for texts in by_prompt.values():
        if len(texts) < 2:
            continue
        values.append(np.mean([sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score
                               for i, t in enumerate(texts)]))
    return float(np.mean(values)) if values else None
