"""Track a model's drift over time on Spark: per-window metrics of a prediction log, appended to a metrics table.

    spark-submit jobs/monitor.py --model churn@prod --log /data/predlog --window 1d \\
        --feedback /data/feedback --metrics-table /data/metrics [--reference previous] [--fail-on-drift]

The Spark form of ``sparkscore monitor REF --log TABLE`` (which runs this job with ``--engine spark``):
the log's rows of the pinned model version are read, bucketed into epoch-aligned UTC windows and
left-joined to their latest feedback label by Spark SQL, and profiled by ONE grouped aggregate scan
(the window is the GROUP BY key) plus the per-partition sketches; only the aggregated rows reach the
driver (``ss.monitor.track(..., engine=spark)``).  Each window is compared with the training profile
stored with the version (default) or with the previous window (``--reference previous``).

``--metrics-table`` stores the rows in a Delta table in ONE commit that replaces this run's windows
(same model, version, window length and reference): re-running adds nothing, a window still filling
up is replaced, and late feedback updates that window's quality metrics.  Written through
delta-spark when its JARs are loaded, otherwise through delta-rs, like ``jobs/score.py``.

Exit status: 0; 3 with ``--fail-on-drift`` when a metric crosses its threshold (one line on stderr
naming the features and windows, as ``sparkscore monitor``); 2 on an error (one line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

#: the exit status of ``--fail-on-drift`` finding drift: ``sparkscore.cli.EXIT_DRIFT`` (tested equal)
EXIT_DRIFT = 3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spark-submit jobs/monitor.py", description=__doc__.split("\n\n")[0],
                                     epilog=f"Exit status 0; {EXIT_DRIFT} with --fail-on-drift and drift; 2 on errors.")
    parser.add_argument("--model", required=True, help="registry model ref: name, name/3 or name@alias")
    parser.add_argument("--log", required=True, help="prediction log Delta path (written by score/serve --log)")
    parser.add_argument("--window", default="1d", help="window length: 1d, 6h, 15m, 30s or 1w (default 1d)")
    parser.add_argument("--reference", choices=("training", "previous"), default="training",
                        help="compare each window with the training profile (default) or the window before it")
    parser.add_argument("--feedback", default=None, help="feedback Delta table (request_id, ts, label): quality metrics")
    parser.add_argument("--metrics-table", default=None,
                        help="Delta table the rows are stored in (re-runs replace their windows, never duplicate)")
    parser.add_argument("--start", default=None, help="first time monitored, ISO (UTC when naive)")
    parser.add_argument("--end", default=None, help="end of the monitored range (excluded), ISO")
    parser.add_argument("--registry", default=None, help="registry URI (default: $SPARKSCORE_HOME or ~/.sparkscore)")
    parser.add_argument("--config", default=None, help="thresholds TOML (see conf/monitor.toml)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary for schedulers")
    parser.add_argument("--fail-on-drift", action="store_true",
                        help=f"exit with status {EXIT_DRIFT} and one line naming the drifted features")
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[sparkscore {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from pyspark.sql import SparkSession

    from sparkscore.errors import SparkscoreError

    spark = SparkSession.builder.appName(f"sparkscore monitor {args.model}").getOrCreate()
    if spark.sparkContext.getConf().get("spark.log.level", None) is None:
        spark.sparkContext.setLogLevel("WARN")
    try:
        return run(spark, args)
    except SparkscoreError as exc:
        print(f"sparkscore: error: {exc}", file=sys.stderr)
        return 2
    finally:
        spark.stop()


def run(spark, args: argparse.Namespace) -> int:
    """The job on ``spark`` (tests call it on their shared session); returns the exit status."""
    import sparkscore as ss
    from sparkscore.monitor import Thresholds

    started = time.time()
    thresholds = Thresholds.from_file(args.config) if args.config else Thresholds()
    result = ss.monitor.track(args.model, args.log, args.window, reference=args.reference, feedback=args.feedback,
                              metrics_table=args.metrics_table, start=args.start, end=args.end,
                              registry=ss.Registry(args.registry), thresholds=thresholds, engine=spark)
    rows = sum(len(w.rows) for w in result.windows)
    log(f"{args.model}: {len(result.windows)} window(s) of {args.window}, {rows} metric rows vs the "
        f"{result.reference} reference in {time.time() - started:.1f}s"
        + (f"; written to {args.metrics_table}" if args.metrics_table and result.windows else ""))
    if args.json:
        print(json.dumps(result.summary(), indent=2, sort_keys=True))
    else:
        for w in result.windows:
            print(f"{w.start.isoformat()}  rows {w.n}  drifted: {', '.join(w.drifted) or '-'}")
    if args.fail_on_drift and result.drifted:
        print(result.alert_line(), file=sys.stderr)
        return EXIT_DRIFT
    return 0


if __name__ == "__main__":
    sys.exit(main())
