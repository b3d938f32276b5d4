"""Pinned: the read side of the results store returns exactly what its write side stored.

Every test builds a `Store` in `tmp_path` through its public write methods (`put_run`,
`put_generations`, `put_scores`, `put_judgments`, `commit_artifact`) and compares what the
read side (`get_artifact`, `get_run`, `has_runs`, `existing_keys`, `generations_by_key`,
`scores`, `judgments`) returns with the rows written, field by field. Every field of a
written row has a distinct value, so a read that takes one column for another fails.

The integrity checks are pinned too: an artifact whose folder or file was deleted, resized
or whose safetensors header no longer matches its length is reported once, with the exact
notice, and dropped from the store (so the stage that made it makes it again), and every
verdict of `verify_artifact` is compared with the string worked out by hand from the bytes
written. The valid safetensors files are written by the `safetensors` library itself, so
"whole" means what the library that loads checkpoints means by it.

Reads ask SQLite in chunks (old SQLite builds refuse more than 999 host parameters); a
recording connection checks that each key asked for is sent exactly once, in chunks under
that limit, so a store of 100k generations is not read back with 100k queries.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy as stnp

from harness.store import Store, manifest, verify_artifact

# ------------------------------------------------------------------ helpers

CONFIG = b'{"hidden_size": 8, "layers": 2}'  # 31 bytes
NESTED = b"tokenizer vocabulary\n"  # 21 bytes


def _weights() -> bytes:
    """A whole safetensors file, written by the safetensors library (192 bytes)."""
    return stnp.save({"w": np.arange(6, dtype=np.float32).reshape(2, 3),
                      "b": np.ones(2, dtype=np.int64)}, metadata={"format": "np"})


def _raw_safetensors(header: dict[str, Any], data: bytes, length: int | None = None) -> bytes:
    """A safetensors file by hand: little-endian u64 header length, JSON header, data."""
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def _staged(store: Store, kind: str, key: str) -> Path:
    """A staging folder holding a config, a nested file and a whole safetensors checkpoint."""
    tmp = store.staging_dir(kind, key)
    (tmp / "config.json").write_bytes(CONFIG)
    (tmp / "sub").mkdir()
    (tmp / "sub" / "vocab.txt").write_bytes(NESTED)
    (tmp / "model.safetensors").write_bytes(_weights())
    return tmp


def _commit(store: Store, key: str, kind: str = "checkpoint",
            info: dict[str, Any] | None = None) -> Path:
    return store.commit_artifact(kind, key, _staged(store, kind, key), info or {"step": 3})


class _Notices(logging.Handler):
    """Collects the harness logger's records (the CLI turns them into `note:` lines)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [r.getMessage() for r in self.records]


@pytest.fixture
def notices() -> Iterator[_Notices]:
    logger = logging.getLogger("spo_harness")
    handler, level = _Notices(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "results")
    try:
        yield s
    finally:
        s.close()


def _generation(i: int, model: str = "m0") -> dict[str, Any]:
    return {"key": f"g{i:05d}", "model_key": f"{model}-model", "prompt_id": f"p{i}",
            "sample_index": i % 7 + 1, "prompt": f"prompt text {i}", "text": f"answer {i}",
            "token_ids": [i, i + 1, 42], "info": {"finish": "length", "n": i}}


def _score(i: int) -> dict[str, Any]:
    return {"key": f"s{i:05d}", "scorer": "rm", "generation_key": f"g{i:05d}",
            "value": i + 0.25, "status": f"ok-{i}", "info": {"raw": i * 2}}


def _judgment(i: int) -> dict[str, Any]:
    return {"key": f"j{i:05d}", "judge": "oracle", "prompt_id": f"p{i}",
            "baseline_key": f"g{i:05d}", "candidate_key": f"g{i + 1:05d}",
            "preference": (i % 4) / 4, "status": f"ok-{i}", "info": {"order": i}}


# ------------------------------------------------------------------ artifacts


def test_manifest_lists_every_file_with_its_size(tmp_path: Path) -> None:
    """`manifest` maps each file's path relative to the folder (nested ones too) to its size
    in bytes, and leaves folders out."""
    folder = tmp_path / "a"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "x.bin").write_bytes(b"12345")
    (folder / "sub" / "deeper" / "y.txt").write_bytes(b"")
    (folder / "sub" / "z").write_bytes(b"ab")
    assert manifest(folder) == {"x.bin": 5, "sub/deeper/y.txt": 0, "sub/z": 2}


def test_get_artifact_returns_the_committed_folder_and_info(store: Store,
                                                            notices: _Notices) -> None:
    """A committed artifact reads back as its folder, the info it was committed with, and the
    manifest of the staging folder's files; a key never committed reads back as None."""
    final = _commit(store, "k1", info={"step": 3, "note": "x"})
    assert final == store.root / "artifacts" / "checkpoint-k1"
    art = store.get_artifact("k1")
    assert art == {"path": final, "step": 3, "note": "x",
                   "files": {"config.json": len(CONFIG), "model.safetensors": 192,
                             "sub/vocab.txt": len(NESTED)}}
    assert store.get_artifact("k1") == art  # reading does not consume it
    assert store.get_artifact("absent") is None
    assert notices.messages() == []


def test_get_artifact_finds_a_moved_results_folder(tmp_path: Path) -> None:
    """Artifacts are found by name under the store's own root, so a results folder that was
    moved (or read from another cwd) still resolves its artifacts."""
    first = Store(tmp_path / "before")
    _commit(first, "k1")
    first.close()
    (tmp_path / "before").rename(tmp_path / "after")
    moved = Store(tmp_path / "after")
    try:
        art = moved.get_artifact("k1")
        assert art is not None and art["path"] == tmp_path / "after/artifacts/checkpoint-k1"
    finally:
        moved.close()


def _truncate_weights(folder: Path) -> str:
    (folder / "model.safetensors").write_bytes(_weights()[:100])
    return "damaged (model.safetensors has 100 bytes, expected 192)"


def _resize_config(folder: Path) -> str:
    (folder / "config.json").write_bytes(b"{}")
    return f"damaged (config.json has 2 bytes, expected {len(CONFIG)})"


def _remove_nested(folder: Path) -> str:
    (folder / "sub" / "vocab.txt").unlink()
    return "missing sub/vocab.txt"


def _delete_folder(folder: Path) -> str:
    for f in sorted(folder.rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    folder.rmdir()
    return "missing"


def _corrupt_header_same_size(folder: Path) -> str:
    # same length, so the manifest still matches: only the header check can see it
    w = bytearray(_weights())
    n = struct.unpack("<Q", w[:8])[0]
    header = w[8:8 + n].replace(b"[16,40]", b"[16,48]")
    (folder / "model.safetensors").write_bytes(bytes(w[:8] + header + w[8 + n:]))
    return "damaged (model.safetensors: 192 bytes, header says 200)"


@pytest.mark.parametrize("damage", [_truncate_weights, _resize_config, _remove_nested,
                                    _delete_folder, _corrupt_header_same_size])
def test_damaged_artifact_is_reported_once_and_dropped(damage: Any, store: Store,
                                                       notices: _Notices) -> None:
    """A folder changed behind the store's back reads as None, with one notice naming the
    kind, the folder and what is wrong, and its row is deleted (so it is made again); another
    artifact is untouched."""
    final = _commit(store, "bad", kind="reference")
    other = _commit(store, "good")
    problem = damage(final)
    assert verify_artifact(final, manifest(other)) == problem
    assert store.get_artifact("bad") is None
    assert notices.messages() == [f"reference {final} is {problem}; recomputing it"]
    assert store.existing_keys("artifacts", ["bad", "good"]) == {"good"}
    assert store.get_artifact("bad") is None  # gone: no second notice
    assert len(notices.records) == 1
    assert store.get_artifact("good") is not None


def test_verify_artifact_verdicts(tmp_path: Path) -> None:
    """`verify_artifact`: None for a whole folder; "missing" for no folder; the manifest is
    checked file by file; with no manifest (rows older than manifests) the safetensors headers
    are still checked, in nested folders too."""
    folder = tmp_path / "a"
    (folder / "nested").mkdir(parents=True)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "nested" / "model.safetensors").write_bytes(_weights())
    files = manifest(folder)
    assert verify_artifact(folder, files) is None
    assert verify_artifact(folder, None) is None
    assert verify_artifact(folder, {}) is None
    assert verify_artifact(tmp_path / "nope", files) == "missing"
    assert verify_artifact(folder, {**files, "config.json": 30}) == \
        "damaged (config.json has 31 bytes, expected 30)"
    assert verify_artifact(folder, {**files, "extra.bin": 1}) == "missing extra.bin"
    (folder / "nested" / "model.safetensors").write_bytes(_weights() + b"\0\0")
    assert verify_artifact(folder, None) == "damaged (model.safetensors: 194 bytes, header says 192)"


def _verdict(tmp_path: Path, content: bytes) -> str | None:
    folder = tmp_path / "ckpt"
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(content)
    return verify_artifact(folder, None)


def test_safetensors_header_checks(tmp_path: Path) -> None:
    """Each safetensors verdict, from bytes written by hand: the file must be exactly
    8 + header length + the largest data offset; a header length past the end of the file, a
    short file or a header that is not JSON is reported as such, without reading further."""
    whole = _weights()
    assert stnp.load(whole).keys() == {"w", "b"}  # the library itself reads it
    assert _verdict(tmp_path, whole) is None

    # no tensors at all, only metadata: the header fills the file exactly (data ends at 0)
    empty = stnp.save({}, metadata={"format": "np"})
    assert stnp.load(empty) == {} and struct.unpack("<Q", empty[:8])[0] == len(empty) - 8
    assert _verdict(tmp_path, empty) is None
    meta_only = _raw_safetensors({"__metadata__": {"a": "b"}}, b"")
    assert _verdict(tmp_path, meta_only) is None
    assert _verdict(tmp_path, meta_only + b"x") == \
        f"damaged (model.safetensors: {len(meta_only) + 1} bytes, header says {len(meta_only)})"

    # data shorter / longer than the header says; offsets need not be sorted
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]},
              "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    n = len(json.dumps(header).encode())
    assert _verdict(tmp_path, _raw_safetensors(header, bytes(16))) is None
    assert _verdict(tmp_path, _raw_safetensors(header, bytes(10))) == \
        f"damaged (model.safetensors: {8 + n + 10} bytes, header says {8 + n + 16})"
    assert _verdict(tmp_path, _raw_safetensors(header, bytes(17))) == \
        f"damaged (model.safetensors: {8 + n + 17} bytes, header says {8 + n + 16})"

    # header length beyond the end of the file: by one byte, and the largest u64
    size = 8 + n + 16
    past = "damaged (model.safetensors: header longer than the file)"
    assert _verdict(tmp_path, _raw_safetensors(header, bytes(16), length=size - 8 + 1)) == past
    assert _verdict(tmp_path, _raw_safetensors(header, bytes(16), length=size + 8)) == past
    assert _verdict(tmp_path, _raw_safetensors(header, bytes(16), length=2**64 - 1)) == past

    # unreadable: shorter than the 8-byte length, and a header that is not JSON
    assert _verdict(tmp_path, b"\x01\x00\x00") == \
        "damaged (model.safetensors: unreadable header (error))"
    assert _verdict(tmp_path, struct.pack("<Q", 4) + b"{not") == \
        "damaged (model.safetensors: unreadable header (JSONDecodeError))"


# ------------------------------------------------------------------ runs


def test_get_run_returns_the_row_written(store: Store, notices: _Notices) -> None:
    """`get_run` returns every field `put_run` wrote, with the checkpoint resolved under this
    store's artifacts folder (whatever folder the path was written with); an unknown key is
    None."""
    final = _commit(store, "r1")
    store.put_run("r1", "label-a", "dpo", {"beta": 0.1, "lr": [1, 2]}, 17,
                  "/somewhere/else/artifacts/checkpoint-r1", {"steps": 5, "loss": 0.5})
    assert store.get_run("r1") == {
        "key": "r1", "label": "label-a", "method": "dpo", "params": {"beta": 0.1, "lr": [1, 2]},
        "seed": 17, "checkpoint": str(final), "metadata": {"steps": 5, "loss": 0.5}}
    assert store.get_run("r2") is None
    assert notices.messages() == []


def test_run_with_a_broken_checkpoint_is_dropped(store: Store, notices: _Notices) -> None:
    """A run whose checkpoint (the artifact under the same key) is damaged or was never
    committed reads as None and its row is deleted, so it is retrained; other runs stay."""
    final = _commit(store, "r1")
    _commit(store, "r3")
    for key in ("r1", "r2", "r3"):
        store.put_run(key, f"label-{key}", "spo", {}, 1, f"artifacts/checkpoint-{key}", {})
    problem = _truncate_weights(final)
    assert store.get_run("r1") is None
    assert notices.messages() == [f"checkpoint {final} is {problem}; recomputing it"]
    assert store.get_run("r2") is None  # no checkpoint at all
    assert store.existing_keys("runs", ["r1", "r2", "r3"]) == {"r3"}
    assert store.get_run("r3") is not None and store.has_runs()


def test_has_runs(store: Store) -> None:
    """`has_runs` is False for a fresh store and True once any run row is written (whether or
    not its checkpoint is whole: it only asks whether runs were recorded); other tables do not
    count."""
    assert store.has_runs() is False
    _commit(store, "a")
    store.put_generations([_generation(1)])
    assert store.has_runs() is False
    store.put_run("r", "l", "dpo", {}, 0, "artifacts/checkpoint-r", {})
    assert store.has_runs() is True


def test_existing_keys_per_table(store: Store) -> None:
    """`existing_keys` answers for one table only: the keys asked for that are in it, from
    any iterable; missing keys and keys of other tables are left out."""
    _commit(store, "art")
    store.put_run("run", "l", "dpo", {}, 0, "artifacts/checkpoint-run", {})
    store.put_generations([_generation(1), _generation(2)])
    store.put_scores([_score(1)])
    store.put_judgments([_judgment(1)])
    asked = ["art", "run", "g00001", "g00002", "s00001", "j00001", "nope"]
    expect = {"artifacts": {"art"}, "runs": {"run"}, "generations": {"g00001", "g00002"},
              "scores": {"s00001"}, "judgments": {"j00001"}}
    for table, keys in expect.items():
        assert store.existing_keys(table, (k for k in asked)) == keys
        assert store.existing_keys(table, []) == set()


# ------------------------------------------------------------------ generations, scores, judgments


def test_generations_scores_judgments_read_back_field_by_field(store: Store) -> None:
    """Each reader returns, per key asked for and found, exactly the fields written; a failed
    score or judgment (value None) keeps its None and its status."""
    gens = [_generation(i) for i in range(3)]
    scores = [_score(i) for i in range(3)] + [
        {"key": "s-failed", "scorer": "rm", "generation_key": "g00000", "value": None,
         "status": "failed: timeout", "info": {}}]
    judgments = [_judgment(i) for i in range(3)] + [
        {"key": "j-failed", "judge": "oracle", "prompt_id": "p0", "baseline_key": "g00000",
         "candidate_key": "g00001", "preference": None, "status": "failed: parse"}]
    store.put_generations(gens)
    store.put_scores(scores)
    store.put_judgments(judgments)

    assert store.generations_by_key(["g00002", "g00000", "missing"]) == {
        g["key"]: g for g in (gens[2], gens[0])}
    assert store.scores(["s00001", "s-failed", "missing"]) == {
        "s00001": {"value": 1.25, "status": "ok-1", "info": {"raw": 2}},
        "s-failed": {"value": None, "status": "failed: timeout", "info": {}}}
    assert store.judgments(["j00002", "j-failed", "missing"]) == {
        "j00002": {"preference": 0.5, "status": "ok-2", "info": {"order": 2}},
        "j-failed": {"preference": None, "status": "failed: parse", "info": {}}}
    for read in (store.generations_by_key, store.scores, store.judgments):
        assert read([]) == {} and read(["missing"]) == {}


class _Recording:
    """Wraps the store's connection and records the parameters of each SELECT ... IN (...)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.asked: list[list[str]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        if sql.lstrip().upper().startswith("SELECT") and " IN (" in sql:
            self.asked.append(list(params))
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


N_MANY = 1201  # three chunks of 500, and more than 1000 keys


def test_reads_of_many_keys_send_each_key_once_in_chunks(store: Store) -> None:
    """With 1201 keys (plus missing ones) every reader finds every stored key, sends each key
    asked for to SQLite exactly once, in ceil(n/500) queries of at most 500 keys (old SQLite
    builds refuse more than 999 parameters), and returns the same rows as key-by-key reads."""
    idx = range(N_MANY)
    store.put_generations([_generation(i) for i in idx])
    store.put_scores([_score(i) for i in idx])
    store.put_judgments([_judgment(i) for i in idx])
    extra = ["zz-missing-1", "zz-missing-2"]
    cases = [
        ("generations", "g", store.generations_by_key, _generation, lambda r: r),
        ("scores", "s", store.scores, _score,
         lambda r: {"value": r["value"], "status": r["status"], "info": r["info"]}),
        ("judgments", "j", store.judgments, _judgment,
         lambda r: {"preference": r["preference"], "status": r["status"], "info": r["info"]})]
    rec = _Recording(store.conn)
    store.conn = rec  # type: ignore[assignment]
    try:
        for table, prefix, read, make, shape in cases:
            keys = [f"{prefix}{i:05d}" for i in idx] + extra
            for fn in (lambda ks, t=table: store.existing_keys(t, iter(ks)), read):
                rec.asked.clear()
                got = fn(keys)
                assert len(got) == N_MANY and set(got) == set(keys[:N_MANY])
                assert [k for chunk in rec.asked for k in chunk] == keys
                assert len(rec.asked) == math.ceil(len(keys) / 500)
                assert max(len(chunk) for chunk in rec.asked) == 500
            full = read(keys)
            assert full == {row["key"]: shape(row) for row in map(make, idx)}
            for i in (0, 499, 500, 999, 1000, N_MANY - 1):
                key = f"{prefix}{i:05d}"
                assert read([key]) == {key: full[key]}
    finally:
        store.conn = rec.conn
