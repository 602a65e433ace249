"""Prediction logs: the Delta table of sampled inputs + outputs (DESIGN section 12), written by batch
jobs and by ``sparkscore serve``, read back as DuckDB relations for drift, A/B readouts and bandits.

Schema (one table per deployment; :func:`log_schema`)::

    ts TIMESTAMP(UTC, us) | source STRING | request_id STRING | model STRING | version BIGINT |
    sha256 STRING | route STRING | arm STRING | shadow BOOLEAN | <each model input by name:
    DOUBLE, or STRING for string inputs> | prediction DOUBLE or STRING | proba ARRAY<DOUBLE>

``prediction`` is exactly PREDICT's value (regression value, binary P(positive), multiclass label;
BIGINT labels as DOUBLE), ``proba`` PREDICT_PROBA's (classes in the model's order; NULL for
regressors).  Labels arrive later in a feedback table ``(request_id STRING, ts TIMESTAMP, label)``.

**Sampling (batch).** A row is logged when ``h(salt, request_id) < fraction * 2**64`` with ``h``
FNV-1a 64 of ``salt + b"\\0" + request_id`` (UTF-8) and the splitmix64 finalizer
(:func:`sample_hash`), the salt being the job id: re-running a job samples the same rows, and
another job samples others.  The bound
``max_rows`` keeps the ``max_rows`` sampled rows with the smallest hashes (bottom-k: a uniform
sample without replacement, deterministic as well, memory bounded by ``max_rows``).  ``request_id``
is the ``--log-id`` column's value, or ``<job id>:<row ordinal>`` (the row's position in the input,
which DuckDB reads in a fixed order).

**All-or-nothing with the job: the protocol across the two tables.**  Delta commits one table at
a time, so the output table is the *decision* and the log table is rolled forward after it:

1. The job scores and stages its output files; the sampled log rows are kept in memory (bounded).
2. It commits the output (one Delta transaction stamped with the job id, model version, sha256;
   :mod:`sparkscore.engines.delta`).  This is the commit point of the job.
3. It stages the log rows (``ts`` = the output commit's timestamp, so every attempt writes the
   same rows) and commits them to the log in one transaction with the *same* stamp.

Crash windows: killed before 2, neither table has rows (staged files are leftovers the next run
removes).  Killed between 2 and 3, the output is committed and the log is not; the job did not
finish (its exit status says so), and re-running it finds its output commit, finds no log commit
with its stamp, re-reads the input, re-samples and re-scores only the sampled rows (same hashes,
same model, same ``ts``) and commits the log: the rows the first attempt would have written, once.
A re-run of a job whose two commits exist adds nothing to either (the stamp is found in both;
the log commit also checks it under the table's commit lock, so two concurrent re-runs add it once).
A reader therefore never sees log rows of a job whose output is not committed.

**Serving** (:class:`LogWriter`): the request path only tries ``put_nowait`` on a bounded queue
(full: the record is dropped and counted); one background thread appends batches to the log with
``deltalake.write_deltalake``; ``close`` flushes.

**Reading**: :func:`read`, :func:`windows` and :func:`with_feedback` return DuckDB relations over
``DeltaTable(...).to_pyarrow_dataset()`` (filters and projections are pushed into the scan; no
pandas of the whole log).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkscore.errors import SparkscoreError

log = logging.getLogger("sparkscore.monitor")

FIXED_COLUMNS = ("ts", "source", "request_id", "model", "version", "sha256", "route", "arm", "shadow")
OUTPUT_COLUMNS = ("prediction", "proba")
TS_TYPE = pa.timestamp("us", tz="UTC")
_FIXED_TYPES = (TS_TYPE, pa.string(), pa.string(), pa.string(), pa.int64(), pa.string(), pa.string(), pa.string(),
                pa.bool_())
DEFAULT_FRACTION = 0.01
DEFAULT_MAX_ROWS = 100_000
_TWO64 = 2.0 ** 64


class PredictionLogError(SparkscoreError, ValueError):
    """A prediction log that cannot be written or read as asked (bad option, schema, table)."""


@dataclass(frozen=True)
class LogSpec:
    """What a batch job logs: ``table`` (Delta path), the sampled ``fraction``, at most ``max_rows``,
    and the column whose value is the row's ``request_id`` (None: ``<job id>:<row ordinal>``)."""

    table: str
    fraction: float = DEFAULT_FRACTION
    max_rows: int = DEFAULT_MAX_ROWS
    id_column: Optional[str] = None

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise PredictionLogError(f"--log-fraction {self.fraction} must be in (0, 1]; e.g. 0.01 logs 1% of rows")
        if self.max_rows < 1:
            raise PredictionLogError(f"--log-max-rows {self.max_rows} must be a positive row count")


# ---------------------------------------------------------------------- schema
def _input_type(column) -> pa.DataType:
    cats = column.categories
    return pa.string() if column.dtype == "varchar" or (cats and isinstance(cats[0], str)) else pa.float64()


def prediction_type(model) -> pa.DataType:
    """STRING for string labels, DOUBLE otherwise; a multi-output regressor cannot be logged (one value a row)."""
    if model.is_classifier:
        if model.n_classes != 2 and all(isinstance(c, str) for c in model.classes):
            return pa.string()
        return pa.float64()
    if model.estimator.n_outputs != 1:
        raise PredictionLogError(f"{model.name}: a prediction log holds one value per row; this regressor has "
                                 f"{model.estimator.n_outputs} outputs: score it without --log")
    return pa.float64()


def log_schema(model) -> pa.Schema:
    """The log schema of ``model`` (DESIGN section 12): fixed columns, the inputs by name, the outputs."""
    names = set(FIXED_COLUMNS) | set(OUTPUT_COLUMNS)
    clash = [c.name for c in model.signature.inputs if c.name in names]
    if clash:
        raise PredictionLogError(f"{model.name}: input {clash[0]!r} has the name of a prediction-log column; "
                                 "rename the input to log this model")
    fields = [pa.field(n, t) for n, t in zip(FIXED_COLUMNS, _FIXED_TYPES)]
    fields += [pa.field(c.name, _input_type(c)) for c in model.signature.inputs]
    fields += [pa.field("prediction", prediction_type(model)), pa.field("proba", pa.list_(pa.float64()))]
    return pa.schema(fields)


def log_table(model, *, ts: datetime, source: str, request_ids: Sequence[str], name: str, version: int, sha256: str,
              inputs: pa.Table, prediction: pa.Array, proba: Optional[pa.Array], route: Optional[str] = None,
              arm: Optional[str] = None, shadow: bool = False) -> pa.Table:
    """Rows of the log: ``inputs`` holds the model inputs by signature name (cast to the log's types)."""
    schema = log_schema(model)
    ids = _array(request_ids) if isinstance(request_ids, (pa.Array, pa.ChunkedArray)) else pa.array(request_ids, pa.string())
    n = len(ids)
    fixed = [pa.array([ts] * n, TS_TYPE), pa.array([source] * n, pa.string()), ids.cast(pa.string()),
             pa.array([name] * n, pa.string()), pa.array(np.full(n, version, dtype=np.int64)),
             pa.array([sha256] * n, pa.string()), pa.array([route] * n, pa.string()), pa.array([arm] * n, pa.string()),
             pa.array(np.full(n, shadow, dtype=bool))]
    cols = [_array(inputs.column(c.name)).cast(schema.field(c.name).type, safe=False) for c in model.signature.inputs]
    out = [_array(prediction).cast(schema.field("prediction").type, safe=False),
           _array(proba).cast(pa.list_(pa.float64())) if proba is not None else pa.nulls(n, pa.list_(pa.float64()))]
    return pa.Table.from_arrays([*fixed, *cols, *out], schema=schema)


def _array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def input_columns(columns: Sequence[str]) -> list[str]:
    """The model-input columns of a log (its columns minus the fixed and output ones, and the
    ``window_*`` / feedback columns that :func:`windows` and :func:`with_feedback` add)."""
    skip = {*FIXED_COLUMNS, *OUTPUT_COLUMNS, "window_start", "window_end", "label", "label_ts"}
    return [c for c in columns if c not in skip]


# ---------------------------------------------------------------------- sampling
_FNV_OFFSET, _FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
_MASK64 = (1 << 64) - 1


def _fnv1a(state: int, data: bytes) -> int:
    for byte in data:
        state = ((state ^ byte) * _FNV_PRIME) & _MASK64
    return state


def sample_hash(salt: str, request_ids) -> np.ndarray:
    """64-bit hashes of ``(salt, request_id)``: FNV-1a 64 over the UTF-8 bytes of ``salt``, a zero
    byte and ``request_id``, then the splitmix64 finalizer (so nearby ids spread over the range).

    Vectorised over the Arrow string buffers (one numpy step per byte position, over the ids still
    that long), so hashing costs about as much as reading the ids; ``request_ids`` is an Arrow
    string array or a sequence of str.
    """
    ids = request_ids if isinstance(request_ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(request_ids), pa.string())
    ids = _array(ids).cast(pa.large_string())
    n = len(ids)
    h = np.full(n, _fnv1a(_FNV_OFFSET, salt.encode() + b"\0"), dtype=np.uint64)
    if n:
        offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset:ids.offset + n + 1]
        data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else np.zeros(0, np.uint8)
        starts, lengths = offsets[:-1], np.diff(offsets)
        active = np.flatnonzero(lengths > 0)
        prime = np.uint64(_FNV_PRIME)
        k = 0
        with np.errstate(over="ignore"):
            while len(active):
                h[active] = (h[active] ^ data[starts[active] + k].astype(np.uint64)) * prime
                k += 1
                active = active[lengths[active] > k]
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def sampled(hashes: np.ndarray, fraction: float) -> np.ndarray:
    """Whether each hash falls in the sampled ``fraction`` (``h < fraction * 2**64``; all at 1.0)."""
    if fraction >= 1.0:
        return np.ones(len(hashes), dtype=bool)
    return hashes < np.uint64(int(fraction * _TWO64))


def request_ids(batch: pa.RecordBatch | pa.Table, id_column: Optional[str], source: str, first_row: int) -> pa.Array:
    """``request_id`` of each row (STRING): the id column's value as text, or ``<source>:<row ordinal>``."""
    if id_column is None:
        ordinals = pa.array(np.arange(first_row, first_row + batch.num_rows, dtype=np.int64)).cast(pa.string())
        return pc.binary_join_element_wise(f"{source}:", ordinals, "")
    values = _array(batch.column(id_column))
    if values.null_count:
        raise PredictionLogError(f"--log-id column {id_column!r} has NULL values; a logged row needs a request id")
    return values if pa.types.is_string(values.type) else values.cast(pa.string())


class BottomK:
    """The ``k`` candidates with the smallest hashes seen so far (memory bounded by ~2k rows)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._parts: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> None:
        """``table`` has a ``_hash`` (uint64) and a ``_row`` (int64) column."""
        if table.num_rows == 0:
            return
        self._parts.append(table)
        self._rows += table.num_rows
        if self._rows > 2 * self.k:
            self._shrink()

    def _shrink(self) -> None:
        table = pa.concat_tables(self._parts)
        keep = pc.sort_indices(table, [("_hash", "ascending"), ("_row", "ascending")])[:self.k]
        self._parts, self._rows = [table.take(keep)], min(self.k, table.num_rows)

    def result(self) -> Optional[pa.Table]:
        """The kept rows in input order (None when nothing was sampled)."""
        if not self._parts:
            return None
        self._shrink()
        table = self._parts[0]
        return table.take(pc.sort_indices(table, [("_row", "ascending")]))


# ---------------------------------------------------------------------- writing (serving)
@dataclass(frozen=True)
class LogRecord:
    """One served request for the log: who answered, its validated model matrix, and ``outputs``:
    a call returning (PREDICT values, PREDICT_PROBA values or None) that the writer thread makes,
    so the request path does no arithmetic for the log.  ``route`` / ``arm`` / ``shadow`` say which
    route arm answered (a shadow arm's answer is logged, never returned)."""

    ts: datetime
    request_id: str
    name: str
    version: int
    sha256: str
    model: object
    X: np.ndarray
    outputs: Callable[[], tuple]
    route: Optional[str] = None
    arm: Optional[str] = None
    shadow: bool = False
    #: a route arm answers some rows of a request: their row numbers in it (None: all of ``X``, in order),
    #: and the request's row count, so ``request_id`` is ``<id>:<row>`` exactly as for an unrouted request
    rows: Optional[Sequence[int]] = None
    request_rows: int = 0


def decode_inputs(model, X: np.ndarray) -> pa.Table:
    """The model inputs of a served request from its validated matrix (categories decoded from codes).

    A string outside the model's categories reached the model as a missing value and is logged as
    NULL: the log records what the model saw.
    """
    arrays = {}
    for j, column in enumerate(model.signature.inputs):
        values = X[:, j]
        if column.categories is not None:
            cats = np.asarray(column.categories, dtype=object)
            ok = ~np.isnan(values)
            out = np.full(len(values), None, dtype=object)
            codes = values[ok].astype(np.int64)
            valid = (codes >= 0) & (codes < len(cats))
            idx = np.flatnonzero(ok)[valid]
            out[idx] = cats[codes[valid]]
            arrays[column.name] = pa.array(out.tolist(), _input_type(column))
        else:
            arrays[column.name] = pa.array(values, pa.float64())
    return pa.table(arrays) if arrays else pa.table({"_": pa.nulls(len(X))}).drop(["_"])


class LogWriter:
    """Off-the-request-path writer of served requests into a Delta log.

    ``offer`` never blocks: a full queue drops the record and counts it (``dropped``, and
    ``on_drop(n)`` for the Prometheus counter; records a failed append loses count there too).
    One daemon thread takes up to ``batch_records`` at a time (or what arrived within ``flush_s``)
    and appends them in one ``write_deltalake`` commit per model version.  ``close`` stops taking new records and flushes what is queued.

    ``table`` may hold ``{model}``: one log table per served model (one per deployment, as batch
    jobs write).  Without it, the models a server answers for share one table whose columns are
    the union of their inputs (Delta schema evolution; another model's inputs are NULL in a row);
    a column two models give different types cannot merge: those records are dropped and counted.
    """

    def __init__(self, table: str, source: str, *, queue_size: int = 10_000, batch_records: int = 1_000,
                 flush_s: float = 1.0, on_drop: Optional[Callable[[int], None]] = None,
                 on_write: Optional[Callable[[int], None]] = None) -> None:
        self.table, self.source = table, source
        self.batch_records, self.flush_s = batch_records, flush_s
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._on_drop, self._on_write = on_drop, on_write
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sparkscore-predlog", daemon=True)
        self._thread.start()

    def offer(self, record: LogRecord) -> bool:
        """Queue ``record`` for the log; False (and counted) when the queue is full or closed."""
        if not self._closed.is_set():
            try:
                self._queue.put_nowait(record)
                return True
            except queue.Full:
                pass
        self._count_drop(1)
        return False

    def _count_drop(self, n: int) -> None:
        self.dropped += n
        if self._on_drop is not None:
            self._on_drop(n)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush what is queued, then stop the thread."""
        self._closed.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch:
                self._write(batch)
            elif self._closed.is_set() and self._queue.empty():
                return

    def _take(self) -> list[LogRecord]:
        batch: list[LogRecord] = []
        deadline = time.monotonic() + self.flush_s
        while len(batch) < self.batch_records:
            timeout = deadline - time.monotonic()
            if self._closed.is_set():
                timeout = 0
            try:
                batch.append(self._queue.get(timeout=max(timeout, 0)) if timeout > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[LogRecord]) -> None:
        from deltalake import write_deltalake

        groups: dict[tuple, list[LogRecord]] = {}
        for rec in batch:
            groups.setdefault((rec.name, rec.version), []).append(rec)
        for (name, _), recs in groups.items():
            try:
                table = pa.concat_tables([_record_rows(r, self.source) for r in recs])
                write_deltalake(self.table.replace("{model}", name), table, mode="append", schema_mode="merge")
            except Exception:  # the server keeps serving; the loss is counted and logged
                self.failed += len(recs)
                self._count_drop(len(recs))
                log.exception("prediction log %s: dropped %d records that could not be written", self.table, len(recs))
                continue
            self.written += table.num_rows
            if self._on_write is not None:
                self._on_write(table.num_rows)


def _record_rows(rec: LogRecord, source: str) -> pa.Table:
    model = rec.model
    n = rec.X.shape[0]
    if rec.rows is None:
        ids = [rec.request_id] if n == 1 else [f"{rec.request_id}:{i}" for i in range(n)]
    else:
        ids = [rec.request_id] if rec.request_rows == 1 else [f"{rec.request_id}:{i}" for i in rec.rows]
    pred, probs = rec.outputs()
    pred = np.asarray(pred)
    prediction = pa.array(pred.tolist() if pred.dtype == object else pred)
    proba = None
    if probs is not None:
        k = probs.shape[1]
        proba = pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)),
                                         pa.array(np.ascontiguousarray(probs).ravel(), pa.float64()))
    return log_table(model, ts=rec.ts, source=source, request_ids=ids, name=rec.name, version=rec.version,
                     sha256=rec.sha256, inputs=decode_inputs(model, rec.X), prediction=prediction, proba=proba,
                     route=rec.route, arm=rec.arm, shadow=rec.shadow)


def now() -> datetime:
    return datetime.now(timezone.utc)


# ---------------------------------------------------------------------- reading
_WINDOW = re.compile(r"\s*(\d+)\s*(s|m|min|h|d|w)\s*")
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _dataset(table: str, what: str = "prediction log"):
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(table).to_pyarrow_dataset()
    except TableNotFoundError:
        raise PredictionLogError(f"{what} {table} is not a Delta table; pass the path given to --log") from None


def _ts_value(value, flag: str) -> Optional[datetime]:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PredictionLogError(f"{flag} {value!r} is not an ISO date/time such as 2026-12-01 or "
                                     "2026-12-01T12:00:00Z") from None
    if not isinstance(value, datetime):
        raise PredictionLogError(f"{flag} must be a datetime or an ISO string, got {type(value).__name__}")
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _con(con):
    import duckdb

    return con if con is not None else duckdb.default_connection()


def read(table: str, start=None, end=None, *, con=None):
    """The log rows with ``start <= ts < end`` (UTC; naive times are UTC) as a DuckDB relation.

    The time filter is an Arrow dataset filter (row groups outside it are skipped); the relation
    stays lazy and re-scannable, so the caller's aggregates run in DuckDB over the scan.  ``con``
    (default: DuckDB's default connection) must be the one later relations are joined on.
    """
    import pyarrow.dataset as ds

    dataset = _dataset(table)
    lo, hi = _ts_value(start, "start"), _ts_value(end, "end")
    if lo is not None:
        dataset = dataset.filter(ds.field("ts") >= pa.scalar(lo, TS_TYPE))
    if hi is not None:
        dataset = dataset.filter(ds.field("ts") < pa.scalar(hi, TS_TYPE))
    return _con(con).from_arrow(dataset)


def window_interval(window: str) -> str:
    """``1d`` / ``6h`` / ``15m`` / ``30s`` / ``1w`` as the text of a DuckDB INTERVAL (digits and a unit only)."""
    m = _WINDOW.fullmatch(window or "")
    if not m or int(m.group(1)) == 0:
        raise PredictionLogError(f"window {window!r} is not a duration such as 1d, 6h, 15m, 30s or 1w")
    return f"{int(m.group(1))} {_UNITS[m.group(2)]}"


def windows(table: str, window: str = "1d", start=None, end=None, *, con=None):
    """The log rows plus ``window_start`` / ``window_end`` (UTC, buckets aligned to the Unix epoch).

    The drift helper groups by ``window_start`` to compute one set of metrics per window.
    """
    interval = window_interval(window)  # validated: digits and a unit, safe inside the literal
    bucket = f"time_bucket(INTERVAL '{interval}', timezone('UTC', ts), TIMESTAMP '1970-01-01')"
    rel = read(table, start, end, con=con)
    return rel.project(f"timezone('UTC', {bucket}) AS window_start, "
                       f"timezone('UTC', {bucket} + INTERVAL '{interval}') AS window_end, *")


def feedback(table: str, *, con=None):
    """The feedback table with one row per ``request_id``: its latest ``label`` and that label's ``label_ts``.

    A request labelled more than once takes the label with the latest ``ts`` (ties: the largest
    label text, so the result is deterministic).
    """
    fb = _dataset(table, "feedback table")
    missing = [c for c in ("request_id", "ts", "label") if c not in fb.schema.names]
    if missing:
        raise PredictionLogError(f"feedback table {table} has no column {missing[0]!r}; it needs request_id, ts, label")
    rel = _con(con).from_arrow(fb).project("request_id, ts, label")
    return rel.aggregate("request_id, arg_max(label, (ts, label::VARCHAR)) AS label, max(ts) AS label_ts",
                         "request_id")


def with_feedback(log_rel, feedback_table: str, *, con=None, how: str = "inner"):
    """``log_rel`` (from :func:`read` / :func:`windows` on the same ``con``) joined to the feedback
    table on ``request_id``: adds ``label`` and ``label_ts``.  ``how="left"`` keeps unlabelled rows."""
    if how not in ("inner", "left"):
        raise PredictionLogError(f"unknown join {how!r}; use inner or left")
    return log_rel.join(feedback(feedback_table, con=con).set_alias("fb"), "request_id", how=how)
