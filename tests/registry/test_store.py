import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparkscore as ss
from sparkscore.errors import (IntegrityError, InvalidModelNameError, ModelNotFoundError, RegistryError,
                               SignatureError)
from sparkscore.ir import Signature
from sparkscore.registry import ModelVersion, Registry
from tests.registry.models import tiny_model

INJECTION_NAMES = ["../x", "..", "/tmp/evil", "x/../../y", "x'; DROP TABLE t; --", "ch\u00fcrn", "", "a\nb", "x\\..\\y"]


def test_register_numbers_versions_and_loads_them_verified(registry):
    first = registry.register("churn", tiny_model(1.0))
    second = registry.register("churn", tiny_model(2.0))
    assert (first.version, second.version) == (1, 2)
    assert isinstance(first, ModelVersion) and first.ref == "churn/1"
    model = registry.load("churn/1")
    assert model.metadata["name"] == "churn" and model.sha256 == first.sha256
    np.testing.assert_allclose(model.predict(np.array([[1.0, 1.0]])), [4.0])
    assert registry.get("churn") == second
    assert registry.load("churn").sha256 == second.sha256
    assert [mv.version for mv in registry.versions("churn")] == [1, 2]
    assert registry.models() == ["churn"]
    assert ss.Model.load(registry.model_path("churn", 2)).sha256 == second.sha256


def test_registered_files_follow_the_documented_layout(registry):
    mv = registry.register("churn", tiny_model())
    version_dir = registry.root / "models" / "churn" / "versions" / "1"
    assert Path(mv.path) == version_dir
    assert {"model.json", "arrays.npz", "sha256", "version.json"} <= set(os.listdir(version_dir))
    assert not [p for p in (registry.root / "models" / "churn").iterdir() if p.name.startswith(".staging")]


def test_lineage_records_source_environment_and_caller_fields(registry):
    lineage = {"data_fingerprint": "sha256:abc", "code_version": "git:1234", "config": {"lr": 0.1}}
    mv = registry.register("churn", tiny_model(), lineage=lineage, metadata={"owner": "ds-team"})
    info = registry.describe("churn/1")
    assert info["lineage"] == lineage
    assert info["sha256"] == mv.sha256 and info["created_at"] == mv.created_at
    assert info["created_at"].endswith("+00:00")
    assert info["source"] == {"library": "test", "library_version": "0", "class": None}
    env = info["environment"]
    assert env["python"].count(".") == 2
    assert {"sparkscore", "numpy", "pandas"} <= set(env["packages"])
    assert info["model"]["metadata"]["owner"] == "ds-team"
    assert [c["name"] for c in info["model"]["inputs"]] == ["age", "income"]


@pytest.mark.parametrize("lineage", [{"when": object()}, {"x": float("nan")}, ["not", "a", "dict"]])
def test_lineage_must_be_json(registry, lineage):
    with pytest.raises(RegistryError):
        registry.register("churn", tiny_model(), lineage=lineage)
    assert registry.models() == []


def test_feature_names_and_signature_rename_inputs(registry):
    registry.register("a", tiny_model(), feature_names=["x", "y"])
    assert registry.load("a").signature.names == ("x", "y")
    registry.register("b", tiny_model(), signature=Signature.from_names(["p", "q"]))
    assert registry.load("b").signature.names == ("p", "q")
    with pytest.raises(SignatureError):
        registry.register("c", tiny_model(), feature_names=["only_one"])
    with pytest.raises(SignatureError):
        registry.register("c", tiny_model(), signature=Signature.from_names(["p", "q", "r"]))


def test_register_converts_native_models(registry):
    sklearn = pytest.importorskip("sklearn.linear_model")
    pytest.importorskip("sparkscore.importers.sklearn", reason="the sklearn importer is not written yet")
    native = sklearn.LinearRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]), [1.0, 2.0, 5.0])
    registry.register("lin", native, feature_names=["a", "b"])
    model = registry.load("lin")
    assert model.metadata["name"] == "lin" and model.signature.names == ("a", "b")
    np.testing.assert_allclose(model.predict(np.array([[3.0, 1.0]])), native.predict([[3.0, 1.0]]))


def test_aliases_move_atomically_and_resolve(registry):
    registry.register("churn", tiny_model(1.0))
    registry.register("churn", tiny_model(2.0))
    registry.set_alias("churn", "prod", 1)
    assert registry.get("churn@prod").version == 1
    registry.set_alias("churn", "prod", 2)
    assert registry.get("churn@prod").version == 2
    assert registry.aliases("churn") == {"prod": 2}
    assert registry.describe("churn/2")["aliases"] == ["prod"]
    alias_dir = registry.root / "models" / "churn" / "aliases"
    assert sorted(os.listdir(alias_dir)) == ["prod.json"]  # no temp files left behind
    registry.delete_alias("churn", "prod")
    with pytest.raises(ModelNotFoundError, match="no alias 'prod'"):
        registry.get("churn@prod")
    with pytest.raises(ModelNotFoundError):
        registry.delete_alias("churn", "prod")


def test_alias_must_point_at_an_existing_version(registry):
    registry.register("churn", tiny_model())
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        registry.set_alias("churn", "prod", 7)
    with pytest.raises(InvalidModelNameError):
        registry.set_alias("churn", "prod", 0)
    with pytest.raises(ModelNotFoundError):
        registry.set_alias("other", "prod", 1)
    assert registry.aliases("churn") == {}


@pytest.mark.parametrize("ref, message", [
    ("nope", "not in the registry"), ("nope/1", "not in the registry"), ("nope@prod", "not in the registry"),
    ("churn/9", "no version 9"), ("churn@staging", "no alias 'staging'"),
])
def test_missing_refs_raise_model_not_found(registry, ref, message):
    registry.register("churn", tiny_model())
    with pytest.raises(ModelNotFoundError, match=message):
        registry.get(ref)


def test_empty_registry(tmp_path):
    reg = Registry(tmp_path / "never-created")
    assert reg.models() == []
    with pytest.raises(ModelNotFoundError, match="empty"):
        reg.versions("churn")
    assert not (tmp_path / "never-created").exists()


@pytest.mark.parametrize("bad", INJECTION_NAMES)
def test_bad_names_never_touch_the_filesystem(tmp_path, bad):
    reg = Registry(tmp_path / "reg")
    for call in (lambda: reg.register(bad, tiny_model()), lambda: reg.get(bad), lambda: reg.load(bad),
                 lambda: reg.versions(bad), lambda: reg.describe(bad), lambda: reg.model_path(bad, 1)):
        with pytest.raises(InvalidModelNameError):
            call()
    reg.register("ok", tiny_model())
    for call in (lambda: reg.set_alias("ok", bad, 1), lambda: reg.delete_alias("ok", bad),
                 lambda: reg.set_alias(bad, "prod", 1)):
        with pytest.raises(InvalidModelNameError):
            call()
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written == {"reg"}
    assert reg.models() == ["ok"]


@pytest.mark.parametrize("damage", ["arrays", "sha256_file", "version_json_sha", "version_json_missing"])
def test_load_detects_tampering(registry, damage):
    mv = registry.register("churn", tiny_model())
    path = Path(mv.path)
    if damage == "arrays":
        replacement = registry.register("other", tiny_model(5.0))
        (path / "arrays.npz").write_bytes((Path(replacement.path) / "arrays.npz").read_bytes())
    elif damage == "sha256_file":
        (path / "sha256").write_text("0" * 64)
    elif damage == "version_json_sha":
        record = json.loads((path / "version.json").read_text())
        record["sha256"] = "f" * 64
        (path / "version.json").write_text(json.dumps(record))
    else:
        (path / "version.json").unlink()
    with pytest.raises(IntegrityError):
        registry.load("churn")


def test_uri_forms_select_the_same_root(tmp_path, monkeypatch):
    Registry(tmp_path).register("churn", tiny_model())
    assert Registry(f"file://{tmp_path}").models() == ["churn"]
    assert Registry(f"file://localhost{tmp_path}").models() == ["churn"]
    assert Registry(str(tmp_path)).models() == ["churn"]
    monkeypatch.setenv("SPARKSCORE_HOME", str(tmp_path))
    assert Registry().root == tmp_path and Registry().models() == ["churn"]
    monkeypatch.delenv("SPARKSCORE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Registry().root == tmp_path / "home" / ".sparkscore"


@pytest.mark.parametrize("uri", ["file://otherhost/x", "http://example.com/r"])  # s3:// is supported: test_object_store
def test_remote_uris_are_refused_with_a_hint(uri):
    with pytest.raises(RegistryError, match="mount"):
        Registry(uri)


def test_root_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError):
        Registry(tmp_path / "file")


def test_leftover_staging_dirs_and_junk_are_ignored(registry):
    registry.register("churn", tiny_model())
    name_dir = registry.root / "models" / "churn"
    (name_dir / ".staging-dead").mkdir()
    (name_dir / "versions" / "notes").mkdir()
    (registry.root / "models" / "..hidden").mkdir()
    assert [mv.version for mv in registry.versions("churn")] == [1]
    assert registry.register("churn", tiny_model(3.0)).version == 2
    assert registry.models() == ["churn"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(max_size=12), alias=st.text(max_size=12))
def test_fuzzed_names_and_aliases_stay_inside_the_root(name, alias):
    with tempfile.TemporaryDirectory() as outer:
        reg = Registry(Path(outer) / "reg")
        try:
            reg.register(name, tiny_model())
            reg.set_alias(name, alias, 1)
        except InvalidModelNameError:
            pass
        else:
            assert reg.get(f"{name}@{alias}").version == 1
        for path in Path(outer).rglob("*"):
            assert path.resolve().is_relative_to((Path(outer) / "reg").resolve())
