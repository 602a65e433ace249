"""Embedded batch scoring: files in, one atomic and idempotent Delta commit out, no JVM.

``score_files`` is ``jobs/score.py`` on the embedded engine.  DuckDB streams the input (parquet,
csv or json files or globs) as large Arrow record batches; each batch is scored in one call through
:class:`ScoringFunction` (the code behind the DuckDB UDFs and the Spark engine, so all three agree)
and written straight to its own parquet file in a staging folder of the target table.  Memory stays
bounded by one batch.  The staged files are then committed in ONE ``deltalake`` transaction by
:func:`sparkscore.engines.delta.commit_staged`, the same commit the Spark job makes: a killed run
leaves the table at its previous version, and re-running a (job id, model version) adds nothing.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from sparkscore.engines import delta
from sparkscore.engines.functions import ARROW_TYPES, ScoringFunction, load_ref, registry_or_default
from sparkscore.errors import JobError, SignatureError

MODES = ("append", "overwrite")
DEFAULT_BATCH_ROWS = 1_000_000

#: called after each batch with (rows scored so far, total input rows or None when unknown)
Progress = Callable[[int, Optional[int]], None]


@dataclass(frozen=True)
class BatchResult:
    """What one run did: ``table_version`` is None when the job was already committed (0 rows added)."""

    stamp: delta.JobStamp
    rows: int
    seconds: float
    table_version: Optional[int]

    @property
    def already_committed(self) -> bool:
        return self.table_version is None


def read_files(con: duckdb.DuckDBPyConnection, location: str) -> duckdb.DuckDBPyRelation:
    """A relation over a parquet, csv/tsv or json file or glob (parquet unless the suffix says otherwise)."""
    if not any(ch in location for ch in "*?[") and not Path(location).exists():
        raise JobError(f"{location} does not exist; pass a parquet/csv file or a glob such as 'data/*.parquet'")
    suffixes = "".join(Path(location).suffixes).lower()
    if ".csv" in suffixes or ".tsv" in suffixes:
        return con.read_csv(location)
    if ".json" in suffixes:
        return con.read_json(location)
    return con.read_parquet(location)


def score_files(model_ref: str, input_path: str, output: str, *, registry=None, mode: str = "append",
                job_id: Optional[str] = None, keep_columns: Optional[Sequence[str]] = None,
                batch_rows: int = DEFAULT_BATCH_ROWS, output_col: str = "prediction",
                progress: Optional[Progress] = None) -> BatchResult:
    """Score ``input_path`` with ``model_ref`` into the Delta table ``output`` in one commit.

    ``keep_columns`` (default: every input column) are copied next to ``output_col``.  The model
    ref is resolved once and pinned (name, version, sha256); that pin and ``job_id`` (default: a
    fresh random id) make the idempotency key recorded in the commit.
    """
    started = time.time()
    if mode not in MODES:
        raise JobError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if batch_rows < 1:
        raise JobError(f"batch_rows must be a positive row count, got {batch_rows}")
    if not delta.is_local(output):
        raise JobError(f"output {output} is not a local path; the embedded engine writes local Delta tables, "
                       "use the spark engine for object stores")
    mv, model = load_ref(registry_or_default(registry), model_ref)
    stamp = delta.JobStamp(job_id or uuid.uuid4().hex, mv.name, mv.version, mv.sha256)
    if delta.find_commit(output, stamp) is not None:
        return BatchResult(stamp, 0, time.time() - started, None)

    con = duckdb.connect()
    relation = read_files(con, input_path)
    keep = list(keep_columns) if keep_columns else list(relation.columns)
    _check_columns(relation.columns, keep, model, output_col)
    needed = keep + [n for n in model.bind_columns(relation.columns) if n not in keep]
    relation = relation.select(*[duckdb.ColumnExpression(c) for c in needed])
    total = len(relation) if _is_parquet(input_path) else None

    fn = ScoringFunction.for_version(mv.name, mv.version, model)
    reader = relation.to_arrow_reader(batch_rows)
    schema = pa.schema([reader.schema.field(c) for c in keep]).append(pa.field(output_col, ARROW_TYPES[fn.output_type]))
    staging = Path(delta.staging_path(output))
    staging.mkdir(parents=True)
    rows = 0
    for i, batch in enumerate(reader):
        scored = pa.Table.from_arrays([*(batch.column(c) for c in keep), fn.score(batch)], schema=schema)
        pq.write_table(scored, staging / f"part-{i:05d}.parquet")
        rows += batch.num_rows
        if progress is not None:
            progress(rows, total)
    result = delta.commit_staged(output, str(staging), schema, mode, stamp, started)
    if result is None:  # another run committed this job id meanwhile
        return BatchResult(stamp, 0, time.time() - started, None)
    return BatchResult(stamp, result.rows, time.time() - started, result.table_version)


def _check_columns(columns: Sequence[str], keep: Sequence[str], model, output_col: str) -> None:
    """Fail before any work on a missing input or kept column, or a name clash with the output."""
    missing = [n for n, b in zip(model.signature.names, model.bind_columns(columns)) if b is None]
    if missing:
        raise SignatureError(f"{model.name}: input has no column {missing[0]!r} that the model needs "
                             f"(it has {', '.join(columns)}); rename or add the column")
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
