"""Per-module mutation score from mutmut's result files (mutants/<module>.py.meta).

Only the mutants named by scripts/mutation_scope.txt's globs are scored (per module).
Score = killed / (killed + survived + timeout): a mutant that no selected test reaches ("no
tests") counts as survived, since nothing would notice it. Survivors listed in
tests/MUTANTS.md as equivalent are shown separately and left out of the denominator.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, -24, 24, 152, 255, -11, -9, 36, 37}  # a failing test, a crash or a timeout
SURVIVED = {0, 5, 33}  # all tests passed, or no test touches the mutated function


def equivalent_mutants(path: Path = Path("tests/MUTANTS.md")) -> set[str]:
    """Mutant names in the first column of tests/MUTANTS.md's tables."""
    if not path.exists():
        return set()
    return set(re.findall(r"^\|\s*`([\w.]+__mutmut_\d+)`", path.read_text(), re.M))


def scope(path: Path = Path("scripts/mutation_scope.txt")) -> list[str]:
    """The mutant-name globs of the scope file (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def main(root: str = "mutants") -> int:
    equivalent = equivalent_mutants()
    globs = scope()
    rows, survivors = [], []
    for meta in sorted(Path(root).rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(root))[: -len(".meta")]
        n = Counter()
        for name, code in codes.items():
            if not any(fnmatch.fnmatchcase(name, g) for g in globs):
                continue
            if code in KILLED:
                n["killed"] += 1
            elif code in SURVIVED and name in equivalent:
                n["equivalent"] += 1
            elif code in SURVIVED:
                n["survived"] += 1
                survivors.append(name)
            else:
                n["unchecked"] += 1
        judged = n["killed"] + n["survived"]
        score = 100 * n["killed"] / judged if judged else float("nan")
        if judged or n["equivalent"] or n["unchecked"]:
            rows.append((module, score, n))
    print(f"{'module':36s} {'score':>6s} {'killed':>7s} {'survived':>9s} {'equiv.':>7s} "
          f"{'unchecked':>9s}")
    for module, score, n in rows:
        shown = "–" if score != score else f"{score:5.1f}%"  # NaN: nothing judged
        print(f"{module:36s} {shown:>6s} {n['killed']:7d} {n['survived']:9d} "
              f"{n['equivalent']:7d} {n['unchecked']:9d}")
    Path(root, "survivors.txt").write_text("\n".join(survivors) + "\n")
    print(f"{len(survivors)} survivors listed in {root}/survivors.txt (mutmut show NAME)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
