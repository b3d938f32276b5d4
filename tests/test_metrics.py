"""Diversity and exact-distribution metrics: hand-computed examples, Kirk et al.'s EAD and
distinct-n (verbatim copies in tests/anchors/kirk_diversity.py), sacrebleu's sentence BLEU."""

from __future__ import annotations

import math
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from evaluators.metrics import (
    averaged_distinct_n,
    distinct_n,
    ead,
    ead_n,
    exact_distribution_metrics,
    kirk_averages,
    kirk_words,
    per_prompt_distinct_n,
    self_bleu,
    self_bleu_groups,
    self_bleu_values,
    tokenize_13a,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for tests/anchors
from anchors import kirk_diversity as kirk  # noqa: E402

# ---------------------------------------------------------------------------- distinct-n


def test_distinct_1_and_2_hand_example() -> None:
    texts = ["a b a", "a b"]
    # unigrams a b a a b: 2 unique of 5
    assert distinct_n(texts, 1) == pytest.approx(2 / 5)
    # bigrams (a b) (b a) (a b): 2 unique of 3; n-grams never cross texts
    assert distinct_n(texts, 2) == pytest.approx(2 / 3)
    # trigrams: only "a b a"
    assert distinct_n(texts, 3) == pytest.approx(1.0)


def test_distinct_n_splits_on_any_whitespace() -> None:
    assert distinct_n(["x  y\ty\n"], 1) == pytest.approx(2 / 3)


def test_distinct_n_identical_samples_collapse() -> None:
    assert distinct_n(["the cat sat"] * 4, 1) == pytest.approx(3 / 12)
    assert distinct_n(["the cat sat"] * 4, 2) == pytest.approx(2 / 8)


def test_distinct_n_without_ngrams_is_none() -> None:
    assert distinct_n([], 1) is None
    assert distinct_n(["", "   "], 1) is None
    assert distinct_n(["one", "two"], 2) is None
    assert distinct_n(["one", "two words"], 2) == pytest.approx(1.0)


def test_per_prompt_distinct_n_averages_over_prompts() -> None:
    samples = [("p1", "a a"), ("p1", "a a"), ("p2", "x y"), ("p3", "")]
    # p1: 1 unique of 4; p2: 2 of 2; p3 has no unigram and is skipped
    assert per_prompt_distinct_n(samples, 1) == pytest.approx((0.25 + 1.0) / 2)
    # pooled over prompts it would be 3/6: per-prompt is a different number
    assert distinct_n([t for _, t in samples], 1) == pytest.approx(0.5)


def test_per_prompt_distinct_n_groups_interleaved_samples() -> None:
    samples = [("p1", "a"), ("p2", "b"), ("p1", "a"), ("p2", "c")]
    # p1: {a} of 2 -> 0.5; p2: {b, c} of 2 -> 1.0
    assert per_prompt_distinct_n(samples, 1) == pytest.approx(0.75)


def test_per_prompt_distinct_n_empty() -> None:
    assert per_prompt_distinct_n([], 1) is None
    assert per_prompt_distinct_n([("p", "a")], 2) is None


# ---------------------------------------------------------------------------- exact metrics

P = np.array([0.5, 0.25, 0.25])
R = np.array([1.0, 2.0, 3.0])
H = 1.5 * math.log(2)  # -(.5 ln .5 + 2 * .25 ln .25)


def test_exact_metrics_hand_computed() -> None:
    uniform = np.log(np.full(3, 1 / 3))
    out = exact_distribution_metrics(np.log(P), R, uniform)
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-12)
    assert out["exact_expected_reward"] == pytest.approx(0.5 * 1 + 0.25 * 2 + 0.25 * 3)
    assert out["exact_support_mass"] == pytest.approx(1.0)
    # KL(p || uniform) = log 3 - H
    assert out["exact_kl_to_target"] == pytest.approx(math.log(3) - H, abs=1e-12)


def test_exact_metrics_kl_to_itself_and_none_target() -> None:
    assert exact_distribution_metrics(np.log(P), R, np.log(P))["exact_kl_to_target"] == \
        pytest.approx(0.0, abs=1e-12)
    assert exact_distribution_metrics(np.log(P), R, None)["exact_kl_to_target"] is None


def test_exact_metrics_kl_direction() -> None:
    """KL(pi || target), not KL(target || pi): the two differ for this pair."""
    q = np.array([0.02, 0.08, 0.9])
    out = exact_distribution_metrics(np.log(P), R, np.log(q))
    forward = float((P * np.log(P / q)).sum())
    reverse = float((q * np.log(q / P)).sum())
    assert abs(forward - reverse) > 0.1
    assert out["exact_kl_to_target"] == pytest.approx(forward, abs=1e-12)


def test_exact_metrics_renormalises_leaked_mass() -> None:
    """Log-probs summing to 0.5 (the model puts half its mass outside the set)."""
    out = exact_distribution_metrics(np.log(P * 0.5), R, np.log(np.full(3, 1 / 3)))
    assert out["exact_support_mass"] == pytest.approx(0.5)
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-12)
    assert out["exact_expected_reward"] == pytest.approx(1.75)
    assert out["exact_kl_to_target"] == pytest.approx(math.log(3) - H, abs=1e-12)


def test_exact_metrics_deterministic_policy_limit() -> None:
    logp = np.log(np.array([1 - 2e-12, 1e-12, 1e-12]))
    out = exact_distribution_metrics(logp, R, None)
    assert out["exact_entropy"] == pytest.approx(0.0, abs=1e-9)
    assert out["exact_expected_reward"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exact_metrics_long_sequences_do_not_underflow() -> None:
    out = exact_distribution_metrics(np.log(P) - 1000.0, R, None)
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-9)
    assert out["exact_expected_reward"] == pytest.approx(1.75, abs=1e-9)
    assert out["exact_support_mass"] == pytest.approx(0.0, abs=1e-300)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exact_metrics_zero_probability_arm() -> None:
    logp = np.array([math.log(0.5), math.log(0.5), -math.inf])
    out = exact_distribution_metrics(logp, R, np.log(np.full(3, 1 / 3)))
    assert out["exact_entropy"] == pytest.approx(math.log(2))
    assert out["exact_expected_reward"] == pytest.approx(1.5)
    assert out["exact_kl_to_target"] == pytest.approx(math.log(3) - math.log(2))


def test_self_bleu_identical_and_disjoint_samples():
    same = [("p", "the cat sat on the mat")] * 3
    assert self_bleu(same) == pytest.approx(100.0)
    disjoint = [("p", "alpha beta gamma delta"), ("p", "one two three four"),
                ("p", "red green blue black")]
    assert self_bleu(disjoint) < 5.0
    # averaged per prompt; a prompt with a single sample is skipped
    assert self_bleu(same + [("q", "lonely")]) == pytest.approx(100.0)
    assert self_bleu([("q", "lonely")]) is None


# ---------------------------------------------------------------------------- Kirk et al.'s EAD
# Compared with verbatim copies of their code (tests/anchors/kirk_diversity.py, ANCHORS.md §8).

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog.", "ran", "Hello,", "world!", "3.5", "x-y",
         "&amp;", "(paren)", "end.\nStart", "tab\there", "  ", "", ".", "...", "é", "über",
         "1,000", "line\n", "\n\n", "<skipped>", "well-\nknown", "&quot;hi&quot;"]


def _text(rng: random.Random, lo: int = 0, hi: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _sets(seed: int, count: int) -> list[list[str]]:
    rng = random.Random(seed)
    return [[_text(rng) for _ in range(rng.randint(1, 8))] for _ in range(count)]


def test_kirk_words_follow_their_tokenization() -> None:
    # '.' and newlines removed (a newline joins its neighbours), only ' ' splits
    assert kirk_words("end.\nStart  now\tthen. ") == ["endStart", "now\tthen"]
    for texts in _sets(0, 50):
        for n in (1, 2, 3):
            assert [list(map(tuple, [w[i:i + n] for i in range(len(w) - n + 1)]))
                    for w in map(kirk_words, texts)] == kirk.lines_to_ngrams(texts, n=n)


@pytest.mark.parametrize("vocab_size", [50257, 49152, 4096, 7, 2])
def test_ead_n_equals_kirk(vocab_size: int) -> None:
    for texts in _sets(1, 150):
        for n in range(1, 6):
            config = {"n": n, "vocab_size": vocab_size}
            theirs = kirk.ExpectationAdjustedDistinctNgrams(config)(texts)
            ours = ead_n(texts, n, vocab_size)
            if ours is None:     # no n-gram: Kirk's ZeroDivisionError branch returns 0.0
                assert theirs == 0.0
            else:
                assert ours == pytest.approx(theirs, abs=1e-12, rel=0)


@pytest.mark.parametrize("vocab_size", [50257, 4096])
def test_averaged_ead_and_distinct_equal_kirk(vocab_size: int) -> None:
    checked = 0
    for texts in _sets(2, 200):
        ours_distinct, ours_ead = kirk_averages(texts, vocab_size)
        if ours_distinct is None:       # no word at all: Kirk gives 0.0, we None
            assert kirk.AveragedDistinctNgrams({"n_min": 1, "n_max": 5})(texts) == 0.0
            continue
        theirs_ead = kirk.AveragedExpectationAdjustedDistinctNgrams(
            {"n_min": 1, "n_max": 5, "vocab_size": vocab_size})(texts)
        theirs_distinct = kirk.AveragedDistinctNgrams({"n_min": 1, "n_max": 5})(texts)
        assert ours_ead == pytest.approx(theirs_ead, abs=1e-12, rel=0)
        assert ours_distinct == pytest.approx(theirs_distinct, abs=1e-12, rel=0)
        assert ead(texts, vocab_size) == ours_ead
        checked += 1
    assert checked > 150
    assert averaged_distinct_n(["a b"]) == pytest.approx((1 + 1 + 0 + 0 + 0) / 5)


def test_ead_hand_computed() -> None:
    # unigrams of "a b a": N = 2 unique of C = 3; with V = 2 the expected number of unique
    # draws is 2 * (1 - (1/2)^3) = 1.75, so EAD = 2 / 1.75
    assert ead_n(["a b a"], 1, vocab_size=2) == pytest.approx(8 / 7, abs=1e-15)
    # a large vocabulary: E[unique] -> C, so EAD -> distinct-n (2/3)
    assert ead_n(["a b a"], 1, vocab_size=10**6) == pytest.approx(2 / 3, rel=1e-5)
    assert ead_n(["one"], 2) is None
    assert ead([""]) is None
    with pytest.raises(ValueError):
        ead_n(["a"], 0)


# ---------------------------------------------------------------------------- fast self-BLEU


def _old_self_bleu(samples):
    """The previous evaluators/metrics.py self_bleu, verbatim (one sacrebleu call per sample)."""
    import sacrebleu

    by_prompt = defaultdict(list)
    for prompt_id, text in samples:
        by_prompt[prompt_id].append(text)
    values = []
    for texts in by_prompt.values():
        if len(texts) < 2:
            continue
        values.append(np.mean([sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score
                               for i, t in enumerate(texts)]))
    return float(np.mean(values)) if values else None


def test_tokenize_13a_equals_sacrebleu() -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    theirs = Tokenizer13a()
    rng = random.Random(3)
    alphabet = [chr(c) for c in range(32, 127)] + ["\n", "\t", "é", "—", "\u00a0", "&quot;",
                                                   "&amp;", "&lt;", "&gt;", "<skipped>", "-\n"]
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tokenize_13a(s) == theirs(s), repr(s)
    # dense in the chars of the context rules: '.', ',' next to digits, '-' after digits
    dense = list("..,,--0123456789ab \n\t") + ["é", "\u0663", "&amp;"]
    for _ in range(20000):
        s = "".join(rng.choice(dense) for _ in range(rng.randint(0, 20)))
        assert tokenize_13a(s) == theirs(s), repr(s)


def test_self_bleu_values_equal_sacrebleu_sentence_bleu() -> None:
    import sacrebleu

    rng = random.Random(4)
    groups = [[_text(rng, 0, 30) for _ in range(rng.randint(2, 6))] for _ in range(300)]
    groups += [["same text here"] * 3, ["", ""], ["", "a b c"], ["a b", "a b c d", "a b c"],
               ["1.5 million, 3-4 people.", "1.5 million , 3 - 4 people ."]]
    for texts in groups:
        ours = self_bleu_values(texts)
        theirs = [sacrebleu.sentence_bleu(t, texts[:i] + texts[i + 1:]).score
                  for i, t in enumerate(texts)]
        assert ours == pytest.approx(theirs, abs=1e-12, rel=0), texts
    assert self_bleu_values(["alone"]) == []


def test_self_bleu_groups_batch_many_sizes_and_chunks(monkeypatch) -> None:
    """Many groups of mixed sizes at once, also split over many small chunks: the values are
    those of each group alone, i.e. sacrebleu's."""
    import sacrebleu

    import evaluators.metrics as metrics

    rng = random.Random(6)
    groups = [[_text(rng, 0, 30) for _ in range(rng.choice([1, 2, 3, 4, 4, 4, 7]))]
              for _ in range(120)]
    expected = [[sacrebleu.sentence_bleu(t, g[:i] + g[i + 1:]).score for i, t in enumerate(g)]
                if len(g) > 1 else [] for g in groups]
    for cells in (metrics._CHUNK_CELLS, 500):
        monkeypatch.setattr(metrics, "_CHUNK_CELLS", cells)
        got = self_bleu_groups(groups)
        assert len(got) == len(groups)
        for g, e in zip(got, expected):
            assert g == pytest.approx(e, abs=1e-12, rel=0)


def test_self_bleu_equals_previous_implementation() -> None:
    rng = random.Random(5)
    samples = [(f"p{rng.randint(0, 40)}", _text(rng, 0, 30)) for _ in range(200)]
    assert self_bleu(samples) == pytest.approx(_old_self_bleu(samples), abs=1e-12, rel=0)



def test_exact_mean_reward_counts_leaked_mass_at_the_outside_reward() -> None:
    """Samples outside the set earn the task's outside reward: 0.8 of the mass on P
    (renormalised expectation 1.75) and 0.2 on the floor -1 give 0.8 * 1.75 - 0.2."""
    out = exact_distribution_metrics(np.log(0.8 * P), R, None, outside_reward=-1.0)
    assert out["exact_mean_reward"] == pytest.approx(0.8 * 1.75 - 0.2, abs=1e-12)
    assert out["exact_expected_reward"] == pytest.approx(1.75, abs=1e-12)  # renormalised pi
    assert out["exact_entropy"] == pytest.approx(H, abs=1e-12)
    assert out["exact_support_mass"] == pytest.approx(0.8)
    assert exact_distribution_metrics(np.log(P), R, None)["exact_mean_reward"] is None
