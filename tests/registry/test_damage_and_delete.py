"""Issue 12 items 5 and 6: one damaged file costs only its own entry; delete, dedup, numbering."""

import json
from pathlib import Path

import duckdb
import pytest

import sparkscore as ss
from sparkscore.errors import IntegrityError, ModelNotFoundError, RegistryError
from sparkscore.registry import Registry
from tests.registry.models import tiny_model


def _flip_byte(path: Path, needle: bytes) -> None:
    """Change one character inside the recorded value ``needle`` (still valid JSON)."""
    data = path.read_bytes()
    at = data.index(needle)
    flipped = bytes([data[at] ^ 0x01])
    path.write_bytes(data[:at] + flipped + data[at + 1:])


DAMAGES = {
    "truncated_version_json": lambda p: (p / "version.json").write_bytes((p / "version.json").read_bytes()[:40]),
    "flipped_byte_in_lineage": lambda p: _flip_byte(p / "version.json", b"abc123"),
    "flipped_byte_in_recorded_sha": lambda p: _flip_byte(
        p / "version.json", json.loads((p / "version.json").read_text())["sha256"][:8].encode()),
    "record_hash_removed": lambda p: (p / "version.sha256").unlink(),
    "model_json_truncated": lambda p: (p / "model.json").write_bytes((p / "model.json").read_bytes()[:30]),
}


@pytest.fixture
def two_models(registry):
    registry.register("churn", tiny_model(1.0), lineage={"code_version": "abc123"})
    registry.register("churn", tiny_model(2.0), lineage={"code_version": "abc123"})
    registry.register("spend", tiny_model(3.0))
    registry.set_alias("churn", "prod", 1)
    return registry


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_version_is_detected_and_costs_only_its_own_entry(two_models, damage):
    DAMAGES[damage](two_models.model_path("churn", 2))
    with pytest.raises(IntegrityError, match="churn/2"):
        two_models.load("churn/2")
    assert two_models.load("churn/1").estimator.intercept[0] == 1.0
    loaded, damaged = two_models.load_all()
    assert sorted(mv.ref for mv, _ in loaded) == ["churn/1", "spend/1"]
    assert [d.ref for d in damaged] == ["churn/2"]
    assert str(two_models.model_path("churn", 2)) in damaged[0].path
    assert "sparkscore delete churn/2 --force" in damaged[0].fix
    # the fix it prints works: delete, register again (new number), everything healthy again
    two_models.delete("churn", 2, force=True)
    assert two_models.register("churn", tiny_model(2.0)).version == 3
    assert two_models.load_all()[1] == []


def test_the_version_record_is_covered_by_a_hash_written_at_registration(registry):
    mv = registry.register("churn", tiny_model(), lineage={"code_version": "abc123"})
    folder = Path(mv.path)
    record = json.loads((folder / "version.json").read_text())
    assert record["record_format"] == 2
    import hashlib
    assert (folder / "version.sha256").read_text().strip() == hashlib.sha256((folder / "version.json").read_bytes()).hexdigest()


def test_wave1_records_without_a_record_hash_still_load(registry):
    """A registry written before version.sha256 existed: no hash file, no record_format."""
    mv = registry.register("churn", tiny_model())
    folder = Path(mv.path)
    record = json.loads((folder / "version.json").read_text())
    del record["record_format"]
    (folder / "version.json").write_text(json.dumps(record, indent=2, sort_keys=True))
    (folder / "version.sha256").unlink()
    (registry.root / "models" / "churn" / "last_version.json").unlink()
    assert registry.load("churn").sha256 == mv.sha256
    assert registry.status("churn").damaged == ()
    assert registry.register("churn", tiny_model(9.0)).version == 2


def test_a_damaged_alias_costs_only_that_alias(two_models):
    alias_file = two_models.root / "models" / "churn" / "aliases" / "prod.json"
    alias_file.write_text('{"vers')
    two_models.set_alias("spend", "prod", 1)
    with pytest.raises(IntegrityError, match=r"churn@prod.*prod\.json.*sparkscore alias churn prod"):
        two_models.get("churn@prod")
    status = two_models.status("churn")
    assert [mv.version for mv in status.versions] == [1, 2]
    assert [(d.ref, d.path) for d in status.damaged] == [("churn@prod", str(alias_file))]
    assert two_models.status("spend").aliases == (("prod", 1),)
    assert two_models.describe("churn/1")["version"] == 1
    loaded, damaged = two_models.load_all()
    assert len(loaded) == 3 and [d.ref for d in damaged] == ["churn@prod"]
    two_models.set_alias("churn", "prod", 2)  # the fix it prints works
    assert two_models.get("churn@prod").version == 2 and two_models.status("churn").damaged == ()


def test_duckdb_install_installs_what_is_healthy_and_warns_about_the_rest(two_models):
    (two_models.model_path("churn", 2) / "version.json").write_text("{")
    con = duckdb.connect()
    with pytest.warns(UserWarning, match=r"churn/2.*version\.json.*sparkscore delete churn/2 --force"):
        names = ss.duckdb.install(con, registry=two_models)
    assert sorted(names) == ["churn_v1", "spend_v1"]
    assert con.sql("SELECT churn_v1(1.0, 1.0)").fetchall() == [(4.0,)]


def test_registering_the_same_bytes_returns_the_existing_version(registry):
    first = registry.register("churn", tiny_model(1.0), lineage={"code_version": "first"})
    again = registry.register("churn", tiny_model(1.0), lineage={"code_version": "second"})
    assert (again.version, again.existing, first.existing) == (1, True, False)
    assert again == first
    assert [mv.version for mv in registry.versions("churn")] == [1]
    assert registry.describe("churn/1")["lineage"] == {"code_version": "first"}
    assert not [p for p in (registry.root / "models" / "churn").iterdir() if p.name.startswith(".staging")]
    assert registry.register("churn", tiny_model(2.0)).version == 2
    assert registry.register("other", tiny_model(1.0)).existing is False  # per name


def test_delete_a_version_is_refused_while_an_alias_points_at_it(two_models):
    with pytest.raises(RegistryError, match=r"churn/1 is the target of alias prod.*--force"):
        two_models.delete("churn", 1)
    assert [mv.version for mv in two_models.versions("churn")] == [1, 2]
    deleted = two_models.delete("churn", 1, force=True)
    assert (deleted.versions, deleted.aliases) == ((1,), ("prod",))
    assert [mv.version for mv in two_models.versions("churn")] == [2]
    assert two_models.aliases("churn") == {}
    with pytest.raises(ModelNotFoundError, match="no version 1"):
        two_models.get("churn/1")


def test_version_numbers_are_never_reused_after_a_delete(two_models):
    two_models.delete("churn", 2)
    assert two_models.get("churn").version == 1
    assert two_models.register("churn", tiny_model(7.0)).version == 3
    with pytest.raises(RegistryError, match="alias prod"):
        two_models.delete("churn")
    deleted = two_models.delete("churn", force=True)
    assert deleted.versions == (1, 3) and deleted.aliases == ("prod",)
    assert two_models.models() == ["spend"]
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        two_models.get("churn")
    assert two_models.register("churn", tiny_model(1.0)).version == 4  # tombstone keeps the count


@pytest.mark.parametrize("call, error", [
    (lambda r: r.delete("nope"), ModelNotFoundError), (lambda r: r.delete("churn", 9), ModelNotFoundError),
    (lambda r: r.delete("../x"), ValueError), (lambda r: r.delete("churn", 0), ValueError),
])
def test_delete_of_something_missing_is_a_clean_error(two_models, call, error):
    with pytest.raises(error):
        call(two_models)
    assert [mv.version for mv in two_models.versions("churn")] == [1, 2]


def test_a_damaged_tombstone_is_reported_with_its_fix(two_models):
    path = two_models.root / "models" / "churn" / "last_version.json"
    path.write_text("{")
    with pytest.raises(IntegrityError, match="last_version.json"):
        two_models.register("churn", tiny_model(8.0))
    path.write_text('{"last_version": 2}')
    assert two_models.register("churn", tiny_model(8.0)).version == 3
