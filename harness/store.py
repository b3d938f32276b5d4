"""The results store: one SQLite database per experiment.

Stages talk only through this store. Every unit of work (a trained run, one generation,
one score, one judgment) is a row under a content-hash key, written in one transaction
when the unit finishes, so a `kill -9` at any moment leaves either the whole unit or
nothing. Large artifacts (checkpoints, tokenizers) live in folders next to the database,
written under a temporary name and renamed into place before their row is inserted.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

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


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "store.sqlite"
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        with self.transaction():
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                              (str(SCHEMA_VERSION),))
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
        row = self.conn.execute("SELECT path, info FROM artifacts WHERE key=?", (key,)).fetchone()
        if row is None or not self._resolve(row[0]).exists():
            return None
        return {"path": self._resolve(row[0]), **json.loads(row[1])}

    def staging_dir(self, kind: str, key: str) -> Path:
        """A fresh folder to write an artifact into before `commit_artifact` renames it."""
        tmp = self.root / "artifacts" / f".tmp-{kind}-{key}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit_artifact(self, kind: str, key: str, staging: Path, info: dict[str, Any]) -> Path:
        final = self.artifact_dir(kind, key)
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?,?,?)",
                      (key, kind, str(final.relative_to(self.root)), json.dumps(info),
                       time.time()))
        return final

    def _clean_partial_artifacts(self) -> None:
        art = self.root / "artifacts"
        if art.exists():
            for tmp in art.glob(".tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ runs

    def get_run(self, key: str) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT key,label,method,params,seed,checkpoint,metadata FROM runs WHERE key=?",
            (key,)).fetchone()
        if row is None:
            return None
        return {"key": row[0], "label": row[1], "method": row[2], "params": json.loads(row[3]),
                "seed": row[4], "checkpoint": str(self._resolve(row[5])),
                "metadata": json.loads(row[6])}

    def put_run(self, key: str, label: str, method: str, params: dict[str, Any], seed: int,
                checkpoint: str, metadata: dict[str, Any]) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                      (key, label, method, json.dumps(params), seed,
                       str(Path("artifacts") / Path(checkpoint).name),
                       json.dumps(metadata), time.time()))

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
                [(r["key"], r["model_key"], r["prompt_id"], r["sample_index"], r["prompt"],
                  r["text"], json.dumps(r["token_ids"]), json.dumps(r.get("info", {})), now)
                 for r in rows])

    def generations(self, model_key: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT key,prompt_id,sample_index,prompt,text,token_ids,info FROM generations "
            "WHERE model_key=? ORDER BY prompt_id, sample_index", (model_key,)).fetchall()
        return [{"key": r[0], "prompt_id": r[1], "sample_index": r[2], "prompt": r[3],
                 "text": r[4], "token_ids": json.loads(r[5]), "info": json.loads(r[6])}
                for r in rows]

    # ------------------------------------------------------------------ scores and judgments

    def put_scores(self, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?,?)",
                          [(r["key"], r["scorer"], r["generation_key"], r["value"], r["status"],
                            json.dumps(r.get("info", {})), now) for r in rows])

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
                            r["candidate_key"], r["preference"], r["status"],
                            json.dumps(r.get("info", {})), now) for r in rows])

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
