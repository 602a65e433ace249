"""Embedded batch scoring: files in, one atomic and idempotent Delta commit out, no JVM.

``score_files`` is ``jobs/score.py`` on the embedded engine.  DuckDB streams the input (parquet,
csv or json files or globs) as large Arrow record batches; each batch is scored in one call through
:class:`ScoringFunction` (the code behind the DuckDB UDFs and the Spark engine, so all three agree)
and written straight to its own parquet file in a staging folder of the target table.  Memory stays
bounded by one batch.  The staged files are then committed in ONE ``deltalake`` transaction by
:func:`sparkscore.engines.delta.commit_staged`, the same commit the Spark job makes: a killed run
leaves the table at its previous version, and re-running a (job id, model version) adds nothing.

With a :class:`~sparkscore.monitor.predlog.LogSpec` the job also appends a sampled, bounded part of
its inputs and outputs to a prediction log, all-or-nothing with the job: the protocol across the
two tables (output commit first, log rolled forward by a re-run) is in :mod:`sparkscore.monitor.predlog`.
"""

from __future__ import annotations

import glob
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparkscore.engines import delta, joblog, routejob
from sparkscore.engines.functions import (  # noqa: F401 - check_input_types: also imported from here
    ARROW_TYPES, check_input_types, registry_or_default)
from sparkscore.errors import JobError, SparkscoreError
from sparkscore.monitor import predlog

MODES = ("append", "overwrite")
DEFAULT_BATCH_ROWS = 1_000_000

#: called after each batch with (rows scored so far, total input rows or None when unknown)
Progress = Callable[[int, Optional[int]], None]
#: called with one line saying what the run is doing now (its job id, compiling, scoring, committing)
Status = Callable[[str], None]


@dataclass(frozen=True)
class BatchResult:
    """What one run did: ``table_version`` is None when the job was already committed (0 rows added)."""

    stamp: delta.JobStamp
    rows: int
    seconds: float
    table_version: Optional[int]
    log_rows: Optional[int] = None        # rows this run added to the prediction log (None: no --log)
    log_version: Optional[int] = None     # the log table's version after them (None: nothing added)

    @property
    def already_committed(self) -> bool:
        return self.table_version is None


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection whose own progress bar never prints (``sql`` and ``score`` alike).

    DuckDB prints its bar to stdout (even into a pipe) on queries over 2 s, mixing it with the
    results; whether it is on by default depends on how Python was started.  It stays enabled so
    that ``query_progress`` (which the CLI draws on stderr) keeps working.
    """
    con = duckdb.connect()
    con.execute("SET enable_progress_bar_print = false")  # first: a bar could print for the next statement
    con.execute("SET enable_progress_bar = true")
    return con


def read_files(con: duckdb.DuckDBPyConnection, location: str, label: Optional[str] = None) -> duckdb.DuckDBPyRelation:
    """A relation over a parquet, csv/tsv or json file or glob (parquet unless the suffix says otherwise).

    ``label`` names the location in errors as the user passed it (``--input PATH``, ``--table
    NAME=PATH``): a missing file, a glob matching nothing and an unreadable file each fail with one
    line instead of DuckDB's IO error.
    """
    what = label or location
    remote = "://" in location
    if not remote and any(ch in location for ch in "*?["):
        if not glob.glob(location, recursive=True):
            raise JobError(f"{what}: no files match the pattern; check the path (quote the pattern so the shell "
                           "does not expand it)")
    elif not remote and not Path(location).exists():
        raise JobError(f"{what} does not exist; pass a parquet/csv file or a glob such as 'data/*.parquet'")
    suffixes = "".join(Path(location).suffixes).lower()
    try:
        if ".csv" in suffixes or ".tsv" in suffixes:
            return con.read_csv(location)
        if ".json" in suffixes:
            return con.read_json(location)
        return con.read_parquet(location)
    except duckdb.Error as exc:
        reason = " ".join(str(exc).split()).removeprefix("IO Error: ").removeprefix("Invalid Input Error: ")
        raise JobError(f"{what}: cannot read it ({reason[:200]}); pass a parquet, csv or json file or glob") from None


def score_files(model_ref: str, input_path: str, output: str, *, registry=None, mode: str = "append",
                job_id: Optional[str] = None, keep_columns: Optional[Sequence[str]] = None,
                batch_rows: int = DEFAULT_BATCH_ROWS, output_col: str = "prediction",
                progress: Optional[Progress] = None, schema_mode: str = "strict",
                model_columns: Optional[bool] = None, status: Optional[Status] = None,
                log: "predlog.LogSpec | str | None" = None, with_arm: bool = False) -> BatchResult:
    """Score ``input_path`` with ``model_ref`` into the Delta table ``output`` in one commit.

    ``keep_columns`` (default: every input column) are copied next to ``output_col``, then the
    per-row model record (``model``, ``model_version``; ``model_columns``: default on for a new
    table, as the table has it for an existing one).  The model ref is resolved once and pinned
    (name, version, sha256); that pin and ``job_id`` make the idempotency key recorded in the
    commit.  Without ``job_id`` it is derived from the input files (paths, sizes, mtimes), the pin,
    the output and the row-changing options (:func:`sparkscore.engines.delta.derive_job_id`), so
    re-running a command adds nothing.  Columns that differ from an existing table's fail before
    anything is written unless ``schema_mode="merge"``.  A failed run removes its staging files and
    says the table is unchanged; ``status`` hears what the run is doing (compiling, scoring, committing).
    ``log`` (a :class:`~sparkscore.monitor.predlog.LogSpec`, or a path: its defaults) also writes the
    sampled prediction log after the output commit (see the module docstring);
    a re-run of a job whose output is committed but whose log is not completes the log only.

    ``model_ref`` may be a route (``churn@ab``): each row is scored by its arm, as PREDICT does
    (:mod:`sparkscore.engines.routejob`); ``with_arm`` adds the ``arm`` / ``arm_version`` /
    ``route_version`` columns, and a log also holds the shadow arms' rows (``shadow = true``).
    """
    started = time.time()
    say = status or (lambda message: None)
    if mode not in MODES:
        raise JobError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if batch_rows < 1:
        raise JobError(f"batch_rows must be a positive row count, got {batch_rows}")
    if schema_mode not in delta.SCHEMA_MODES:
        raise JobError(f"unknown schema mode {schema_mode!r}; use one of {', '.join(delta.SCHEMA_MODES)}")
    if not delta.is_local(output):
        raise JobError(f"output {output} is not a local path; the embedded engine writes local Delta tables, "
                       "use the spark engine for object stores")
    delta.check_output(output)
    job = routejob.resolve(registry_or_default(registry), model_ref, with_arm=with_arm, logged=log is not None)
    mv, model = job.first.mv, job.first.model

    con = connect()
    relation = read_files(con, input_path, f"--input {input_path}")
    keep = list(keep_columns) if keep_columns else list(relation.columns)
    types = [str(t) for t in relation.types]
    _check_columns(relation.columns, keep, output_col)
    job.check_columns(relation.columns, types, "duckdb")
    existing = delta.table_schema(output)
    record_model = delta.wants_model_columns(existing, model_columns)
    delta.check_model_columns([*keep, output_col], record_model)
    _check_arm_columns([*keep, output_col], with_arm)
    if isinstance(log, str):
        log = predlog.LogSpec(log)
    if log is not None:
        joblog.check_log(log, output, relation.columns, model, job.log_schema())
    options = delta.row_options(mode, keep, output_col, record_model)
    if with_arm:
        options["with_arm"] = True
    stamp = delta.JobStamp(job_id or _derived_job_id(con, input_path, job.stamp_model, output, options),
                           *job.stamp_model, job.arm_pins)
    say(f"job {stamp.job_id}{'' if job_id else ' (derived from the input files, model, output and options)'}")
    for target in (output, *([log.table] if log else [])):
        for leftover in delta.remove_leftovers(target):  # of killed runs: also when this run has nothing to do
            say(f"removed {leftover}, left by a killed run")
    needed = keep + [n for n in job.bound(relation.columns) if n not in keep]
    if log is not None and log.id_column and log.id_column not in needed:
        needed.append(log.id_column)
    select = [duckdb.ColumnExpression(c) for c in needed]
    if job.routed:  # the bucket PREDICT computes, computed by DuckDB while it reads the input
        key_type = dict(zip(relation.columns, types))[job.key_column(relation.columns)]
        select.append(duckdb.SQLExpression(job.bucket_sql(relation.columns, key_type, "duckdb"))
                      .alias(routejob.BUCKET_COLUMN))
    relation = relation.select(*select)
    if delta.find_commit(output, stamp) is not None:
        if log is None or delta.find_commit(log.table, stamp) is not None:
            return BatchResult(stamp, 0, time.time() - started, None, 0 if log else None)
        say(f"job {stamp.job_id}: output already committed, its prediction log is not: completing the log")
        collector = joblog.LogCollector(log, stamp, job)
        for batch in relation.to_arrow_reader(batch_rows):
            collector.add(batch)
        logged = joblog.commit_log(collector, output, stamp, started, say)
        return BatchResult(stamp, 0, time.time() - started, None, *logged)
    total = len(relation) if _is_parquet(input_path) else None

    collector = joblog.LogCollector(log, stamp, job) if log is not None else None
    reader = relation.to_arrow_reader(batch_rows)
    schema = pa.schema([reader.schema.field(c) for c in keep]).append(pa.field(output_col, ARROW_TYPES[job.output_type]))
    if record_model:
        schema = schema.append(pa.field(delta.MODEL_COLUMNS[0], pa.string())).append(
            pa.field(delta.MODEL_COLUMNS[1], pa.int64()))
    if with_arm:
        for name, arrow_type in zip(routejob.ARM_COLUMNS, (pa.string(), pa.int64(), pa.int64())):
            schema = schema.append(pa.field(name, arrow_type))
    delta.check_schema(output, existing, schema, schema_mode)  # before anything is written
    try:
        with delta.staging(output) as folder:
            staging = Path(folder)
            rows = 0
            say(f"compiling {job.describe() if job.routed else f'{mv.name}/{mv.version}'} for this machine")
            for i, batch in enumerate(reader):
                scores, arm_of = job.score(batch)  # a route: each row by its own arm
                columns = [*(batch.column(c) for c in keep), scores]
                if record_model:
                    columns += [pa.array([mv.name] * batch.num_rows, pa.string()),
                                pa.array(job.versions_of(arm_of) if arm_of is not None
                                         else np.full(batch.num_rows, mv.version, dtype=np.int64))]
                if with_arm:
                    columns += job.arm_columns(arm_of)
                pq.write_table(pa.Table.from_arrays(columns, schema=schema), staging / f"part-{i:05d}.parquet")
                if collector is not None:
                    collector.add(batch)
                rows += batch.num_rows
                if i == 0:
                    say("scoring")
                if progress is not None:
                    progress(rows, total)
            say(f"committing {rows:,} rows to {output}")
            result = delta.commit_staged(output, str(staging), schema, mode, stamp, started, schema_mode)
    except KeyboardInterrupt:
        raise  # the staging folder is gone; the caller says so (delta.table_state)
    except SparkscoreError as exc:
        raise delta.with_table_state(exc, output) from exc
    except Exception as exc:
        raise JobError(f"job {stamp.job_id}: scoring {input_path} failed ({type(exc).__name__}: {exc}); staging files "
                       f"removed, {delta.table_state(output)}; fix the cause and re-run the same command") from exc
    if result is None:  # another run committed this job id meanwhile
        return BatchResult(stamp, 0, time.time() - started, None)
    logged = joblog.commit_log(collector, output, stamp, started, say) if collector is not None else (None, None)
    return BatchResult(stamp, result.rows, time.time() - started, result.table_version, *logged)


def _derived_job_id(con: duckdb.DuckDBPyConnection, location: str, stamp_model: tuple[str, int, str], output: str,
                    options: dict) -> str:
    """:func:`delta.derive_job_id` over the files DuckDB's own glob resolves ``location`` to."""
    files = [row[0] for row in con.execute("SELECT file FROM glob(?)", [location]).fetchall()]
    return delta.derive_job_id({"files": delta.file_identity(files)}, stamp_model, output, options)


def _check_arm_columns(columns: Sequence[str], with_arm: bool) -> None:
    clash = [c for c in routejob.ARM_COLUMNS if c in columns] if with_arm else []
    if clash:
        raise JobError(f"output column {clash[0]!r} is also one of --with-arm's columns "
                       f"({', '.join(routejob.ARM_COLUMNS)}); drop it from the kept columns or rename it")


def _check_columns(columns: Sequence[str], keep: Sequence[str], output_col: str) -> None:
    """Fail before any work on a missing kept column or a name clash with the output (the model's
    inputs: :meth:`~sparkscore.engines.routejob.JobModel.check_columns`)."""
    unknown = [c for c in keep if c not in columns]
    if unknown:
        raise JobError(f"--keep-columns {unknown[0]!r} is not an input column; use some of {', '.join(columns)}")
    if output_col in keep:
        raise JobError(f"the kept columns already include {output_col!r}, the score column; drop it from the "
                       "kept columns or choose another output column name")


def _is_parquet(location: str) -> bool:
    """Parquet row counts come from file footers: a cheap progress total (csv would need a full scan)."""
    suffixes = "".join(Path(location).suffixes).lower()
    return not any(s in suffixes for s in (".csv", ".tsv", ".json"))
