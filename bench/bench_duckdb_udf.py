"""DuckDB scoring paths, rows/s: Arrow UDF (DuckDB's ~2,048-row chunks) vs large Arrow batches.

    python bench/bench_duckdb_udf.py            # 1M rows, writes bench/results/duckdb_udf.{json,md}
    python bench/bench_duckdb_udf.py --quick    # 100k rows, CI smoke run

Models: a LightGBM binary classifier with 100 trees and a logistic regression (GLM), both on 8
numeric features.  Paths, all on the same connection and thread count:

* ``udf``: ``SELECT sum(model_v1(...)) FROM t`` (the function ``ss.duckdb.install`` registers);
* ``batch <n>``: ``ss.duckdb.score_relation(con, t, model, batch_rows=n)``;
* ``sql default``: ``ss.duckdb.sql`` with every optimizer rule (a GLM is inlined as SQL).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sparkscore as ss  # noqa: E402
from sparkscore.engines import duckdb as engine  # noqa: E402

FEATURES = [f"x{i}" for i in range(8)]


def make_data(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    y = (X.x0 + 0.5 * X.x1 * X.x2 - 0.3 * X.x3 + rng.normal(0, 0.5, n) > 0).astype(int).to_numpy()
    return X, y


def train(registry: ss.Registry, X: pd.DataFrame, y: np.ndarray) -> None:
    import lightgbm
    from sklearn.linear_model import LogisticRegression

    sample = slice(0, 20_000)
    gbm = lightgbm.LGBMClassifier(n_estimators=100, num_leaves=31, verbose=-1, n_jobs=1).fit(X[sample], y[sample])
    glm = LogisticRegression(max_iter=200).fit(X[sample].to_numpy(), y[sample])
    registry.register("gbm", gbm, feature_names=FEATURES)
    registry.register("glm", glm, feature_names=FEATURES)


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(n_rows: int, repeats: int, threads: int) -> dict:
    X, y = make_data(n_rows)
    registry = ss.Registry(tempfile.mkdtemp(prefix="bench-duckdb-"))
    train(registry, X, y)
    con = duckdb.connect(config={"threads": threads})
    con.register("x_frame", X)
    con.sql("CREATE TABLE t AS SELECT * FROM x_frame")
    con.unregister("x_frame")
    engine.install(con, registry)
    args = ", ".join(FEATURES)
    results = {}
    for model in ("gbm", "glm"):
        paths = {
            "udf": lambda: con.sql(f"SELECT sum({model}_v1({args})) FROM t").fetchall(),
            "batch 100k": lambda: engine.score_relation(con, con.table("t"), model, registry, batch_rows=100_000),
            "batch 1M": lambda: engine.score_relation(con, con.table("t"), model, registry, batch_rows=1_000_000),
            "sql default": lambda: ss.duckdb.sql(con, f"SELECT sum(PREDICT('{model}', *)) FROM t", registry).fetchall(),
        }
        paths["udf"]()  # warm: load, compile
        seconds = {path: best_of(repeats, fn) for path, fn in paths.items()}
        results[model] = {path: {"seconds": round(s, 4), "rows_per_s": round(n_rows / s)} for path, s in seconds.items()}
        results[model]["batch 1M vs udf"] = round(seconds["udf"] / seconds["batch 1M"], 2)
    return results


def to_markdown(doc: dict) -> str:
    lines = [f"# DuckDB scoring paths ({doc['config']['rows']:,} rows, {doc['config']['threads']} threads)", "",
             doc["note"], "", "| model | path | seconds | rows/s |", "|---|---|---|---|"]
    for model, paths in doc["results"].items():
        for path, value in paths.items():
            if isinstance(value, dict):
                lines.append(f"| {model} | {path} | {value['seconds']} | {value['rows_per_s']:,} |")
        lines.append(f"| {model} | batch 1M speed-up over udf | | {paths['batch 1M vs udf']}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, one repeat (CI smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    opts = parser.parse_args()
    n_rows, repeats = (100_000, 1) if opts.quick else (1_000_000, 2)
    results = run(n_rows, repeats, opts.threads)
    doc = {
        "benchmark": "duckdb_udf",
        "config": {"rows": n_rows, "repeats": repeats, "threads": opts.threads, "features": len(FEATURES),
                   "gbm": "LightGBM binary, 100 trees, 31 leaves", "glm": "sklearn LogisticRegression"},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "duckdb": duckdb.__version__},
        "note": "Measured on a 2-core machine shared with other jobs (load average well above 2): "
                "absolute figures are noisy; the ratios between paths of one run are the signal.",
        "results": results,
    }
    print(json.dumps(doc, indent=2))
    if not opts.quick:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "duckdb_udf.json").write_text(json.dumps(doc, indent=2) + "\n")
        (opts.out / "duckdb_udf.md").write_text(to_markdown(doc))


if __name__ == "__main__":
    main()
