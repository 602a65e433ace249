"""Batch-score a table with a registry model and write the result to Delta, atomically and idempotently.

    spark-submit jobs/score.py --model churn@prod --input customers --output /data/scores \\
        --mode append --job-id 2024-06-01 --keep-columns id,region

The model ref is resolved once and pinned (name, version, sha256).  The output is one Delta
commit: a job killed at any moment leaves the target at its previous version, and re-running
the same --job-id with the same model version adds nothing.  The commit records model name,
version, sha256, job id, rows and seconds.  Writes through delta-spark when its JARs are loaded
(``--packages io.delta:delta-spark_2.13:4.0.0``), otherwise through delta-rs (``deltalake``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spark-submit jobs/score.py",
        description=__doc__.split("\n\n")[0],
        epilog="Exit status 0 also when the job id was already committed (nothing is added).",
    )
    parser.add_argument("--model", required=True, help="registry model ref: name, name/3 or name@alias")
    parser.add_argument("--input", required=True, help="catalog table / temp view, or a parquet or Delta path")
    parser.add_argument("--output", required=True,
                        help="Delta table path (or a catalog table name: needs delta-spark)")
    parser.add_argument("--mode", choices=("append", "overwrite"), default="append",
                        help="append rows, or replace the table's contents in one commit (default: append)")
    parser.add_argument("--job-id", default=None,
                        help="idempotency key: re-running a committed job id with the same model version "
                             "adds nothing (default: a fresh random id)")
    parser.add_argument("--keep-columns", default=None,
                        help="comma-separated input columns to copy to the output (default: all)")
    parser.add_argument("--output-col", default="prediction", help="name of the score column (default: prediction)")
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="rows per Arrow batch handed to the model (spark.sparkscore.batchRows)")
    parser.add_argument("--registry", default=None, help="registry URI (default: $SPARKSCORE_HOME or ~/.sparkscore)")
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

    import sparkscore as ss
    from sparkscore.engines import delta
    from sparkscore.engines.spark import BATCH_ROWS_CONF
    from sparkscore.errors import JobError, SparkscoreError

    started = time.time()
    spark = (SparkSession.builder.appName(f"sparkscore score {args.model}")
             .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS").getOrCreate())
    try:
        if args.batch_rows:
            spark.conf.set(BATCH_ROWS_CONF, str(args.batch_rows))
        registry = ss.Registry(args.registry)
        mv = registry.get(args.model)
        stamp = delta.JobStamp(args.job_id or uuid.uuid4().hex, mv.name, mv.version, mv.sha256)
        log(f"job {stamp.job_id}: {mv.name}/{mv.version} (sha256 {mv.sha256[:12]}) {args.input} -> {args.output} "
            f"[{args.mode}]")
        with_delta_spark = delta.has_delta_spark(spark)
        is_table = "/" not in args.output and not delta.is_delta_path(args.output)
        if is_table and not with_delta_spark:
            raise JobError(f"--output {args.output!r} is a table name, which needs delta-spark on the classpath; "
                           "pass a Delta path or add --packages io.delta:delta-spark_2.13:4.0.0")
        if not is_table:
            prior = delta.find_commit(args.output, stamp)
            if prior is not None:
                log(f"job {stamp.job_id} with {mv.name}/{mv.version} is already committed "
                    f"(table version {prior.get('version')}); nothing to do")
                print(f"sparkscore: 0 rows added: job {stamp.job_id} already committed with {mv.name}/{mv.version}")
                return 0
        df = delta.read_input(spark, args.input)
        keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()] if args.keep_columns else df.columns
        scored = ss.spark.predict(df, f"{mv.name}/{mv.version}", args.output_col, registry)
        scored = scored.select(*keep, args.output_col)

        stop = threading.Event()
        threading.Thread(target=watch_progress, args=(spark, stop), daemon=True).start()
        try:
            if with_delta_spark:
                delta.write_delta_spark(scored, args.output, args.mode, stamp, is_table)
                rows, version = None, None
            else:
                from pyspark.sql.pandas.types import to_arrow_schema

                staging = delta.stage_parquet(scored, args.output)
                log(f"scored and staged; committing to {args.output}")
                result = delta.commit_staged(args.output, staging, to_arrow_schema(scored.schema), args.mode,
                                             stamp, started)
                if result is None:
                    print(f"sparkscore: 0 rows added: job {stamp.job_id} was committed by another run meanwhile")
                    return 0
                rows, version = result.rows, result.table_version
        finally:
            stop.set()
        seconds = time.time() - started
        rate = f"{rows / seconds:,.0f} rows/s" if rows is not None else "rows in the Delta history"
        print(f"sparkscore: {rows if rows is not None else '?'} rows in {seconds:.1f}s ({rate}) with "
              f"{mv.name}/{mv.version} sha256 {mv.sha256[:12]} -> {args.output}"
              f"{f' version {version}' if version is not None else ''} [job {stamp.job_id}, {args.mode}]")
        return 0
    except SparkscoreError as exc:
        print(f"sparkscore: error: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
