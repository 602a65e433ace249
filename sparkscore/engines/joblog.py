"""The prediction log of a batch job, shared by the embedded engine (batch.py) and ``jobs/score.py``.

The protocol across the output table and the log table is described in
:mod:`sparkscore.monitor.predlog`: the output commit decides, the log is committed after it with
the same job stamp, and a re-run of a job whose output is committed but whose log is not
completes the log only.  No duckdb here: the Spark job imports this module.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkscore.engines import delta
from sparkscore.errors import JobError, SparkscoreError
from sparkscore.monitor import predlog

Status = Callable[[str], None]


class LogCollector:
    """The sampled rows of one job for its prediction log (bottom-k by hash: deterministic, bounded).

    ``job`` (a :class:`~sparkscore.engines.routejob.JobModel`) is what the job scores: for a route,
    each logged row is scored again by its own arm, and by every shadow arm (``shadow = true``).
    """

    def __init__(self, spec: predlog.LogSpec, stamp: delta.JobStamp, job) -> None:
        self.spec, self.stamp, self.job = spec, stamp, job
        self.bound: list[str] = []
        self.keep = predlog.BottomK(spec.max_rows)
        self.seen = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Sample ``batch`` (the next rows of the input, in input order)."""
        if not self.bound:
            self.bound = self.job.log_columns(batch.schema.names)
        ids = predlog.request_ids(batch, self.spec.id_column, self.stamp.job_id, self.seen)
        hashes = predlog.sample_hash(self.stamp.job_id, ids)
        idx = np.flatnonzero(predlog.sampled(hashes, self.spec.fraction))
        first, self.seen = self.seen, self.seen + batch.num_rows
        if len(idx) == 0:
            return
        take = pa.array(idx)
        columns = {name: batch.column(name).take(take) for name in dict.fromkeys(self.bound)}
        columns.update(_hash=pa.array(hashes[idx]), _row=pa.array(idx + first, pa.int64()),
                       request_id=ids.take(take))
        self.keep.add(pa.table(columns))

    def table(self, ts) -> Optional[pa.Table]:
        """The log rows, scored again on the kept rows only by the job's row-stable kernels
        (:func:`sparkscore.compiler.row_stable_backend`): row by row the values the job wrote."""
        kept = self.keep.result()
        if kept is None:
            return None
        return self.job.log_table(kept, ts=ts, source=self.stamp.job_id)


def check_log(spec: predlog.LogSpec, output: str, columns: Sequence[str], model,
              schema: Optional[pa.Schema] = None) -> None:
    """Refuse, before anything is written, a log that is the output, has other columns, or lacks the id column.

    ``schema``: the log's columns (default: ``model``'s; a route's job logs the union of its arms')."""
    if not delta.is_local(spec.table):
        raise JobError(f"--log {spec.table} is not a local path; prediction logs are written with delta-rs through a "
                       "local (or mounted) path for now: pass one")
    if delta.is_local(output) and \
            Path(delta._local(spec.table)).resolve() == Path(delta._local(output)).resolve():
        raise JobError(f"--log {spec.table} is the --output table; give the prediction log its own table")
    if spec.id_column is not None and spec.id_column not in columns:
        raise JobError(f"--log-id {spec.id_column!r} is not an input column; use one of {', '.join(columns)}")
    delta.check_output(spec.table, "--log")
    delta.check_schema(spec.table, delta.table_schema(spec.table), schema or predlog.log_schema(model))


def commit_log(collector: LogCollector, output: str, stamp: delta.JobStamp, started: float,
                say: Status) -> tuple[int, Optional[int]]:
    """Step 3 of the protocol: the log rows, stamped like the output commit, in one log commit.

    ``ts`` is the output commit's time, so a re-run that completes the log writes the same rows.
    A job that sampled no row still commits (no files, its stamp only): a re-run then knows the
    log is complete without reading the input again.  Returns (rows added, log version); (0, None)
    when another run added them.
    """
    target = collector.spec.table
    info = delta.find_commit(output, stamp) or {}
    ts = datetime.fromtimestamp(int(info.get("timestamp", time.time() * 1000)) / 1000, timezone.utc)
    try:
        table = collector.table(ts)
        schema = table.schema if table is not None else collector.job.log_schema()
        say(f"committing {table.num_rows if table is not None else 0:,} rows to the prediction log {target}")
        with delta.staging(target) as folder:
            if table is not None:
                pq.write_table(table, Path(folder) / "part-00000.parquet")
            result = delta.commit_staged(target, folder, schema, "append", stamp, started)
    except (Exception, KeyboardInterrupt) as exc:  # Ctrl-C too: "table unchanged" would be wrong for the output
        reason = str(exc) if isinstance(exc, SparkscoreError) else f"{type(exc).__name__}: {exc}".rstrip(": ")
        raise JobError(f"job {stamp.job_id}: the output is committed but its prediction log {target} is not "
                       f"({reason}); re-run the same command: it completes the log and adds no output rows") from exc
    if result is None:
        return 0, None
    return result.rows, result.table_version
