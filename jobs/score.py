"""Batch-score a table with a registry model and write the result to Delta, atomically and idempotently.

    spark-submit jobs/score.py --model churn@prod --input customers --output /data/scores \\
        --mode append --job-id 2024-06-01 --keep-columns id,region

The model ref is resolved once and pinned (name, version, sha256).  The output is one Delta
commit: a job killed at any moment leaves the target at its previous version, and re-running
the same --job-id with the same model version adds nothing.  Without --job-id the id is derived
from the input (its files' paths, sizes and mtimes, or a Delta input's version), the model
version, the output and the row options, so re-running the same command adds nothing either.
The commit records model name, version, sha256, job id, rows and seconds; rows carry ``model`` /
``model_version`` (new tables; appends follow the table).  Columns that differ from the table's
fail before anything is written unless ``--schema merge``.  Writes through delta-spark when its
JARs are loaded (``--packages io.delta:delta-spark_2.13:4.0.0``), otherwise through delta-rs
(``deltalake``).  Same rules, same shared code, as ``sparkscore score`` on the embedded engine.

``--log TABLE [--log-fraction F] [--log-max-rows N] [--log-id COLUMN]`` also appends a sampled
part of the inputs and outputs to a prediction log, all-or-nothing with the job (the protocol is in
``sparkscore.monitor.predlog``).  The sample is drawn by Spark (a hash of job id and request id,
the same hash as the embedded engine, bottom-k by it), only the sampled rows reach the driver,
which scores them with the same code and commits them after the output commit.

``--model`` may be a route (``churn@ab``): each row is scored by the arm its key's bucket falls in,
exactly as ``PREDICT('churn@ab', *)`` (``sparkscore.engines.routejob``); the commit is stamped with
the route version and every arm's pin.  ``--with-arm`` adds ``arm``, ``arm_version`` and
``route_version`` columns.  With ``--log`` the route's shadow arms score the logged rows and are
logged with ``shadow = true`` in the same log commit (never in the output); without it they are
not scored.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit jobs/score.py",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status 0 also when the job id was already committed (nothing is added).",
    )
    parser.add_argument("--model", required=True, help="registry model ref: name, name/3, name@alias or a route "
                                                         "name@route")
    parser.add_argument("--input", required=True, help="catalog table / temp view, or a parquet or Delta path")
    parser.add_argument("--output", required=True,
                        help="Delta table path (or a catalog table name: needs delta-spark)")
    parser.add_argument("--mode", choices=("append", "overwrite"), default="append",
                        help="append rows, or replace the table's contents in one commit (default: append)")
    parser.add_argument("--job-id", default=None,
                        help="idempotency key: re-running a committed job id with the same model version "
                             "adds nothing (default: derived from the input's files or Delta version, the model "
                             "version, the output and the options, so re-running the same command adds nothing)")
    parser.add_argument("--keep-columns", default=None,
                        help="comma-separated input columns to copy to the output (default: all)")
    parser.add_argument("--output-col", default="prediction", help="name of the score column (default: prediction)")
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="rows per Arrow batch handed to the model (spark.sparkscore.batchRows)")
    parser.add_argument("--registry", default=None, help="registry URI (default: $SPARKSCORE_HOME or ~/.sparkscore)")
    parser.add_argument("--schema", choices=("strict", "merge"), default="strict",
                        help="strict: columns that differ from the table's fail before writing; merge: Delta schema "
                             "evolution (mergeSchema) adds columns, missing ones are NULL (default: strict)")
    parser.add_argument("--model-columns", action=argparse.BooleanOptionalAction, default=None,
                        help="store the model name and version per row (columns model, model_version; default: on "
                             "for new tables, as the table has it for appends)")
    parser.add_argument("--log", default=None, help="prediction log Delta path: also log a sampled part of the "
                                                     "inputs and outputs, all-or-nothing with the job")
    parser.add_argument("--log-fraction", type=float, default=0.01, help="share of rows logged (default 0.01)")
    parser.add_argument("--log-max-rows", type=int, default=100_000, help="most rows logged (default 100000)")
    parser.add_argument("--with-arm", action="store_true",
                        help="a route: add the columns arm, arm_version and route_version (which arm scored a row)")
    parser.add_argument("--log-id", default=None, help="input column whose value is each row's request_id "
                                                        "(default: <job id>:<Spark row id>)")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[sparkscore {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def watch_progress(spark, stop: threading.Event, every_s: float = 5.0) -> None:
    """Log task progress of the running Spark stages until ``stop`` is set."""
    tracker = spark.sparkContext.statusTracker()
    while not stop.wait(every_s):
        for stage_id in tracker.getActiveStageIds():
            info = tracker.getStageInfo(stage_id)
            if info is not None:
                log(f"stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} tasks done, "
                    f"{info.numActiveTasks} running")


def main(argv=None) -> int:
    args = parse_args(argv)
    from pyspark.sql import SparkSession

    from sparkscore.errors import SparkscoreError

    started = time.time()
    spark = (SparkSession.builder.appName(f"sparkscore score {args.model}")
             .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS").getOrCreate())
    if spark.sparkContext.getConf().get("spark.log.level", None) is None:
        spark.sparkContext.setLogLevel("WARN")  # the job's own lines, not Spark's INFO chatter (unless asked)
    try:
        return run(spark, args, started)
    except KeyboardInterrupt:
        from sparkscore.engines.delta import table_state

        print(f"sparkscore: error: interrupted: staging files removed, {table_state(args.output)}", file=sys.stderr)
        return 130
    except SparkscoreError as exc:
        print(f"sparkscore: error: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()


def run(spark, args: argparse.Namespace, started: float) -> int:
    import sparkscore as ss
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import to_arrow_schema

    from sparkscore.engines import delta, routejob
    from sparkscore.engines.spark import BATCH_ROWS_CONF
    from sparkscore.errors import JobError, SparkscoreError

    if args.batch_rows:
        spark.conf.set(BATCH_ROWS_CONF, str(args.batch_rows))
    registry = ss.Registry(args.registry)
    job = routejob.resolve(registry, args.model, with_arm=args.with_arm, logged=bool(args.log))  # pins every arm
    mv = job.first.mv
    with_delta_spark = delta.has_delta_spark(spark)
    is_table = "/" not in args.output and not delta.is_delta_path(args.output)
    if is_table and not with_delta_spark:
        raise JobError(f"--output {args.output!r} is a table name, which needs delta-spark on the classpath; "
                       "pass a Delta path or add --packages io.delta:delta-spark_2.13:4.0.0")
    if not is_table:
        delta.check_output(args.output)  # a file or someone else's directory: refuse before reading anything
    df = delta.read_input(spark, args.input)
    keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()] if args.keep_columns else df.columns
    unknown = [c for c in keep if c not in df.columns]
    if unknown:
        raise JobError(f"--keep-columns {unknown[0]!r} is not an input column; use some of {', '.join(df.columns)}")
    model = job.first.model
    job.check_columns(df.columns, [f.dataType.simpleString() for f in df.schema], "spark")
    existing = _existing_schema(spark, args.output, is_table, with_delta_spark)
    record_model = delta.wants_model_columns(existing, args.model_columns)
    delta.check_model_columns([*keep, args.output_col], record_model)
    clash = [c for c in routejob.ARM_COLUMNS if c in (*keep, args.output_col)] if args.with_arm else []
    if clash:
        raise JobError(f"output column {clash[0]!r} is also one of --with-arm's columns "
                       f"({', '.join(routejob.ARM_COLUMNS)}); drop it from --keep-columns or rename it")
    options = delta.row_options(args.mode, keep, args.output_col, record_model)
    if args.with_arm:
        options["with_arm"] = True
    job_id = args.job_id or delta.derive_job_id(
        delta.spark_input_identity(spark, args.input, df), job.stamp_model, args.output, options)
    stamp = delta.JobStamp(job_id, *job.stamp_model, job.arm_pins)
    pinned = f"route {job.route.ref} v{job.route.version}" if job.routed else f"{mv.name}/{mv.version}"
    derived = "" if args.job_id else " (derived from the input, model, output and options)"
    log(f"job {stamp.job_id}{derived}: {job.describe()} {args.input} -> {args.output} [{args.mode}]")
    if job.routed:  # the bucket PREDICT computes, in Spark SQL, and each row's arm
        df = routejob.spark_with_bucket(df, job)
    log_spec = None
    if args.log:
        from sparkscore.engines import joblog
        from sparkscore.monitor.predlog import LogSpec

        log_spec = LogSpec(args.log, args.log_fraction, args.log_max_rows, args.log_id)
        joblog.check_log(log_spec, args.output, df.columns, model, job.log_schema())
        for leftover in delta.remove_leftovers(log_spec.table):
            log(f"removed {leftover}, left by a killed run")
    if not is_table:
        for leftover in delta.remove_leftovers(args.output):  # of killed runs: also when there is nothing to do
            log(f"removed {leftover}, left by a killed run")
        prior = delta.find_commit(args.output, stamp)
        if prior is not None and log_spec is not None and delta.find_commit(log_spec.table, stamp) is None:
            log(f"job {stamp.job_id}: output already committed, its prediction log is not: completing the log")
            rows_logged, _ = _write_log(df, log_spec, stamp, job, args.output, started)
            print(f"sparkscore: 0 rows added: job {stamp.job_id} already committed with {pinned}; "
                  f"{rows_logged} rows logged to {log_spec.table}")
            return 0
        if prior is not None:
            log(f"job {stamp.job_id} with {pinned} is already committed "
                f"(table version {prior.get('version')}); nothing to do")
            print(f"sparkscore: 0 rows added: job {stamp.job_id} already committed with {pinned}")
            return 0
    # with a prediction log, output and log come from the same row-stable compiled scorer, bit for bit: the
    # log is scored on the driver, and the inlined SQL form of a small model sums in another order (1 ulp apart)
    if job.routed:  # each arm a gated UDF over its own rows (the compiled scorer, as the log)
        scored = routejob.spark_scored(df, job, args.output_col, registry)
    else:
        scored = ss.spark.predict(df, f"{mv.name}/{mv.version}", args.output_col, registry,
                                  path="udf" if log_spec is not None else None, backend=job.first.backend)
    columns = [*keep, args.output_col]
    if record_model:
        version = (routejob.spark_by_arm([int(a.mv.version) for a in job.arms]) if job.routed
                   else F.lit(mv.version))
        scored = (scored.withColumn(delta.MODEL_COLUMNS[0], F.lit(mv.name))
                  .withColumn(delta.MODEL_COLUMNS[1], version.cast("bigint")))
        columns += list(delta.MODEL_COLUMNS)
    if args.with_arm:
        scored = (scored.withColumn("arm", routejob.spark_by_arm([a.label for a in job.arms]).cast("string"))
                  .withColumn("arm_version", routejob.spark_by_arm([int(a.mv.version) for a in job.arms])
                              .cast("bigint"))
                  .withColumn("route_version", F.lit(int(job.route.version)).cast("bigint")))
        columns += list(routejob.ARM_COLUMNS)
    scored = scored.select(*columns)
    schema = to_arrow_schema(scored.schema)
    delta.check_schema(args.output, existing, schema, args.schema)  # before anything is written

    stop = threading.Event()
    threading.Thread(target=watch_progress, args=(spark, stop), daemon=True).start()
    try:
        if with_delta_spark:
            delta.write_delta_spark(scored, args.output, args.mode, stamp, is_table, merge_schema=args.schema == "merge")
            rows, version = None, None
        else:
            try:
                with delta.staging(args.output, create=False) as staging:
                    delta.stage_parquet(scored, staging)
                    log(f"scored and staged; committing to {args.output}")
                    result = delta.commit_staged(args.output, staging, schema, args.mode, stamp, started, args.schema)
            except KeyboardInterrupt:
                raise
            except SparkscoreError as exc:  # e.g. the commit: its line ends with the table's state, said once
                raise delta.with_table_state(exc, args.output) from exc
            except Exception as exc:  # py4j / Spark errors: one line, and what became of the table
                first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)[:300]
                raise JobError(f"job {stamp.job_id}: writing {args.output} failed ({type(exc).__name__}: {first}); "
                               f"staging files removed, {delta.table_state(args.output)}; fix the cause and re-run "
                               "the same command") from exc
            if result is None:
                print(f"sparkscore: 0 rows added: job {stamp.job_id} was committed by another run meanwhile")
                return 0
            rows, version = result.rows, result.table_version
    finally:
        stop.set()
    logged = ""
    if log_spec is not None:
        rows_logged, _ = _write_log(df, log_spec, stamp, job, args.output, started)
        logged = f"; {rows_logged} rows logged to {log_spec.table}"
    seconds = time.time() - started
    rate = f"{rows / seconds:,.0f} rows/s" if rows is not None else "rows in the Delta history"
    print(f"sparkscore: {rows if rows is not None else '?'} rows in {seconds:.1f}s ({rate}) with "
          f"{pinned} sha256 {stamp.sha256[:12]} -> {args.output}"
          f"{f' version {version}' if version is not None else ''} [job {stamp.job_id}, {args.mode}]{logged}")
    return 0


def _write_log(df, spec, stamp, job, output: str, started: float) -> tuple[int, object]:
    """Sample ``df`` in Spark (hash filter, then the ``max_rows`` smallest hashes), collect only those
    rows, score them on the driver with the shared code and commit them to the log (after the output).

    A route's ``df`` carries each row's bucket: the driver scores each sampled row by its arm, and
    by every shadow arm (logged with ``shadow = true``)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    from sparkscore.engines import joblog
    from sparkscore.monitor import predlog

    bound = job.log_columns(df.columns)
    job_id, fraction = stamp.job_id, spec.fraction
    if spec.id_column:
        ids = F.col(spec.id_column).cast("string")
        nulls = df.filter(F.col(spec.id_column).isNull()).limit(1).count()
        if nulls:
            raise predlog.PredictionLogError(f"--log-id column {spec.id_column!r} has NULL values; a logged row "
                                             "needs a request id")
    else:
        ids = F.concat(F.lit(f"{job_id}:"), F.monotonically_increasing_id().cast("string"))

    def signed_hash(request_id):  # order-preserving uint64 -> int64 (Spark has no unsigned type)
        h = predlog.sample_hash(job_id, pa.array(request_id, pa.string()))
        return pd.Series((h ^ np.uint64(1 << 63)).view(np.int64))
    signed_hash.__annotations__ = {"request_id": pd.Series, "return": pd.Series}  # not strings: see __future__
    signed_hash = F.pandas_udf(signed_hash, LongType())

    limit = np.uint64(min(int(fraction * 2.0 ** 64), 2 ** 64 - 1)) if fraction < 1 else None
    picked = df.select(*bound, ids.alias("request_id")).withColumn("_signed", signed_hash("request_id"))
    if limit is not None:
        picked = picked.filter(F.col("_signed") < int((limit ^ np.uint64(1 << 63)).view(np.int64)))
    picked = picked.orderBy("_signed", "request_id").limit(spec.max_rows)
    table = picked.toArrow() if hasattr(picked, "toArrow") else pa.Table.from_pandas(picked.toPandas())
    signed = table.column("_signed").to_numpy()
    table = table.drop(["_signed"]).append_column("_hash", pa.array(signed.view(np.uint64)))
    table = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    collector = joblog.LogCollector(spec, stamp, job)
    collector.bound = bound
    collector.keep.add(table)
    return joblog.commit_log(collector, output, stamp, started, log)


def _existing_schema(spark, output: str, is_table: bool, with_delta_spark: bool):
    """The target table's schema (Delta or Arrow), or None when it does not exist yet."""
    from sparkscore.engines import delta

    if not with_delta_spark:
        return delta.table_schema(output)
    from pyspark.sql.pandas.types import to_arrow_schema

    if is_table:
        return to_arrow_schema(spark.table(output).schema) if spark.catalog.tableExists(output) else None
    try:
        return to_arrow_schema(spark.read.format("delta").load(output).schema)
    except Exception:  # AnalysisException: not a Delta table (yet)
        return None


if __name__ == "__main__":
    sys.exit(main())
