"""Spark scoring: sparkscore's UDF vs the pandas UDF users write today (MLflow ``spark_udf`` style).

Same local session, same cached DataFrame, same threads: a GBM (LightGBM) and a GLM (sklearn
LogisticRegression), positive-class probability for every row, forced by an aggregate.

    python bench/bench_spark.py            # 1M rows, best of 3
    python bench/bench_spark.py --quick    # 100k rows, best of 1 (CI smoke)

Writes bench/results/spark.json and spark.md.
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
from typing import Iterator, Tuple

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FEATURES = [f"x{i}" for i in range(8)]


def _data(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, len(FEATURES)))
    return pd.DataFrame(X, columns=FEATURES)


def _models(train: pd.DataFrame) -> dict:
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression

    y = (train.x0 + 0.5 * train.x1 * train.x2 - train.x3 + np.random.default_rng(1).normal(size=len(train)) > 0)
    gbm = lgb.LGBMClassifier(n_estimators=100, num_leaves=31, verbose=-1).fit(train, y.astype(int))
    glm = LogisticRegression(max_iter=500).fit(train, y.astype(int))
    return {"gbm_lightgbm_100x31": gbm, "glm_logistic": glm}


def _baseline_udf(native):
    """What users write today: an iterator pandas UDF closing over the pickled native model."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("double")
    def score(batches: Iterator[Tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        for columns in batches:
            frame = pd.concat(columns, axis=1)
            frame.columns = FEATURES
            yield pd.Series(native.predict_proba(frame)[:, 1])

    return score


def _time(run, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 1

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import sparkscore as ss

    spark = (SparkSession.builder.master("local[2]").appName("bench-spark").config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "2").config("spark.driver.memory", "4g")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    registry = ss.Registry(tempfile.mkdtemp(prefix="bench-spark-registry-"))
    natives = _models(_data(20_000, seed=2))
    for name, native in natives.items():
        registry.register(name, native, feature_names=FEATURES)

    df = spark.createDataFrame(_data(args.rows)).repartition(2).cache()
    df.count()
    results = []
    for name, native in natives.items():
        runs = {
            "sparkscore": lambda: ss.spark.predict(df, name, "p", registry=registry),
            "pandas_udf_native": lambda: df.withColumn("p", _baseline_udf(native)(*[df[c] for c in FEATURES])),
        }
        sums, seconds = {}, {}
        for label, make in runs.items():
            sums[label] = make().agg(F.sum("p")).collect()[0][0]  # warm-up: JVM, workers, model caches
            seconds[label] = _time(lambda: make().agg(F.sum("p")).collect(), args.repeat)
        results.append({
            "model": name, "rows": args.rows,
            "seconds": seconds, "rows_per_s": {k: args.rows / v for k, v in seconds.items()},
            "speedup_vs_baseline": seconds["pandas_udf_native"] / seconds["sparkscore"],
            "sum_abs_diff": abs(sums["sparkscore"] - sums["pandas_udf_native"]),
        })
        print(json.dumps(results[-1]))
    spark.stop()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "spark_udf", "config": vars(args), "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "note": "local[2]; the machine's 2 cores were shared with other work: compare ratios, not absolutes"},
        "results": results}
    (out / "spark.json").write_text(json.dumps(doc, indent=2))
    lines = ["# Spark: sparkscore UDF vs pandas UDF calling native predict_proba", "",
             f"{args.rows:,} rows x {len(FEATURES)} features, local[2], best of {args.repeat}. "
             "Machine shared with other work: compare ratios.", "",
             "| model | sparkscore rows/s | pandas UDF + native rows/s | speed-up |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['rows_per_s']['sparkscore']:,.0f} | "
                     f"{r['rows_per_s']['pandas_udf_native']:,.0f} | {r['speedup_vs_baseline']:.2f}x |")
    (out / "spark.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
