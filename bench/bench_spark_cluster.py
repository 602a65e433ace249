"""Spark scoring on ``local-cluster[2,1,1024]``: two executor JVMs (1 core, 1 GiB each), each with its
own Python workers, as on a real cluster; sparkscore vs a pandas UDF calling native predict.

LightGBM binary classifier, 100 trees x 31 leaves, 1M rows (a parquet file read by the executors,
2 partitions, cached on the executors), P(positive) for every row forced by ``sum``.  Peers,
same run, interleaved, median of ``--repeat``, after one cold run each (recorded: Python workers
start, the model loads and compiles):

* ``sparkscore``: ``ss.spark.predict`` on its ``auto`` path (the Arrow UDF for one output);
* ``sparkscore_arrow``: ``path="arrow"`` (mapInArrow over whole partitions);
* ``pandas_udf_native``: the iterator pandas UDF of bench_spark_path.py, loading the booster once
  per Python worker and calling native ``Booster.predict``.

The executors' load log (``SPARKSCORE_LOAD_LOG``) is read back: registry reads per executor (the
per-executor model cache: one per executor and version), the workers that loaded the model, their
load + compile seconds and numba cache misses.

    python bench/bench_spark_cluster.py              # 1M rows, 8 features, 3 repeats
    python bench/bench_spark_cluster.py --quick      # 100k rows, 1 repeat

Writes bench/results/spark_cluster[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from bench_spark_path import _data, _names, _pandas_udf_native, _train_lgbm  # noqa: E402 (the same baseline)

MASTER = "local-cluster[2,1,1024]"


def _loadavg() -> list[str]:
    return open("/proc/loadavg").read().split()[:3]


def _timed(make, F) -> tuple[float, float]:
    start = time.perf_counter()
    total = make().agg(F.sum("p")).collect()[0][0]
    return time.perf_counter() - start, total


def _load_log(path: Path) -> dict:
    """What the executors' Python workers recorded when they first used a model version."""
    lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return {"workers": len(lines),
            "registry_reads_per_executor": dict(Counter(f[6] for f in lines if f[3] == "registry")),
            "executor_cache_loads": sum(f[3] == "executor-cache" for f in lines),
            "load_compile_s": [float(f[5]) for f in lines], "numba_cache_misses": [int(f[4]) for f in lines]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 1

    work = Path(tempfile.mkdtemp(prefix="bench-spark-cluster-"))
    load_log = work / "loads.log"
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, PYTHONPATH=path)
    started = time.perf_counter()
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import sparkscore as ss
    from sparkscore.engines import spark as ss_spark

    spark = (SparkSession.builder.master(MASTER).appName("bench-spark-cluster")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "2g").config("spark.executor.memory", "900m")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.executorEnv.PYTHONPATH", path).config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
             .config(f"spark.executorEnv.{ss_spark.LOAD_LOG_ENV}", str(load_log)).getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    tracker = spark.sparkContext._jsc.sc().statusTracker()
    while len(tracker.getExecutorInfos()) < 3 and time.perf_counter() - started < 300:  # the driver + 2 executors
        time.sleep(0.5)
    startup_s = time.perf_counter() - started
    doc: dict = {"benchmark": "spark_cluster", "master": MASTER, "config": vars(args), "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "pyspark": spark.version, "loadavg_before": _loadavg(), "session_startup_s": startup_s,
        "note": "2-core machine shared with other helpers' test runs: compare ratios from the same run"}}

    d = args.features
    names = _names(d)
    native = _train_lgbm(d)
    registry = ss.Registry(work / "registry")
    name = f"lgbm100_d{d}"
    registry.register(name, native, feature_names=names)
    model_file = str(work / f"{name}.txt")
    native.booster_.save_model(model_file)
    _data(args.rows, d).to_parquet(work / "input.parquet")
    df = spark.read.parquet(str(work / "input.parquet")).repartition(2).cache()
    df.count()
    base = _pandas_udf_native(model_file, names)
    cols = [df[c] for c in names]
    peers = {"sparkscore": lambda: ss_spark.predict(df, name, "p", registry=registry),
             "sparkscore_arrow": lambda: ss_spark.predict(df, name, "p", registry=registry, path="arrow"),
             "pandas_udf_native": lambda: df.withColumn("p", base(*cols))}
    cold, sums = {}, {}
    for k, make in peers.items():       # cold: Python workers start, models load (and compile)
        cold[k], sums[k] = _timed(make, F)
    times: dict = {k: [] for k in peers}
    loads = []
    for _ in range(args.repeat):
        for k, make in peers.items():
            times[k].append(_timed(make, F)[0])
        loads.append(_loadavg())
    seconds = {k: statistics.median(v) for k, v in times.items()}
    executors = len(tracker.getExecutorInfos()) - 1
    doc["result"] = {
        "features": d, "rows": args.rows, "executors": executors,
        "path": ss_spark.predict_path(df, registry.load(name)).path, "seconds": seconds, "all_seconds": times,
        "cold_seconds": cold, "rows_per_s": {k: args.rows / v for k, v in seconds.items()},
        "speedup_vs_pandas_udf": seconds["pandas_udf_native"] / seconds["sparkscore"],
        "arrow_speedup_vs_pandas_udf": seconds["pandas_udf_native"] / seconds["sparkscore_arrow"],
        "sum_abs_diff_vs_native": {k: abs(sums[k] - sums["pandas_udf_native"]) for k in ("sparkscore", "sparkscore_arrow")},
        "loadavg_per_round": loads, "model_loads": _load_log(load_log)}
    print(json.dumps(doc["result"]), flush=True)
    df.unpersist()
    doc["machine"]["loadavg_after"] = _loadavg()
    spark.stop()
    _write(doc, args)


def _write(doc: dict, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "spark_cluster" + ("_quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    m, r = doc["machine"], doc["result"]
    s, rps, loads = r["seconds"], r["rows_per_s"], r["model_loads"]
    lines = [f"# Spark scoring on {doc['master']} ({r['executors']} executor JVMs)", "",
             f"{r['rows']:,} rows, {r['features']} features, LightGBM binary 100 trees x 31 leaves, P(positive) summed; "
             f"median of {args.repeat} interleaved runs after one cold run each. pyspark {m['pyspark']}, {m['cpus']} "
             f"cores, loadavg before {' '.join(m['loadavg_before'])}, after {' '.join(m['loadavg_after'])}, per round "
             f"{'; '.join(' '.join(x) for x in r['loadavg_per_round'])} (shared machine: compare ratios).", "",
             "| peer | median s | rows/s | cold run s | vs pandas UDF |", "|---|---|---|---|---|"]
    for k in ("sparkscore", "sparkscore_arrow", "pandas_udf_native"):
        label = f"{k} ({r['path']} path)" if k == "sparkscore" else k
        lines.append(f"| {label} | {s[k]:.2f} | {rps[k]:,.0f} | {r['cold_seconds'][k]:.2f} | "
                     f"{s['pandas_udf_native'] / s[k]:.2f}x |")
    diff = r["sum_abs_diff_vs_native"]
    lines += ["", f"Sum of P(positive) vs native: |diff| {diff['sparkscore']:.3g} (udf), {diff['sparkscore_arrow']:.3g} "
              "(arrow).", "",
              f"Model loads on the executors: {loads['workers']} Python workers loaded a model version; registry "
              f"reads per executor {sorted(loads['registry_reads_per_executor'].values())}, "
              f"{loads['executor_cache_loads']} served from the executor's verified copy; load + compile "
              f"{', '.join(f'{x:.2f}' for x in loads['load_compile_s'])} s; numba cache misses "
              f"{loads['numba_cache_misses']}.", "",
              f"Session start-up (two executor JVMs registered): {m['session_startup_s']:.1f} s."]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
