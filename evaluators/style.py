"""Style covariates of a judged pair, as Arena-Hard v2 computes them for style control.

Arena-Hard-Auto v2.0 (`lmarena/arena-hard-auto@196f6b8`) controls a rating for how long an
answer is and how much markdown it uses, because judges reward both independently of
quality. Per answer it counts headers, list items and bold spans after removing fenced code
blocks (`utils/add_markdown_info.py`), and per battle it turns the two answers' counts into
bounded, normalised differences (`show_result.py::print_leaderboard_with_style_features`).

One deliberate difference: Arena-Hard measures length in gpt-4o tokens (tiktoken), whose
encoding cannot be downloaded offline, so the length here is in **characters** by default;
pass `length=` (any `str -> int`, e.g. a local tokenizer's `len(tok.encode(text))`) for
tokens. The z-scoring of the features happens in `stats.style_controlled_ratings`.

Sign convention: in Arena-Hard the evaluated model is the +1 column and the baseline the -1
column, and every feature is (model - baseline). Here model_b is the +1 column
(p_b = P(model_b wins)), so every feature is (b - a).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd

# The order of Arena-Hard's metadata dict (token_len, header, list, bold) and its feature columns.
STYLE_FEATURES = ("length", "header_count", "list_count", "bold_count")

# add_markdown_info.py's patterns, compiled once (the text is matched the same way).
_CODE_BLOCK = re.compile("```([^`]*)```")
_HEADERS = [re.compile(rf"^#{{{k}}}\s", re.MULTILINE) for k in range(1, 7)]
_ORDERED = re.compile(r"^\s*\d+\.\s", re.MULTILINE)
_UNORDERED = re.compile(r"^\s*[-*+]\s", re.MULTILINE)
_BOLD = [re.compile(r"\*\*[^*\n]+\*\*"), re.compile(r"__[^_\n]+__")]


def _remove_code_blocks(text: str) -> str:
    """add_markdown_info.py's `remove_pattern`: delete every fenced block's text, in order."""
    for block in _CODE_BLOCK.findall(text):
        text = text.replace(block, "")
    return text


def markdown_counts(text: str, length: Callable[[str], int] = len) -> dict[str, int]:
    """Length and markdown element counts of one answer (Arena-Hard v2 `count_markdown_elements`).

    The counts are taken after removing code blocks, exactly as `get_element_counts` does,
    and summed over their kinds (h1..h6; ordered + unordered; ** + __) as
    `print_leaderboard_with_style_features` sums them. `length` is measured on the whole
    answer (code included), as `add_markdown_meta`'s token_len is; characters by default.
    """
    if length is len:
        return dict(_cached_counts(text))
    return {"length": int(length(text)), **_element_counts(text)}


def _element_counts(text: str) -> dict[str, int]:
    body = _remove_code_blocks(text)
    return {
        "header_count": sum(len(p.findall(body)) for p in _HEADERS),
        "list_count": len(_ORDERED.findall(body)) + len(_UNORDERED.findall(body)),
        "bold_count": sum(len(p.findall(body)) for p in _BOLD),
    }


@lru_cache(maxsize=1 << 17)
def _cached_counts(text: str) -> tuple[tuple[str, int], ...]:
    """Character-length counts, cached: in all-pairs battles each answer is judged many times."""
    return (("length", len(text)), *_element_counts(text).items())


def _bounded_diff(b: float, a: float, plus: float) -> float:
    """(b - a) / (b + a + plus); 0 when both are 0 (Arena-Hard would divide 0 by 0)."""
    den = b + a + plus
    return (b - a) / den if den else 0.0


def style_features(text_a: str, text_b: str,
                   length: Callable[[str], int] = len) -> dict[str, float]:
    """The four style features of one battle, model_b's answer relative to model_a's.

    As Arena-Hard v2 (model = b, baseline = a): length (len_b - len_a) / (len_b + len_a);
    for headers, lists and bold the density d = count / (len + 1) and the feature
    (d_b - d_a) / (d_b + d_a + 1). Two empty answers give a length feature of 0 instead
    of Arena-Hard's NaN.
    """
    ca, cb = markdown_counts(text_a, length), markdown_counts(text_b, length)
    out = {"length": _bounded_diff(cb["length"], ca["length"], 0.0)}
    for key in STYLE_FEATURES[1:]:
        da = ca[key] / (ca["length"] + 1)
        db = cb[key] / (cb["length"] + 1)
        out[key] = _bounded_diff(db, da, 1.0)
    return out


def style_feature_table(texts_a: Sequence[str], texts_b: Sequence[str],
                        length: Callable[[str], int] = len) -> pd.DataFrame:
    """`style_features` of many battles at once: one row per battle, columns STYLE_FEATURES.

    In all-pairs battles every answer is judged against many rivals, so the markdown is
    counted once per distinct text and the differences are computed on arrays (608,000
    battles of 64,000 answers in about a second instead of several).
    """
    n = len(texts_a)
    if len(texts_b) != n:
        raise ValueError(f"{n} texts_a but {len(texts_b)} texts_b")
    codes, uniques = pd.factorize(pd.Series([*texts_a, *texts_b], dtype=object))
    counts = np.array([[c[k] for k in STYLE_FEATURES]
                       for c in (markdown_counts(u, length) for u in uniques)],
                      dtype=float).reshape(-1, len(STYLE_FEATURES))
    ca, cb = counts[codes[:n]], counts[codes[n:]]
    out = np.empty((n, len(STYLE_FEATURES)))
    out[:, 0] = _bounded_diffs(cb[:, 0], ca[:, 0], 0.0)
    da, db = ca[:, 1:] / (ca[:, :1] + 1), cb[:, 1:] / (cb[:, :1] + 1)
    out[:, 1:] = _bounded_diffs(db, da, 1.0)
    return pd.DataFrame(out, columns=list(STYLE_FEATURES))


def _bounded_diffs(b: np.ndarray, a: np.ndarray, plus: float) -> np.ndarray:
    """`_bounded_diff` on arrays."""
    den = b + a + plus
    return np.divide(b - a, den, out=np.zeros_like(den), where=den != 0)
