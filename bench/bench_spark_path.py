"""Spark scoring path: where the time goes per row, and sparkscore vs what users run today.

LightGBM binary classifier, 100 trees x 31 leaves, 1M rows, 8 and 50 float features, one
local[2] session (or ``--master local-cluster[2,1,1024]``: two executor JVMs), P(positive) for
every row forced by ``sum``.  Peers, interleaved, repeated ``--repeat`` times, median reported:

* ``sparkscore``: ``ss.spark.predict`` on its ``auto`` path: with ``--source parquet`` the scoring
  scan (pyarrow reads the files inside the Python worker: ``sparkscore/engines/spark_scan.py``), over
  a cached DataFrame the Arrow UDF (this model is one output);
* ``sparkscore_arrow`` / ``sparkscore_udf``: the same with ``path="arrow"`` (mapInArrow; ``auto`` for
  several outputs) and ``path="udf"`` (the Arrow UDF over the model's columns);
* ``pandas_udf_native``: an iterator pandas UDF that loads the booster once per Python worker
  (from the model file, cached in the worker) and calls native ``Booster.predict``;
* ``mlflow_spark_udf``: ``mlflow.pyfunc.spark_udf(spark, uri, env_manager="local")`` over the
  booster saved with ``mlflow.lightgbm.save_model`` (mlflow-skinny).

Every peer is measured in wall time *and* in CPU time (utime + stime from ``/proc``: the
executor JVM, which in local mode is the driver's JVM, plus every Python worker below it), because
on a machine shared with other jobs wall times lie and CPU times mostly do not.

Also, same run (``stages``): where the CPU time goes per row (JVM scan; JVM row -> Arrow and the
transfer, from an identity Arrow UDF and an identity ``mapInArrow``; inside the Python worker,
``time.process_time`` around the Arrow -> matrix conversion, the kernel and the scores -> Arrow
step of a UDF built from the same library calls as sparkscore's; pyspark's own Arrow IPC as the
rest; native predict in the pandas UDF), and what ``default_threads()`` and the kernel strategy
are inside a worker.  Opt-in sections: the inline-vs-arrow rule (``inline``: GLMs and tree
ensembles of growing size inlined as Catalyst expressions vs mapInArrow) and the extra-columns
rule (``extras``: passthrough columns through mapInArrow vs an Arrow UDF); their last results are
bench/results/spark_path_rules.md.  ``scan``: the scoring scan vs the Arrow UDF over parquet reads of
8-50 model columns and 0-50 other columns (the scan rule's boundary; bench/results/spark_path_scan.md).

    python bench/bench_spark_path.py                 # main + stages: 1M rows, 3 repeats (~6-8 min quiet)
    python bench/bench_spark_path.py --quick         # 100k rows, 1 repeat, main table only
    python bench/bench_spark_path.py --sections inline,extras --tag rules
    python bench/bench_spark_path.py --sections scan --tag scan     # scan vs Arrow UDF, 8-50 columns
    python bench/bench_spark_path.py --master 'local-cluster[2,1,1024]' --tag cluster

Writes bench/results/spark_path[_TAG].{json,md}; ``--sections stages --tag stages`` writes the
stage table alone (bench/results/spark_path_stages.{json,md}).
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
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import pandas as pd
import pyarrow as pa  # at module level: pyspark resolves the UDFs' string type hints in this namespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

def _names(d: int) -> list[str]:
    return [f"x{i}" for i in range(d)]


def _data(rows: int, d: int, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(seed).normal(size=(rows, d)), columns=_names(d))


def _source_frame(spark, args, d: int, work: Path):
    """The rows every peer scores: a cached DataFrame, or parquet files read again by each run (two
    files of five row groups, so both cores get tasks).  Spark's parquet reader does not produce the
    Arrow-backed batches that ``spark.sql.execution.arrow.pythonUDF.columnarInput.enabled`` hands to
    Arrow UDFs directly, so UDF peers pay the JVM's row -> Arrow step on either source."""
    if args.source == "cache":
        df = spark.createDataFrame(_data(args.rows, d)).repartition(2).cache()
        df.count()
        return df
    return spark.read.parquet(_write_parquet(_data(args.rows, d), work / f"data_{d}"))


def _write_parquet(frame: pd.DataFrame, folder: Path) -> str:
    """Two files of 100,000-row row groups (five each at 1M rows)."""
    folder.mkdir()
    half = len(frame) // 2
    for i, part in enumerate((frame.iloc[:half], frame.iloc[half:])):
        part.to_parquet(folder / f"part-{i}.parquet", row_group_size=100_000, index=False)
    return str(folder)


def _train_lgbm(d: int, trees: int = 100, leaves: int = 31):
    import lightgbm as lgb

    X = _data(20_000, d, seed=2)
    rng = np.random.default_rng(1)
    y = (X.x0 + 0.5 * X.x1 * X.x2 - X.x3 + rng.normal(size=len(X)) > 0).astype(int)
    return lgb.LGBMClassifier(n_estimators=trees, num_leaves=leaves, verbose=-1).fit(X, y)


def _pandas_udf_native(model_file: str, names: list[str]):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("double")
    def score(batches: Iterator[Tuple[pd.Series, ...]]) -> Iterator[pd.Series]:
        import lightgbm as lgb

        cache = lgb.__dict__.setdefault("_bench_boosters", {})  # lives as long as the worker process
        booster = cache.get(model_file)
        if booster is None:
            booster = cache[model_file] = lgb.Booster(model_file=model_file)
        for columns in batches:
            yield pd.Series(booster.predict(np.column_stack([c.to_numpy() for c in columns])))

    return score


def _identity_map(batches):
    for batch in batches:
        yield pa.RecordBatch.from_arrays([batch.column(0)], names=["p"])


def _identity_udf():
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("double")
    def ident(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        for columns in batches:
            yield columns[0] if isinstance(columns, tuple) else columns

    return ident


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds of the process and of its reaped children) for every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        # after the command name: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based from state
        out[int(entry)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / _TICK)
    return out


class CpuMeter:
    """CPU seconds of the executor JVM and, separately, of every Python worker process below it.

    Python workers are reused across queries (``spark.python.worker.reuse``); one that exits is
    counted through its parent's reaped-children time, so a delta over a query is that query's cost.
    """

    def __init__(self, spark) -> None:
        self.spark = spark
        self.jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())

    def read(self) -> dict[str, float]:
        procs = _proc_cpu()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        python, stack = 0.0, list(children.get(self.jvm_pid, []))
        while stack:
            pid = stack.pop()
            python += procs[pid][1]
            stack += children.get(pid, [])
        jvm = procs.get(self.jvm_pid, (0, 0.0))[1]
        task = _task_cpu_seconds(self.spark)
        return {"jvm": jvm, "python": python, "driver": time.process_time(),
                "task": float("nan") if task is None else task}


def _measure(make, F, meter: CpuMeter) -> dict[str, float]:
    """One query's wall seconds and CPU seconds (JVM, Python workers, driver)."""
    before = meter.read()
    start = time.perf_counter()
    make().agg(F.sum("p")).collect()
    wall = time.perf_counter() - start
    after = meter.read()
    return {"wall": wall, **{k: after[k] - before[k] for k in before}}


def _interleaved(peers: dict, repeat: int, F, meter: CpuMeter) -> tuple[dict, dict, dict]:
    """Median wall seconds and median CPU seconds per peer (after one warm-up each), interleaved.

    Every timed run follows an untimed run of the same query: each peer keeps Python workers of its
    own (pyspark pools workers per UDF environment, and mlflow's spark_udf brings another), so
    without it whichever peer runs right after another's pool inherits the cold start (measured:
    the auto path, the same Arrow UDF as ``sparkscore_udf``, at 434k rows/s vs 576k in one run).
    """
    sums = {k: make().agg(F.sum("p")).collect()[0][0] for k, make in peers.items()}  # warm-up: workers, caches
    runs: dict = {k: [] for k in peers}
    for _ in range(repeat):
        for k, make in peers.items():
            make().agg(F.sum("p")).collect()
            runs[k].append(_measure(make, F, meter))
    seconds = {k: statistics.median(r["wall"] for r in v) for k, v in runs.items()}
    cpu = {k: {part: statistics.median(r[part] for r in v) for part in ("jvm", "python", "driver", "task")}
           for k, v in runs.items()}
    return seconds, sums, cpu


def _timed_udf(source, log: str):
    """sparkscore's Arrow UDF (the calls of ``ModelFunction.__call__``) with CPU timers around each step.

    ``time.process_time`` counts every thread of the worker, the kernel's pool threads included.
    Each task appends one JSON line (pid, rows, seconds per step, threads, strategy) to ``log``.
    """
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("double")
    def timed(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        from sparkscore.compiler.numba_trees import default_threads
        from sparkscore.engines.functions import ScoringFunction

        steps = dict.fromkeys(("load", "to_table", "to_matrix", "kernel", "to_arrow"), 0.0)
        rows, batch_rows, fn, names = 0, 0, None, None
        for batch in batches:
            c0 = time.process_time()
            if fn is None:
                model = source.scorer().model
                names = list(model.signature.names)
                fn = ScoringFunction("timed", "predict", model, (source.name, source.version), "DOUBLE")
                fn._scorer()
            c1 = time.process_time()
            table = pa.Table.from_arrays([batch] if isinstance(batch, pa.Array) else list(batch), names=names)
            c2 = time.process_time()
            X = fn.model.to_matrix(table)
            c3 = time.process_time()
            S = fn._scorer().scores(X)
            c4 = time.process_time()
            out = fn._to_arrow(S)
            c5 = time.process_time()
            for k, a, b in (("load", c0, c1), ("to_table", c1, c2), ("to_matrix", c2, c3), ("kernel", c3, c4),
                            ("to_arrow", c4, c5)):
                steps[k] += b - a
            rows += len(X)
            batch_rows = max(batch_rows, len(X))
            yield out
        with open(log, "a") as fh:
            fh.write(json.dumps({"pid": os.getpid(), "rows": rows, "steps": steps, "batch_rows": batch_rows,
                                 "default_threads": default_threads(),
                                 "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                 "strategy": fn._scorer().strategy_for(batch_rows) if fn else None}) + "\n")

    return timed


def _task_cpu_seconds(spark) -> float | None:
    """Spark's own executorCpuTime summed over every stage so far (task threads only), or None."""
    try:
        sc = spark.sparkContext
        store = sc._jsc.sc().statusStore()
        empty = sc._jvm.java.util.ArrayList()
        stages = store.stageList(empty, False, False, sc._gateway.new_array(sc._jvm.double, 0), empty)
        return sum(stages.apply(i).executorCpuTime() for i in range(stages.size())) / 1e9
    except Exception:  # noqa: BLE001 - a private API; the /proc numbers do not depend on it
        return None


def _in_process_stages(model, native, X: pd.DataFrame, batch: int) -> dict:
    """ns/row of Arrow -> matrix, the compiled kernel and native predict on one batch, in this process."""
    from sparkscore import compiler

    table = pa.Table.from_pandas(X.head(batch), preserve_index=False)
    scorer = compiler.cached(("bench", 1, model.sha256, "cpu"), load=lambda: model)
    M = model.to_matrix(table)
    scorer.scores(M)

    def best(fn):
        out = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t)
        return out / batch * 1e9

    return {"arrow_to_matrix": best(lambda: model.to_matrix(table)),
            "kernel_auto": best(lambda: scorer.scores(M)),
            "native_predict_1thread": best(lambda: native.booster_.predict(M, num_threads=1)),
            "native_predict_all_threads": best(lambda: native.booster_.predict(M))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", default="8,50")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--tag", default="")
    parser.add_argument("--source", choices=("cache", "parquet"), default="cache",
                        help="cache: a cached DataFrame (in-memory columnar, the JVM turns rows into Arrow); "
                             "parquet: read from parquet files each run (where sparkscore's auto path scores at the scan)")
    parser.add_argument("--note", default=None, help="what the machine was doing (into the md)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sections", default="main,stages", help="any of main,stages,inline,extras,scan")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat, args.sections = 100_000, 1, "main"
    sections = set(args.sections.split(","))

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    import mlflow.lightgbm
    import mlflow.pyfunc
    import sparkscore as ss
    from sparkscore.engines import spark as ss_spark

    builder = (SparkSession.builder.master(args.master).appName("bench-spark-path")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2").config("spark.driver.memory", "4g")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"]))
    started = time.perf_counter()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    meter = CpuMeter(spark)
    work = Path(tempfile.mkdtemp(prefix="bench-spark-path-"))
    registry = ss.Registry(work / "registry")
    load_before = open("/proc/loadavg").read().split()[:3]
    doc: dict = {"benchmark": "spark_path", "config": vars(args), "machine": {
        "platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "pyspark": spark.version, "mlflow": mlflow.__version__, "loadavg_before": load_before,
        "columnar_input": spark.conf.get("spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"),
        "note": args.note or "compare ratios from the same run"},
        "main": [], "stages": [], "inline": [], "extras": [], "scan": []}

    for d in [int(x) for x in args.features.split(",")]:
        names = _names(d)
        native = _train_lgbm(d)
        name = f"lgbm100_d{d}"
        registry.register(name, native, feature_names=names)
        model = registry.load(name)
        model_file = str(work / f"{name}.txt")
        native.booster_.save_model(model_file)
        mlflow_dir = str(work / f"mlflow_{name}")
        mlflow.lightgbm.save_model(native.booster_, mlflow_dir)
        df = _source_frame(spark, args, d, work)
        cols = [df[c] for c in names]
        if "main" in sections:
            mlflow_udf = mlflow.pyfunc.spark_udf(spark, mlflow_dir, env_manager="local", result_type="double")
            base = _pandas_udf_native(model_file, names)
            peers = {
                "sparkscore": lambda: ss_spark.predict(df, name, "p", registry=registry),
                "sparkscore_arrow": lambda: ss_spark.predict(df, name, "p", registry=registry, path="arrow"),
                "sparkscore_udf": lambda: ss_spark.predict(df, name, "p", registry=registry, path="udf"),
                "pandas_udf_native": lambda: df.withColumn("p", base(*cols)),
                "mlflow_spark_udf": lambda: df.withColumn("p", mlflow_udf(*cols)),
            }
            seconds, sums, cpu = _interleaved(peers, args.repeat, F, meter)
            cpu_s = {k: c["jvm"] + c["python"] for k, c in cpu.items()}
            row = {"features": d, "rows": args.rows, "path": ss_spark.predict_path(df, model).path,
                   "seconds": seconds, "rows_per_s": {k: args.rows / v for k, v in seconds.items()},
                   "cpu_seconds": cpu, "cpu_ns_per_row": {k: v / args.rows * 1e9 for k, v in cpu_s.items()},
                   "speedup_vs_pandas_udf": seconds["pandas_udf_native"] / seconds["sparkscore"],
                   "speedup_vs_mlflow_spark_udf": seconds["mlflow_spark_udf"] / seconds["sparkscore"],
                   "cpu_speedup_vs_pandas_udf": cpu_s["pandas_udf_native"] / cpu_s["sparkscore"],
                   "cpu_speedup_vs_mlflow_spark_udf": cpu_s["mlflow_spark_udf"] / cpu_s["sparkscore"],
                   "sum_abs_diff_vs_native": abs(sums["sparkscore"] - sums["pandas_udf_native"]),
                   "loadavg": open("/proc/loadavg").read().split()[:3]}
            doc["main"].append(row)
            print(json.dumps(row), flush=True)
        if "stages" in sections:
            ident = _identity_udf()
            log = str(work / f"timed_{d}.jsonl")
            mv = registry.get(name)
            timed = _timed_udf(ss_spark._source(registry, mv.name, mv.version, mv.sha256, spark), log)
            base = _pandas_udf_native(model_file, names)
            peers = {
                "jvm_scan_sum": lambda: df.withColumn("p", F.col("x0")),
                "arrow_udf_identity": lambda: df.withColumn("p", ident(*cols)),
                "mapInArrow_identity": lambda: df.mapInArrow(_identity_map, "p double"),
                "sparkscore_udf": lambda: ss_spark.predict(df, name, "p", registry=registry, path="udf"),
                "sparkscore_udf_timed": lambda: df.withColumn("p", timed(*cols)),
                "pandas_udf_native": lambda: df.withColumn("p", base(*cols)),
            }
            seconds, _, cpu = _interleaved(peers, args.repeat, F, meter)
            tasks = [json.loads(line) for line in open(log)]
            timed_rows = sum(t["rows"] for t in tasks)
            steps = {k: sum(t["steps"][k] for t in tasks) / timed_rows * 1e9 for k in tasks[0]["steps"]}
            row = {"features": d, "rows": args.rows,
                   "wall_ns_per_row": {k: v / args.rows * 1e9 for k, v in seconds.items()},
                   "cpu_ns_per_row": {k: {part: v / args.rows * 1e9 for part, v in c.items()} for k, c in cpu.items()},
                   "in_udf_cpu_ns_per_row": steps,
                   "worker": {k: sorted({str(t[k]) for t in tasks}) for k in
                              ("default_threads", "OMP_NUM_THREADS", "strategy", "batch_rows")},
                   "in_process_ns_per_row": _in_process_stages(model, native, _data(50_000, d), 10_000)}
            doc["stages"].append(row)
            print(json.dumps(row), flush=True)
        df.unpersist()

    if "inline" in sections:  # the rule's boundary: inlined Catalyst expressions vs mapInArrow
        from sqlglot import exp

        from sparkscore.optimizer.context import OptimizerOptions
        from sparkscore.optimizer.dialect import generate
        from sparkscore.optimizer.inline_models import inline_call

        unlimited = OptimizerOptions(inline_max_features=10**6, inline_max_nodes=10**7)
        d = 32
        names = _names(d)
        df = spark.createDataFrame(_data(args.rows, d)).repartition(2).cache()
        df.count()
        from sklearn.linear_model import LogisticRegression

        X = _data(5_000, d, seed=3)
        y = (X.x0 - X.x1 > 0).astype(int)
        shapes = [("glm_8", LogisticRegression().fit(X[names[:8]], y)),
                  ("glm_32", LogisticRegression().fit(X, y))]
        for trees, leaves in ((4, 15), (16, 15), (32, 15)):  # 116-930 nodes around inline_max_nodes=255
            import lightgbm as lgb

            shapes.append((f"lgbm_{trees}x{leaves}",
                           lgb.LGBMClassifier(n_estimators=trees, num_leaves=leaves, verbose=-1).fit(X[names[:8]], y)))
        for label, native in shapes:
            registry.register(label, native)
            model = registry.load(label)
            used = list(model.signature.names)
            sub = df.select(*used)
            sql, how = inline_call(model, "predict", [exp.column(c, quoted=True) for c in used], unlimited,
                                   [True] * len(used))
            inline_sql = generate(sql, "spark")
            peers = {"inline": lambda: sub.select(F.expr(inline_sql).alias("p")),
                     "arrow": lambda: ss_spark.predict(sub, label, "p", registry=registry, path="arrow")}
            try:
                seconds, sums, _ = _interleaved(peers, args.repeat, F, meter)
                error = None
            except Exception as exc:  # e.g. generated code over the JVM's limits: record it, keep going
                seconds, sums, error = {}, {}, str(exc).splitlines()[0][:200]
            est = model.estimator
            row = {"model": label, "size": how, "nodes": int(getattr(est, "n_nodes", 0)),
                   "features": len(used), "auto_path": ss_spark.predict_path(sub, model).path,
                   "seconds": seconds, "error": error,
                   "inline_speedup": seconds["arrow"] / seconds["inline"] if seconds else None,
                   "sum_abs_diff": abs(sums["inline"] - sums["arrow"]) if sums else None}
            doc["inline"].append(row)
            print(json.dumps(row), flush=True)
        df.unpersist()

    if "extras" in sections:  # passthrough columns: mapInArrow carries them both ways, a UDF leaves them in the JVM
        d = 8
        native = _train_lgbm(d)
        registry.register("extras", native, feature_names=_names(d))
        for extra in (0, 8, 16, 32):
            frame = _data(args.rows, d)
            for i in range(extra):
                frame[f"e{i}"] = frame.x0 * (i + 1)
            df = spark.createDataFrame(frame).repartition(2).cache()
            df.count()
            peers = {path: (lambda path=path: ss_spark.predict(df, "extras", "p", registry=registry, path=path))
                     for path in ("arrow", "udf")}
            seconds, _, _ = _interleaved(peers, args.repeat, F, meter)
            row = {"model_columns": d, "extra_columns": extra, "seconds": seconds,
                   "arrow_speedup_vs_udf": seconds["udf"] / seconds["arrow"]}
            doc["extras"].append(row)
            print(json.dumps(row), flush=True)
            df.unpersist()

    if "scan" in sections:  # the scan rule's boundary: model columns and other columns, scan vs Arrow UDF
        for d, extra in ((8, 0), (16, 0), (24, 0), (32, 0), (50, 0), (16, 16), (50, 12), (50, 50)):
            name = f"scan_{d}_{extra}"
            registry.register(name, _train_lgbm(d), feature_names=_names(d))
            frame = _data(args.rows, d)
            for i in range(extra):
                frame[f"e{i}"] = frame.x0 * (i + 1)
            df = spark.read.parquet(_write_parquet(frame, work / name))
            peers = {path: (lambda path=path: ss_spark.predict(df, name, "p", registry=registry, path=path))
                     for path in ("scan", "udf")}
            seconds, _, cpu = _interleaved(peers, args.repeat, F, meter)
            row = {"model_columns": d, "extra_columns": extra, "seconds": seconds,
                   "auto_path": ss_spark.predict_path(df, registry.load(name)).path,
                   "cpu_ns_per_row": {k: (c["jvm"] + c["python"]) / args.rows * 1e9 for k, c in cpu.items()},
                   "scan_speedup_vs_udf": seconds["udf"] / seconds["scan"]}
            doc["scan"].append(row)
            print(json.dumps(row), flush=True)

    doc["machine"]["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    doc["machine"]["script_wall_s"] = time.perf_counter() - started
    spark.stop()
    _write(doc, args)


def _write(doc: dict, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "spark_path" + (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    m = doc["machine"]
    lines = [f"# Spark scoring path ({args.master})", "",
             f"{args.rows:,} rows, LightGBM binary 100 trees x 31 leaves, P(positive) summed; median of "
             f"{args.repeat} interleaved runs after a warm-up. pyspark {m['pyspark']}, mlflow-skinny {m['mlflow']}, "
             f"{m['cpus']} cores, loadavg before {' '.join(m['loadavg_before'])}, after "
             f"{' '.join(m.get('loadavg_after', []))}. Input: {doc['config'].get('source', 'cache')} "
             f"(Spark's columnarInput {m.get('columnar_input', '?')}: it applies to Arrow-backed batches only, "
             f"not to Spark's parquet reader). {args.note or 'Compare ratios from the same run.'}", ""]
    if doc["main"]:
        lines += ["Wall time (rows/s, median) and CPU time (ns/row: executor JVM + Python workers, median):", "",
                  "| features | auto path | sparkscore rows/s | sparkscore (arrow path) | sparkscore (udf path) | "
                  "pandas UDF + native | mlflow spark_udf | vs pandas UDF | vs spark_udf | CPU ns/row sparkscore | "
                  "CPU pandas UDF | CPU spark_udf | CPU vs pandas UDF | CPU vs spark_udf | loadavg |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in doc["main"]:
            rps, c = r["rows_per_s"], r.get("cpu_ns_per_row", {})
            lines.append(f"| {r['features']} | {r['path']} | {rps['sparkscore']:,.0f} | {rps['sparkscore_arrow']:,.0f} | "
                         f"{rps.get('sparkscore_udf', float('nan')):,.0f} | {rps['pandas_udf_native']:,.0f} | {rps['mlflow_spark_udf']:,.0f} | "
                         f"{r['speedup_vs_pandas_udf']:.2f}x | {r['speedup_vs_mlflow_spark_udf']:.2f}x | "
                         f"{c.get('sparkscore', float('nan')):,.0f} | {c.get('pandas_udf_native', float('nan')):,.0f} | "
                         f"{c.get('mlflow_spark_udf', float('nan')):,.0f} | "
                         f"{r.get('cpu_speedup_vs_pandas_udf', float('nan')):.2f}x | "
                         f"{r.get('cpu_speedup_vs_mlflow_spark_udf', float('nan')):.2f}x | {' '.join(r['loadavg'])} |")
    if doc["stages"]:
        lines += ["", "Where the CPU time goes (ns per row, **CPU time** from /proc utime+stime, median of the "
                  "repeats; `task` = Spark's executorCpuTime, task threads only; wall for reference):", "",
                  "| features | query | wall | JVM CPU | Python workers CPU | total CPU | Spark task CPU |",
                  "|---|---|---|---|---|---|---|"]
        for r in doc["stages"]:
            for q, c in r["cpu_ns_per_row"].items():
                lines.append(f"| {r['features']} | {q} | {r['wall_ns_per_row'][q]:,.0f} | {c['jvm']:,.0f} | "
                             f"{c['python']:,.0f} | {c['jvm'] + c['python']:,.0f} | {c['task']:,.0f} |")
        lines += ["", "Per stage (CPU ns/row; derived from the rows above and from `time.process_time` inside "
                  "the timed UDF, which makes the same library calls as sparkscore's Arrow UDF):", "",
                  "| features | JVM scan | JVM row->Arrow + transfer, out and back | pyspark Arrow IPC in Python "
                  "(identity UDF) | Arrow->table | table->matrix | kernel | scores->Arrow | Python rest "
                  "(IPC, framework) | native predict (pandas UDF, Python) | worker threads / OMP / strategy |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in doc["stages"]:
            c, st, w = r["cpu_ns_per_row"], r["in_udf_cpu_ns_per_row"], r["worker"]
            in_udf = st["to_table"] + st["to_matrix"] + st["kernel"] + st["to_arrow"]
            lines.append(f"| {r['features']} | {c['jvm_scan_sum']['jvm']:,.0f} | "
                         f"{c['arrow_udf_identity']['jvm'] - c['jvm_scan_sum']['jvm']:,.0f} | "
                         f"{c['arrow_udf_identity']['python']:,.0f} | {st['to_table']:,.0f} | {st['to_matrix']:,.0f} | "
                         f"{st['kernel']:,.0f} | {st['to_arrow']:,.0f} | "
                         f"{c['sparkscore_udf_timed']['python'] - in_udf:,.0f} | "
                         f"{c['pandas_udf_native']['python']:,.0f} | {'/'.join(w['default_threads'])} / "
                         f"{'/'.join(w['OMP_NUM_THREADS'])} / {'/'.join(w['strategy'])} |")
    if doc["inline"]:
        lines += ["", "Inline (Catalyst expressions) vs mapInArrow, 8 or 32 features (the rule's boundary):", "",
                  "| model | nodes | auto picks | inline s | arrow s | inline speed-up | note |",
                  "|---|---|---|---|---|---|---|"]
        for r in doc["inline"]:
            s = r["seconds"]
            lines.append(f"| {r['model']} | {r['nodes']} | {r['auto_path']} | {s.get('inline', float('nan')):.2f} | "
                         f"{s.get('arrow', float('nan')):.2f} | "
                         f"{(r['inline_speedup'] or float('nan')):.2f}x | {r['error'] or ''} |")
    if doc["extras"]:
        lines += ["", "Passthrough columns (8 model columns): mapInArrow vs Arrow UDF:", "",
                  "| extra columns | arrow s | udf s | arrow speed-up |", "|---|---|---|---|"]
        for r in doc["extras"]:
            lines.append(f"| {r['extra_columns']} | {r['seconds']['arrow']:.2f} | {r['seconds']['udf']:.2f} | "
                         f"{r['arrow_speedup_vs_udf']:.2f}x |")
    if doc["scan"]:
        lines += ["", "Scoring scan vs Arrow UDF over a parquet read (the `auto` rule's boundary):", "",
                  "| model columns | other columns | auto picks | scan s | udf s | scan speed-up | CPU ns/row scan | "
                  "CPU ns/row udf |", "|---|---|---|---|---|---|---|---|"]
        for r in doc["scan"]:
            s, c = r["seconds"], r["cpu_ns_per_row"]
            lines.append(f"| {r['model_columns']} | {r['extra_columns']} | {r['auto_path']} | {s['scan']:.2f} | "
                         f"{s['udf']:.2f} | {r['scan_speedup_vs_udf']:.2f}x | {c['scan']:,.0f} | {c['udf']:,.0f} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
