"""The generic registry: registration, lookup errors and entry-point plugins."""

from __future__ import annotations

import pytest

import harness.registry as registry_module
from harness.errors import InputError
from harness.registry import Registry


class _FakeEntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name, self._obj, self.loads = name, obj, 0

    def load(self) -> object:
        self.loads += 1
        return self._obj


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch):
    """Replace importlib.metadata.entry_points as seen by harness.registry."""
    groups: dict[str, list[_FakeEntryPoint]] = {}
    calls: list[str] = []

    def entry_points(*, group: str):
        calls.append(group)
        return list(groups.get(group, []))

    monkeypatch.setattr(registry_module.metadata, "entry_points", entry_points)
    return groups, calls


def test_register_and_get() -> None:
    reg: Registry = Registry("widget")

    @reg.register("alpha")
    def make_alpha() -> str:
        return "a"

    assert make_alpha() == "a"  # the decorator returns the object unchanged
    assert reg.get("alpha") is make_alpha
    assert "alpha" in reg and "beta" not in reg
    reg.register("beta")(str)
    assert reg.names() == ["alpha", "beta"]


def test_duplicate_registration() -> None:
    reg: Registry = Registry("widget")
    reg.register("x")(int)
    reg.register("x")(int)  # re-registering the same object is harmless (module reloads)
    with pytest.raises(ValueError, match="widget 'x' is already registered"):
        reg.register("x")(float)
    assert reg.get("x") is int


def test_unknown_name_did_you_mean() -> None:
    reg: Registry = Registry("judge")
    for name in ("oracle", "length", "pairrm"):
        reg.register(name)(object())
    with pytest.raises(InputError) as exc:
        reg.get("oracel")
    msg = str(exc.value)
    assert "unknown judge 'oracel'" in msg
    assert "Did you mean 'oracle'?" in msg
    assert "Known: length, oracle, pairrm" in msg


def test_unknown_name_without_close_match() -> None:
    reg: Registry = Registry("task")
    reg.register("bandit")(object())
    with pytest.raises(InputError) as exc:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(exc.value)
    assert "Known: bandit" in str(exc.value)


def test_plugins_loaded_from_entry_points(fake_entry_points) -> None:
    groups, calls = fake_entry_points

    class Plugin:
        pass

    ep = _FakeEntryPoint("ipo", Plugin)
    groups["my.methods"] = [ep]
    reg: Registry = Registry("method", "my.methods")
    reg.register("spo")(object)
    assert reg.get("spo") is object  # built-ins resolve without touching plugins
    assert calls == []
    assert reg.get("ipo") is Plugin
    assert calls == ["my.methods"]
    assert reg.names() == ["ipo", "spo"]
    assert "ipo" in reg
    # entry points are scanned and loaded once
    reg.get("ipo")
    reg.names()
    assert calls == ["my.methods"] and ep.loads == 1


def test_plugin_cannot_shadow_builtin(fake_entry_points) -> None:
    groups, _ = fake_entry_points
    builtin, rogue = object(), object()
    groups["g"] = [_FakeEntryPoint("spo", rogue)]
    reg: Registry = Registry("method", "g")
    reg.register("spo")(builtin)
    assert reg.names() == ["spo"]
    assert reg.get("spo") is builtin


def test_unknown_name_after_plugins_lists_plugins(fake_entry_points) -> None:
    groups, _ = fake_entry_points
    groups["g"] = [_FakeEntryPoint("simpo", object())]
    reg: Registry = Registry("method", "g")
    reg.register("spo")(object())
    with pytest.raises(InputError) as exc:
        reg.get("simpoo")
    assert "Did you mean 'simpo'?" in str(exc.value)
    assert "Known: simpo, spo" in str(exc.value)


def test_registry_without_group_never_scans(fake_entry_points) -> None:
    _, calls = fake_entry_points
    reg: Registry = Registry("thing")
    with pytest.raises(InputError):
        reg.get("x")
    assert reg.names() == []
    assert calls == []


def test_project_registries_expose_builtins() -> None:
    from evaluators.judges import JUDGES
    from evaluators.scorers import SCORERS
    from harness.tasks import TASKS
    from trainers.losses import LOSSES

    assert {"spo", "dpo"} <= set(LOSSES.names())
    assert {"bandit", "sentiment"} <= set(TASKS.names())
    assert "oracle" in JUDGES and "oracle" in SCORERS
    assert LOSSES.entry_point_group == "spo_harness.methods"
