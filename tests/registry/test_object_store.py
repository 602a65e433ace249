"""The registry on S3, against moto's S3-compatible server on loopback (no network, no AWS account)."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import sparkscore as ss
from sparkscore.errors import IntegrityError, ModelNotFoundError, RegistryError
from sparkscore.registry import Registry
from sparkscore.registry.objstore import ObjectStoreRegistry
from tests.registry.models import tiny_model

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (random port) for the session; the AWS_* variables point at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="models")
    yield endpoint
    patch.undo()
    server.stop()


@pytest.fixture
def s3_registry(s3_endpoint) -> ObjectStoreRegistry:
    """A fresh prefix per test (the bucket is shared); a new S3FileSystem so no listing cache leaks across."""
    reg = Registry(f"s3://models/t-{uuid.uuid4().hex}", storage_options={"skip_instance_cache": True,
                                                                       "use_listings_cache": False})
    assert isinstance(reg, ObjectStoreRegistry)
    return reg


def _s3(reg: ObjectStoreRegistry):
    return reg.storage.fs


def test_register_load_alias_delete_and_history_on_s3(s3_registry):
    reg = s3_registry
    first, second = reg.register("churn", tiny_model(1.0)), reg.register("churn", tiny_model(2.0))
    assert (first.version, second.version) == (1, 2) and first.path.startswith(reg.uri + "/models/churn/objects/")
    assert reg.register("churn", tiny_model(2.0)).existing
    model = reg.load("churn/1")
    assert model.sha256 == first.sha256
    np.testing.assert_allclose(model.predict(np.array([[1.0, 1.0]])), [4.0])
    assert reg.models() == ["churn"] and [v.version for v in reg.versions("churn")] == [1, 2]
    assert reg.get("churn") == second

    reg.set_alias("churn", "prod", 1, reason="JIRA-1")
    reg.set_alias("churn", "prod", 2)
    reg.set_alias("churn", "shadow", 1)
    assert reg.aliases("churn") == {"prod": 2, "shadow": 1} and reg.get("churn@prod").version == 2
    history = reg.alias_history("churn", "prod")
    assert [(m.from_version, m.to_version, m.reason) for m in history.moves] == [(None, 1, "JIRA-1"), (1, 2, None)]
    assert reg.get(f"churn@prod#{history.moves[0].ts}").version == 1  # time-pinned refs read the same log

    with pytest.raises(RegistryError, match="target of alias shadow"):
        reg.delete("churn", 1)
    reg.delete_alias("churn", "shadow")
    assert reg.aliases("churn") == {"prod": 2}
    with pytest.raises(ModelNotFoundError, match="no alias 'shadow'"):
        reg.get("churn@shadow")
    assert reg.delete("churn", 1).versions == (1,)
    assert not _s3(reg).find(first.path)  # the files went with it
    with pytest.raises(ModelNotFoundError, match="has no version 1"):
        reg.load("churn/1")
    assert reg.register("churn", tiny_model(3.0)).version == 3  # numbers are never given back
    deleted = reg.delete("churn", force=True)
    assert deleted.versions == (2, 3) and deleted.aliases == ("prod",)
    assert reg.models() == []
    assert reg.alias_history("churn", "prod").moves[-1].to_version is None
    assert reg.register("churn", tiny_model(4.0)).version == 4


def test_twenty_concurrent_registrations_get_versions_1_to_20(s3_registry):
    barrier = threading.Barrier(20)
    got, errors = [], []

    def register(i: int) -> None:
        try:
            reg = Registry(s3_registry.uri)  # one client per writer, as separate processes would have
            barrier.wait()
            got.append(reg.register("race", tiny_model(float(i))).version)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(got) == list(range(1, 21))
    assert [v.version for v in s3_registry.versions("race")] == list(range(1, 21))
    assert len({v.sha256 for v in s3_registry.versions("race")}) == 20


def test_concurrent_alias_moves_are_all_logged_in_order(s3_registry):
    reg = s3_registry
    for i in range(3):
        reg.register("m", tiny_model(float(i)))
    threads = [threading.Thread(target=Registry(reg.uri).set_alias, args=("m", "prod", v)) for v in (1, 2, 3) * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    moves = reg.alias_history("m", "prod").moves
    assert len(moves) == 6
    assert [m.from_version for m in moves[1:]] == [m.to_version for m in moves[:-1]]  # one chain, no lost move
    assert reg.aliases("m") == {"prod": moves[-1].to_version}


def test_a_writer_killed_mid_write_leaves_no_visible_version(s3_registry, monkeypatch):
    reg = s3_registry
    reg.register("churn", tiny_model(1.0))
    real = reg.storage.replace
    calls = []

    def dying(key, data):
        calls.append(key)
        if len(calls) == 2:  # one model file is up, the next upload dies
            raise KeyboardInterrupt("killed")
        real(key, data)

    monkeypatch.setattr(reg.storage, "replace", dying)
    with pytest.raises(KeyboardInterrupt):
        reg.register("churn", tiny_model(2.0))
    monkeypatch.undo()
    assert [v.version for v in reg.versions("churn")] == [1]
    assert reg.register("churn", tiny_model(3.0)).version == 2  # no gap, no reuse trouble


def test_a_writer_killed_before_publishing_leaves_no_visible_version(s3_registry, monkeypatch):
    reg = s3_registry
    monkeypatch.setattr(reg.storage, "create", lambda key, data: (_ for _ in ()).throw(SystemExit("killed")))
    with pytest.raises(SystemExit):
        reg.register("churn", tiny_model(1.0))
    monkeypatch.undo()
    with pytest.raises(ModelNotFoundError):
        reg.versions("churn")
    assert reg.register("churn", tiny_model(1.0)).version == 1


def test_tampered_objects_fail_integrity_checks(s3_registry):
    reg = s3_registry
    mv = reg.register("churn", tiny_model(1.0))
    fs = _s3(reg)
    model_json = f"{mv.path}/model.json"
    fs.pipe_file(model_json, fs.cat_file(model_json) + b" ")
    with pytest.raises(IntegrityError, match="churn/1"):
        reg.load("churn/1")

    reg.register("churn", tiny_model(2.0))
    record = f"{reg.uri}/models/churn/versions/2.json"
    envelope = json.loads(fs.cat_file(record))
    envelope["record"] = envelope["record"].replace('"version": 2', '"version": 3')
    fs.pipe_file(record, json.dumps(envelope).encode())
    with pytest.raises(IntegrityError, match="does not match its record_sha256"):
        reg.get("churn/2")
    assert [d.ref for d in reg.status("churn").damaged] == ["churn/2"]


def test_conditional_create_is_honoured_by_the_server(s3_registry):
    """The whole protocol rests on If-None-Match: * being refused for an existing key."""
    assert s3_registry.storage.create("probe", b"a")
    assert not s3_registry.storage.create("probe", b"b")
    assert s3_registry.storage.read("probe") == b"a"


def test_duckdb_predict_with_an_s3_registry(s3_registry, monkeypatch):
    duckdb = pytest.importorskip("duckdb")
    reg = s3_registry
    reg.register("churn", tiny_model(1.0))
    reg.set_alias("churn", "prod", 1)
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1.0, 1.0), (2.0, 0.5)) v(age, income)")
    out = ss.duckdb.sql(con, "SELECT PREDICT('churn@prod', age, income) AS p FROM t", registry=reg).fetchall()
    np.testing.assert_allclose([r[0] for r in out], [4.0, 4.0])
    monkeypatch.setenv("SPARKSCORE_HOME", reg.uri)  # the default registry can be an object store too
    assert isinstance(Registry(), ObjectStoreRegistry) and Registry().uri == reg.uri


def test_cli_takes_an_s3_registry(s3_registry):
    from typer.testing import CliRunner

    from sparkscore.cli import app

    s3_registry.register("churn", tiny_model(1.0))
    runner = CliRunner()
    result = runner.invoke(app, ["--registry", s3_registry.uri, "alias", "churn", "prod", "1"])
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["--registry", s3_registry.uri, "versions", "churn"])
    assert listed.exit_code == 0 and "prod" in listed.output, listed.output
    assert s3_registry.aliases("churn") == {"prod": 1}


def test_read_only_uris_are_refused():
    with pytest.raises(RegistryError, match="read-only"):
        Registry("https://example.com/registry")


def test_training_profile_is_stored_and_read_back_from_s3(s3_registry):
    pd = pytest.importorskip("pandas")
    data = pd.DataFrame({"age": np.arange(50.0), "income": np.linspace(0.0, 1.0, 50)})
    mv = s3_registry.register("churn", tiny_model(1.0), training_data=data)
    assert s3_registry.profile(mv.ref).rows == 50
    assert "profile.json" in {k.rsplit("/", 1)[1] for k in s3_registry.storage.list(mv.path[len(s3_registry.uri) + 1:])}


def test_watch_token_changes_with_every_write(s3_registry):
    reg = s3_registry
    reg.register("churn", tiny_model(1.0))
    before = reg.watch_token()
    assert reg.watch_token(["churn"]) == before
    reg.set_alias("churn", "prod", 1)
    moved = reg.watch_token()
    assert moved != before
    reg.register("churn", tiny_model(2.0))
    registered = reg.watch_token()
    assert registered != moved
    reg.set_route("churn", "ab", {"prod": 100}, key="id")
    assert reg.watch_token() != registered


def test_routes_on_s3_version_resolve_load_and_pin_like_a_filesystem(s3_registry, tmp_path):
    from sparkscore.registry import RoutedModel
    from sparkscore.registry import routes as R

    reg = s3_registry
    for intercept in (1.0, 2.0):
        reg.register("churn", tiny_model(intercept))
    reg.set_alias("churn", "prod", 1)
    first = reg.set_route("churn", "ab", {"prod": 90, 2: 10}, key="id")
    second = reg.set_route("churn", "ab", {"prod": 80, 2: 20}, reason="ramp")
    assert [r.version for r in reg.route_history("churn", "ab")] == [1, 2] and reg.route("churn", "ab") == second
    assert R.route_names(reg, "churn") == ["ab"] and second.salt == first.salt == "churn@ab"
    local = ss.Registry(tmp_path / "local")  # the same calls on a filesystem give the same layout
    for intercept in (1.0, 2.0):
        local.register("churn", tiny_model(intercept))
    local.set_alias("churn", "prod", 1)
    local.set_route("churn", "ab", {"prod": 90, 2: 10}, key="id")
    assert local.set_route("churn", "ab", {"prod": 80, 2: 20}).ranges == second.ranges
    routed = reg.load("churn@ab")
    assert isinstance(routed, RoutedModel) and [a.ref for a in routed.arms.values()] == ["churn/1", "churn/2"]
    X = np.array([[1.0, 1.0]] * 300)
    keys = list(range(300))
    assert routed.predict(X, key=keys).tolist() == [4.0 if a == "prod" else 5.0 for a in routed.arm_of(keys)]
    assert reg.load(f"churn@ab#{first.created_at}").route.version == 1
    with pytest.raises(ModelNotFoundError, match="is a route"):
        reg.get("churn@ab")
    with pytest.raises(RegistryError, match="has a route 'ab'"):
        reg.set_alias("churn", "ab", 1)
    with pytest.raises(RegistryError, match="has an alias 'prod'"):
        reg.set_route("churn", "prod", {1: 100}, key="id")
    with pytest.raises(R.RouteConflictError, match="expected version 1 but"):
        reg.set_route("churn", "ab", {"prod": 100}, expected_version=1)
    # what a live arm uses cannot be deleted from under the route (as on a filesystem)
    with pytest.raises(RegistryError, match=r"churn/2 is used by route churn@ab v2 \(arm 2\)"):
        reg.delete("churn", 2)
    with pytest.raises(RegistryError, match=r"alias churn@prod is used by route churn@ab v2 \(arm prod\)"):
        reg.delete_alias("churn", "prod")


def test_concurrent_route_writes_on_s3_are_gap_free_and_compare_and_set_holds(s3_registry):
    """6 writers with no expected version, then 6 compare-and-set writers (each re-reads on a conflict):
    every write lands once, numbers are 1..12, and each CAS write sits on the version it read."""
    from sparkscore.registry.routes import RouteConflictError

    reg = s3_registry
    reg.register("churn", tiny_model(1.0))
    reg.register("churn", tiny_model(2.0))
    n = 6
    barrier = threading.Barrier(n)

    def client() -> ObjectStoreRegistry:  # one client per writer, as separate processes would have
        return Registry(reg.uri, storage_options={"skip_instance_cache": True, "use_listings_cache": False})

    def plain(i: int) -> int:
        mine = client()
        barrier.wait()
        return mine.set_route("churn", "ab", {1: 100 - i, 2: i}, key="id", reason=f"plain {i}").version

    def cas(i: int) -> tuple[int, int]:
        mine = client()
        barrier.wait()
        while True:
            base = mine.route("churn", "ab").version
            try:
                return base, mine.set_route("churn", "ab", {1: 50 + i, 2: 50 - i}, reason=f"cas {i}",
                                            expected_version=base).version
            except RouteConflictError:
                continue

    with ThreadPoolExecutor(n) as pool:
        plain_versions = sorted(pool.map(plain, range(n)))
        cas_writes = sorted(pool.map(cas, range(n)))
    history = reg.route_history("churn", "ab")
    assert plain_versions == list(range(1, n + 1)) and [r.version for r in history] == list(range(1, 2 * n + 1))
    assert all(written == base + 1 for base, written in cas_writes)
    assert sorted(r.reason for r in history) == sorted([f"plain {i}" for i in range(n)] + [f"cas {i}" for i in range(n)])
    for r in history:  # each version holds the weights its writer asked for
        i = int(r.reason.split()[1])
        asked = {"1": 100 - i, "2": i} if r.reason.startswith("plain") else {"1": 50 + i, "2": 50 - i}
        assert r.weights == {arm: w * 100 for arm, w in asked.items() if w}


def test_an_ensemble_with_nested_member_files_round_trips(s3_registry):
    reg = s3_registry
    reg.register("a", tiny_model(1.0))
    reg.register("b", tiny_model(3.0))
    mv = reg.register_ensemble("ens", ["a/1", "b/1"], combiner="mean")
    assert any("/members/" in k for k in reg.storage.list(mv.path[len(reg.uri) + 1:]))
    np.testing.assert_allclose(reg.load(mv.ref).predict(np.array([[1.0, 1.0]])), [5.0])
