"""RAKE, Rapid Automatic Keyword Extraction (Rose, Engel, Cramer and Cowley 2010), with the
character spans of every phrase, so that key content can be cut out of a response.

Self-supervised PO (trainers/losses/ssl.py) finds a response's key content with RAKE
(METHODS.md §8 [S]). Written here rather than taken from PyPI: rake-nltk needs NLTK's
stopwords corpus downloaded at run time; multi-rake needs pycld2 (a C build) and returns
lower-cased phrases without positions; python-rake (unmaintained since 2020) returns no
positions either. The algorithm is a few lines; the SMART stop list of the reference
implementation ships in `trainers/rake_stopwords.py`.

The algorithm, as in the paper:
1. candidate phrases are maximal runs of words that are not stop words, with nothing but
   spaces or tabs between them (punctuation and line breaks end a phrase);
2. each word scores deg(w) / freq(w): freq counts its occurrences in candidates, deg adds
   the length of each candidate it occurs in (co-occurrences, itself included);
3. a phrase scores the sum of its words' scores; the keywords are the distinct phrases
   (case-folded), best first. Ties keep the order of first occurrence (as python-rake's
   stable sort does; rake-nltk breaks them by phrase text).
4. the key content is the top T phrases, T = ceil(share x distinct content words); the paper
   keeps T = one third of the words in its co-occurrence graph (`share` = 1/3).
Not implemented: the paper's optional adjoining of keywords across an interior stop word
("axis of evil") when the pair recurs twice or more in a document.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from harness.hashing import content_hash
from trainers.rake_stopwords import SMART_STOPWORDS

# letters and digits, with inner apostrophes and hyphens kept in the word (don't, state-of-the-art)
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_SAME_PHRASE_GAP = re.compile(r"[ \t]*")

RAKE_VERSION = 1  # bump when extraction or removal changes what a text gives


@dataclass(frozen=True)
class KeyPhrase:
    words: tuple[str, ...]            # case-folded words: the phrase's identity
    score: float
    spans: tuple[tuple[int, int], ...]  # (start, end) of every occurrence in the text

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _fold(word: str) -> str:
    return word.lower().replace("\u2019", "'")


def candidates(text: str, stopwords: frozenset[str] = SMART_STOPWORDS
               ) -> list[tuple[tuple[str, ...], int, int]]:
    """Candidate phrase occurrences (words, start, end), in text order."""
    out: list[tuple[tuple[str, ...], int, int]] = []
    words: list[str] = []
    start = end = 0
    for m in _WORD.finditer(text):
        word = _fold(m.group())
        joined = bool(words) and _SAME_PHRASE_GAP.fullmatch(text, end, m.start()) is not None
        if words and (word in stopwords or not joined):
            out.append((tuple(words), start, end))
            words = []
        if word in stopwords:
            continue
        if not words:
            start = m.start()
        words.append(word)
        end = m.end()
    if words:
        out.append((tuple(words), start, end))
    return out


def extract(text: str, stopwords: frozenset[str] = SMART_STOPWORDS) -> list[KeyPhrase]:
    """Every distinct candidate phrase with its RAKE score, best first."""
    found = candidates(text, stopwords)
    freq: dict[str, int] = {}
    degree: dict[str, int] = {}
    for words, _, _ in found:
        for w in words:
            freq[w] = freq.get(w, 0) + 1
            degree[w] = degree.get(w, 0) + len(words)
    spans: dict[tuple[str, ...], list[tuple[int, int]]] = {}
    for words, s, e in found:  # dicts keep first-occurrence order
        spans.setdefault(words, []).append((s, e))
    phrases = [KeyPhrase(words, sum(degree[w] / freq[w] for w in words), tuple(sp))
               for words, sp in spans.items()]
    return sorted(phrases, key=lambda p: -p.score)  # stable: ties stay in text order


def key_phrases(text: str, share: float = 1 / 3,
                stopwords: frozenset[str] = SMART_STOPWORDS) -> list[KeyPhrase]:
    """The key content: the top T = ceil(share x distinct content words) phrases."""
    phrases = extract(text, stopwords)
    n_words = len({w for p in phrases for w in p.words})
    return phrases[:math.ceil(share * n_words)]


def remove(text: str, phrases: list[KeyPhrase]) -> str:
    """`text` without every occurrence of `phrases`; the gaps either side of a cut merge.

    Of two gaps that meet, the one with punctuation is kept ("good, bad dog" without "bad"
    is "good, dog"), else the shorter whitespace; two gaps with punctuation are joined
    without their inner whitespace. A cut that opens the text keeps only its leading
    whitespace (completions that start with a space keep it); one that closes it keeps no
    trailing whitespace; a text cut whole is empty.
    """
    cuts = sorted(s for p in phrases for s in p.spans)
    if not cuts:
        return text
    pieces: list[str] = []   # the text between cuts
    gap_start = 0
    for s, e in cuts:
        pieces.append(text[gap_start:s])
        gap_start = e
    pieces.append(text[gap_start:])
    out = pieces[0]
    for piece in pieces[1:]:
        left, right = _trailing_gap(out), _leading_gap(piece)
        head, tail = out[:len(out) - len(left)], piece[len(right):]
        if not head:  # nothing before the cut: keep the leading whitespace, if anything follows
            gap = left[:len(left) - len(left.lstrip())] if tail else ""
        else:
            gap = _merge(left, right)
            if not tail:
                gap = gap.rstrip()
        out = head + gap + tail
    return out


def _trailing_gap(s: str) -> str:
    m = re.search(r"[^\w]*\Z", s)
    return m.group() if m else ""


def _leading_gap(s: str) -> str:
    m = re.match(r"[^\w]*", s)
    return m.group() if m else ""


def _merge(left: str, right: str) -> str:
    if left.strip() and right.strip():
        return left.rstrip() + right.lstrip()
    if left.strip():
        return left
    if right.strip():
        return right
    return min(left, right, key=len)


def fingerprint(stopwords: frozenset[str] = SMART_STOPWORDS) -> str:
    """What a text's key content depends on besides the text: enters content keys."""
    return content_hash({"rake": RAKE_VERSION, "stopwords": sorted(stopwords)})
