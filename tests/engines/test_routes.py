"""Routes behave identically on DuckDB, Spark and ``sparkscore serve``: one suite, parametrized by engine.

The route ``churn@ab`` splits 90/10 by ``customer_id`` between ``prod`` (a GLM the optimizer
inlines as SQL) and ``challenger`` (a 300-node tree ensemble that stays a UDF), with shadow arm
``candidate``.  The oracle is :func:`sparkscore.registry.routes.bucket` (and the hash vectors in
``tests/fixtures/route_hash_vectors.json``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sqlglot import exp

import sparkscore as ss
from sparkscore.engines.functions import SCORE_LOG_ENV
from sparkscore.ir import LinearModel, Model, Signature
from sparkscore.optimizer.route_models import bucket_sql, key_text_sql
from sparkscore.registry import routes as R
from tests.optimizer.conftest import MODELS, adversarial_values

ENGINES = ["duckdb", "spark", "serving"]
SQL_ENGINES = ["duckdb", "spark"]
FEATURES = ("age", "tenure", "spend")
VECTORS = json.loads((Path(__file__).parents[1] / "fixtures" / "route_hash_vectors.json").read_text())["vectors"]
ROUTE = "churn@ab"


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    reg = ss.Registry(tmp_path_factory.mktemp("routes") / "registry")
    glm = Model(LinearModel(np.array([0.5, -0.25, 0.125]), np.array([1.0])), Signature.from_names(FEATURES))
    shadow = Model(LinearModel(np.array([0.0, 0.0, 0.0]), np.array([1e6])), Signature.from_names(FEATURES))
    for model in (glm, MODELS["big"], shadow):
        reg.register("churn", model)
    for alias, version in (("prod", 1), ("challenger", 2), ("candidate", 3)):
        reg.set_alias("churn", alias, version)
    reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="customer_id", shadow=["candidate"])
    return reg


def _customers(n: int, seed: int = 0) -> pa.Table:
    """Keys 0..n-1 (every 50th NULL) and features with the tree's thresholds, NaN, ±inf and NULLs."""
    rng = np.random.default_rng(seed)
    special = np.array(adversarial_values(MODELS["big"])[:400])
    cols = {}
    for j, name in enumerate(FEATURES):
        values = rng.normal(40.0, 30.0, n)
        values[: min(n, len(special))] = np.roll(special, 7 * j)[: min(n, len(special))]
        cols[name] = pa.array(values, mask=rng.random(n) < 0.05)
    keys = np.arange(n, dtype=np.int64)
    return pa.table({"rid": pa.array(keys), "customer_id": pa.array(keys, mask=keys % 50 == 7), **cols})


class Engine:
    """Runs the same route queries on one engine; rows come back ordered by key (NULL keys last)."""

    def __init__(self, name: str, reg, request) -> None:
        self.name, self.reg, self.request = name, reg, request
        if name == "duckdb":
            import duckdb

            self.con = duckdb.connect()
        elif name == "spark":
            self.spark = request.getfixturevalue("spark")

    def load(self, table: pa.Table, view: str = "route_customers") -> None:
        if self.name == "duckdb":
            self.con.register(view, table)
        elif self.name == "spark":
            self.spark.createDataFrame(table.to_pandas()).createOrReplaceTempView(view)
        self.table = table

    def sql(self, query: str, disable_rules=()) -> list[tuple]:
        if self.name == "duckdb":
            return ss.duckdb.sql(self.con, query, self.reg, disable_rules=disable_rules).fetchall()
        return [tuple(_plain(v) for v in row) for row in ss.spark.sql(self.spark, query, self.reg,
                                                                         disable_rules=disable_rules).collect()]

    def explain(self, query: str) -> str:
        engine = self.con if self.name == "duckdb" else self.spark
        return str(ss.explain(query, engine=engine, registry=self.reg))

    def routed(self, ref: str = ROUTE) -> list[tuple]:
        """(key, prediction, arm, version) of every row of the loaded table, in table order."""
        if self.name == "serving":
            return _serve(self.reg, self.table, ref)
        arm = f", PREDICT_ARM('{ref}', *) AS a" if "@" in ref else ""
        rows = self.sql(f"SELECT rid, customer_id, PREDICT('{ref}', *) AS p{arm} FROM route_customers ORDER BY rid")
        version = None if arm else int(ref.split("/")[1])
        return [(r[1], r[2], r[3]["arm"] if arm else None, r[3]["version"] if arm else version) for r in rows]


def _plain(value):
    return value.asDict() if hasattr(value, "asDict") else value


@pytest.fixture(params=ENGINES)
def engine(request, reg):
    return Engine(request.param, reg, request)


@pytest.fixture(params=SQL_ENGINES)
def sql_engine(request, reg):
    return Engine(request.param, reg, request)


def _serve(reg, table: pa.Table, ref: str, chunk: int = 20_000, sink=None) -> list[tuple]:
    """(key, prediction, arm, version) from /invocations, ``chunk`` rows per (batched) request."""
    from tests.serving.conftest import serving

    async def run():
        out = []
        async with serving(reg) as (_, client):
            for start in range(0, table.num_rows, chunk):
                part = table.slice(start, chunk)
                cols = part.column_names
                rows = [list(row) for row in zip(*(part[c].to_pylist() for c in cols))]
                body = json.dumps({"dataframe_split": {"columns": cols, "data": rows}})  # NaN / Infinity kept
                r = await client.post(f"/invocations?model={ref}", content=body,
                                      headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
                doc = r.json()
                if "arms" in doc:
                    assert r.headers["x-sparkscore-route"] == ref and doc["route_version"] >= 1
                    out += list(zip(part["customer_id"].to_pylist(), doc["predictions"], doc["arms"], doc["versions"]))
                else:
                    out += [(k, p, None, int(doc["model_version"]))
                            for k, p in zip(part["customer_id"].to_pylist(), doc["predictions"])]
            if sink is not None:
                for _ in range(200):  # shadow scoring runs after the answer
                    if sink:
                        break
                    await asyncio.sleep(0.01)
        return out

    return asyncio.run(run())


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) \
        or (a is None and isinstance(b, float) and math.isnan(b)) or (b is None and isinstance(a, float) and math.isnan(a))


# ---------------------------------------------------------------------------- the hash
@pytest.fixture(scope="module")
def million_keys() -> pa.Table:
    """1M keys of every kind (int64 across the range, text with non-ASCII, integral and other doubles)
    and the oracle's bucket of each."""
    rng = np.random.default_rng(11)
    n_int, n_str, n_dbl = 500_000, 300_000, 200_000
    ints = rng.integers(-2 ** 63, 2 ** 63 - 1, n_int, dtype=np.int64)
    ints[:1000] = np.arange(-500, 500)
    words = np.array(["cust-", "ü", "✓-", "", "a:b:"], dtype=object)
    strs = [f"{words[i % 5]}{i}" for i in range(n_str)]
    dbls = np.where(np.arange(n_dbl) % 4 == 0, rng.normal(0, 1e6, n_dbl), np.round(rng.normal(0, 1e12, n_dbl)))
    dbls[:4] = [-0.0, np.nan, np.inf, 2.0 ** 62]
    salt = "churn@ab"
    oracle = R.bucket
    return pa.table({
        "k_int": pa.array(ints), "b_int": pa.array([oracle(salt, v) for v in ints.tolist()]),
        "k_str": pa.array(strs + [None] * (n_int - n_str)),
        "b_str": pa.array([oracle(salt, s) for s in strs] + [0] * (n_int - n_str)),
        "k_dbl": pa.array(np.concatenate([dbls, np.zeros(n_int - n_dbl)])),
        "b_dbl": pa.array([oracle(salt, v) for v in dbls.tolist()] + [oracle(salt, 0.0)] * (n_int - n_dbl)),
    })


def _bucket_column(column: str, sql_type: str, dialect: str) -> exp.Expr:
    text, _ = key_text_sql(exp.column(column), sql_type, dialect, ROUTE)
    return bucket_sql("churn@ab", text, dialect)


@pytest.mark.parametrize("name", SQL_ENGINES)
def test_sql_bucket_agrees_with_python_on_a_million_keys(request, reg, million_keys, name):
    engine = Engine(name, reg, request)
    engine.load(million_keys, "route_keys")
    dialect = "spark" if name == "spark" else "duckdb"
    checks = [exp.func("SUM", exp.Case(ifs=[exp.If(this=exp.NEQ(this=_bucket_column(k, t, dialect), expression=exp.column(b)),
                                                   true=exp.Literal.number(1))], default=exp.Literal.number(0)))
              for k, t, b in (("k_int", "BIGINT", "b_int"), ("k_str", "VARCHAR", "b_str"), ("k_dbl", "DOUBLE", "b_dbl"))]
    query = exp.select(*checks, exp.func("COUNT", exp.Star())).from_("route_keys").sql(dialect)
    raw = engine.con.sql(query).fetchall() if name == "duckdb" else [tuple(engine.spark.sql(query).collect()[0])]
    assert tuple(raw[0]) == (0, 0, 0, 500_000)  # 1M keys (500k ints, 300k text, 200k doubles + fill), no mismatch


@pytest.mark.parametrize("name", ENGINES)
def test_hash_vectors(request, reg, name):
    if name == "serving":  # serving imports the registry's bucket function: the vectors through a request
        from sparkscore.serving import routing

        assert routing.bucket is R.bucket
        table = pa.table({"customer_id": pa.array([7, None, 123456789]), **{f: pa.array([1.0] * 3) for f in FEATURES}})
        route = reg.route("churn", "ab")
        got = [(k, arm) for k, _, arm, _ in _serve(reg, table, ROUTE)]
        assert got == [(k, route.arm_of_key(k)) for k in table["customer_id"].to_pylist()]
        return
    engine = Engine(name, reg, request)
    dialect = "spark" if name == "spark" else "duckdb"
    types = {"bigint": "BIGINT", "varchar": "VARCHAR", "double": "DOUBLE", "boolean": "BOOLEAN"}
    columns = []
    for v in VECTORS:
        literal = (exp.Null() if v["key"] is None else exp.Literal.string(v["key"]) if isinstance(v["key"], str)
                   else exp.Boolean(this=v["key"]) if isinstance(v["key"], bool) else exp.Literal.number(repr(v["key"])))
        key = exp.cast(literal, exp.DataType.build(types[v["type"]], dialect=dialect))
        text, _ = key_text_sql(key, types[v["type"]], dialect, ROUTE)
        columns.append(bucket_sql(v["salt"], text, dialect))
    query = exp.select(*columns).sql(dialect)
    got = list(engine.con.sql(query).fetchall()[0]) if name == "duckdb" else list(engine.spark.sql(query).collect()[0])
    assert got == [v["bucket"] for v in VECTORS]


def test_split_error_is_within_half_a_point_at_100k_keys(engine):
    n = 100_000
    engine.load(pa.table({"customer_id": pa.array(np.arange(n, dtype=np.int64)),
                          **{f: pa.array(np.zeros(n)) for f in FEATURES}}))
    if engine.name == "serving":
        counts = Counter(arm for _, _, arm, _ in _serve(engine.reg, engine.table, ROUTE, chunk=50_000))
    else:
        counts = Counter(dict(engine.sql("SELECT PREDICT_ARM('churn@ab', *).arm AS arm, COUNT(*) FROM route_customers "
                                         "GROUP BY 1")))
    assert sum(counts.values()) == n
    assert abs(100 * counts["prod"] / n - 90) <= 0.5 and abs(100 * counts["challenger"] / n - 10) <= 0.5


# ---------------------------------------------------------------------------- predictions
def test_predict_is_each_rows_own_arm_and_null_keys_take_the_first_arm(engine):
    engine.load(_customers(3000))
    routed = engine.routed()
    route = engine.reg.route("churn", "ab")
    keys = engine.table["customer_id"].to_pylist()
    assert [r[0] for r in routed] == keys
    assert [r[2] for r in routed] == [route.arm_of_key(k) for k in keys]          # the oracle's arm, per row
    assert {r[2] for r in routed if r[0] is None} == {"prod"}                       # NULL keys: bucket 0 = prod
    assert {(r[2], r[3]) for r in routed} == {("prod", 1), ("challenger", 2)}
    own = {v: engine.routed(f"churn/{v}") for v in (1, 2)}                          # each arm's own PREDICT
    mismatches = [r for i, r in enumerate(routed) if not _same(r[1], own[r[3]][i][1])]
    assert not mismatches, mismatches[:3]


@pytest.mark.parametrize("disable", [(), ("inline_models",), ("inline_models", "prune_model_inputs", "stack_linear")])
def test_rules_off_return_the_same_rows(sql_engine, disable):
    sql_engine.load(_customers(2000, seed=1))
    query = "SELECT customer_id, PREDICT('churn@ab', *) AS p, PREDICT_ARM('churn@ab', *).arm AS a FROM route_customers"
    base = sorted(sql_engine.sql(query, disable_rules=("inline_models", "prune_model_inputs", "prune_by_predicates",
                                                       "factorize_linear", "stack_linear")), key=str)
    got = sorted(sql_engine.sql(query, disable_rules=disable), key=str)
    assert len(got) == len(base) and all(a[0] == b[0] and a[2] == b[2] and _same(a[1], b[1]) for a, b in zip(got, base))


def test_each_arm_scores_only_the_rows_routed_to_it(engine, tmp_path, monkeypatch):
    engine.load(_customers(4000, seed=2))
    route = engine.reg.route("churn", "ab")
    expected = Counter(route.arm_of_key(k) for k in engine.table["customer_id"].to_pylist())
    scored: Counter = Counter()
    if engine.name == "serving":
        from sparkscore.serving.models import LoadedVersion

        original = LoadedVersion.scores

        async def counting(self, X):
            scored[self.version] += len(X)
            return await original(self, X)

        monkeypatch.setattr(LoadedVersion, "scores", counting)
        _serve(engine.reg, engine.table, ROUTE, chunk=1000)
    else:
        log = tmp_path / "scored.log"
        if engine.name == "spark":
            env = engine.spark.sparkContext.environment
            env[SCORE_LOG_ENV] = str(log)
        monkeypatch.setenv(SCORE_LOG_ENV, str(log))
        try:  # both arms as UDFs: the GLM too
            rows = engine.sql("SELECT customer_id, PREDICT('churn@ab', *) AS p FROM route_customers",
                              disable_rules=("inline_models",))
        finally:
            if engine.name == "spark":
                del engine.spark.sparkContext.environment[SCORE_LOG_ENV]
        assert len(rows) == engine.table.num_rows
        for line in log.read_text().splitlines():
            name, n = line.split()
            scored[int(name.split("_v")[1].split("_")[0])] += int(n)
    assert scored == Counter({1: expected["prod"], 2: expected["challenger"]})


def test_shadow_arms_are_never_returned(engine):
    engine.load(_customers(500, seed=3))
    calls = []
    previous = R.set_shadow_sink(lambda route, arm, version, inputs, outputs: calls.append((arm.label, version, len(outputs))))
    try:
        routed = engine.routed()
    finally:
        R.set_shadow_sink(previous)
    assert {r[3] for r in routed} == {1, 2}                       # no row answered by the shadow's version 3
    assert 1e6 not in {r[1] for r in routed}                       # the shadow GLM's value (its constant 1e6)
    if engine.name == "serving":                                  # scored, handed to the sink, never returned
        assert calls and {c[:2] for c in calls} == {("candidate", 3)} and sum(c[2] for c in calls) == 500
    else:                                                         # SQL has no sink: not scored at all
        assert calls == []
        text = engine.explain("SELECT PREDICT('churn@ab', *) FROM route_customers")
        assert "shadow arms not scored" in text and "churn/3" not in text.split("== rules ==")[0]


def test_explain_names_the_route_its_version_and_arms(engine):
    engine.load(_customers(10, seed=4))
    if engine.name == "serving":
        from tests.serving.conftest import serving

        async def run():
            async with serving(engine.reg) as (_, client):
                body = {"inputs": [{"name": c, "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}
                                   for c in ("customer_id", *FEATURES)]}
                r = await client.post("/v2/models/churn@ab/infer", json=body)
                assert r.status_code == 200, r.text
                return r

        r = asyncio.run(run())
        doc = r.json()
        assert r.headers["x-sparkscore-route"] == ROUTE and r.headers["x-sparkscore-route-version"] == "1"
        assert {o["name"] for o in doc["outputs"]} == {"predict", "arm", "version"}
        route = engine.reg.route("churn", "ab")
        assert next(o for o in doc["outputs"] if o["name"] == "arm")["data"] == [route.arm_of_key(1), route.arm_of_key(2)]
        return
    text = engine.explain("SELECT PREDICT('churn@ab', *) AS p FROM route_customers")
    assert "route_models:" in text and "churn@ab v1 (key customer_id): prod=churn/1 90%, challenger=churn/2 10%" in text
    assert "MD5(" in text.split("== models ==")[0]  # the bucket is computed by the engine
