"""The results store: one SQLite database per experiment.

Stages talk only through this store. Every unit of work (a trained run, one generation,
one score, one judgment) is a row under a content-hash key, written in one transaction
when the unit finishes, so a `kill -9` at any moment leaves either the whole unit or
nothing. Large artifacts (checkpoints, tokenizers) live in folders next to the database,
written under a temporary name and renamed into place before their row is inserted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import jsonio
from harness.errors import InputError
from harness.secrets import redact

SCHEMA_VERSION = 1
log = logging.getLogger("spo_harness")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artifacts (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, path TEXT NOT NULL,
    info TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY, label TEXT NOT NULL, method TEXT NOT NULL, params TEXT NOT NULL,
    seed INTEGER NOT NULL, checkpoint TEXT NOT NULL, metadata TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY, model_key TEXT NOT NULL, prompt_id TEXT NOT NULL,
    sample_index INTEGER NOT NULL, prompt TEXT NOT NULL, text TEXT NOT NULL,
    token_ids TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS generations_model ON generations (model_key);
CREATE TABLE IF NOT EXISTS scores (
    key TEXT PRIMARY KEY, scorer TEXT NOT NULL, generation_key TEXT NOT NULL,
    value REAL, status TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX IF NOT EXISTS scores_generation ON scores (generation_key);
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY, judge TEXT NOT NULL, prompt_id TEXT NOT NULL,
    baseline_key TEXT NOT NULL, candidate_key TEXT NOT NULL, preference REAL,
    status TEXT NOT NULL, info TEXT NOT NULL, created REAL NOT NULL);
"""


def usable_results_dir(root: Path) -> Path:
    """`root`, created if need be; an InputError if it is a file, under a file or read-only."""
    root = Path(root)
    for parent in [root, *root.parents]:
        if parent.exists() and not parent.is_dir():
            raise InputError(f"'{parent}' is a file, not a folder", file=str(root),
                             field="results_dir")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the results folder ({exc.strerror})", file=str(root),
                         field="results_dir") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise InputError("the results folder is not writable", file=str(root),
                         field="results_dir")
    return root


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = usable_results_dir(Path(root))
        self.path = self.root / "store.sqlite"
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            # quick_check reads every page: a truncated or overwritten file is caught here,
            # before any stage trusts it, not halfway through a report.
            check = self.conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check[0] if check else 'no answer'}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            with self.transaction():
                self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                                  (str(SCHEMA_VERSION),))
        except sqlite3.DatabaseError as exc:
            # Only damage to the file itself is the user's to fix; a full or failing disk
            # (disk I/O error, disk is full) propagates and the CLI says so (exit 1).
            if isinstance(exc, sqlite3.OperationalError) and not _corrupt(exc):
                raise
            raise InputError(f"not a readable results store ({exc}); move it (and any "
                             "store.sqlite-wal next to it) away to start afresh, or restore it "
                             "from a backup", file=str(self.path)) from None
        self._clean_partial_artifacts()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------------ artifacts

    def artifact_dir(self, kind: str, key: str) -> Path:
        return self.root / "artifacts" / f"{kind}-{key}"

    def _resolve(self, stored: str) -> Path:
        """Artifacts live in <root>/artifacts/<name>: find them by name, wherever the
        results folder now is and whatever the cwd (older rows hold cwd-relative paths)."""
        return self.root / "artifacts" / Path(stored).name

    def get_artifact(self, key: str) -> dict[str, Any] | None:
        """The artifact under `key`, verified against its manifest; None if absent or broken.

        A folder deleted or a file truncated behind the store's back is reported once and
        treated as missing, so the stage that made it makes it again.
        """
        row = self.conn.execute("SELECT path, kind, info FROM artifacts WHERE key=?",
                                (key,)).fetchone()
        if row is None:
            return None
        path, info = self._resolve(row[0]), json.loads(row[2])
        problem = verify_artifact(path, info.get("files"))
        if problem is not None:
            log.warning("%s %s is %s; recomputing it", row[1], path, problem)
            with self.transaction() as c:
                c.execute("DELETE FROM artifacts WHERE key=?", (key,))
            return None
        return {"path": path, **info}

    def staging_dir(self, kind: str, key: str) -> Path:
        """A fresh folder to write an artifact into before `commit_artifact` renames it."""
        tmp = self.root / "artifacts" / f".tmp-{kind}-{key}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit_artifact(self, kind: str, key: str, staging: Path, info: dict[str, Any]) -> Path:
        final = self.artifact_dir(kind, key)
        info = {**info, "files": manifest(staging)}  # what `get_artifact` verifies on use
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)",
                      (key, kind, str(final.relative_to(self.root)), self._json(info),
                       time.time()))
        return final

    def _clean_partial_artifacts(self) -> None:
        art = self.root / "artifacts"
        if art.exists():
            for tmp in art.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ runs

    def get_run(self, key: str) -> dict[str, Any] | None:
        """The trained run under `key`, if its checkpoint is still whole (else None: retrain)."""
        row = self.conn.execute(
            "SELECT key,label,method,params,seed,checkpoint,metadata FROM runs WHERE key=?",
            (key,)).fetchone()
        if row is None:
            return None
        if self.get_artifact(key) is None:  # the checkpoint (same key) is gone or damaged
            with self.transaction() as c:
                c.execute("DELETE FROM runs WHERE key=?", (key,))
            return None
        return {"key": row[0], "label": row[1], "method": row[2], "params": json.loads(row[3]),
                "seed": row[4], "checkpoint": str(self._resolve(row[5])),
                "metadata": json.loads(row[6])}

    def put_run(self, key: str, label: str, method: str, params: dict[str, Any], seed: int,
                checkpoint: str, metadata: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                      (key, label, method, self._json(params), seed,
                       str(Path("artifacts") / Path(checkpoint).name),
                       self._json(metadata), time.time()))

    def has_runs(self) -> bool:
        return self.conn.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None

    # ------------------------------------------------------------------ generations

    def existing_keys(self, table: str, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(
                f"SELECT key FROM {table} WHERE key IN ({marks})", chunk))
        return found

    def put_generations(self, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO generations VALUES (?,?,?,?,?,?,?,?,?)",
                # a conversation prompt is stored as its JSON (read back through Units,
                # which gives every row its prompt from the spec's slot)
                [(r["key"], r["model_key"], r["prompt_id"], r["sample_index"],
                  r["prompt"] if isinstance(r["prompt"], str) else self._json(r["prompt"]),
                  redact(r["text"]), self._json(r["token_ids"]), self._json(r.get("info", {})),
                  now) for r in rows])

    def generations_by_key(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Stored generations under exactly these keys (read them through `harness.units`)."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                    "SELECT key,model_key,prompt_id,sample_index,prompt,text,token_ids,info "
                    f"FROM generations WHERE key IN ({marks})", chunk):
                out[r[0]] = {"key": r[0], "model_key": r[1], "prompt_id": r[2],
                             "sample_index": r[3], "prompt": r[4], "text": r[5],
                             "token_ids": json.loads(r[6]), "info": json.loads(r[7])}
        return out

    # ------------------------------------------------------------------ scores and judgments

    def put_scores(self, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?,?)",
                          [(r["key"], r["scorer"], r["generation_key"], r["value"],
                            redact(r["status"]), self._json(r.get("info", {})), now)
                           for r in rows])

    def scores(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                    f"SELECT key,value,status,info FROM scores WHERE key IN ({marks})", chunk):
                out[r[0]] = {"value": r[1], "status": r[2], "info": json.loads(r[3])}
        return out

    def put_judgments(self, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO judgments VALUES (?,?,?,?,?,?,?,?,?)",
                          [(r["key"], r["judge"], r["prompt_id"], r["baseline_key"],
                            r["candidate_key"], r["preference"], redact(r["status"]),
                            self._json(r.get("info", {})), now) for r in rows])

    def judgments(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.conn.execute(
                    f"SELECT key,preference,status,info FROM judgments WHERE key IN ({marks})",
                    chunk):
                out[r[0]] = {"preference": r[1], "status": r[2], "info": json.loads(r[3])}
        return out

    @staticmethod
    def _json(obj: Any) -> str:
        """Strict JSON, with every registered secret and URL credential redacted."""
        return jsonio.dumps(redact(obj))


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    return any(m in str(exc) for m in ("not a database", "malformed", "quick_check"))


# ------------------------------------------------------------------ artifact integrity


def manifest(folder: Path) -> dict[str, int]:
    """Relative path -> size in bytes of every file in an artifact folder."""
    return {str(p.relative_to(folder)): p.stat().st_size
            for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_artifact(path: Path, files: dict[str, int] | None) -> str | None:
    """None if the artifact folder is whole, else what is wrong with it (for the notice).

    Sizes are checked against the manifest written at commit, and every safetensors file's
    header against its length (a truncated checkpoint fails here, cheaply: no hashing of
    gigabytes on every use).
    """
    if not path.is_dir():
        return "missing"
    for rel, size in (files or {}).items():
        f = path / rel
        if not f.is_file():
            return f"missing {rel}"
        if f.stat().st_size != size:
            return f"damaged ({rel} has {f.stat().st_size} bytes, expected {size})"
    for f in path.rglob("*.safetensors"):
        problem = _safetensors_problem(f)
        if problem:
            return f"damaged ({f.name}: {problem})"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > size - 8:
                return "header longer than the file"
            header = json.loads(fh.read(n))
    except (OSError, struct.error, ValueError) as exc:
        return f"unreadable header ({type(exc).__name__})"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"),
              default=0)
    return None if 8 + n + end == size else f"{size} bytes, header says {8 + n + end}"
