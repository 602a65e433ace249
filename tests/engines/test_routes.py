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
import sqlglot
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

    def routed(self, own: tuple[int, ...] = (), disable_rules=()) -> tuple[list[tuple], dict[int, list]]:
        """(key, prediction, arm, version) of every row of the loaded table, in table order, and the
        predictions of each version in ``own`` scored alone (its own PREDICT), in one query on SQL engines."""
        if self.name == "serving":
            return _serve(self.reg, self.table, ROUTE), {v: [r[1] for r in _serve(self.reg, self.table, f"churn/{v}")]
                                                         for v in own}
        alone = "".join(f", PREDICT('churn/{v}', *) AS p{v}" for v in own)
        rows = self.sql(f"SELECT rid, customer_id, PREDICT('{ROUTE}', *) AS p, PREDICT_ARM('{ROUTE}', *) AS a{alone} "
                        "FROM route_customers ORDER BY rid", disable_rules=disable_rules)
        return ([(r[1], r[2], r[3]["arm"], r[3]["version"]) for r in rows],
                {v: [r[4 + i] for r in rows] for i, v in enumerate(own)})


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
#: 1M keys generated by the same formulas in SQL and numpy (no rows travel): 400k BIGINT over
#: +-9.2e15, 400k text (non-ASCII, empty prefix, ':' inside), 200k DOUBLE (integral and not).
N_KEYS = 400_000
KEY_SQL = {
    "BIGINT": "(id - 200000) * 23058430092",
    "VARCHAR": "CONCAT(CASE id % 5 WHEN 0 THEN 'cust-' WHEN 1 THEN 'ü' WHEN 2 THEN '✓-' WHEN 3 THEN '' "
               "ELSE 'a:b:' END, CAST(id AS VARCHAR))",
    "DOUBLE": "CASE WHEN id % 4 = 0 THEN CAST(id AS DOUBLE) / CAST(7 AS DOUBLE) "
              "ELSE CAST(id AS DOUBLE) * CAST(1048576 AS DOUBLE) - CAST(100000000000 AS DOUBLE) END",
}


def _python_keys(sql_type: str, ids: np.ndarray) -> list:
    if sql_type == "BIGINT":
        return ((ids - 200000) * 23058430092).tolist()
    if sql_type == "VARCHAR":
        prefix = ("cust-", "ü", "✓-", "", "a:b:")
        return [f"{prefix[i % 5]}{i}" for i in ids.tolist()]
    f = ids.astype(np.float64)
    return np.where(ids % 4 == 0, f / 7.0, f * 1048576.0 - 1e11).tolist()


@pytest.fixture(scope="module")
def million_keys() -> dict[str, tuple[int, ...]]:
    """Per key type: (rows, sum b, sum b * (id % 1009 + 1), sum b * b) of the oracle's buckets b."""
    out = {}
    for sql_type, n in (("BIGINT", N_KEYS), ("VARCHAR", N_KEYS), ("DOUBLE", 1_000_000 - 2 * N_KEYS)):
        ids = np.arange(n, dtype=np.int64)
        b = np.array([R.bucket("churn@ab", k) for k in _python_keys(sql_type, ids)], dtype=np.int64)
        out[sql_type] = (n, int(b.sum()), int((b * (ids % 1009 + 1)).sum()), int((b * b).sum()))
    return out


@pytest.mark.parametrize("name", SQL_ENGINES)
def test_sql_bucket_agrees_with_python_on_a_million_keys(request, reg, million_keys, name):
    """The engine generates the keys and hashes them in SQL; its checksums of the buckets equal the
    oracle's (a single differing bucket changes the weighted sum)."""
    engine = Engine(name, reg, request)
    dialect = "spark" if name == "spark" else "duckdb"
    parts = []
    for sql_type, (n, *_) in million_keys.items():  # one query: one engine job over the three key kinds
        key = sqlglot.transpile(KEY_SQL[sql_type], read="duckdb", write=dialect)[0]
        source = f"range({n})" if dialect == "spark" else f"range({n}) AS r(id)"
        keys = sqlglot.parse_one(f"SELECT id, {key} AS k FROM {source}", read=dialect)
        buckets = exp.select("id", exp.alias_(_bucket_column("k", sql_type, dialect), "b")).from_(keys.subquery("keys"))
        b = exp.column("b")
        weight = exp.Paren(this=exp.Add(this=exp.Mod(this=exp.column("id"), expression=exp.Literal.number(1009)),
                                        expression=exp.Literal.number(1)))
        parts.append(exp.select(exp.Literal.string(sql_type).as_("t"), exp.func("COUNT", exp.Star()),
                                exp.func("SUM", b.copy()), exp.func("SUM", exp.Mul(this=b.copy(), expression=weight)),
                                exp.func("SUM", exp.Mul(this=b.copy(), expression=b.copy())))
                     .from_(buckets.subquery("buckets")))
    text = exp.union(*parts, distinct=False).sql(dialect)
    rows = engine.con.sql(text).fetchall() if name == "duckdb" else [tuple(r) for r in engine.spark.sql(text).collect()]
    got = {r[0]: tuple(int(v) for v in r[1:]) for r in rows}
    assert got == million_keys


def test_duckdb_buckets_equal_pythons_row_by_row(reg, request):
    """Row by row on DuckDB (mismatch count of a join with the oracle's buckets, 50k keys)."""
    engine = Engine("duckdb", reg, request)
    ids = np.arange(50_000, dtype=np.int64)
    table = pa.table({"id": ids, "k_int": _python_keys("BIGINT", ids), "k_str": _python_keys("VARCHAR", ids),
                      "k_dbl": _python_keys("DOUBLE", ids)})
    oracle = pa.table({"id": ids, **{f"b_{c}": [R.bucket("churn@ab", k) for k in table[f"k_{c}"].to_pylist()]
                                     for c in ("int", "str", "dbl")}})
    engine.con.register("route_keys", table)
    engine.con.register("route_oracle", oracle)
    mismatch = [exp.func("SUM", exp.Case(ifs=[exp.If(this=exp.NEQ(this=_bucket_column(f"k_{c}", t, "duckdb"),
                                                                     expression=exp.column(f"b_{c}")),
                                                    true=exp.Literal.number(1))], default=exp.Literal.number(0)))
                for c, t in (("int", "BIGINT"), ("str", "VARCHAR"), ("dbl", "DOUBLE"))]
    query = exp.select(*mismatch, exp.func("COUNT", exp.Star())).from_("route_keys").join("route_oracle", using=["id"])
    assert engine.con.sql(query.sql("duckdb")).fetchall()[0] == (0, 0, 0, 50_000)


def _bucket_column(column: str, sql_type: str, dialect: str) -> exp.Expr:
    text, _ = key_text_sql(exp.column(column), sql_type, dialect, ROUTE)
    return bucket_sql("churn@ab", text, dialect)


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
    table = pa.table({"customer_id": pa.array(np.arange(n, dtype=np.int64)), **{f: pa.array(np.zeros(n)) for f in FEATURES}})
    if engine.name == "spark":  # the same rows, generated in the engine (no 100k-row hand-over)
        engine.spark.range(n).selectExpr("id AS customer_id", *(f"0D AS {f}" for f in FEATURES)) \
            .createOrReplaceTempView("route_customers")
        engine.table = table
    else:
        engine.load(table)
    if engine.name == "serving":
        counts = Counter(arm for _, _, arm, _ in _serve(engine.reg, engine.table, ROUTE, chunk=50_000))
    else:
        counts = Counter(dict(engine.sql("SELECT PREDICT_ARM('churn@ab', *).arm AS arm, COUNT(*) FROM route_customers "
                                         "GROUP BY 1")))
    assert sum(counts.values()) == n
    assert abs(100 * counts["prod"] / n - 90) <= 0.5 and abs(100 * counts["challenger"] / n - 10) <= 0.5


# ---------------------------------------------------------------------------- predictions
def test_predict_is_each_rows_own_arm_and_null_keys_take_the_first_arm(engine):
    engine.load(_customers(600))
    routed, own = engine.routed(own=(1, 2))                                        # and each arm's own PREDICT
    route = engine.reg.route("churn", "ab")
    keys = engine.table["customer_id"].to_pylist()
    assert [r[0] for r in routed] == keys
    assert [r[2] for r in routed] == [route.arm_of_key(k) for k in keys]          # the oracle's arm, per row
    assert {r[2] for r in routed if r[0] is None} == {"prod"}                       # NULL keys: bucket 0 = prod
    assert {(r[2], r[3]) for r in routed} == {("prod", 1), ("challenger", 2)}
    mismatches = [r for i, r in enumerate(routed) if not _same(r[1], own[r[3]][i])]
    assert not mismatches, mismatches[:3]


def test_udf_arms_answer_as_each_arm_alone(sql_engine):
    """Both arms as UDFs (the GLM not inlined): on DuckDB they share one routed function (one call
    per chunk), on Spark each arm stays its own gated UDF; either way each row's value is its arm's own."""
    sql_engine.load(_customers(3000, seed=5))  # more than one DuckDB chunk (2,048 rows)
    routed, own = sql_engine.routed(own=(1, 2), disable_rules=("inline_models",))
    assert {(r[2], r[3]) for r in routed} == {("prod", 1), ("challenger", 2)}
    mismatches = [r for i, r in enumerate(routed) if not _same(r[1], own[r[3]][i])]
    assert not mismatches, mismatches[:3]
    engine = sql_engine.con if sql_engine.name == "duckdb" else sql_engine.spark
    plan = ss.explain("SELECT PREDICT('churn@ab', *) AS p FROM route_customers", engine=engine, registry=sql_engine.reg,
                      disable_rules=("inline_models",))
    names = [u.name for u in plan.udfs]
    if sql_engine.name == "duckdb":
        assert len(names) == 1 and names[0].startswith("churn_ab_route_") and "churn_v1(" not in plan.sql
        assert [a.name for a in plan.udfs[0].arms] == ["churn_v1", "churn_v2"]
        assert "one churn_ab_route_" in str(plan)  # EXPLAIN says the arms share one function
    else:
        assert names == ["churn_v1_gated", "churn_v2_gated"]


def test_routed_function_splits_a_chunk_by_arm(reg):
    """RoutedFunction against each arm's own ScoringFunction: mixed chunks, one-arm chunks, NULL and
    out-of-range indexes (no arm: NULL), DOUBLE[] outputs."""
    from sparkscore.engines.functions import RoutedFunction, ScoringFunction

    clf = Model(LinearModel(np.array([[0.5], [-0.25], [0.125]]), np.array([-1.0]), "logistic"),
                Signature.from_names(FEATURES), task="classification", classes=(0, 1))
    table = _customers(500, seed=6)
    rng = np.random.default_rng(1)
    for kind in ("predict", "proba"):
        arms = ((ScoringFunction.for_version("churn", 1, reg.load("churn/1"), kind),  # the module's compiled models
                 ScoringFunction.for_version("churn", 2, reg.load("churn/2"), kind)) if kind == "predict" else
                (ScoringFunction.for_version("clf", 1, clf, kind), ScoringFunction.for_version("clf", 3, clf, kind)))
        # shared inputs in another order (spend, age, tenure): each arm reads its own positions
        columns = [table["spend"].combine_chunks(), table["age"].combine_chunks(), table["tenure"].combine_chunks()]
        fn = RoutedFunction("r", arms, ((1, 2, 0), (1, 2, 0)), ("DOUBLE",) * 3, arms[0].output_type)
        alone = [a.score(pa.table({f: table[f] for f in FEATURES})).to_pylist() for a in arms]
        for index in (rng.integers(0, 2, 500), np.zeros(500, dtype=int), np.ones(500, dtype=int),
                      rng.integers(-1, 3, 500)):
            nulls = rng.random(500) < 0.1
            got = fn.score(pa.array(index, mask=nulls), columns).to_pylist()
            want = [None if nulls[i] or not 0 <= index[i] < 2 else alone[index[i]][i] for i in range(500)]
            assert len(got) == 500 and all(_identical(a, b) for a, b in zip(got, want)), kind


def _identical(a, b) -> bool:
    """Equal values (NULL only equals NULL), NaN equal to NaN, lists elementwise."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def test_rules_off_return_the_same_rows(sql_engine):
    sql_engine.load(_customers(400, seed=1))
    query = "SELECT customer_id, PREDICT('churn@ab', *) AS p, PREDICT_ARM('churn@ab', *).arm AS a FROM route_customers"
    base = sorted(sql_engine.sql(query, disable_rules=("inline_models", "prune_model_inputs", "prune_by_predicates",
                                                       "factorize_linear", "stack_linear")), key=str)
    for disable in ((), ("inline_models",)):
        got = sorted(sql_engine.sql(query, disable_rules=disable), key=str)
        assert len(got) == len(base) and all(a[0] == b[0] and a[2] == b[2] and _same(a[1], b[1])
                                             for a, b in zip(got, base)), disable


def test_each_arm_scores_only_the_rows_routed_to_it(engine, tmp_path, monkeypatch):
    engine.load(_customers(800, seed=2))
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
    engine.load(_customers(200, seed=3))
    calls = []
    previous = R.set_shadow_sink(lambda route, arm, version, inputs, outputs: calls.append((arm.label, version, len(outputs))))
    try:
        routed, _ = engine.routed()
    finally:
        R.set_shadow_sink(previous)
    assert {r[3] for r in routed} == {1, 2}                       # no row answered by the shadow's version 3
    assert 1e6 not in {r[1] for r in routed}                       # the shadow GLM's value (its constant 1e6)
    if engine.name == "serving":                                  # scored, handed to the sink, never returned
        assert calls and {c[:2] for c in calls} == {("candidate", 3)} and sum(c[2] for c in calls) == 200
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
    digest = "MD5_NUMBER(" if engine.name == "duckdb" else "MD5("  # DuckDB reads the digest's bytes, Spark its hex
    assert digest in text.split("== models ==")[0]  # the bucket is computed by the engine


def test_serving_follows_a_new_route_version(tmp_path):
    """A new route version (weights moved) is picked up by the watcher; keys only move towards the grown arm."""
    from tests.serving.conftest import serving

    reg = ss.Registry(tmp_path / "registry")
    for intercept in (1.0, 2.0):
        reg.register("churn", Model(LinearModel(np.array([1.0, 0.0, 0.0]), np.array([intercept])),
                                    Signature.from_names(FEATURES)))
    reg.set_alias("churn", "prod", 1)
    reg.set_alias("churn", "challenger", 2)
    reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="customer_id")
    rows = [[k, 0.0, 0.0, 0.0] for k in range(400)]
    body = {"dataframe_split": {"columns": ["customer_id", *FEATURES], "data": rows}}

    async def run():
        async with serving(reg) as (server, client):
            before = (await client.post("/invocations?model=churn@ab", json=body)).json()
            reg.set_route("churn", "ab", arms={"prod": 50, "challenger": 50})
            assert await server.manager.refresh() >= 1
            after = (await client.post("/invocations?model=churn@ab", json=body)).json()
            return before, after

    before, after = asyncio.run(run())
    assert (before["route_version"], after["route_version"]) == (1, 2)
    assert all(b != "challenger" or a == "challenger" for b, a in zip(before["arms"], after["arms"]))
    assert after["arms"] == [reg.route("churn", "ab").arm_of_key(k) for k in range(400)]
    assert after["predictions"] == [2.0 if a == "challenger" else 1.0 for a in after["arms"]]
