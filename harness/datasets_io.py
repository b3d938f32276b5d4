"""Reading a data source into raw rows, each with where it came from.

One entry point, `read_rows`, for every data slot and every source:
- `.parquet`, `.csv`, `.arrow` files through `datasets.load_dataset(format, data_files=...)`;
- a `save_to_disk` folder through `datasets.load_from_disk`;
- a hub dataset id (`org/name`) already in the local cache, through `load_dataset(id)` with
  offline mode forced for the call, so it is never downloaded;
- `.jsonl` / `.json` (lines or one array) through our own strict reader. `datasets`' JSON
  reader would lose the line of a bad row (its errors name none), silently keep the last of
  a repeated key and unify types across rows; ours reports the 1-based line and refuses them.

Rows keep their source's location (`Where`): the 1-based line of a JSONL file, the 0-based
row index of anything `datasets` reads, so every later error can name file, row and field.
Sources that go through Arrow cannot tell a null from an absent cell; there a null is an
absent field. CSV cells are read as text (`text_cells`), and the
fields that are numbers are parsed by the row checks, so a prompt "123" stays text.
"""

from __future__ import annotations

import contextlib
import csv
import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError

_SURROGATE = re.compile("[\ud800-\udfff]")
DATASETS_FORMATS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}
JSON_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class Where:
    """A row's place in its source: a JSONL line, or a row index (a JSON array's element)."""

    file: str
    line: int | None = None   # 1-based line of a JSON-lines file
    index: int | None = None  # 0-based row index of everything else

    @property
    def position(self) -> int:
        """1-based position of the row in its source: the default id of a prompt row, the
        same for the same content in any format (a JSONL line is its row)."""
        return self.line if self.line is not None else (self.index or 0) + 1

    def describe(self) -> str:
        """How another message refers to this row ('line 3', 'row 2')."""
        return f"line {self.line}" if self.line is not None else f"row {self.index}"

    def error(self, message: str, field: str | None = None) -> InputError:
        if self.line is not None:
            return InputError(message, file=self.file, line=self.line, field=field)
        return InputError(message, file=f"{self.file}, row {self.index}", field=field)


@dataclass
class RawRows:
    """The rows of one source, before any format rule: (where, row) in source order."""

    name: str                       # the path or hub id, as errors name it
    rows: list[tuple[Where, dict[str, Any]]]
    text_cells: bool = False        # CSV: every cell arrived as text


def show(value: Any, limit: int = 40) -> str:
    """A value for an error message: repr (so newlines and lone surrogates are escaped and
    the message stays one printable line), cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def field_name(key: str) -> str:
    """A row's key as an error's field: escaped like `show`, without the quotes."""
    text = repr(key)[1:-1]
    return text if len(text) <= 40 else text[:37] + "..."


def source_kind(path: str) -> str:
    """'json', 'parquet', 'csv', 'arrow', 'disk' (a save_to_disk folder) or 'hub'."""
    p = Path(path).expanduser()
    if p.is_dir():
        return "disk"
    suffix = p.suffix.lower()
    if suffix in JSON_SUFFIXES:
        return "json"
    if suffix in DATASETS_FORMATS:
        return DATASETS_FORMATS[suffix]
    if not p.exists() and re.fullmatch(r"[\w.-]+/[\w.-]+", path):
        return "hub"
    if not p.exists():
        raise InputError("file not found", file=path)
    raise InputError(f"unknown data format {suffix or '(no extension)'!r}: use .jsonl, .json, "
                     ".parquet, .csv, .arrow, a save_to_disk folder or a cached hub id",
                     file=path)


def read_rows(path: str, split: str = "train", limit: int | None = None) -> RawRows:
    """The raw rows of `path` (see the module doc), at most `limit` of them."""
    kind = source_kind(path)
    if kind == "json":
        if split != "train":
            raise InputError(f"a JSON file has one split, 'train', not {split!r}", file=path)
        rows = []
        for where, row in _json_rows(Path(path).expanduser(), path):
            if limit is not None and len(rows) >= limit:
                break
            rows.append((where, row))
        return RawRows(path, rows)
    dataset = _load_dataset(path, kind, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    text_cells = kind == "csv"
    rows = []
    for i, row in enumerate(dataset):
        # Arrow has no 'absent': a null cell is a field not given (CSV cells are text, an
        # empty one is the empty string, as TRL would read it)
        rows.append((Where(path, index=i), {k: v for k, v in row.items() if v is not None}))
    return RawRows(path, rows, text_cells)


# ---------------------------------------------------------------- through `datasets`


@contextlib.contextmanager
def _offline():
    """Offline mode for one call, whatever the environment says: a hub id is read from the
    local cache or not at all."""
    import datasets.config
    import huggingface_hub.constants as hub

    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _load_dataset(path: str, kind: str, split: str):
    """A `datasets.Dataset` of one split, held in memory (nothing written to the user's
    cache for a local file, so an edited file is never answered from a stale cache)."""
    datasets = _quiet_datasets()
    try:
        if kind == "disk":
            loaded = datasets.load_from_disk(str(Path(path).expanduser()), keep_in_memory=True)
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise InputError(f"no split {split!r}; the folder has "
                                     f"{', '.join(map(repr, loaded))}", file=path)
                return loaded[split]
            return loaded
        if kind == "hub":
            with _offline():
                return datasets.load_dataset(path, split=split)
        if split != "train":
            raise InputError(f"a {kind} file has one split, 'train', not {split!r}", file=path)
        extra: dict[str, Any] = {}
        if kind == "csv":  # every cell as text: "123" stays a prompt, not an integer
            extra = {"features": datasets.Features(
                {c: datasets.Value("string") for c in _csv_header(path)}),
                "keep_default_na": False}
        with tempfile.TemporaryDirectory() as cache:
            return datasets.load_dataset(kind, data_files=str(Path(path).expanduser()),
                                         split="train", cache_dir=cache, keep_in_memory=True,
                                         **extra)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is one line naming the source
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if kind == "hub":
            raise InputError(f"hub dataset {path!r} (split {split!r}) is not in the local "
                             f"cache, and is never downloaded: {reason}", file=path) from None
        raise InputError(f"cannot read as {kind}: {reason}", file=path) from None


def _csv_header(path: str) -> list[str]:
    try:
        with open(Path(path).expanduser(), newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 (byte 0x{exc.object[exc.start]:02x})",
                         file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", file=path) from None
    if not header:
        raise InputError("no rows (not even a header line)", file=path)
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise InputError("the column appears twice in the header", file=f"{path}, header",
                             field=field_name(name))
        seen.add(name)
    return header


# ---------------------------------------------------------------- JSON lines and arrays


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object hook: a repeated key would silently keep only its last value."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _has_surrogate(value: Any) -> bool:
    """Whether a lone surrogate hides in `value` (JSON's "\\ud800" parses to one; such a str
    cannot be encoded, so it would fail later, in the store or on the terminal)."""
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    return False


def _lines(path: Path, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) per line. Bytes are decoded line by line, so a non-UTF-8 byte is
    reported at its line; lines end where text mode ends them (LF, CRLF or a lone CR)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file ({exc.strerror or exc})", file=name) from None
    for n, raw in enumerate(data.splitlines(), start=1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as editors write
            raw = raw[3:]
        try:
            yield n, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column "
                             f"{exc.start + 1})", file=name, line=n) from None


def _parse(text: str, where: Where) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        if where.line is None:  # a whole array: the decoder knows the line
            raise InputError(f"malformed JSON ({exc.msg})", file=where.file,
                             line=exc.lineno) from None
        raise where.error(f"malformed JSON ({exc.msg})") from None
    except _DuplicateKey as exc:
        raise where.error("the key appears twice in the row", field_name(exc.key)) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise where.error(f"malformed JSON ({show(str(exc), 80)[1:-1]})") from None
    except RecursionError:
        raise where.error("malformed JSON (nested too deeply)") from None


def _checked(row: Any, where: Where) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise where.error("row is not a JSON object")
    for key, value in row.items():
        if _has_surrogate(key) or _has_surrogate(value):
            raise where.error("a lone surrogate (e.g. \\ud800) is not text: the row is not "
                              "valid Unicode", field_name(key))
    return row


def _json_rows(path: Path, name: str) -> Iterator[tuple[Where, dict[str, Any]]]:
    """JSON lines (a blank line is an error, except empty lines at the end), or, in a .json
    file whose first character is '[', one JSON array of objects (rows named by index)."""
    if not path.is_file():
        raise InputError("file not found", file=name)
    lines = list(_lines(path, name))
    while lines and lines[-1][1] == "":  # a trailing empty line, as many editors write
        lines.pop()
    if path.suffix.lower() == ".json" and lines and lines[0][1].lstrip().startswith("["):
        for i, row in enumerate(_parse("\n".join(text for _, text in lines), Where(name))):
            where = Where(name, index=i)
            yield where, _checked(row, where)
        return
    for n, text in lines:
        where = Where(name, line=n)
        if not text.strip():
            raise where.error("empty row")
        yield where, _checked(_parse(text, where), where)
