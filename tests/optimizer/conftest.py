"""Optimizer test harness: tiny hand-built models, a DuckDB database, and UdfSpec registration.

The models are built directly as IR (no importers, no zoo) so every routing case is explicit:
float64 ``<=`` trees with NaN default directions (LightGBM-like), float32 ``<`` trees with float32
accumulation (XGBoost-like), float32 ``<=`` mean forests (sklearn-like), and GLMs with imputation,
scaling and one-hot preprocessing.
"""

from __future__ import annotations

import inspect
import math

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from duckdb import sqltypes
from sqlglot import exp

from sparkscore.ir import (INDICATOR, MISSING_AS_ZERO, MISSING_NAN, MISSING_ZERO, PASSTHROUGH, Column, FeatureMap, LinearModel,
                           Model, Signature, TreeBuilder)
from sparkscore.optimizer import ResolvedModel, UdfSpec, plan_query
from sparkscore.optimizer.plan import RoutedUdfSpec
from sparkscore.optimizer.fixtures import udf_outputs

_RETURN = {"DOUBLE": sqltypes.DOUBLE, "VARCHAR": sqltypes.VARCHAR, "BIGINT": sqltypes.BIGINT}
NUMERIC = ("age", "tenure", "spend")


# ---------------------------------------------------------------------------- models
def _glm() -> Model:
    return Model(LinearModel(np.array([[0.5], [-0.25], [0.125]]), np.array([-1.0]), "logistic"),
                 Signature.from_names(NUMERIC), task="classification", classes=(0, 1), metadata={"name": "glm"})


def _pipeline_glm() -> Model:
    """Regression on imputed + standardised spend, raw age, and one-hot region (text categories)."""
    sig = Signature((Column("age"), Column("spend"), Column("region", "varchar", categories=("EU", "US", "APAC"))))
    fmap = FeatureMap(3, kind=[PASSTHROUGH, PASSTHROUGH, INDICATOR, INDICATOR], source=[0, 1, 2, 2],
                      fill=[math.nan, 20.0, math.nan, math.nan], center=[0.0, 20.0, 0.0, 0.0],
                      scale=[1.0, 7.5, 1.0, 1.0], category=[math.nan, math.nan, 0.0, 2.0])
    return Model(LinearModel(np.array([0.3, 1.5, -2.0, 0.0]), np.array([10.0])), sig, (fmap,),
                 metadata={"name": "spend_glm"})


def _tree_model(name: str, *, cmp: str, threshold_dtype: str, accumulate_dtype: str = "float64",
                aggregation: str = "sum", post_transform: str = "identity", classifier: bool = False) -> Model:
    rnd = (lambda ts: [float(np.float32(t)) for t in ts]) if threshold_dtype == "float32" else list
    builder = TreeBuilder(3)
    # tree 0: age <= 30.1 (NaN left), then spend <= 0.1 (NaN right) / tenure (missing as zero)
    builder.add_tree(feature=[0, 2, 1, -1, -1, -1, -1], threshold=rnd([30.1, 0.1, -0.5, 0, 0, 0, 0]),
                     left=[1, 3, 5, -1, -1, -1, -1], right=[2, 4, 6, -1, -1, -1, -1],
                     value=[0, 0, 0, 0.5, -0.25, 1.125, 2.0], default_left=[True, False, True, 0, 0, 0, 0],
                     missing=[MISSING_NAN, MISSING_NAN, MISSING_AS_ZERO, 0, 0, 0, 0])
    # tree 1: tenure <= 12 (NaN right), leaf values that do not sum exactly in float32
    builder.add_tree(feature=[1, -1, -1], threshold=rnd([12.0, 0, 0]), left=[1, -1, -1], right=[2, -1, -1],
                     value=[0, 0.1, -0.3], default_left=[False, False, False])
    ens = builder.build(cmp=cmp, threshold_dtype=threshold_dtype, accumulate_dtype=accumulate_dtype,
                        aggregation=aggregation, post_transform=post_transform, base_score=[0.2])
    extra = dict(task="classification", classes=("no", "yes")) if classifier else {}
    return Model(ens, Signature.from_names(NUMERIC), metadata={"name": name}, **extra)


def _multiclass() -> Model:
    coef = np.array([[0.1, -0.2, 0.05], [0.0, 0.3, -0.1], [0.02, 0.01, 0.0]])
    return Model(LinearModel(coef, np.zeros(3), "softmax"), Signature.from_names(NUMERIC),
                 task="classification", classes=("bronze", "silver", "gold"), metadata={"name": "tier"})


def _big_tree() -> Model:
    builder = TreeBuilder(3)
    for t in range(100):  # 100 stumps: 300 nodes, over the default inline_max_nodes
        builder.add_tree(feature=[t % 3, -1, -1], threshold=[float(t), 0, 0], left=[1, -1, -1],
                         right=[2, -1, -1], value=[0, t / 8, -t / 16])
    return Model(builder.build(), Signature.from_names(NUMERIC), metadata={"name": "big"})


def _star_glm(name: str, inputs: tuple[str, ...], outputs: int = 1, fmap: FeatureMap | None = None) -> Model:
    """GLMs over customers joined to a dimension table (factorize_linear, stack_linear fixtures)."""
    rng = np.random.default_rng(len(name))
    width = fmap.n_outputs if fmap is not None else len(inputs)
    coef, intercept = rng.normal(0.0, 0.3, (width, outputs)), rng.normal(0.0, 0.5, outputs)
    if outputs > 1:
        return Model(LinearModel(coef, intercept, "softmax"), Signature.from_names(inputs), task="classification",
                     classes=("low", "mid", "high"), metadata={"name": name})
    if fmap is not None:
        return Model(LinearModel(coef, intercept), Signature.from_names(inputs), (fmap,), metadata={"name": name})
    return Model(LinearModel(coef, intercept, "logistic"), Signature.from_names(inputs), task="classification",
                 classes=(0, 1), metadata={"name": name})


STAR = ("age", "tenure", "gdp", "growth", "risk")
DEAL = ("age", "spend", "discount", "churn_rate", "margin", "fee")
_STAR_PIPE = FeatureMap(5, kind=[PASSTHROUGH] * 5 + [INDICATOR], source=[0, 1, 2, 3, 4, 4],
                        fill=[math.nan, math.nan, 3.0, math.nan, math.nan, math.nan],
                        center=[30.0, 0.0, 1.0, 0.0, 0.0, 0.0], scale=[10.0, 1.0, 2.0, 1.0, 1.0, 1.0],
                        category=[math.nan] * 5 + [2.0])

def _partial_tree() -> Model:
    """Trees over (age, tenure, spend, price) that never split on spend or price."""
    builder = TreeBuilder(4)
    builder.add_tree(feature=[0, 1, -1, -1, -1], threshold=[30.5, 12.0, 0, 0, 0], left=[1, 3, -1, -1, -1],
                     right=[2, 4, -1, -1, -1], value=[0, 0, 0.75, -0.5, 1.25], default_left=[True, False, 0, 0, 0])
    return Model(builder.build(), Signature.from_names(NUMERIC + ("price",)), metadata={"name": "ptree"})


def _dead_region_glm() -> Model:
    """GLM whose one-hot region features all have zero coefficients."""
    sig = Signature((Column("age"), Column("region", "varchar", categories=("EU", "US", "APAC"))))
    fmap = FeatureMap(2, kind=[PASSTHROUGH, INDICATOR, INDICATOR], source=[0, 1, 1], fill=[math.nan] * 3,
                      center=[0.0] * 3, scale=[1.0] * 3, category=[math.nan, 0.0, 1.0])
    return Model(LinearModel(np.array([0.25, 0.0, 0.0]), np.array([1.0])), sig, (fmap,), metadata={"name": "dead_region"})


def _region_tree() -> Model:
    """LightGBM-like trees over (age, region, tenure): a categorical split on text region, zero-as-missing on tenure."""
    sig = Signature((Column("age"), Column("region", "varchar", categories=("EU", "US", "APAC")), Column("tenure")))
    builder = TreeBuilder(3)
    # region in {EU, APAC} (NULL / unknown right), then age <= 40 (NaN left) / tenure zero band
    builder.add_tree(feature=[1, 0, 2, -1, -1, -1, -1], threshold=[0, 40.0, 1.0000000180025095e-35, 0, 0, 0, 0],
                     left=[1, 3, 5, -1, -1, -1, -1], right=[2, 4, 6, -1, -1, -1, -1],
                     value=[0, 0, 0, 1.0, 2.0, 3.0, 4.0], default_left=[False, True, True, 0, 0, 0, 0],
                     missing=[MISSING_NAN, MISSING_NAN, MISSING_ZERO, 0, 0, 0, 0],
                     categories=[{0, 2}, None, None, None, None, None, None])
    # age <= 55 with NaN compared as zero
    builder.add_tree(feature=[0, -1, -1], threshold=[55.0, 0, 0], left=[1, -1, -1], right=[2, -1, -1],
                     value=[0, 0.25, -0.5], missing=[MISSING_AS_ZERO, 0, 0])
    return Model(builder.build(base_score=[0.5]), sig, metadata={"name": "region_tree"})


MODELS = {
    "glm": _glm(),
    "spend_glm": _pipeline_glm(),
    "lgbm": _tree_model("lgbm", cmp="<=", threshold_dtype="float64", post_transform="sigmoid", classifier=True),
    "xgb": _tree_model("xgb", cmp="<", threshold_dtype="float32", accumulate_dtype="float32"),
    "forest": _tree_model("forest", cmp="<=", threshold_dtype="float32", aggregation="mean"),
    "tier": _multiclass(),
    "big": _big_tree(),
    "planned": Model(LinearModel(np.array([[0.5], [2.0], [-0.25]]), np.array([1.0])),
                     Signature.from_names(("age", "plan_id", "price")), metadata={"name": "planned"}),
    "star": _star_glm("star", STAR),
    "star_tier": _star_glm("star_tier", STAR, outputs=3),
    "star_pipe": _star_glm("star_pipe", STAR, fmap=_STAR_PIPE),
    "deal": _star_glm("deal", DEAL),
    "ptree": _partial_tree(),
    "region_tree": _region_tree(),
    "dead_region": _dead_region_glm(),
    "score": Model(LinearModel(np.array([1.5, 0.0, -0.75]), np.array([2.0])), Signature.from_names(NUMERIC),
                   metadata={"name": "score"}),
    "rate": Model(LinearModel(np.array([0.01, -0.02, 0.005]), np.array([0.1]), "exp"), Signature.from_names(NUMERIC),
                  metadata={"name": "rate"}),
}


def resolve(ref: str) -> ResolvedModel:
    """Test resolver: 'name', 'name/2' and 'name@prod' all pin version 2 of a MODELS entry."""
    name = ref.split("/")[0].split("@")[0]
    if name not in MODELS:
        from sparkscore.errors import ModelNotFoundError

        raise ModelNotFoundError(f"model {ref!r} is not registered")
    return ResolvedModel(name, 2, f"{abs(hash(name)):064d}"[:64], MODELS[name])


def test_route(name: str, arms: dict[str, int], key: str = "id", version: int = 1):
    """A registry-free ``ResolvedRoute`` whose arms are MODELS entries (each pinned like ``resolve``)."""
    from sparkscore.registry import routes as R

    targets = R.buckets_of_weights(arms, name)
    layout = R.allocate((), list(arms), targets)
    route = R.Route(name.split("@")[0], name.split("@")[1], version, key, name,
                    tuple(R.Arm(a, targets[a], tuple(layout[a])) for a in arms), (), "", "0" * 64)
    pinned = tuple(R.ResolvedArm(a, a, 2, resolve(a).sha256) for a in arms if targets[a])
    return R.ResolvedRoute(route, pinned, ())


#: Routes of the fixtures: two inlinable GLM arms, and a GLM arm beside a UDF-sized tree ensemble.
ROUTES = {"score@ab": {"score": 70, "rate": 30}, "glm@ab": {"glm": 50, "big": 50}}


def resolve_route(ref: str):
    return test_route(ref, ROUTES[ref]) if ref in ROUTES else None


# ---------------------------------------------------------------------------- data
def adversarial_values(model: Model) -> list[float]:
    """Every threshold, its float64 and float32 neighbours, the float32 midpoints, NaN, ±0, ±inf."""
    est = model.estimator
    out = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-36, -1e-36, 1e300]
    for t in est.threshold[est.feature >= 0]:
        t32 = np.float32(t)
        up32, down32 = np.nextafter(t32, np.float32(np.inf)), np.nextafter(t32, np.float32(-np.inf))
        out += [float(t), math.nextafter(t, math.inf), math.nextafter(t, -math.inf), float(t32),
                (float(t32) + float(up32)) / 2, (float(t32) + float(down32)) / 2,
                math.nextafter((float(t32) + float(up32)) / 2, math.inf),
                math.nextafter((float(t32) + float(down32)) / 2, -math.inf)]
    return out


def _customers(n: int = 240, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    special = adversarial_values(MODELS["lgbm"]) + adversarial_values(MODELS["xgb"])
    cols = {}
    for j, name in enumerate(NUMERIC):
        values = rng.normal(20.0, 15.0, n)
        values[: len(special)] = np.roll(special, j * 3)
        mask = rng.random(n) < 0.08  # SQL NULLs (missing), beside the NaNs above
        cols[name] = pa.array(values, mask=mask)
    regions = np.array(["EU", "US", "APAC", "LATAM"], dtype=object)[rng.integers(0, 4, n)]
    return pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "plan_id": pa.array(rng.integers(0, 5, n)),
                     "region": pa.array(regions, mask=rng.random(n) < 0.05), **cols})


@pytest.fixture(scope="session")
def database() -> duckdb.DuckDBPyConnection:
    con = build_database()
    yield con
    con.close()


def build_database() -> duckdb.DuckDBPyConnection:
    """The fixtures' tables: customers (adversarial values, NULLs), plans (PRIMARY KEY plan_id), regions,
    plan_regions, plans_dup (a duplicated key), plan_prices (PRIMARY KEY pid),
    customers_dec (DECIMAL(15,2) inputs), customers_ss / regions_ss (an ``ss_partial_0`` column)."""
    con = duckdb.connect()
    customers = _customers()
    plans = pa.table({"plan_id": pa.array(np.arange(5, dtype=np.int64)), "price": pa.array([9.5, 19.0, 29.0, 49.0, 5.0])})
    con.register("customers_arrow", customers)
    con.execute("CREATE TABLE customers AS SELECT * FROM customers_arrow")
    con.register("plans_arrow", plans)
    con.execute("CREATE TABLE plans (plan_id BIGINT PRIMARY KEY, price DOUBLE)")
    con.execute("INSERT INTO plans SELECT * FROM plans_arrow")
    # plan 0 twice, no constraint: DuckDB's approx_unique still counts 10 distinct of 10 rows
    con.execute("CREATE TABLE plans_dup AS SELECT i % 9 AS plan_id, 5e0 + i AS price FROM range(10) AS t(i)")
    con.execute("CREATE TABLE plan_prices (pid BIGINT PRIMARY KEY, price DOUBLE)")
    con.execute("INSERT INTO plan_prices SELECT * FROM plans_arrow")
    # TPC-H-like DECIMAL(15,2) inputs with rows on, and one cent either side of, the fixtures' bounds
    con.execute("CREATE TABLE customers_dec AS SELECT id, TRY_CAST(age AS DECIMAL(15,2)) AS age, "
                "TRY_CAST(tenure AS DECIMAL(15,2)) AS tenure, spend FROM customers")
    con.execute("INSERT INTO customers_dec VALUES (1000, 30.10, 12.00, 1), (1001, 30.11, 12.01, 1), "
                "(1002, 30.09, 11.99, 2), (1003, 55.00, 0.00, 0), (1004, NULL, NULL, NULL)")
    # columns named like the optimizer's generated ones (a fact's, and a dimension's)
    con.execute("CREATE TABLE customers_ss AS SELECT *, 1e0 AS ss_partial_0 FROM customers")
    # dimensions for the star-join rules: LATAM and NULL regions have no match (LEFT JOIN cases)
    con.execute("CREATE TABLE regions AS SELECT * FROM (VALUES ('EU', 1.5, 0.2, 1.0), ('US', 2.5, NULL, 2.0), "
                "('APAC', 0.5, 0.7, 3.0)) AS v(region, gdp, growth, risk)")
    con.execute("CREATE TABLE plan_regions AS SELECT p.plan_id, r.region, p.price / 100 AS discount, "
                "r.gdp / 10 AS churn_rate, p.price * r.gdp AS margin, 1.5e0 AS fee FROM plans AS p, regions AS r")
    con.execute("CREATE TABLE regions_ss AS SELECT *, 7e0 AS ss_partial_0 FROM regions")
    return con


class DuckCatalog:
    """Catalog over a DuckDB connection's information schema."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def columns(self, table: str):
        name = exp.to_table(table, dialect="duckdb")
        rows = self.con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
                                "AND table_schema = coalesce(?, table_schema) ORDER BY ordinal_position",
                                [name.name, name.db or None]).fetchall()
        return [(str(n), str(t)) for n, t in rows] or None

    def row_count(self, table: str):
        try:  # unknown to the engine (e.g. a CTE's name): None, as the engine catalogs answer
            return self.con.execute(exp.select("COUNT(*)").from_(exp.to_table(table)).sql("duckdb")).fetchall()[0][0]
        except duckdb.CatalogException:
            return None

    def distinct_count(self, table: str, column: str):
        query = exp.select(exp.func("COUNT", exp.Distinct(expressions=[exp.column(column)]))).from_(exp.to_table(table))
        try:
            return self.con.execute(query.sql("duckdb")).fetchall()[0][0]
        except duckdb.Error:
            return None

    def proven_unique(self, table: str, columns):
        """The engine's proof (declared constraints; never this class's exact distinct counts)."""
        from sparkscore.engines.catalog import DuckDBCatalog

        return DuckDBCatalog(self.con).proven_unique(table, columns)


# ---------------------------------------------------------------------------- UDFs
def _arrow_udf(spec: UdfSpec):
    names = spec.inputs

    def fn(*arrays):
        return pa.array(udf_outputs(spec, pa.table(dict(zip(names, arrays))), backend="numpy"))

    # DuckDB UDFs have fixed arity: give the callable exactly one parameter per input.
    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(names))])
    return fn


_ARROW = {"DOUBLE": pa.float64(), "VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE[]": pa.list_(pa.float64())}


def _routed_arrow_udf(spec: RoutedUdfSpec):
    """A route's shared UDF (first argument: the arm index) from each arm's reference meaning."""

    def fn(index, *arrays):
        arm = np.asarray(index.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False))
        out = [None] * len(arm)
        for i, (arm_spec, where) in enumerate(zip(spec.arms, spec.positions)):
            rows = np.flatnonzero(arm == i)
            if len(rows):
                columns = pa.table({name: arrays[j].take(pa.array(rows)) for name, j in zip(arm_spec.inputs, where)})
                for r, value in zip(rows.tolist(), udf_outputs(arm_spec, columns, backend="numpy")):
                    out[r] = value
        return pa.array(out, type=_ARROW[spec.output_type])

    fn.__signature__ = inspect.Signature(
        [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(spec.inputs))])
    return fn


def register_udfs(con: duckdb.DuckDBPyConnection, udfs) -> None:
    for spec in udfs:
        ret = duckdb.list_type(sqltypes.DOUBLE) if spec.output_type == "DOUBLE[]" else _RETURN[spec.output_type]
        if isinstance(spec, RoutedUdfSpec):
            params = [sqltypes.BIGINT, *(sqltypes.VARCHAR if t == "VARCHAR" else sqltypes.DOUBLE for t in spec.input_types)]
            try:
                con.remove_function(spec.name)
            except duckdb.Error:  # not registered yet
                pass
            con.create_function(spec.name, _routed_arrow_udf(spec), params, ret, type="arrow", null_handling="special")
            continue
        params = [sqltypes.VARCHAR if c.categories and isinstance(c.categories[0], str) else sqltypes.DOUBLE
                  for c in spec.model.signature.inputs]
        try:
            con.remove_function(spec.name)
        except duckdb.Error:  # not registered yet
            pass
        con.create_function(spec.name, _arrow_udf(spec), params, ret, type="arrow", null_handling="special")


class Runner:
    """Plans a query against the test database and executes the plan with its UDFs registered."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.catalog = DuckCatalog(con)

    def plan(self, sql: str, disable_rules=(), **kwargs):
        kwargs.setdefault("resolve_route", resolve_route)
        return plan_query(sql, dialect="duckdb", resolve=resolve, catalog=self.catalog,
                          disable_rules=disable_rules, **kwargs)

    def rows(self, plan) -> list[tuple]:
        register_udfs(self.con, plan.udfs)
        return self.con.execute(plan.sql).fetchall()


@pytest.fixture(scope="session")
def runner(database) -> Runner:
    return Runner(database)


def assert_same_rows(got: list[tuple], want: list[tuple], rtol: float = 1e-9) -> None:
    """Equal rows; floats to ``rtol`` (GLM summation order), NaN == NaN, lists elementwise."""
    assert len(got) == len(want)
    for i, (a_row, b_row) in enumerate(zip(got, want)):
        assert len(a_row) == len(b_row)
        for a, b in zip(a_row, b_row):
            if isinstance(a, list) and isinstance(b, list):
                assert_same_rows([tuple(a)], [tuple(b)], rtol)
            elif isinstance(a, float) or isinstance(b, float):
                assert a is not None and b is not None, f"row {i}: {a_row} != {b_row}"
                if a == b or (a != a and b != b):  # fast path: equal, or both NaN
                    continue
                np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, equal_nan=True, err_msg=f"row {i}")
            else:
                assert a == b, f"row {i}: {a_row} != {b_row}"


# ---------------------------------------------------------------------------- Spark
#: The fixture tables the Spark tests read (as parquet written by DuckDB, so NaN stays NaN).
TABLES = ("customers", "plans", "regions", "plan_regions", "plans_dup", "plan_prices", "customers_dec", "customers_ss",
          "regions_ss")


@pytest.fixture(scope="session")
def spark_tables(spark, database, tmp_path_factory):
    """The shared Spark session with the fixture tables as temp views."""
    folder = tmp_path_factory.mktemp("optimizer_tables")
    for table in TABLES:
        path = str(folder / f"{table}.parquet")
        database.table(table).write_parquet(path)
        spark.read.parquet(path).createOrReplaceTempView(table)
    return spark


def register_spark_udfs(spark, plan) -> None:
    """Register a plan's UDFs through the Spark engine (derived models ship as safe-format files)."""
    import tempfile
    from pathlib import Path

    from sparkscore.engines import spark as spark_engine

    for spec in plan.udfs:
        with tempfile.TemporaryDirectory(prefix="sparkscore-test-") as tmp:
            spec.model.save(tmp)
            files = tuple(sorted((p.name, p.read_bytes()) for p in Path(tmp).iterdir()))
        source = spark_engine.ModelSource("", spec.name, spec.source.version, spec.model.sha256, files)
        spark.udf.register(spec.name, spark_engine.ModelFunction(spec.name, source, spec.kind, spec.output_type,
                                                                 spec.gated).udf())


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def spark_rows(spark, plan) -> list[tuple]:
    return [tuple(_plain(list(row))) for row in spark.sql(plan.sql).collect()]
