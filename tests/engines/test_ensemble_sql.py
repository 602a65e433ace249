"""Registered ensembles in SQL: PREDICT over an ensemble ref on DuckDB and Spark equals
``Model.predict`` and the members' native outputs combined in numpy (rtol 1e-9 where fused,
1e-12 where not); a fused GLM is inlined like any GLM and costed by factorize_linear over a join; EXPLAIN says
fused or not, and why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sparkscore as ss

N = 200


@pytest.fixture(scope="module")
def fitted():
    import lightgbm as lgb
    from sklearn.linear_model import LinearRegression, Ridge

    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(N, 4)), columns=["a", "b", "c", "d"])
    y = (X.a - X.b + 0.5 * X.c * X.d).to_numpy()
    args = dict(n_estimators=6, num_leaves=5, min_child_samples=5, verbose=-1, n_jobs=1)
    natives = {
        "g1": (LinearRegression().fit(X[["a", "b"]], y), ["a", "b"]),
        "g2": (Ridge().fit(X[["b", "d"]], y), ["b", "d"]),
        "t1": (lgb.LGBMRegressor(**args).fit(X[["a", "c"]], y), ["a", "c"]),
        "k1": (lgb.LGBMClassifier(**args).fit(X[["a", "b"]], y > 0), ["a", "b"]),
        "k2": (lgb.LGBMClassifier(**dict(args, num_leaves=4)).fit(X[["c", "d"]], y > 0), ["c", "d"]),
    }
    X.loc[::9, "c"] = np.nan  # LightGBM routes NaN; the GLM members only see a, b, d there
    return X.assign(id=np.arange(N)), natives


@pytest.fixture(scope="module")
def reg(tmp_path_factory, fitted):
    _, natives = fitted
    registry = ss.Registry(tmp_path_factory.mktemp("ensembles") / "registry")
    for name, (native, _) in natives.items():
        registry.register(name, native)
    registry.set_alias("g2", "challenger", 1)
    registry.register_ensemble("glm_ens", ["g1/1", "g2@challenger"], "weighted", [0.7, 0.3])
    registry.register_ensemble("mixed_ens", ["g1/1", "t1/1"], "mean")
    registry.register_ensemble("margin_ens", ["k1/1", "k2/1"], "margin_mean")
    registry.register_ensemble("proba_ens", ["k1/1", "k2/1"], "weighted", [1.0, 3.0])
    return registry


def _native(fitted, name, method="predict", **kw):
    X, natives = fitted
    native, cols = natives[name]
    return getattr(native, method)(X[cols], **kw)


def expected(fitted, ref):
    """(values or P(class 1), tolerance) from the native members, combined in numpy."""
    if ref == "glm_ens":
        return 0.7 * _native(fitted, "g1") + 0.3 * _native(fitted, "g2"), 1e-9
    if ref == "mixed_ens":
        return 0.5 * _native(fitted, "g1") + 0.5 * _native(fitted, "t1"), 1e-12
    if ref == "margin_ens":
        z = 0.5 * _native(fitted, "k1", raw_score=True) + 0.5 * _native(fitted, "k2", raw_score=True)
        return 1 / (1 + np.exp(-z)), 1e-9
    p = 0.25 * _native(fitted, "k1", "predict_proba")[:, 1] + 0.75 * _native(fitted, "k2", "predict_proba")[:, 1]
    return p, 1e-12


REFS = ["glm_ens", "mixed_ens", "margin_ens", "proba_ens"]
QUERY = "SELECT id, PREDICT('{ref}', *) AS p FROM t ORDER BY id"


@pytest.mark.parametrize("ref", REFS)
def test_duckdb_predict_matches_members_combined(con, reg, fitted, ref):
    X = fitted[0]
    con.register("t", X)
    got = ss.duckdb.sql(con, QUERY.format(ref=ref), registry=reg).df().p.to_numpy(dtype=float)
    want, tol = expected(fitted, ref)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    model = reg.load(ref)
    values = model.predict_proba(X)[:, 1] if model.is_classifier else model.predict(X)
    np.testing.assert_allclose(values, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("ref,fused,how", [
    ("glm_ens", True, "inline_models:\n  fired     glm_ens/1#"),
    ("margin_ens", True, "2 tree ensembles -> one of 12 trees"),
    ("mixed_ens", False, "not fused (members are linear and trees"),
    ("proba_ens", False, "not fused (weighted of classifiers' probabilities is not a sum of margins"),
])
def test_explain_says_fused_or_why_not(con, reg, fitted, ref, fused, how):
    con.register("t", fitted[0])
    text = str(ss.explain(QUERY.format(ref=ref), engine=con, registry=reg))
    assert how in text
    assert (f"ensemble {ref}/1" in text) and (("): fused: " in text) == fused)
    if not fused:
        assert f"{ref}_v1(" in text  # one UDF call runs every member on the same batch


def test_fused_glm_ensemble_is_costed_by_factorize_linear_over_a_join(con, reg, fitted):
    X = fitted[0]
    con.register("facts", X[["id", "a", "b"]].assign(k=np.arange(N) % 10))
    con.execute("CREATE TABLE dims AS SELECT * FROM (SELECT range AS k, range * 0.5 AS c, range - 3.0 AS d FROM range(10))")
    con.execute("CREATE TABLE f AS SELECT * FROM facts")
    query = "SELECT f.id, PREDICT('glm_ens', f.a, f.b, dims.d) AS p FROM f JOIN dims USING (k) ORDER BY f.id"
    plan = str(ss.explain(query, engine=con, registry=reg))
    got = ss.duckdb.sql(con, query, registry=reg).df().p.to_numpy()
    rows = X[["a", "b"]].assign(c=(np.arange(N) % 10) * 0.5, d=(np.arange(N) % 10) - 3.0)
    want = 0.7 * fitted[1]["g1"][0].predict(rows[["a", "b"]]) + 0.3 * fitted[1]["g2"][0].predict(rows[["b", "d"]])
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    factorize = plan.split("factorize_linear:")[1].split("stack_linear:")[0]
    assert "ensemble glm_ens/1" in plan and "dims: TR=" in factorize  # the rule costed it as the GLM it is
    assert "not a GLM" not in factorize


@pytest.mark.spark
def test_spark_matches_duckdb_fused_and_unfused(spark, con, reg, fitted):
    """One fused (inlined) and one unfused (one UDF) ensemble; the zoo's ensemble cases run the
    rest through the Spark matrix (tests/engines/test_spark_matrix.py)."""
    X = fitted[0]
    con.register("t", X)
    spark.createDataFrame(X).createOrReplaceTempView("t")
    refs = ("glm_ens", "mixed_ens")
    query = "SELECT id, " + ", ".join(f"PREDICT('{r}', *) AS {r}" for r in refs) + " FROM t ORDER BY id"
    got = ss.spark.sql(spark, query, registry=reg).toPandas()
    want = ss.duckdb.sql(con, query, registry=reg).df()
    for ref in refs:
        np.testing.assert_allclose(got[ref].to_numpy(dtype=float), want[ref].to_numpy(dtype=float), rtol=1e-9, atol=1e-9,
                                   err_msg=ref)
        np.testing.assert_allclose(got[ref].to_numpy(dtype=float), expected(fitted, ref)[0], rtol=1e-9, atol=1e-9,
                                   err_msg=ref)
