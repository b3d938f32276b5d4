"""The hostile suite's one assertion: a bad input or a fault is refused the way the README
promises, and leaves the store as it was.

Every attack runs the real CLI in a subprocess and checks, in `refused`:
- the exit code (2 for bad input, 1 for a failing service or a held lock),
- exactly one non-empty line on stderr, with no traceback,
- a fragment the line must contain (the key, file or reason),
- and that `store.sqlite` in the results folder is byte-identical afterwards (or absent if it
  was absent before), unless the case states a recomputation.

To add an attack, write a test that builds its input and calls `refused(...)`; tables of
cases go through `pytest.mark.parametrize` so each one is reported on its own.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from tests.conftest import cli, describe, stderr_lines


def store_digest(results: Path) -> str | None:
    """SHA-256 of the store's database, its WAL folded in (None when there is no store)."""
    import sqlite3

    db = results / "store.sqlite"
    if not db.exists():
        return None
    con = sqlite3.connect(db)
    try:  # fold the write-ahead log in so the digest reflects committed content only
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return hashlib.sha256(db.read_bytes()).hexdigest()


def refused(*args: str | Path, cwd: Path, results: Path | None = None, code: int = 2,
            contains: str | tuple[str, ...] = (), timeout: float = 300,
            store_unchanged: bool = True) -> str:
    """Run the CLI and assert it refused as promised; returns the one stderr line."""
    before = store_digest(results) if results is not None else None
    proc: subprocess.CompletedProcess = cli(*args, cwd=cwd, timeout=timeout)
    lines = stderr_lines(proc)
    assert proc.returncode == code, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert len(lines) == 1, describe(proc)
    for fragment in (contains,) if isinstance(contains, str) else contains:
        assert fragment in lines[0], describe(proc)
    if results is not None and store_unchanged:
        assert store_digest(results) == before, "the store changed\n" + describe(proc)
    return lines[0]
