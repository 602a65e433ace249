"""What a batch job scores: one pinned model version, or a route with every arm pinned (DESIGN 14).

``sparkscore score --model churn@ab`` (embedded engine) and ``jobs/score.py --model churn@ab``
(Spark) score a route exactly as ``PREDICT('churn@ab', *)`` does: each row by the arm its key's
bucket falls in, nothing else.  The bucket is the optimizer's own SQL expression
(:func:`sparkscore.optimizer.route_models.bucket_sql` over the key column's canonical text), run
by the engine that reads the input (DuckDB, or Spark), so a row lands on the same arm as in a
PREDICT query or in ``sparkscore serve``; Python only maps buckets to arms.  Each arm scores only
its own rows (the embedded engine filters each batch per arm; on Spark every arm is a *gated*
Arrow UDF that scores only the rows where its gate holds, as the route rule does), through the
same :class:`~sparkscore.engines.functions.ScoringFunction` as every other path.

Pinning and the job's guarantees.  The route is resolved once (its version, and the version each
arm and shadow arm resolves to).  The job stamp names the route (``model = "churn@ab"``,
``version`` = the route version) and its ``sha256`` covers the route record and every arm's pin
(:attr:`JobModel.stamp_model`): re-running a job adds nothing while neither the route nor an
arm's alias moved; a moved alias is another model version, and so another job, exactly as for
``churn@prod``.  The per-row model columns name the arm's own version (``model_version``).

Output columns.  The score column holds the arm's value.  ``--with-arm`` adds ``arm`` (STRING: the
arm's label), ``arm_version`` (BIGINT) and ``route_version`` (BIGINT): PREDICT_ARM's fields.

Shadow arms are scored only for the prediction log (``--log``): on the logged rows, each appended
with ``shadow = true`` next to the rows the answering arms wrote (:meth:`JobModel.log_table`), in
the job's one log commit; their values never reach the output.  Without a log nothing scores them.

No duckdb here: the Spark job imports this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from sparkscore.engines.functions import ARROW_TYPES, ScoringFunction, check_input_types
from sparkscore.errors import JobError, SignatureError
from sparkscore.monitor import predlog

#: the engine-computed bucket of each row's key (a BIGINT 0..9999) while a routed job runs
BUCKET_COLUMN = "__sparkscore_bucket"
#: what ``--with-arm`` adds to the output (PREDICT_ARM's fields)
ARM_COLUMNS = ("arm", "arm_version", "route_version")


@dataclass(frozen=True, eq=False)
class PinnedArm:
    """One model version a job scores: an arm of a route (``label``), a shadow arm, or the one model."""

    label: Optional[str]
    mv: object          # registry ModelVersion (name, version, sha256)
    model: object       # the verified Model
    shadow: bool = False
    backend: str = "auto"  # compiler backend (a job with a prediction log: row-stable, so log == output)

    @cached_property
    def predict(self) -> ScoringFunction:
        return ScoringFunction.for_version(self.mv.name, self.mv.version, self.model, backend=self.backend)

    @cached_property
    def proba(self) -> Optional[ScoringFunction]:
        model = self.model
        return ScoringFunction.for_version(self.mv.name, self.mv.version, model, "proba", self.backend) \
            if model.is_classifier else None


@dataclass(frozen=True, eq=False)
class JobModel:
    """The model(s) of one batch job: ``arms`` is one unlabelled :class:`PinnedArm` for a plain ref."""

    ref: str
    arms: tuple
    shadows: tuple = ()
    resolved: object = None   # registry ResolvedRoute; None for a plain model

    # ------------------------------------------------------------------ what it is
    @property
    def route(self):
        return self.resolved.route if self.resolved is not None else None

    @property
    def routed(self) -> bool:
        return self.resolved is not None

    @property
    def first(self) -> PinnedArm:
        return self.arms[0]

    @property
    def output_type(self) -> str:
        return self.first.predict.output_type

    @property
    def stamp_model(self) -> tuple[str, int, str]:
        """(model, version, sha256) of the job stamp: the version itself, or the route and its pins."""
        if not self.routed:
            mv = self.first.mv
            return mv.name, int(mv.version), mv.sha256
        route = self.route
        pins = {"route": [route.ref, route.version, route.sha256],
                "arms": [[a.label, a.mv.name, int(a.mv.version), a.mv.sha256] for a in self.arms],
                "shadow": [[a.label, a.mv.name, int(a.mv.version), a.mv.sha256] for a in self.shadows]}
        digest = hashlib.sha256(json.dumps(pins, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        return route.ref, int(route.version), digest

    @property
    def arm_pins(self) -> tuple[tuple[str, int, str], ...]:
        """A route's answering arms as (name, version, sha256), for the job stamp; () for one model.
        (Shadow arms write no output rows: only prediction-log rows marked ``shadow``.)"""
        if not self.routed:
            return ()
        return tuple(dict.fromkeys((a.mv.name, int(a.mv.version), a.mv.sha256) for a in self.arms))

    def describe(self) -> str:
        if not self.routed:
            mv = self.first.mv
            return f"{mv.name}/{mv.version} (sha256 {mv.sha256[:12]})"
        return self.resolved.describe()

    # ------------------------------------------------------------------ checks
    def check_columns(self, columns: Sequence[str], types: Sequence[str], dialect: str) -> None:
        """Every arm's inputs (and the route key) are in the input, with types the models accept."""
        for arm in (*self.arms, *self.shadows):
            model, ref = arm.model, f"{arm.mv.name}/{arm.mv.version}"
            missing = [n for n, b in zip(model.signature.names, model.bind_columns(list(columns))) if b is None]
            if missing:
                what = f"arm {arm.label} ({ref}) of route {self.route.ref}" if self.routed else model.name
                raise SignatureError(f"{what}: input has no column {missing[0]!r} that the model needs "
                                     f"(it has {', '.join(columns)}); rename or add the column")
            check_input_types(model, ref, zip(columns, types), dialect=dialect)
        if self.routed and self.key_column(columns) is None:
            raise JobError(f"route {self.route.ref} picks each row's arm by column {self.route.key!r}, which the "
                           f"input does not have (it has {', '.join(columns)}); add it or change the route key "
                           f"with `sparkscore route set {self.route.name} {self.route.route} ... --key COLUMN`")

    def key_column(self, columns: Sequence[str]) -> Optional[str]:
        """The input column holding the route key (matched as SQL does: case-insensitively)."""
        found = [c for c in columns if c.lower() == self.route.key.lower()]
        return found[0] if found else None

    def bound(self, columns: Sequence[str]) -> list[str]:
        """Input columns the scoring needs: every arm's inputs (shadow arms' too: the log scores them)."""
        out: list[str] = []
        for arm in (*self.arms, *self.shadows):
            out += [b for b in arm.model.bind_columns(list(columns)) if b is not None]
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ the bucket and the arm
    def bucket_sql(self, columns: Sequence[str], key_type: Optional[str], dialect: str) -> str:
        """SQL of each row's bucket in ``dialect``: the very expression PREDICT on the route evaluates."""
        from sqlglot import exp

        from sparkscore.optimizer.dialect import generate
        from sparkscore.optimizer.route_models import bucket_sql, key_text_sql

        key = exp.column(self.key_column(columns), quoted=True)
        text, _ = key_text_sql(key, key_type, dialect, self.route.ref)
        return generate(bucket_sql(self.route.salt, text, dialect), dialect)

    @cached_property
    def _owner(self) -> np.ndarray:
        """Arm index (into ``arms``) of every bucket."""
        owner = np.full(10_000, -1, dtype=np.int64)
        labels = [a.label for a in self.arms]
        for start, end, label in self.route.ranges:
            if label in labels:
                owner[start:end] = labels.index(label)
        return owner

    def arm_index(self, buckets) -> np.ndarray:
        """Each row's arm (index into ``arms``) from its engine-computed bucket."""
        b = buckets.to_numpy(zero_copy_only=False) if isinstance(buckets, (pa.Array, pa.ChunkedArray)) else buckets
        return self._owner[np.asarray(b, dtype=np.int64)]

    def arm_ranges(self) -> list[list[tuple[int, int]]]:
        """Bucket ranges [start, end) of each arm (in ``arms`` order), merged where they touch."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.arms]
        for start, end, label in self.route.ranges:
            i = [a.label for a in self.arms].index(label) if label in [a.label for a in self.arms] else None
            if i is None:
                continue
            if out[i] and out[i][-1][1] == start:
                out[i][-1] = (out[i][-1][0], end)
            else:
                out[i].append((start, end))
        return out

    # ------------------------------------------------------------------ scoring (embedded engine, log)
    def score(self, batch: pa.Table | pa.RecordBatch) -> tuple[pa.Array, Optional[np.ndarray]]:
        """(scores, arm index per row or None): each row scored by its own arm only."""
        if not self.routed:
            return self.first.predict.score(batch), None
        idx = self.arm_index(batch.column(BUCKET_COLUMN))
        return scatter(self.arms, idx, batch, lambda arm, part: arm.predict.score(part),
                       ARROW_TYPES[self.output_type]), idx

    def arm_columns(self, idx: np.ndarray) -> list[pa.Array]:
        """``--with-arm``'s columns of rows routed to ``idx``."""
        labels = np.array([a.label for a in self.arms], dtype=object)
        versions = np.array([int(a.mv.version) for a in self.arms], dtype=np.int64)
        return [pa.array(labels[idx].tolist(), pa.string()), pa.array(versions[idx]),
                pa.array(np.full(len(idx), int(self.route.version), dtype=np.int64))]

    def versions_of(self, idx: np.ndarray) -> np.ndarray:
        return np.array([int(a.mv.version) for a in self.arms], dtype=np.int64)[idx]

    # ------------------------------------------------------------------ the prediction log
    def log_columns(self, columns: Sequence[str]) -> list[str]:
        """Input columns a logged row keeps: every (shadow) arm's inputs, and the bucket when routed."""
        return [*self.bound(columns), *([BUCKET_COLUMN] if self.routed else [])]

    def log_schema(self) -> pa.Schema:
        """The log schema: the fixed columns, the union of the arms' inputs by name, the outputs."""
        fields: dict[str, pa.Field] = {}
        for arm in (*self.arms, *self.shadows):
            for f in predlog.log_schema(arm.model):
                seen = fields.get(f.name)
                if seen is not None and not seen.type.equals(f.type):
                    raise predlog.PredictionLogError(
                        f"route {self.route.ref}: arm {arm.label} ({arm.mv.name}/{arm.mv.version}) logs {f.name!r} "
                        f"as {f.type}, another arm as {seen.type}; one log cannot hold both: log the arms separately")
                fields.setdefault(f.name, f)
        outputs = [fields.pop(n) for n in predlog.OUTPUT_COLUMNS]
        return pa.schema([*fields.values(), *outputs])

    def log_table(self, kept: pa.Table, *, ts, source: str) -> Optional[pa.Table]:
        """The log rows of the sampled rows ``kept``: each answered by its arm (``route``/``arm`` set)
        and, for every shadow arm, the same rows scored by it with ``shadow = true``."""
        schema = self.log_schema()
        ids = kept.column("request_id")
        if not self.routed:
            return self._rows(self.first, kept, ids, ts, source, schema)
        idx = self.arm_index(kept.column(BUCKET_COLUMN))
        parts = []
        for i, arm in enumerate(self.arms):
            rows = pa.array(np.flatnonzero(idx == i))
            if len(rows):
                part = kept.take(rows)
                parts.append(self._rows(arm, part, part.column("request_id"), ts, source, schema))
        parts += [self._rows(arm, kept, ids, ts, source, schema) for arm in self.shadows]
        return pa.concat_tables(parts) if parts else None

    def _rows(self, arm: PinnedArm, kept: pa.Table, ids, ts, source: str, schema: pa.Schema) -> pa.Table:
        model, mv = arm.model, arm.mv
        prediction = arm.predict.score(kept)
        proba = arm.proba.score(kept) if arm.proba is not None else None
        bound = model.bind_columns(kept.column_names)
        inputs = pa.table({c.name: kept.column(b) for c, b in zip(model.signature.inputs, bound)})
        route = self.route
        table = predlog.log_table(model, ts=ts, source=source, request_ids=ids, name=mv.name, version=int(mv.version),
                                  sha256=mv.sha256, inputs=inputs, prediction=prediction, proba=proba,
                                  route=route.ref if route is not None else None, arm=arm.label, shadow=arm.shadow)
        n = table.num_rows
        return pa.Table.from_arrays([table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type)
                                     for f in schema], schema=schema)


def scatter(arms: Sequence[PinnedArm], idx: np.ndarray, batch, score, arrow_type: pa.DataType) -> pa.Array:
    """``score(arm, its rows)`` of each arm on its own rows, put back in row order."""
    order, pieces = [], []
    for i, arm in enumerate(arms):
        rows = np.flatnonzero(idx == i)
        if len(rows):
            order.append(rows)
            pieces.append(score(arm, batch.take(pa.array(rows))).cast(arrow_type))
    if not pieces:
        return pa.nulls(0, arrow_type)
    positions = np.concatenate(order)
    inverse = np.empty_like(positions)
    inverse[positions] = np.arange(len(positions))
    return pa.concat_arrays(pieces).take(pa.array(inverse))


def resolve(reg, ref: str, *, with_arm: bool = False, logged: bool = False) -> JobModel:
    """Resolve ``ref`` once for a job: a route ref pins its route version and every arm's version.

    ``logged``: the job writes a prediction log, which scores its sampled rows again in one small
    batch, so every arm is compiled (here and, on Spark, on the executors) for
    :func:`sparkscore.compiler.row_stable_backend`: the log's values are the output's, bit for bit."""
    from sparkscore import compiler
    from sparkscore.registry.routes import resolve_route

    backend = compiler.row_stable_backend() if logged else "auto"
    resolved = resolve_route(reg, ref) if "@" in str(ref) else None
    if resolved is None:
        if with_arm:
            raise JobError(f"--with-arm needs a route ref (NAME@ROUTE); {ref} is one model, not a route: drop "
                           "--with-arm, or see `sparkscore route show`")
        mv = reg.get(ref)
        return JobModel(str(ref), (PinnedArm(None, mv, reg.load(f"{mv.name}/{mv.version}"), backend=backend),))

    def pin(arm) -> PinnedArm:  # arm.ref is name/version: immutable from here on
        return PinnedArm(arm.label, reg.get(arm.ref), reg.load(arm.ref), arm.shadow, backend)

    job = JobModel(str(ref), tuple(pin(a) for a in resolved.arms), tuple(pin(a) for a in resolved.shadows), resolved)
    types = {a.label: a.predict.output_type for a in job.arms}
    if len(set(types.values())) > 1:
        raise JobError(f"route {resolved.route.ref}: its arms return different types ("
                       f"{', '.join(f'{k}: {v}' for k, v in types.items())}); a job writes one score column: "
                       "route arms that return the same type")
    return job


# ---------------------------------------------------------------------- Spark (jobs/score.py)
#: each row's arm (index into ``JobModel.arms``) while a routed Spark job runs
ARM_INDEX_COLUMN = "__sparkscore_arm"


def spark_with_bucket(df, job: JobModel):
    """``df`` plus :data:`BUCKET_COLUMN` (Spark evaluates the route's bucket SQL) and
    :data:`ARM_INDEX_COLUMN` (a CASE over the arms' bucket ranges)."""
    from functools import reduce

    from pyspark.sql import functions as F

    types = {f.name: f.dataType.simpleString() for f in df.schema}
    df = df.withColumn(BUCKET_COLUMN, F.expr(job.bucket_sql(df.columns, types[job.key_column(df.columns)], "spark")))
    b = F.col(BUCKET_COLUMN)
    idx = None
    for i, ranges in enumerate(job.arm_ranges()):
        cond = reduce(lambda x, y: x | y, [(b >= F.lit(s)) & (b < F.lit(e)) for s, e in ranges])
        idx = F.when(cond, F.lit(i)) if idx is None else idx.when(cond, F.lit(i))
    return df.withColumn(ARM_INDEX_COLUMN, idx)


def spark_by_arm(values: Sequence):
    """A Spark column that is ``values[i]`` on the rows of arm ``i``."""
    from pyspark.sql import functions as F

    arm = F.col(ARM_INDEX_COLUMN)
    out = None
    for i, value in enumerate(values):
        value = value if hasattr(value, "alias") else F.lit(value)
        out = F.when(arm == F.lit(i), value) if out is None else out.when(arm == F.lit(i), value)
    return out


def spark_scored(df, job: JobModel, output_col: str, registry):
    """``df`` (from :func:`spark_with_bucket`) plus ``output_col``: each row scored by its arm only.

    Every arm is an Arrow UDF over its own inputs, *gated* by its arm index (Spark evaluates a
    Python UDF on every row of the CASE it sits in; the gate makes it score only its rows).
    """
    from pyspark.sql import functions as F

    from sparkscore.engines.spark import ModelFunction, _quote, _source
    from sparkscore.ir.naming import udf_name

    gated = len(job.arms) > 1
    outs = []
    for i, arm in enumerate(job.arms):
        mv = arm.mv
        source = _source(registry, mv.name, mv.version, mv.sha256, df.sparkSession, arm.backend)
        fn = ModelFunction(udf_name(mv.name, mv.version, "predict"), source, "predict", arm.predict.output_type, gated)
        inputs = [F.col(_quote(c)) for c in arm.model.bind_columns(df.columns)]
        outs.append(fn.udf()(*([F.col(ARM_INDEX_COLUMN) == F.lit(i)] if gated else []), *inputs))
    return df.withColumn(output_col, outs[0] if not gated else spark_by_arm(outs))
