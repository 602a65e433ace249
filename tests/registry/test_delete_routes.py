"""Deleting a whole model deals with its routes (refused, or with --force removed: a new model of the
same name must not inherit the old traffic split); deleting an ensemble member leaves the ensemble
whole (it keeps its own verified copy of every member)."""

from __future__ import annotations

import numpy as np
import pytest

from sparkscore.errors import ModelNotFoundError, RegistryError
from sparkscore.registry.routes import route_names
from tests.registry.models import tiny_model


@pytest.fixture
def routed(registry):
    """m/1, m/2 (no aliases, so only the route can block a delete) and route m@ab over both."""
    registry.register("m", tiny_model(1.0))
    registry.register("m", tiny_model(2.0))
    registry.set_route("m", "ab", arms={1: 50, 2: 50}, key="age")
    return registry


def test_deleting_a_routed_model_is_refused_naming_the_route(routed):
    with pytest.raises(RegistryError, match=r"model m has route m@ab: .*--force") as info:
        routed.delete("m")
    assert "\n" not in str(info.value)
    assert [mv.version for mv in routed.versions("m")] == [1, 2] and route_names(routed, "m") == ["ab"]


def test_force_deletes_the_routes_so_a_new_model_of_that_name_starts_clean(routed):
    deleted = routed.delete("m", force=True)
    assert deleted.versions == (1, 2) and deleted.routes == ("ab",)
    routed.register("m", tiny_model(3.0))
    assert route_names(routed, "m") == []
    with pytest.raises(ModelNotFoundError):
        routed.route("m", "ab")
    assert routed.set_route("m", "ab", arms={3: 100}, key="age").version == 1  # fresh: no inherited history
    routed.set_alias("m", "ab2", 3)  # the namespace shared with aliases is free again


def test_deleting_a_version_no_route_uses_keeps_the_routes(routed):
    routed.register("m", tiny_model(3.0))
    routed.delete("m", 3)
    assert route_names(routed, "m") == ["ab"] and routed.route("m", "ab").version == 1


@pytest.mark.parametrize("force", [False, True])
def test_deleting_a_version_an_arm_pins_is_refused_even_with_force(routed, force):
    """The route would fail on its next resolve: it is moved off the arm explicitly, never broken."""
    with pytest.raises(RegistryError, match=r"m/2 is used by route m@ab v1 \(arm 2\): move the route off") as info:
        routed.delete("m", 2, force=force)
    assert "\n" not in str(info.value) and "`sparkscore route set m ab --arm ...`" in str(info.value)
    assert [mv.version for mv in routed.versions("m")] == [1, 2]
    routed.set_route("m", "ab", arms={1: 100, 2: 0})  # a zero-weight arm answers no row: no longer blocks
    routed.delete("m", 2)
    assert [mv.version for mv in routed.versions("m")] == [1]


def test_an_alias_arm_or_a_shadow_arm_blocks_its_alias_and_version(registry):
    registry.register("m", tiny_model(1.0))
    registry.register("m", tiny_model(2.0))
    registry.set_alias("m", "prod", 1)
    registry.set_alias("m", "cand", 2)
    registry.set_route("m", "ab", arms={"prod": 100}, key="age", shadow=["cand"])
    for alias in ("prod", "cand"):
        with pytest.raises(RegistryError, match=f"alias m@{alias} is used by route m@ab v1 \\(arm {alias}\\)"):
            registry.delete_alias("m", alias)
    with pytest.raises(RegistryError, match=r"m/1 is used by route m@ab v1 \(arm prod\)"):
        registry.delete("m", 1, force=True)  # force would remove m@prod, which the arm follows
    assert registry.get("m@prod").version == 1 and registry.get("m@cand").version == 2
    registry.set_alias("m", "prod", 2)  # moving an alias an arm follows is how a route changes arms
    registry.set_alias("m", "other", 1)
    registry.delete_alias("m", "other")


def test_cli_delete_of_a_routed_version_is_one_line(runner, monkeypatch, tmp_path):
    from sparkscore.cli import app
    from sparkscore.registry import Registry

    reg = Registry(tmp_path / "cli-registry")
    monkeypatch.setenv("SPARKSCORE_HOME", str(reg.root))
    reg.register("m", tiny_model(1.0))
    reg.set_route("m", "ab", arms={1: 100}, key="age")
    refused = runner.invoke(app, ["delete", "m/1", "--force"])
    assert refused.exit_code != 0 and "route m@ab v1 (arm 1)" in refused.output and "Traceback" not in refused.output


def test_cli_delete_says_why_and_force_names_the_route(runner, monkeypatch, tmp_path):
    from sparkscore.cli import app
    from sparkscore.registry import Registry

    reg = Registry(tmp_path / "cli-registry")
    monkeypatch.setenv("SPARKSCORE_HOME", str(reg.root))
    reg.register("m", tiny_model(1.0))
    reg.set_route("m", "ab", arms={1: 100}, key="age")
    refused = runner.invoke(app, ["delete", "m"])
    assert refused.exit_code != 0 and "m@ab" in refused.output and "Traceback" not in refused.output
    done = runner.invoke(app, ["delete", "m", "--force"])
    assert done.exit_code == 0 and "and route ab" in done.output, done.output


def test_deleting_an_ensemble_member_leaves_the_ensemble_verified_and_scoring(registry):
    """Not blocked on purpose: the ensemble holds its own copy of each member (DESIGN 14)."""
    registry.register("a", tiny_model(1.0))
    registry.register("b", tiny_model(5.0))
    ens = registry.register_ensemble("ens", ["a/1", "b/1"], combiner="mean")
    X = np.array([[1.0, 2.0], [3.0, -4.0], [np.nan, 0.5]])
    before = registry.load("ens").predict(X)
    registry.delete("a", 1)
    with pytest.raises(ModelNotFoundError):
        registry.get("a/1")
    after = registry.load(ens.ref)  # verifies the ensemble's sha256, members' copies included
    np.testing.assert_array_equal(after.predict(X), before)
    np.testing.assert_array_equal(after.predict(X, backend="numpy"), (X @ [1.0, 2.0] + 3.0))
