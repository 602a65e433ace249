"""The quickstart demo: generated customers and plans, three trained models, example PREDICT queries.

``build_demo`` is deterministic for a given seed (same data, same models, same sha256s), so the
example queries under ``sql/quickstart*.sql`` double as end-to-end tests of the registry, the
optimizer and the DuckDB engine.  Because the models are byte-identical per seed, running the
quickstart again finds them already registered and adds no versions to the user's registry.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CHURN_FEATURES = ("age", "tenure_months", "monthly_spend", "support_calls", "price", "data_gb", "contract_months")
SPEND_FEATURES = ("age", "tenure_months", "support_calls", "price", "data_gb")
REGIONS = ("EU", "US", "APAC", "LATAM")
#: the query whose EXPLAIN the quickstart prints (two models, one of them a GLM over a join)
EXPLAINED_QUERY = "quickstart_2_churn_by_region.sql"
_LGBM_PARAMS = {"n_estimators": 60, "num_leaves": 15, "learning_rate": 0.1, "min_child_samples": 20}
NEXT_STEPS = ("next steps: `sparkscore versions churn` and `sparkscore describe churn@prod` show what was registered "
              "(describe lists the input columns); score a file of your own with "
              "`sparkscore sql \"SELECT *, PREDICT('churn@prod', *) AS p FROM t\" --table t=your_data.parquet` or "
              "`sparkscore score`; add your own model with `sparkscore register NAME model.txt`")


def require_model_libraries() -> None:
    """The demo trains LightGBM and scikit-learn models: say how to install them if they are missing."""
    from sparkscore.errors import SparkscoreError

    try:
        import lightgbm  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as exc:
        missing = {"sklearn": "scikit-learn"}.get(exc.name or "", exc.name or "a model library")
        raise SparkscoreError(f"the quickstart trains LightGBM and scikit-learn models but {missing} is not "
                              "installed; install them with: pip install 'sparkscore[models]'") from None


def build_demo(con, registry, n_customers: int = 20_000, n_plans: int = 50, seed: int = 0) -> dict[str, Any]:
    """Create ``customers`` and ``plans`` on DuckDB ``con``, train and register the demo models.

    Registers ``churn`` (LightGBM, alias ``prod``), ``churn_logit`` (LogisticRegression, alias ``prod``)
    and ``spend`` (LinearRegression).  Returns ``{"tables": {name: rows}, "models": {name: ModelVersion},
    "churn_rate": float}``.
    """
    require_model_libraries()
    import lightgbm
    from sklearn.linear_model import LinearRegression, LogisticRegression

    customers, plans, churned = _generate(n_customers, n_plans, seed)
    con.from_df(customers).create("customers")
    con.from_df(plans).create("plans")

    joined = customers.merge(plans, on="plan_id", how="left", validate="many_to_one")
    X = joined[list(CHURN_FEATURES)]
    lgbm = lightgbm.LGBMClassifier(**_LGBM_PARAMS, random_state=seed, deterministic=True, force_row_wise=True,
                                   n_jobs=1, verbose=-1).fit(X, churned)
    logit = LogisticRegression(solver="newton-cholesky", max_iter=100).fit(X.to_numpy(), churned)
    spend = LinearRegression().fit(joined[list(SPEND_FEATURES)].to_numpy(), joined["monthly_spend"].to_numpy())

    lineage = {"data_fingerprint": _fingerprint(customers, plans),
               "code_version": f"sparkscore.quickstart (seed={seed})",
               "config": {"n_customers": n_customers, "n_plans": n_plans, "seed": seed}}
    models = {
        "churn": registry.register("churn", lgbm, feature_names=CHURN_FEATURES,
                                   lineage={**lineage, "config": {**lineage["config"], **_LGBM_PARAMS}}),
        "churn_logit": registry.register("churn_logit", logit, feature_names=CHURN_FEATURES,
                                         lineage={**lineage, "config": {**lineage["config"], "solver": "newton-cholesky"}}),
        "spend": registry.register("spend", spend, feature_names=SPEND_FEATURES, lineage=lineage),
    }
    for name in ("churn", "churn_logit"):
        registry.set_alias(name, "prod", models[name].version)
    return {"tables": {"customers": len(customers), "plans": len(plans)}, "models": models,
            "churn_rate": float(churned.mean())}


def queries_dir() -> Path:
    """Folder of the example queries: shipped in the package, or ``sql/`` of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sql", here.parent / "sql"):
        if any(candidate.glob("quickstart*.sql")):
            return candidate
    from sparkscore.errors import SparkscoreError

    raise SparkscoreError(f"the quickstart queries (quickstart*.sql) are missing from {here / 'sql'} and "
                          f"{here.parent / 'sql'}; reinstall sparkscore")


def example_queries() -> list[tuple[str, str]]:
    """``[(file name, SQL text)]`` of the quickstart queries, in order."""
    return [(path.name, path.read_text(encoding="utf-8")) for path in sorted(queries_dir().glob("quickstart*.sql"))]


def save_data(con, folder: Path) -> Path:
    """Write ``customers.parquet`` (customers joined with their plan: every model input plus ``id``
    and ``region``) into ``folder``: a ready input for ``sparkscore score`` and ``jobs/score.py``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "customers.parquet"
    con.sql("SELECT * FROM customers JOIN plans USING (plan_id) ORDER BY id").write_parquet(str(path))
    return path


def run_quickstart(console, registry, n_customers: int = 20_000, max_rows: int = 10,
                   data_dir: Path | None = None) -> None:
    """Build the demo on an in-memory DuckDB, run every example query, print results and one EXPLAIN.

    With ``data_dir`` the demo's customers (joined with plans) are also written there as parquet.
    """
    import duckdb
    from rich.syntax import Syntax
    from rich.text import Text

    import sparkscore as ss

    require_model_libraries()
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET enable_progress_bar_print = false")  # its bar would print into the console's stdout
    queries = example_queries()
    with console.status("generating data, training and registering the demo models..."):
        demo = build_demo(con, registry, n_customers=n_customers)
    console.print(Text(f"registry: {registry.root}"))
    for mv in demo["models"].values():
        state = "already registered (same bytes, no new version)" if mv.existing else "registered"
        console.print(Text(f"  {state} {mv.ref}  sha256 {mv.sha256[:12]}"))
    console.print(Text(f"tables: customers ({demo['tables']['customers']:,} rows), plans ({demo['tables']['plans']} rows); "
                       f"churn rate {demo['churn_rate']:.1%}; data, training and registration took "
                       f"{time.perf_counter() - started:.1f}s"))
    if data_dir is not None:
        console.print(Text(f"wrote {save_data(con, Path(data_dir))} (input for `sparkscore score` / jobs/score.py)"))
    for file_name, query in queries:
        console.rule(Text(file_name))
        console.print(Syntax(query.strip(), "sql", word_wrap=True))
        query_started = time.perf_counter()
        with console.status(f"running {file_name}..."):
            table = relation_table(ss.duckdb.sql(con, query, registry=registry, namespace={}), max_rows)
        console.print(table)
        console.print(Text(f"{file_name}: planned and ran in {time.perf_counter() - query_started:.2f}s"))
    query = dict(queries).get(EXPLAINED_QUERY, queries[0][1])
    console.rule(Text(f"EXPLAIN {EXPLAINED_QUERY}"))
    console.print(Text(str(ss.explain(query, engine=con, registry=registry))))
    console.rule()
    console.print(Text(f"quickstart finished in {time.perf_counter() - started:.1f}s"))
    console.print(Text(NEXT_STEPS))


def relation_table(relation, max_rows: int):
    """A rich table of the first ``max_rows`` rows of a DuckDB relation (cells as plain text)."""
    from rich.table import Table
    from rich.text import Text

    rows = relation.limit(max_rows + 1).fetchall()
    table = Table(caption=f"first {max_rows} rows" if len(rows) > max_rows else None)
    for column in relation.columns:
        table.add_column(Text(column))
    for row in rows[:max_rows]:
        table.add_row(*[Text(_cell(v)) for v in row])
    return table


def _generate(n_customers: int, n_plans: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Customers, plans and the churn label: spend depends on the plan, churn on calls/tenure/price."""
    rng = np.random.default_rng(seed)
    plans = pd.DataFrame({
        "plan_id": np.arange(1, n_plans + 1, dtype=np.int64),
        "price": np.round(rng.uniform(10.0, 80.0, n_plans), 2),
        "data_gb": rng.choice([1.0, 5.0, 10.0, 20.0, 50.0, 100.0], n_plans),
        "contract_months": rng.choice([1.0, 12.0, 24.0], n_plans),
    })
    plan_id = rng.integers(1, n_plans + 1, n_customers, dtype=np.int64)
    plan = plans.iloc[plan_id - 1]
    price, data_gb, contract = (plan[c].to_numpy() for c in ("price", "data_gb", "contract_months"))
    age = np.round(rng.uniform(18.0, 80.0, n_customers))
    tenure = np.round(np.minimum(rng.exponential(24.0, n_customers), 120.0))
    calls = rng.poisson(1.5, n_customers).astype(np.float64)
    spend = np.round(price + 0.15 * data_gb + 2.0 * calls + rng.normal(0.0, 5.0, n_customers), 2)
    logit = (-1.2 + 0.7 * calls - 0.04 * tenure + 0.03 * (price - 45.0) - 0.06 * contract
             + 0.02 * (spend - price) - 0.015 * (age - 45.0))
    churned = (rng.random(n_customers) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    customers = pd.DataFrame({
        "id": np.arange(1, n_customers + 1, dtype=np.int64),
        "plan_id": plan_id,
        "region": pd.Series(rng.choice(REGIONS, n_customers, p=[0.4, 0.3, 0.2, 0.1]), dtype=object),
        "age": age, "tenure_months": tenure, "monthly_spend": spend, "support_calls": calls,
    })
    return customers, plans, churned


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)


def _fingerprint(*frames: pd.DataFrame) -> str:
    """sha256 over the frames' values and columns: the data behind a model, for lineage."""
    h = hashlib.sha256()
    for frame in frames:
        h.update("\0".join(frame.columns).encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return "sha256:" + h.hexdigest()
