"""Route refs everywhere: ``Registry.load`` of a route, ``ss.spark.predict`` of a route (every path),
time-pinned route refs (DuckDB, serving, load) and the compare-and-set that keeps concurrent bandit
updates from losing one.  The oracle for each row's arm is :func:`sparkscore.registry.routes.bucket`
(through ``RoutedModel.arm_of``) and DuckDB's / Spark SQL's ``PREDICT_ARM``."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

import sparkscore as ss
from sparkscore.errors import ModelNotFoundError, QueryError, RegistryError, SignatureError
from sparkscore.ir import LinearModel, Model, Signature
from sparkscore.monitor import bandit
from sparkscore.registry import RoutedModel
from sparkscore.registry.routes import RouteConflictError

FEATURES = ("age", "tenure", "spend")
WIDE = ("age", *(f"f{i}" for i in range(40)))  # 41 inputs: over inline_max_features, so a UDF arm
ROWS = 3000
PATHS = ("auto", "inline", "arrow", "udf")


def _glm(coef, intercept, names=FEATURES) -> Model:
    return Model(LinearModel(np.asarray(coef, dtype=float), np.array([float(intercept)])), Signature.from_names(names))


def _table(n: int = ROWS, seed: int = 0) -> pa.Table:
    """Keys 0..n-1 (every 50th NULL), features with NaN / NULL / ±inf / ±0 among normal values."""
    rng = np.random.default_rng(seed)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e-300])
    cols = {}
    for j, name in enumerate(dict.fromkeys((*FEATURES, *WIDE))):
        values = rng.normal(20.0, 10.0, n)
        values[j % 7::97] = special[j % len(special)]
        cols[name] = pa.array(values, mask=rng.random(n) < 0.03)
    keys = np.arange(n, dtype=np.int64)
    return pa.table({"rid": pa.array(keys), "customer_id": pa.array(keys, mask=keys % 50 == 7), **cols})


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    """churn v1 (small GLM), v2 (41-input GLM: stays a UDF), v3 (small GLM); routes ab = prod 70 /
    challenger 30 and pair = 1 / 3 (every arm inlines)."""
    reg = ss.Registry(tmp_path_factory.mktemp("route_refs") / "registry")
    rng = np.random.default_rng(1)
    reg.register("churn", _glm([0.5, -0.25, 0.125], 1.0))
    reg.register("churn", _glm(rng.normal(0.0, 0.1, len(WIDE)), 100.0, WIDE))
    reg.register("churn", _glm([-0.5, 0.75, 0.0625], -5.0))
    reg.set_alias("churn", "prod", 1)
    reg.set_alias("churn", "challenger", 2)
    reg.set_route("churn", "ab", arms={"prod": 70, "challenger": 30}, key="customer_id")
    reg.set_route("churn", "pair", arms={1: 50, 3: 50}, key="customer_id")
    return reg


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _table()


def _duckdb_rows(reg, table: pa.Table, ref: str) -> list[tuple]:
    import duckdb

    con = duckdb.connect()
    con.register("customers", table)
    return ss.duckdb.sql(con, f"SELECT rid, PREDICT('{ref}', *) AS p, PREDICT_ARM('{ref}', *) AS a FROM customers "
                              "ORDER BY rid", reg).fetchall()


def _close(a, b) -> None:
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------- 1. Registry.load
def test_load_of_a_route_scores_each_row_on_the_arm_duckdb_picks(reg, table):
    routed = reg.load("churn@ab")
    assert isinstance(routed, RoutedModel) and list(routed.arms) == ["prod", "challenger"]
    assert [a.version for a in routed.arms.values()] == [1, 2] and routed.key == "customer_id"
    rows = _duckdb_rows(reg, table, "churn@ab")
    arms = routed.arm_of(table["customer_id"])
    assert list(arms) == [r[2]["arm"] for r in rows]                         # 3000 keys, 60 of them NULL
    assert set(arms) == {"prod", "challenger"} and arms[7] == "prod"        # NULL key -> bucket 0 -> first arm
    expected = [r[1] for r in rows]
    _close(routed.predict(table), expected)                                  # Arrow, key read from the table
    _close(routed.predict(table.to_pandas()), expected)                      # pandas
    X = np.column_stack([table[c].to_numpy(zero_copy_only=False) for c in WIDE[1:]])
    with pytest.raises(SignatureError, match="numpy matrix has no column 'customer_id'"):
        routed.predict(X)
    one = reg.load("churn/1")
    wide = reg.load("churn/2")
    per_arm = np.where(arms == "prod", one.predict(table), wide.predict(table))
    _close(expected, per_arm)


def test_get_of_a_route_points_at_load_and_a_loaded_route_keeps_its_arms(tmp_path):
    reg = ss.Registry(tmp_path / "registry")
    for intercept in (1.0, 2.0, 3.0):
        reg.register("churn", _glm([0.0, 0.0, 0.0], intercept))
    reg.set_alias("churn", "prod", 1)
    reg.set_route("churn", "ab", arms={"prod": 100}, key="id")
    with pytest.raises(ModelNotFoundError, match=r"is a route, not one model version: load it with reg.load\('churn@ab'\)"):
        reg.get("churn@ab")
    routed = reg.load("churn@ab")
    frame = pa.table({"id": [1, 2, 3], **{c: [0.0] * 3 for c in FEATURES}})
    reg.set_alias("churn", "prod", 3)                                       # moved after the load: not seen
    reg.set_route("churn", "ab", arms={"prod": 50, 2: 50})
    assert routed.predict(frame).tolist() == [1.0, 1.0, 1.0] and routed.route.version == 1
    again = reg.load("churn@ab")
    assert again.route.version == 2 and set(again.predict(frame, key=[10, 11, 12]).tolist()) <= {2.0, 3.0}


# ---------------------------------------------------------------------------- 1. ss.spark.predict
def test_spark_predict_of_a_route_agrees_with_spark_sql_on_every_path(spark, reg, table):
    """Each path's column and Spark SQL's PREDICT / PREDICT_ARM come from one Spark job (the paths
    are chained on one frame, the SQL runs over it) to keep the test at one job's cost."""
    df = spark.createDataFrame(table.to_pandas())
    scored = df
    for path in PATHS:
        ref = "churn@pair" if path == "inline" else "churn@ab"  # ab's 41-input arm cannot be inlined
        scored = ss.spark.predict(scored, ref, output_col=f"s_{path}", registry=reg, path=path)
    assert scored.columns == [*df.columns, *(f"s_{p}" for p in PATHS)]
    scored.createOrReplaceTempView("route_ref_scored")
    rows = ss.spark.sql(spark, "SELECT *, PREDICT('churn@ab', *) AS p_ab, PREDICT_ARM('churn@ab', *) AS a_ab, "
                               "PREDICT('churn@pair', *) AS p_pair, PREDICT_ARM('churn@pair', *) AS a_pair "
                               "FROM route_ref_scored ORDER BY rid", reg).collect()
    assert [r["rid"] for r in rows] == list(range(ROWS))
    for ref, suffix in (("churn@ab", "ab"), ("churn@pair", "pair")):
        routed = reg.load(ref)
        assert list(routed.arm_of(table["customer_id"])) == [r[f"a_{suffix}"]["arm"] for r in rows]  # 3000 keys
        _close([r[f"p_{suffix}"] for r in rows], routed.predict(table))
    for path in PATHS:
        _close([r[f"s_{path}"] for r in rows], [r["p_pair" if path == "inline" else "p_ab"] for r in rows])


def test_spark_predict_refuses_to_inline_a_route_with_an_arm_that_does_not_inline(spark, reg, table):
    df = spark.createDataFrame(table.slice(0, 10).to_pandas())
    with pytest.raises(QueryError, match="cannot be inlined"):
        ss.spark.predict(df, "churn@ab", registry=reg, path="inline")


# ---------------------------------------------------------------------------- 2. time-pinned route refs
@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """v1..v3 answer 1.0, 2.0, 3.0; route ab: v1 = prod 100 (prod -> 1), then prod moved to 3, then
    v2 = prod 50 / challenger (-> 2) 50.  Returns (registry, time of v1, time of v2)."""
    reg = ss.Registry(tmp_path_factory.mktemp("pinned") / "registry")
    for intercept in (1.0, 2.0, 3.0):
        reg.register("churn", _glm([0.0, 0.0, 0.0], intercept))
    reg.set_alias("churn", "prod", 1)
    reg.set_alias("churn", "challenger", 2)
    first = reg.set_route("churn", "ab", arms={"prod": 100}, key="customer_id")
    time.sleep(0.002)
    reg.set_alias("churn", "prod", 3)
    time.sleep(0.002)
    second = reg.set_route("churn", "ab", arms={"prod": 50, "challenger": 50})
    return reg, first.created_at, second.created_at


def test_time_pinned_route_refs_on_duckdb_and_load(pinned, table):
    reg, t1, t2 = pinned
    small = pa.table({"rid": table["rid"], "customer_id": table["customer_id"],
                      **{c: np.zeros(table.num_rows) for c in FEATURES}}).slice(0, 400)
    rows = _duckdb_rows(reg, small, f"churn@ab#{t1}")
    assert {r[1] for r in rows} == {1.0}                                    # route v1, prod as it was at t1
    assert {(r[2]["arm"], r[2]["version"], r[2]["route_version"]) for r in rows} == {("prod", 1, 1)}
    rows = _duckdb_rows(reg, small, f"churn@ab#{t2}")
    now = _duckdb_rows(reg, small, "churn@ab")
    assert rows == now and {r[1] for r in rows} == {2.0, 3.0}               # v2 with prod -> 3
    assert {r[2]["route_version"] for r in rows} == {2}
    routed = reg.load(f"churn@ab#{t1}")
    assert routed.route.version == 1 and routed.arms["prod"].version == 1
    for when, match in (("2999-01-01T00:00:00Z", "is in the future"), ("2001-01-01T00:00:00Z", "did not exist at")):
        with pytest.raises(ModelNotFoundError, match=match):
            _duckdb_rows(reg, small, f"churn@ab#{when}")
        with pytest.raises(ModelNotFoundError, match=match):
            reg.load(f"churn@ab#{when}")
    with pytest.raises(ModelNotFoundError, match="is a route"):
        reg.get(f"churn@ab#{t1}")


def test_time_pinned_route_refs_in_serving(pinned):
    from urllib.parse import quote

    from tests.serving.conftest import post, serving, v2_body

    reg, t1, _ = pinned
    rows = [[k, 0.0, 0.0, 0.0] for k in range(200)]
    body = {"dataframe_split": {"columns": ["customer_id", *FEATURES], "data": rows}}

    async def run():
        async with serving(reg) as (_, client):
            out = []
            for ref in (f"churn@ab#{t1}", "churn@ab", "churn@ab#2999-01-01T00:00:00Z", "churn@ab#2001-01-01T00:00:00Z"):
                out.append(await client.post("/invocations", params={"model": ref}, json=body))
            v2 = v2_body({"customer_id": list(range(50)), **{c: [0.0] * 50 for c in FEATURES}})
            out.append(await post(client, f"/v2/models/churn@ab%23{quote(t1)}/infer", v2))  # '#' sent as %23
            return out

    old, now, future, before, over_v2 = asyncio.run(run())
    assert over_v2.status_code == 200, over_v2.text
    assert over_v2.json()["route_version"] == 1 and over_v2.headers["x-sparkscore-route-version"] == "1"
    assert old.status_code == 200 and now.status_code == 200, (old.text, now.text)
    assert old.json()["route_version"] == 1 and set(old.json()["predictions"]) == {1.0}
    assert set(old.json()["versions"]) == {1} and now.json()["route_version"] == 2
    assert set(now.json()["predictions"]) == {2.0, 3.0}
    assert future.status_code == 404 and "in the future" in future.text
    assert before.status_code == 404 and "did not exist" in before.text


# ---------------------------------------------------------------------------- 3. compare-and-set
def _bandit_registry(root):
    reg = ss.Registry(root)
    reg.register("m", _glm([1.0, 0.0, 0.0], 0.0))
    reg.register("m", _glm([1.0, 0.0, 0.0], 0.5))
    reg.set_route("m", "ab", {1: 50, 2: 50}, key="id")
    return reg


def _items(i: int) -> list[dict]:
    return [{"request_id": f"u{i}-{j}", "arm": "1" if j % 2 else "2", "prediction": 0.25 * j, "label": 0.3 * j}
            for j in range(4 + i)]


def test_set_route_with_expected_version_is_a_compare_and_set(tmp_path):
    reg = _bandit_registry(tmp_path / "registry")
    with pytest.raises(RouteConflictError, match="expected version 0 but another writer published version 1"):
        reg.set_route("m", "ab", {1: 100}, expected_version=0)
    assert reg.set_route("m", "ab", {1: 100}, expected_version=1).version == 2
    with pytest.raises(RouteConflictError, match="expected version 1 but") as caught:
        reg.set_route("m", "ab", {2: 100}, expected_version=1)
    assert "\n" not in str(caught.value) and isinstance(caught.value, RegistryError)
    assert reg.route("m", "ab").version == 2 and reg.set_route("m", "new", {1: 100}, key="id", expected_version=0)


def _update_in_process(root: str, i: int, start, results) -> None:
    start.wait()
    results.put(bandit.update_from_items(ss.Registry(root), "m@ab", _items(i), policy="exp3").route.version)


def test_concurrent_bandit_updates_each_apply_their_window_exactly_once(tmp_path):
    """6 threads and 2 processes update one route at once: 8 new versions, a chain, each window once."""
    import multiprocessing

    root = tmp_path / "registry"
    _bandit_registry(root)
    threads, processes = 6, 2
    n = threads + processes
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch/duckdb threads exist in the runner
    start, results = ctx.Event(), ctx.Queue()
    spawned = [ctx.Process(target=_update_in_process, args=(str(root), threads + k, start, results))
               for k in range(processes)]
    for proc in spawned:
        proc.start()
    barrier = threading.Barrier(threads)

    def update(i: int):
        barrier.wait()
        return bandit.update_from_items(ss.Registry(root), "m@ab", _items(i), policy="exp3").route.version

    time.sleep(1.0)  # let the processes import and wait on the event
    start.set()
    with ThreadPoolExecutor(threads) as pool:
        written = list(pool.map(update, range(threads)))
    written = sorted(written + [results.get(timeout=120) for _ in spawned])
    for proc in spawned:
        proc.join(timeout=60)
    reg = ss.Registry(root)
    history = reg.route_history("m", "ab")
    assert written == list(range(2, n + 2)) and [r.version for r in history] == list(range(1, n + 2))
    assert [r.policy["base_version"] for r in history[1:]] == list(range(1, n + 1))   # a chain, none lost
    import hashlib
    import json

    expected = {hashlib.sha256(json.dumps(sorted(it["request_id"] for it in _items(i))).encode()).hexdigest()
                for i in range(n)}
    windows = [r.policy["window"]["request_ids_sha256"] for r in history[1:]]
    assert sorted(windows) == sorted(expected)                                         # each window once
    assert all(bandit.replay(reg, "m", "ab", r.version) == r.weights for r in history[1:])


def test_the_loser_of_a_race_reapplies_its_window_or_fails_in_one_line(tmp_path, monkeypatch):
    reg = _bandit_registry(tmp_path / "registry")
    real = reg.set_route

    def racing(*args, **kwargs):  # another writer publishes between this update's read and its write
        monkeypatch.setattr(reg, "set_route", real)
        real("m", "ab", {1: 60, 2: 40}, reason="concurrent")
        return real(*args, **kwargs)

    monkeypatch.setattr(reg, "set_route", racing)
    with pytest.raises(RouteConflictError, match=r"expected version 1 .*retry=False: the update of m@ab was not applied") as caught:
        bandit.update_from_items(reg, "m@ab", _items(0), retry=False)
    assert "\n" not in str(caught.value) and reg.route("m", "ab").version == 2
    monkeypatch.setattr(reg, "set_route", racing)
    up = bandit.update_from_items(reg, "m@ab", _items(1))
    assert up.route.version == 4 and up.route.policy["base_version"] == 3
    assert [r.reason for r in reg.route_history("m", "ab")][1:3] == ["concurrent", "concurrent"]


def test_a_classifier_route_gives_probabilities_and_labels_per_arm_in_python_and_the_arrow_scorer(tmp_path):
    """Two outputs of a classifier route (what ``auto`` sends through ``mapInArrow``): the partition
    scorer, fed the bucket column as Spark computes it, equals RoutedModel row for row (no JVM)."""
    pytest.importorskip("pyspark")
    from sparkscore.engines.spark import BUCKET_COL, ModelSource, RoutedPartitionScorer
    from sparkscore.registry.routes import bucket

    reg = ss.Registry(tmp_path / "registry")
    for coef in ([0.5, -0.25, 0.125], [-1.0, 0.5, 0.25]):
        reg.register("clf", Model(LinearModel(np.array(coef), np.array([0.1]), "logistic"),
                                  Signature.from_names(FEATURES), task="classification", classes=(0, 1)))
    reg.set_route("clf", "ab", arms={1: 40, 2: 60}, key="id")
    routed = reg.load("clf@ab")
    data = _table(500).select(["customer_id", *FEATURES]).rename_columns(["id", *FEATURES])
    proba = routed.predict_proba(data)
    labels = routed.predict(data)
    arms = routed.arm_of(data["id"])
    for label, model in (("1", reg.load("clf/1")), ("2", reg.load("clf/2"))):
        rows = np.flatnonzero(arms == label)
        np.testing.assert_array_equal(proba[rows], model.predict_proba(data.take(rows)))
        np.testing.assert_array_equal(labels[rows], model.predict(data.take(rows)))
    owner = np.array([0 if routed.route.arm_of_bucket(b) == "1" else 1 for b in range(10_000)], dtype=np.int32)
    sources = tuple((ModelSource(str(reg.root), "clf", a.version, a.sha256), FEATURES) for a in routed.arms.values())
    scorer = RoutedPartitionScorer(sources, owner.tobytes(), (("p", "predict", "DOUBLE"), ("pr", "proba", "DOUBLE[]")))
    buckets = pa.array([bucket("clf@ab", k) for k in data["id"].to_pylist()], type=pa.int64())
    batch = pa.RecordBatch.from_arrays([*(c.combine_chunks() for c in data.columns), buckets],
                                       names=[*data.column_names, BUCKET_COL])
    out = pa.Table.from_batches(list(scorer(iter([batch.slice(0, 200), batch.slice(200)]))))
    # the compiled kernels may differ from Model.predict_proba's by an ulp; a wrong arm would differ by far more
    np.testing.assert_allclose(np.array(out["pr"].to_pylist()), proba, rtol=1e-12, atol=0)
    np.testing.assert_allclose(out["p"].to_numpy(), proba[:, 1], rtol=1e-12, atol=0)  # PREDICT of a binary classifier
