"""Hostile YAML and hostile files: refused at load with one line naming the file (and line).

Covers what YAML allows but a spec never means (a key given twice, an alias bomb, a
recursive alias, nesting without end), bytes that are not UTF-8 text, and paths that are
no readable spec file. Unit tests call `load_spec` directly; the CLI cases go through
`refused(...)` (exit 2, one stderr line, no traceback, no store).
"""

from __future__ import annotations

import json
import os
import string
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import InputError
from harness.spec import MAX_SPEC_BYTES, MAX_YAML_DEPTH, apply_override, load_spec
from tests.conftest import TINY_SPEC, write_spec
from tests.hostile.attack import refused

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
N = TINY_SPEC.count("\n")  # lines of the tiny spec; appended text starts on line N + 1


def _error(path: Path, overrides: list[str] | None = None) -> InputError:
    with pytest.raises(InputError) as exc:
        load_spec(path, overrides or [])
    return exc.value


def _one_line(err: InputError) -> str:
    msg = str(err)
    assert len(msg.splitlines()) == 1 and msg.isprintable(), repr(msg)
    return msg


def bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: `levels` anchors, each a list of `width` aliases of the previous one."""
    names = string.ascii_lowercase
    lines = [f"{names[0]}: &{names[0]} [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [{', '.join(['*' + names[i - 1]] * width)}]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ duplicate keys


def test_a_second_methods_key_is_refused_on_its_line(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "exp.yaml", TINY_SPEC + "methods:\n  - name: dpo\n")
    err = _error(path)
    assert err.line == N + 1 and f"{path}:{N + 1}:" in _one_line(err)
    assert "duplicate key 'methods'" in str(err) and "first on line 4" in str(err)


def test_a_duplicate_key_inside_a_flow_mapping_is_refused(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "exp.yaml",
                      TINY_SPEC.replace("params: {beta: 1}", "params: {beta: 1, beta: 2}"))
    err = _error(path)
    assert err.line == 8 and "duplicate key 'beta'" in _one_line(err)


def test_keys_equal_as_values_are_duplicates(tmp_path: Path) -> None:
    # 1 and 1.0 are one dict key: the second would silently replace the first
    path = write_spec(tmp_path / "exp.yaml", TINY_SPEC + "x: {1: a, 1.0: b}\n")
    assert "duplicate key" in _one_line(_error(path))


def test_a_duplicate_key_in_a_set_value_is_refused(tiny_spec: Path) -> None:
    err = _error(tiny_spec, ["methods.1.params={beta: 1, beta: 2}"])
    assert "--set methods.1.params" in _one_line(err) and "duplicate key 'beta'" in str(err)


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    # `<<` then an explicit key is what merges are for, not a duplicate
    text = TINY_SPEC.replace("  - name: dpo\n    params: {beta: 1}\n",
                             "  - name: dpo\n    params: &p {beta: 1}\n"
                             "  - name: dpo\n    label: d2\n    params:\n      <<: *p\n"
                             "      beta: 2\n")
    spec = load_spec(write_spec(tmp_path / "exp.yaml", text))
    assert [m.params for m in spec.methods][1:] == [{"beta": 1}, {"beta": 2}]


KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda k: k not in ("null", "true", "false", "yes", "no", "on", "off", "y", "n"))


@PROPERTY
@given(keys=st.lists(KEYS, min_size=1, max_size=8, unique=True), data=st.data(),
       depth=st.integers(0, 3))
def test_any_mapping_with_a_repeated_key_is_refused(tmp_path: Path, keys: list[str],
                                                    data: st.DataObject, depth: int) -> None:
    """A random block mapping, nested `depth` levels under the spec, with one key repeated."""
    dup = data.draw(st.sampled_from(keys))
    at = data.draw(st.integers(keys.index(dup) + 1, len(keys)))
    order = keys[:at] + [dup] + keys[at:]
    lines = [f"{'  ' * d}level{d}:" for d in range(depth)]
    lines += [f"{'  ' * depth}{k}: {i}" for i, k in enumerate(order)]
    path = write_spec(tmp_path / "exp.yaml", TINY_SPEC + "\n".join(lines) + "\n")
    err = _error(path)
    assert f"duplicate key {dup!r}" in _one_line(err)
    assert err.line == N + 1 + depth + at  # the second occurrence
    assert f"first on line {N + 1 + depth + keys.index(dup)}" in str(err)


# ------------------------------------------------------------------ aliases


def test_an_alias_bomb_is_refused_fast_and_small(tmp_path: Path) -> None:
    text = TINY_SPEC + bomb()
    assert len(bomb()) < 1100  # ~1 KB that would expand to 9^9 strings
    path = write_spec(tmp_path / "exp.yaml", text)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        err = _error(path)
        elapsed = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "alias" in _one_line(err) and str(path) in str(err)
    assert elapsed < 0.5, elapsed
    assert peak < 20 * 2**20, peak


def test_an_alias_bomb_in_a_set_value_is_refused(tiny_spec: Path) -> None:
    flow = "[&a [x,x,x,x,x,x,x,x,x]" + "".join(
        f", &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"
    t0 = time.perf_counter()
    err = _error(tiny_spec, [f"methods.1.params.beta={flow}"])
    assert time.perf_counter() - t0 < 0.5
    assert "alias" in _one_line(err)


def test_a_modest_use_of_aliases_loads(tmp_path: Path) -> None:
    text = TINY_SPEC.replace("params: {beta: 1}", "params: &p {beta: 1}") + \
        "scorers:\n  - &o {name: oracle}\n  - name: length\n"
    assert load_spec(write_spec(tmp_path / "exp.yaml", text)).scorers[0].name == "oracle"


@pytest.mark.parametrize("extra", ["x: &x [*x]\n", "x: &x {b: *x}\n", "x: &x [1, [2, {c: *x}]]\n",
                                   "x: &x {<<: *x}\n"])
def test_a_recursive_alias_is_refused(tmp_path: Path, extra: str) -> None:
    path = write_spec(tmp_path / "exp.yaml", TINY_SPEC + extra)
    err = _error(path)
    assert err.line == N + 1 and "recursive alias" in _one_line(err)


def test_a_recursive_alias_in_a_set_value_is_refused(tiny_spec: Path) -> None:
    err = _error(tiny_spec, ["methods.1.params.beta=&x [*x]"])
    assert "recursive alias" in _one_line(err)


@pytest.mark.parametrize("levels,expected", [(MAX_YAML_DEPTH + 5, "nested deeper"),
                                             (5000, "nested too deeply")])
def test_nesting_without_end_is_refused(tmp_path: Path, levels: int, expected: str) -> None:
    path = write_spec(tmp_path / "exp.yaml", TINY_SPEC + "x: " + "[" * levels + "]" * levels + "\n")
    assert expected in _one_line(_error(path))


# ------------------------------------------------------------------ bytes and files


def test_bytes_that_are_not_utf8_name_the_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(TINY_SPEC.encode() + b"x: caf\xe9\n")
    err = _error(path)
    offset = len(TINY_SPEC.encode()) + len(b"x: caf")
    assert err.line == N + 1
    assert f"{path}:{N + 1}:" in _one_line(err) and f"offset {offset}" in str(err)
    assert "0xe9" in str(err)


def test_utf16_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(TINY_SPEC.encode("utf-16"))
    assert "not UTF-8" in _one_line(_error(path))


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + TINY_SPEC.encode())
    assert load_spec(path).name == "tiny"


@pytest.mark.parametrize("raw,expected", [
    (b"x: \x00\n", "unacceptable character #x0000"),
    (b"x: \x1b[2J\n", "unacceptable character #x001b"),
    (b"\tx: 1\n", "cannot start any token"),
    (b"x: 1\n---\ny: 2\n", "single document"),
])
def test_broken_yaml_is_one_located_line(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(TINY_SPEC.encode() + raw)
    err = _error(path)
    assert expected in _one_line(err) and err.line is not None and err.line >= N + 1


@pytest.mark.parametrize("raw,expected", [(b"", "empty"), (b" \n\n", "empty"),
                                          (b"# only a comment\n", "no content"),
                                          (b"- a\n", "must be a YAML mapping"),
                                          (b"just text\n", "must be a YAML mapping")])
def test_files_without_a_mapping(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(raw)
    assert expected in _one_line(_error(path))


def test_paths_that_are_no_spec_file(tmp_path: Path) -> None:
    assert "is a directory" in _one_line(_error(tmp_path))
    assert "not found" in _one_line(_error(tmp_path / "nope.yaml"))
    assert "not found" in _one_line(_error(tmp_path / "nope" / "deeper.yaml"))
    (tmp_path / "file").write_text("x")
    assert "cannot read" in _one_line(_error(tmp_path / "file" / "x.yaml"))  # not a directory
    link = tmp_path / "dangling.yaml"
    link.symlink_to(tmp_path / "gone.yaml")
    assert "not found" in _one_line(_error(link))
    if Path("/dev/null").exists():
        assert "not a regular file" in _one_line(_error(Path("/dev/null")))


def test_a_nul_in_the_path_is_refused(tmp_path: Path) -> None:
    err = _error(Path(f"{tmp_path}/a\0b.yaml"))
    assert "cannot read" in _one_line(err) and "\\x00" in str(err)


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True,
                    reason="root reads any file")
def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "exp.yaml")
    path.chmod(0)
    try:
        assert "permission denied" in _one_line(_error(path))
    finally:
        path.chmod(0o644)


def test_a_file_too_large_to_be_a_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(TINY_SPEC.encode() + b"#" * MAX_SPEC_BYTES)
    assert "at most" in _one_line(_error(path))


# ------------------------------------------------------------------ one line, always


@PROPERTY
@given(junk=st.text(max_size=60))
def test_any_yaml_problem_is_one_printable_line(tmp_path: Path, junk: str) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(TINY_SPEC + junk + "\n", errors="surrogatepass")
    try:
        load_spec(path)
    except InputError as err:
        _one_line(err)
        str(err).encode("utf-8")


def test_a_path_with_a_line_break_stays_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "a\nb"
    folder.mkdir()
    path = write_spec(folder / "exp.yaml", TINY_SPEC + "zzz: 1\n")
    assert "unknown key" in _one_line(_error(path))


def test_apply_override_refuses_bombs_on_raw_dicts() -> None:
    with pytest.raises(InputError, match="recursive alias"):
        apply_override({}, "a=&x {b: *x}")
    with pytest.raises(InputError, match="duplicate key"):
        apply_override({}, "a={k: 1, k: 2}")


# ------------------------------------------------------------------ through the CLI


def _cli_refuses(tmp_path: Path, spec: Path, *fragments: str) -> str:
    line = refused("run", spec, "--results-dir", "R", cwd=tmp_path, results=tmp_path / "R",
                   contains=fragments, timeout=60)
    assert not (tmp_path / "R").exists(), line
    return line


def test_cli_duplicate_methods_key(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC + "methods:\n  - name: dpo\n")
    _cli_refuses(tmp_path, spec, f"{spec}:{N + 1}:", "duplicate key 'methods'")


def test_cli_alias_bomb(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC + bomb())
    t0 = time.perf_counter()
    _cli_refuses(tmp_path, spec, str(spec), "alias")
    assert time.perf_counter() - t0 < 30  # the process, imports included; the load is ms


def test_cli_recursive_alias(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC + "x: &x [*x]\n")
    _cli_refuses(tmp_path, spec, f"{spec}:{N + 1}:", "recursive alias")


def test_cli_non_utf8_spec(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_bytes(TINY_SPEC.encode() + b"x: \xff\xfe\n")
    _cli_refuses(tmp_path, spec, f"{spec}:{N + 1}:", "not UTF-8", "offset")


def test_cli_spec_path_is_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    folder.mkdir()
    _cli_refuses(tmp_path, folder, str(folder), "directory")


def test_cli_missing_spec(tmp_path: Path) -> None:
    _cli_refuses(tmp_path, tmp_path / "nope.yaml", "nope.yaml", "not found")


def test_cli_surrogate_in_a_key(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "tiny.yaml", TINY_SPEC + json.dumps("k\ud800") + ": 1\n")
    _cli_refuses(tmp_path, spec, str(spec), "\\ud800")
