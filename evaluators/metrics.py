"""Diversity and distribution metrics over the samples of one model."""

from __future__ import annotations

import functools
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

GPT2_VOCAB = 50257   # Kirk et al.'s default V for EAD (GPT-2's vocabulary)


def ngram_counts(word_lists: Iterable[list[str]], n: int) -> tuple[int, int]:
    """(unique, total) n-grams pooled over word lists; n-grams never cross lists."""
    unique: set = set()
    total = 0
    for words in word_lists:
        # zip gives the tuples words[i:i + n] in C; unigrams count as the words themselves
        unique.update(words if n == 1 else zip(*(words[i:] for i in range(n))))
        total += max(len(words) - n + 1, 0)
    return len(unique), total


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique n-grams / all n-grams pooled over `texts` (whitespace words); None if no n-gram."""
    unique, total = ngram_counts((t.split() for t in texts), n)
    return unique / total if total else None


def per_prompt_distinct_n(samples: list[tuple[str, str]], n: int) -> float | None:
    """distinct-n over the N samples of each prompt, averaged over prompts (Kirk et al. 2023)."""
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for prompt_id, text in samples:
        by_prompt[prompt_id].append(text)
    values = [v for v in (distinct_n(t, n) for t in by_prompt.values()) if v is not None]
    return float(np.mean(values)) if values else None


def exact_distribution_metrics(logprobs: np.ndarray, rewards: np.ndarray,
                               target_logprobs: np.ndarray | None,
                               outside_reward: float | None = None) -> dict[str, float | None]:
    """Entropy, expected reward and KL(pi || target) of a distribution over an enumerable set.

    `logprobs` are the policy's sequence log-probs of every response; entropy, expected reward
    and KL are of the distribution renormalised over the set (the mass the model leaks
    outside it is reported separately). With a known `outside_reward`, `exact_mean_reward` is
    what the model's samples earn, the leaked mass counted at that reward: the truth the
    sampled `mean_reward` estimates.
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
        "exact_mean_reward": None if outside_reward is None
        else float(min(1.0, mass) * (p * rewards).sum() + max(0.0, 1.0 - mass) * outside_reward),
        "exact_support_mass": mass,
        "exact_kl_to_target": None,
    }
    if target_logprobs is not None:
        t = np.asarray(target_logprobs, dtype=float)
        out["exact_kl_to_target"] = float((p[nz] * (logp[nz] - t[nz])).sum())
    return out


def kirk_words(text: str) -> list[str]:
    """Kirk et al.'s words (`rlvsil/diversity/utils.py::lines_to_ngrams`), rule for rule.

    Drop every '.', drop every newline, split on single spaces, drop empty strings. A newline
    joins the words on either side and tabs do not split; kept so EAD matches their numbers.
    """
    return list(filter(None, text.replace(".", "").replace("\n", "").split(" ")))


def _ead_from_counts(unique: int, total: int, vocab_size: int) -> float:
    """Liu et al. 2022: unique / E[unique of `total` uniform draws from V] (Kirk's formula)."""
    v = vocab_size
    return unique / (v * (1 - ((v - 1) / v) ** total))


def _kirk_counts(texts: Iterable[str], n_max: int) -> list[tuple[int, int]]:
    """(unique, total) n-grams for n = 1..n_max over `texts`, words as `kirk_words`."""
    words = [kirk_words(t) for t in texts]
    return [ngram_counts(words, n) for n in range(1, n_max + 1)]


def ead_n(texts: Iterable[str], n: int, vocab_size: int = GPT2_VOCAB) -> float | None:
    """Expectation-adjusted distinct-n (Kirk et al.'s `ExpectationAdjustedDistinctNgrams`).

    N / (V * (1 - ((V - 1) / V) ** C)) with N unique and C total n-grams pooled over `texts`
    (n-grams never cross texts), words as `kirk_words`. None where there is no n-gram (Kirk
    returns 0.0 there). `vocab_size` is V: pass the policy tokenizer's vocabulary size.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    unique, total = ngram_counts([kirk_words(t) for t in texts], n)
    return _ead_from_counts(unique, total, vocab_size) if total else None


def kirk_averages(texts: Iterable[str], vocab_size: int = GPT2_VOCAB,
                  n_max: int = 5) -> tuple[float | None, float | None]:
    """(averaged distinct-n, averaged EAD) over n = 1..n_max, as Kirk et al. report them.

    `AveragedDistinctNgrams` and `AveragedExpectationAdjustedDistinctNgrams`: the plain mean
    over n, where an order without any n-gram counts 0.0 (their rule: short answers are
    penalised at high n). Both None when the texts hold no word at all.
    """
    counts = _kirk_counts(texts, n_max)
    if counts[0][1] == 0:
        return None, None
    distinct = [u / c if c else 0.0 for u, c in counts]
    ead = [_ead_from_counts(u, c, vocab_size) if c else 0.0 for u, c in counts]
    return float(np.mean(distinct)), float(np.mean(ead))


def ead(texts: Iterable[str], vocab_size: int = GPT2_VOCAB, n_max: int = 5) -> float | None:
    """Kirk et al.'s EAD averaged over n = 1..n_max (see `kirk_averages`)."""
    return kirk_averages(texts, vocab_size, n_max)[1]


def averaged_distinct_n(texts: Iterable[str], n_max: int = 5) -> float | None:
    """Kirk et al.'s distinct-n averaged over n = 1..n_max, words as `kirk_words`."""
    return kirk_averages(texts, GPT2_VOCAB, n_max)[0]


# sacrebleu's 13a tokenizer (`tokenizers/tokenizer_13a.py` + `tokenizer_re.py`), rewritten
# for speed; the tests check it against sacrebleu's on random strings. Rule 1 pads every char
# of one class with spaces (r' \1 '); Python 3.11's re.sub expands such a template in Python
# once per match, i.e. once per space, so here each char is replaced by str.replace in C,
# spaces first, so that the spaces inserted later are not padded again. Rules 2-4 insert
# spaces around '.', ',' (next to a non-digit) and '-' (after a digit); their regexes scan
# every char, so they are replayed over the few positions of those chars instead, with the
# regexes' leftmost, non-overlapping matching (a matched char is not matched again).
_PADDED = [chr(c) for c in [*range(ord("{"), ord("~") + 1), *range(ord("["), ord("`") + 1),
                            *range(ord("!"), ord("&") + 1), *range(ord("("), ord("+") + 1),
                            *range(ord(":"), ord("@") + 1), ord("/")]]
_DIGITS = frozenset("0123456789")    # [0-9]: ASCII only


def _positions(s: str, chars: str) -> list[int]:
    out = []
    for c in chars:
        i = s.find(c)
        while i != -1:
            out.append(i)
            i = s.find(c, i + 1)
    return sorted(out)


def _split_points(s: str) -> str:
    r"""Rule 2, '([^0-9])([\.,])' -> '\1 \2 ', then rule 3, '([\.,])([^0-9])' -> ' \1 \2'."""
    parts, last, free = [], 0, 0        # `free`: where the regex resumes after a match
    for j in _positions(s, ".,"):
        i = j - 1
        if i >= free and s[i] not in _DIGITS:
            parts += [s[last:i], f"{s[i]} {s[j]} "]
            last = free = j + 1
    parts.append(s[last:])
    s = "".join(parts)
    parts, last, free, n = [], 0, 0, len(s)
    for i in _positions(s, ".,"):
        if i >= free and i + 1 < n and s[i + 1] not in _DIGITS:
            parts += [s[last:i], f" {s[i]} {s[i + 1]}"]
            last = free = i + 2
    parts.append(s[last:])
    return "".join(parts)


def _split_dashes(s: str) -> str:
    r"""Rule 4, '([0-9])(-)' -> '\1 \2 '."""
    parts, last, free = [], 0, 0
    for j in _positions(s, "-"):
        i = j - 1
        if i >= free and s[i] in _DIGITS:
            parts += [s[last:i], f"{s[i]} {s[j]} "]
            last = free = j + 1
    parts.append(s[last:])
    return "".join(parts)


def tokenize_13a(line: str) -> str:
    """sacrebleu's default BLEU tokenizer (`Tokenizer13a`), output for output."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = (line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                .replace("&gt;", ">"))
    line = f" {line} ".replace(" ", "   ")
    for c in _PADDED:
        if c in line:
            line = line.replace(c, f" {c} ")
    return " ".join(_split_dashes(_split_points(line)).split())


@functools.lru_cache(maxsize=1)
def _sentence_bleu_metric():
    from sacrebleu.metrics.bleu import BLEU

    # exactly the object `sacrebleu.sentence_bleu` builds with its defaults
    return BLEU(lowercase=False, tokenize=BLEU.TOKENIZER_DEFAULT, force=False,
                smooth_method="exp", smooth_value=None, effective_order=True)


_CHUNK_CELLS = 250_000   # (texts x grams) cells of one chunk: small enough to stay in cache


def self_bleu_values(texts: Sequence[str]) -> list[float]:
    """Sentence BLEU of each text against all the others (see `self_bleu_groups`)."""
    return self_bleu_groups([texts])[0]


def self_bleu_groups(groups: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per group, the sentence BLEU of each text against the group's other texts: equal to
    sacrebleu's `sentence_bleu(text, others).score` (the tests check the two agree).

    `sentence_bleu` rebuilds a BLEU object and re-tokenises every reference for every
    hypothesis (2.2 s a model at 800 prompts x 4 samples). Here each text is tokenised and
    its n-grams counted once, the clipped counts of many groups of the same size come from
    one count matrix, and the statistics go to sacrebleu's own `compute_bleu`. A group of
    fewer than two texts has no references, so no values.
    """
    out: list[list[float]] = [[] for _ in groups]
    by_size: dict[int, list[int]] = defaultdict(list)
    for g, texts in enumerate(groups):
        if len(texts) >= 2:
            by_size[len(texts)].append(g)
    for k, members in by_size.items():
        chunk: list[tuple[int, list[list[str]]]] = []
        cells = 0
        for g in members:
            toks = [tokenize_13a(t.rstrip()).split() for t in groups[g]]  # _preprocess_segment
            chunk.append((g, toks))
            cells += k * sum(len(w) for w in toks) * 4
            if cells >= _CHUNK_CELLS:
                _self_bleu_chunk(k, chunk, out)
                chunk, cells = [], 0
        if chunk:
            _self_bleu_chunk(k, chunk, out)
    return out


def _self_bleu_chunk(k: int, chunk: list[tuple[int, list[list[str]]]],
                     out: list[list[float]]) -> None:
    """Self-BLEU of groups of `k` tokenised texts, written to out[group]."""
    bleu = _sentence_bleu_metric()
    order = bleu.max_ngram_order
    n_groups = len(chunk)
    lens = np.array([[len(w) for w in toks] for _, toks in chunk], dtype=np.int64)  # (G, k)
    sizes = np.maximum(lens[:, :, None] - np.arange(order), 0)    # n-grams per (G, k, n)
    flat = sizes.ravel()
    per_group = sizes.reshape(n_groups, -1).sum(axis=1)
    starts = np.concatenate([[0], np.cumsum(per_group)[:-1]])
    # per occurrence, the position of the same gram's first occurrence in its group: one
    # small dict per group (dict.setdefault, run in C by map) counting from the group's start
    first = np.fromiter(itertools.chain.from_iterable(
        map({}.setdefault, _all_ngrams(toks, order), itertools.count(int(start)))
        for (_, toks), start in zip(chunk, starts)), np.int64, int(flat.sum()))
    is_first = first == np.arange(len(first))
    col = (np.cumsum(is_first) - 1)[first]             # distinct (group, gram), in order
    n_cols = int(is_first.sum())
    row = np.repeat(np.tile(np.repeat(np.arange(k), order), n_groups), flat)   # text in group
    gram_order = np.repeat(np.tile(np.arange(order), n_groups * k), flat)[is_first]
    gram_group = np.repeat(np.arange(n_groups), per_group)[is_first]
    counts = np.bincount(row * n_cols + col, minlength=k * n_cols).reshape(k, n_cols)
    # a hypothesis is clipped by the max count over the OTHER texts of its group: the
    # runner-up where the largest count is its own, else the largest (a tie makes the two
    # equal; a gram no other text has gets the runner-up 0)
    cols = np.arange(n_cols)
    holder = counts.argmax(axis=0)
    top = counts[holder, cols]
    others = counts.copy()
    others[holder, cols] = -1
    runner_up = others.max(axis=0)
    ref_max = np.broadcast_to(top, counts.shape).copy()
    ref_max[holder, cols] = runner_up
    clipped = np.minimum(counts, ref_max)
    cell = ((gram_group[None, :] * k + np.arange(k)[:, None]) * order + gram_order[None, :])
    size = n_groups * k * order
    correct = np.bincount(cell.ravel(), weights=clipped.ravel(), minlength=size)
    total = np.bincount(cell.ravel(), weights=counts.ravel(), minlength=size)
    correct = correct.astype(np.int64).reshape(n_groups, k, order).tolist()
    total = total.astype(np.int64).reshape(n_groups, k, order).tolist()
    # the closest reference length, the shorter one on a tie (sacrebleu's rule)
    gap = np.abs(lens[:, :, None] - lens[:, None, :]) * (int(lens.max()) + 1) + lens[:, None, :]
    gap[:, np.arange(k), np.arange(k)] = np.iinfo(np.int64).max     # not against itself
    ref_len = np.take_along_axis(lens, gap.argmin(axis=2), axis=1).tolist()
    lens_list = lens.tolist()
    for i, (g, _) in enumerate(chunk):
        out[g] = [bleu.compute_bleu(correct[i][j], total[i][j], lens_list[i][j], ref_len[i][j],
                                    smooth_method=bleu.smooth_method,
                                    smooth_value=bleu.smooth_value,
                                    effective_order=bleu.effective_order,
                                    max_ngram_order=order).score for j in range(k)]


def _all_ngrams(toks: list[list[str]], order: int) -> Iterable[tuple[str, ...]]:
    """The 1..order-grams of each text in turn (as sacrebleu's `extract_all_word_ngrams`)."""
    return itertools.chain.from_iterable(zip(*(w[i:] for i in range(n)))
                                         for w in toks for n in range(1, order + 1))


def self_bleu(samples: list[tuple[str, str]]) -> float | None:
    """Self-BLEU (Zhu et al. 2018): BLEU of each sample against the other samples of its prompt.

    sacrebleu's sentence BLEU (0-100, default smoothing), averaged over samples, then over
    prompts with at least two samples. Higher means less diverse.
    """
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for prompt_id, text in samples:
        by_prompt[prompt_id].append(text)
    values = [np.mean(v) for v in self_bleu_groups(list(by_prompt.values())) if v]
    return float(np.mean(values)) if values else None
