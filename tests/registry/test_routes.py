"""Routes in the registry: versioning, integrity, the alias namespace, the bucket layout and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparkscore.errors import IntegrityError, ModelNotFoundError, RegistryError
from sparkscore.registry import routes as R
from tests.registry.models import tiny_model

VECTORS = json.loads((Path(__file__).parents[1] / "fixtures" / "route_hash_vectors.json").read_text())["vectors"]


@pytest.fixture
def reg(registry):
    for i in range(4):
        registry.register("churn", tiny_model(float(i)))
    for alias, version in (("prod", 1), ("challenger", 2), ("candidate", 3)):
        registry.set_alias("churn", alias, version)
    return registry


def _owner(route) -> np.ndarray:
    """Arm label of every bucket."""
    out = np.empty(R.BUCKETS, dtype=object)
    for start, end, label in route.ranges:
        out[start:end] = label
    return out


def test_versions_are_gap_free_and_pin_what_each_arm_resolved_to(reg):
    first = reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="customer_id", shadow=["candidate"])
    second = reg.set_route("churn", "ab", arms={"prod": 80, "challenger": 20}, reason="ramp up")
    assert (first.version, second.version) == (1, 2)
    assert second.key == "customer_id" and second.salt == first.salt == "churn@ab"  # inherited
    assert [r.version for r in reg.route_history("churn", "ab")] == [1, 2]
    assert reg.route("churn", "ab", 1).weights == {"prod": 9000, "challenger": 1000}
    reg.set_alias("churn", "prod", 4)
    resolved = R.resolve_route(reg, "churn@ab")
    assert [(a.label, a.version) for a in resolved.arms] == [("prod", 4), ("challenger", 2)]
    assert R.resolve_route(reg, "churn@prod") is None and R.resolve_route(reg, "churn/2") is None


@pytest.mark.parametrize("arms, message", [
    ({"prod": 90, "challenger": 20}, "sum to 110"),
    ({"prod": 90.0, "challenger": 10}, "non-negative integer"),
    ({"prod": 100, "nosuch": 0}, "no alias 'nosuch'"),
    ({"prod": 50, "other@x": 50}, "ref of model 'other'"),
    ({"prod": 50, "churn/9": 50}, "no version 9"),
])
def test_bad_arms_are_refused(reg, arms, message):
    with pytest.raises((RegistryError, ModelNotFoundError), match=message):
        reg.set_route("churn", "ab", arms=arms, key="id")


def test_weights_in_basis_points_and_versions_as_arms(reg):
    route = reg.set_route("churn", "bp", arms={"prod": 9950, 2: 50}, key="id")
    assert route.weights == {"prod": 9950, "2": 50}
    assert [a.ref for a in R.resolve_route(reg, "churn@bp").arms] == ["churn/1", "churn/2"]


def test_alias_and_route_names_cannot_collide(reg):
    reg.set_route("churn", "ab", arms={"prod": 100}, key="id")
    with pytest.raises(RegistryError, match="has a route 'ab'"):
        reg.set_alias("churn", "ab", 1)
    with pytest.raises(RegistryError, match="has an alias 'prod'"):
        reg.set_route("churn", "prod", arms={"challenger": 100}, key="id")
    with pytest.raises(ModelNotFoundError, match="is a route"):
        reg.get("churn@ab")


def test_shadow_cannot_also_be_an_arm(reg):
    with pytest.raises(RegistryError, match="both an arm and a shadow"):
        reg.set_route("churn", "ab", arms={"prod": 100}, key="id", shadow=["prod"])


def test_a_modified_route_version_is_refused(reg):
    reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="id")
    path = R.routes_dir(reg, "churn") / "ab" / "1.json"
    doc = json.loads(path.read_text())
    doc["record"]["arms"][1]["ranges"] = [[0, 1000]]
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        reg.route("churn", "ab")


def test_weight_increase_only_adds_buckets_and_unrelated_arms_stay(reg):
    versions = [{"prod": 90, "challenger": 10}, {"prod": 80, "challenger": 20},    # challenger grows
                {"prod": 70, "challenger": 20, "3": 10},                           # a new arm takes from prod
                {"prod": 75, "challenger": 20, "3": 5},                            # only prod and 3 change
                {"prod": 80, "challenger": 20}]                                     # 3 leaves
    owners = [_owner(reg.set_route("churn", "ab", arms=arms, key="id")) for arms in versions]
    for before, after, old, new in zip(owners, owners[1:], versions, versions[1:]):
        for label in set(old) | set(new):
            had, has = before == label, after == label
            if new.get(label, 0) >= old.get(label, 0):
                assert not (had & ~has).any(), label            # monotone: a growing arm loses no bucket
            if new.get(label, 0) <= old.get(label, 0):
                assert not (has & ~had).any(), label            # a shrinking arm gains none
            if new.get(label, 0) == old.get(label, 0):
                assert (had == has).all(), label                # an unchanged arm keeps exactly its buckets
    assert (owners[1] == owners[4]).all()  # undoing the changes gives the assignment back


def test_key_stickiness_through_the_hash(reg):
    a = reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="id")
    b = reg.set_route("churn", "ab", arms={"prod": 80, "challenger": 20})
    keys = range(20_000)
    before = [a.arm_of_key(k) for k in keys]
    after = [b.arm_of_key(k) for k in keys]
    assert all(y == "challenger" for x, y in zip(before, after) if x == "challenger")
    moved = sum(x != y for x, y in zip(before, after))
    assert abs(moved / len(keys) - 0.10) < 0.01  # only the 10% that had to move


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{v['salt']}-{v['type']}-{v['key']!r}")
def test_python_bucket_matches_the_vectors(vector):
    key = float(vector["key"]) if vector["type"] == "double" and isinstance(vector["key"], str) else vector["key"]
    assert R.key_text(key) == vector["text"]
    assert R.bucket(vector["salt"], key) == vector["bucket"]
    if vector["type"] == "double" and vector["text"] is not None:  # integral floats hash as the integer
        assert R.bucket(vector["salt"], int(key)) == vector["bucket"]


def test_null_keys_take_bucket_zero_the_first_arm(reg):
    route = reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="id")
    assert route.arm_of_key(None) == route.arm_of_key(float("nan")) == route.arm_of_key(0.5) == "prod"


def test_cli_route_set_show_history(reg, runner, monkeypatch):
    args = ["--registry", str(reg.root), "route"]
    from sparkscore.cli import app

    result = runner.invoke(app, [*args, "set", "churn", "ab", "--arm", "prod=90", "--arm", "challenger=10",
                                 "--key", "customer_id", "--shadow", "candidate"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, [*args, "set", "churn", "ab", "--arm", "prod=80", "--arm", "challenger=20"]).exit_code == 0
    shown = json.loads(runner.invoke(app, [*args, "show", "churn", "ab", "--json"]).output)
    assert shown["version"] == 2 and [a["resolves_to"] for a in shown["arms"]] == ["churn/1", "churn/2"]
    history = json.loads(runner.invoke(app, [*args, "history", "churn", "ab", "--json"]).output)
    assert [h["version"] for h in history] == [1, 2] and history[0]["shadow"] == ["candidate"]
    bad = runner.invoke(app, [*args, "set", "churn", "ab", "--arm", "prod=80", "--arm", "challenger=30"])
    assert bad.exit_code == 1 and "sum to 110" in bad.output and "Traceback" not in bad.output
