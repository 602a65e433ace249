"""Engine-neutral scoring functions: one model version (or derived model) scored for one SQL kind.

DuckDB and Spark both wrap :class:`ScoringFunction`, so the two engines return identical values
from one piece of code: the result type per DESIGN section 4, NULL inputs as missing values, and
the compiled model from the per-process cache keyed by (name, version, sha256, device).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Hashable

import os

import numpy as np
import pyarrow as pa

from sparkscore import compiler
from sparkscore.errors import QueryError, UnknownCategoryError
from sparkscore.ir.model import Model
from sparkscore.ir.naming import KINDS, udf_name
from sparkscore.ir.naming import input_type as naming_input_type
from sparkscore.ir.naming import output_type as naming_output_type
from sparkscore.ir.signature import Column

DEVICE = "cpu"
#: When set (tests, operators), every scored batch appends "function-name rows" to this file: how
#: route tests check that each arm scores exactly the rows routed to it, on every engine.
SCORE_LOG_ENV = "SPARKSCORE_SCORE_LOG"
ARROW_TYPES = {"DOUBLE": pa.float64(), "DOUBLE[]": pa.list_(pa.float64()), "VARCHAR": pa.string(), "BIGINT": pa.int64()}


def output_type(model: Model, kind: str) -> str:
    """SQL result type of ``kind`` for ``model`` (the one rule in :func:`sparkscore.ir.naming.output_type`)."""
    try:
        return naming_output_type(model, kind)
    except ValueError as exc:
        raise QueryError(str(exc)) from None


def input_type(column: Column) -> str:
    """SQL parameter type of one model input: strings stay VARCHAR, everything else is DOUBLE."""
    return naming_input_type(column)


@dataclass(frozen=True, eq=False)
class ScoringFunction:
    """One SQL function: a model (version or derived model) scored for one output ``kind``."""

    name: str            # SQL function name
    kind: str            # "predict" | "proba" | "raw"
    model: Model         # the model as registered / derived; raw runs it without its link
    source: tuple        # (registry name, version) it came from
    output_type: str     # "DOUBLE" | "DOUBLE[]" | "VARCHAR" | "BIGINT"
    backend: str = "auto"  # compiler backend; jobs with a prediction log: compiler.row_stable_backend()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise QueryError(f"{self.model.name}: unknown function kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "proba" and not self.model.is_classifier:
            raise QueryError(f"{self.model.name}: PREDICT_PROBA needs a classifier; this model is a regressor, use PREDICT")
        if self.output_type not in ARROW_TYPES:
            raise QueryError(f"{self.name}: unsupported output type {self.output_type!r}; use one of {', '.join(ARROW_TYPES)}")

    @classmethod
    def for_version(cls, name: str, version: int, model: Model, kind: str = "predict",
                    backend: str = "auto") -> "ScoringFunction":
        return cls(udf_name(name, version, kind), kind, model, (name, int(version)), output_type(model, kind),
                   backend)

    @classmethod
    def from_spec(cls, spec) -> "ScoringFunction":
        """From an optimizer ``UdfSpec`` (its model may be derived: pruned, specialised, a GLM part)."""
        inputs = tuple(spec.inputs)
        if inputs != spec.model.signature.names:
            raise QueryError(f"{spec.name}: plan inputs {inputs} differ from the model signature; this is an optimizer bug")
        return cls(spec.name, spec.kind, spec.model, (spec.source.name, int(spec.source.version)), spec.output_type)

    # ------------------------------------------------------------------ scoring
    @property
    def input_types(self) -> tuple[str, ...]:
        return tuple(input_type(c) for c in self.model.signature.inputs)

    @property
    def identity(self) -> Hashable:
        """What makes two registrations of ``name`` interchangeable."""
        return (self.kind, self.output_type, self.input_types, self.model.sha256)

    @property
    def _labels_from_margins(self) -> bool:
        """PREDICT returns labels (not binary P(positive)) and the model decides them on margins."""
        return self.kind == "predict" and self.model.labels_from_margins and self.model.n_classes != 2

    @cached_property
    def _scored(self) -> tuple[Model, tuple]:
        """The model the compiler runs and its cache key (name, version, sha256, device)."""
        margins = self.kind == "raw" or self._labels_from_margins
        model = self.model.margin_model if margins else self.model
        return model, (*self.source, model.sha256, DEVICE)

    def _scorer(self) -> compiler.Scorer:
        model, key = self._scored
        return compiler.cached(key, load=lambda: model, backend=self.backend, device=DEVICE)

    def score(self, data: pa.Table | pa.RecordBatch) -> pa.Array:
        """Scores of the rows of ``data`` (input columns bound by name) as one Arrow array."""
        out = score_many((self,), data)[0]
        self._log(data.num_rows)
        return out

    def score_matrix(self, X: np.ndarray) -> pa.Array:
        """Scores of rows already encoded by ``model.to_matrix`` (a routed function's share of a chunk)."""
        out = self._to_arrow(self._scorer().scores(X))
        self._log(len(X))
        return out

    def _log(self, rows: int) -> None:
        log = os.environ.get(SCORE_LOG_ENV)
        if log:
            with open(log, "a") as fh:
                fh.write(f"{self.name} {rows}\n")

    def score_gated(self, gate: pa.Array, data: pa.Table) -> pa.Array:
        """Scores of the rows where ``gate`` is TRUE, NULL elsewhere (a route arm's UDF on Spark)."""
        mask = np.asarray(gate.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        if mask.all():
            return self.score(data)
        n = len(mask)
        if not mask.any():
            return pa.nulls(n, ARROW_TYPES[self.output_type])
        scored = self.score(data.filter(pa.array(mask)))
        positions = pa.array(np.cumsum(mask) - 1, mask=~mask)
        return scored.take(positions)

    def _to_arrow(self, S: np.ndarray) -> pa.Array:
        """Scores as the SQL result type.  NaN stays NaN: exactly what ``Model.predict`` returns,
        and what the same model inlined as SQL returns (a GLM given NULL yields NaN)."""
        model = self.model
        if self.kind == "raw":
            values = S[:, 0]
        elif self.kind == "proba":
            values = model.outputs_to_proba(S)
        elif model.is_classifier and model.n_classes == 2 and self.output_type == "DOUBLE":
            values = model.outputs_to_proba(S)[:, 1]
        elif self._labels_from_margins:
            values = model.margins_to_predictions(S)
        else:
            values = model.outputs_to_predictions(S)
        array = _list_array(values) if values.ndim == 2 else pa.array(values.tolist() if values.dtype == object else values)
        return array.cast(ARROW_TYPES[self.output_type])


@dataclass(frozen=True, eq=False)
class RoutedFunction:
    """One SQL function for several arms of a route: ``fn(arm, inputs...)`` (optimizer ``RoutedUdfSpec``).

    Each call gets a whole engine chunk, splits it by the arm index (numpy), and scores each arm's
    rows with that arm's own :class:`ScoringFunction` in one call, so values are exactly the arm's
    alone and each arm scores only its rows (its ``SCORE_LOG_ENV`` lines count them).  A NULL or
    out-of-range index is no arm: NULL.
    """

    name: str
    arms: tuple[ScoringFunction, ...]
    positions: tuple[tuple[int, ...], ...]   # per arm: indices into the inputs after the arm index
    shared_types: tuple[str, ...]            # SQL type of each shared input
    output_type: str

    def __post_init__(self) -> None:
        if not self.arms or len(self.arms) != len(self.positions) or \
                {f.output_type for f in self.arms} != {self.output_type}:
            raise QueryError(f"{self.name}: a routed function needs arms that all return {self.output_type}; "
                             "this is an optimizer bug")

    @classmethod
    def from_spec(cls, spec) -> "RoutedFunction":
        return cls(spec.name, tuple(ScoringFunction.from_spec(a) for a in spec.arms), tuple(spec.positions),
                   tuple(spec.input_types), spec.output_type)

    @property
    def input_types(self) -> tuple[str, ...]:
        return ("BIGINT", *self.shared_types)

    @property
    def identity(self) -> Hashable:
        return ("routed", self.output_type, self.input_types, self.positions, tuple(f.identity for f in self.arms))

    def score(self, index: pa.Array, columns: list[pa.Array]) -> pa.Array:
        """Scores of every row by its arm ``index`` (NULL where it is NULL or names no arm).

        The chunk is encoded once per distinct arm signature (``to_matrix`` is row by row, so the
        rows of an arm's share equal its own encoding of them) and each arm's kernel runs on its rows.
        """
        arm = np.asarray(index.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        n = len(arm)
        encoded: list[tuple[tuple[int, ...], object, np.ndarray]] = []
        parts, order, done = [], np.full(n, -1, dtype=np.int64), 0
        for i, (fn, where) in enumerate(zip(self.arms, self.positions)):
            rows = np.flatnonzero(arm == i)
            if not len(rows):
                continue
            sig = fn.model.signature
            X = next((m for w, s, m in encoded if w == where and s == sig), None)
            if X is None:
                X = fn.model.to_matrix(pa.Table.from_arrays([columns[j] for j in where], names=list(sig.names)))
                encoded.append((where, sig, X))
            if len(rows) == n:  # the whole chunk is this arm's
                return fn.score_matrix(X)
            parts.append(fn.score_matrix(X[rows]))
            order[rows] = done + np.arange(len(rows))
            done += len(rows)
        if not parts:
            return pa.nulls(n, ARROW_TYPES[self.output_type])
        return pa.concat_arrays(parts).take(pa.array(order, mask=order < 0))


def score_many(fns, data: pa.Table | pa.RecordBatch) -> list[pa.Array]:
    """Several outputs of ONE model over the same rows in one pass (e.g. PREDICT and PREDICT_PROBA).

    The input matrix is built once, and functions that run the same kernel (same cache key: a binary
    classifier's P(positive) and its probabilities) share one kernel call; a multiclass label read
    from margins runs the margin model once more.  Values equal each function's own ``score``.
    """
    try:
        X = fns[0].model.to_matrix(data)
    except UnknownCategoryError as exc:  # name the model as the query did (its registry ref)
        name, version = fns[0].source
        raise exc.for_model(f"{name}/{version}") from None
    scores: dict = {}
    out = []
    for fn in fns:
        key = fn._scored[1]
        if key not in scores:
            scores[key] = fn._scorer().scores(X)
        out.append(fn._to_arrow(scores[key]))
    return out


def _list_array(values: np.ndarray) -> pa.ListArray:
    """Rows of a (n, k) matrix as one DOUBLE[] value each."""
    n, k = values.shape
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), type=pa.float64()))


# ---------------------------------------------------------------------- helpers
def registry_or_default(registry):
    """The given registry, or the default one ($SPARKSCORE_HOME or ~/.sparkscore)."""
    from sparkscore.registry import Registry

    return Registry() if registry is None else registry


def load_ref(reg, ref: str):
    """(ModelVersion, verified Model) of ``ref``."""
    mv = reg.get(ref)
    return mv, reg.load(f"{mv.name}/{mv.version}")


def resolver(reg) -> Callable[[str], object]:
    """ref -> optimizer ``ResolvedModel``, loading each model version once per query."""
    from sparkscore.optimizer import ResolvedModel

    loaded: dict[tuple[str, int], ResolvedModel] = {}

    def resolve(ref: str) -> ResolvedModel:
        mv = reg.get(ref)
        if (mv.name, mv.version) not in loaded:
            model = reg.load(f"{mv.name}/{mv.version}")
            loaded[mv.name, mv.version] = ResolvedModel(mv.name, mv.version, mv.sha256, model)
        return loaded[mv.name, mv.version]

    return resolve


def route_resolver(reg) -> Callable[[str], object]:
    """'name@route' -> the registry's ``ResolvedRoute`` (arms pinned), None for refs that are no route."""
    from sparkscore.registry.routes import resolve_route

    return lambda ref: resolve_route(reg, ref)


def check_input_types(model, ref: str, columns, dialect: str = "duckdb", fn: str = "score") -> None:
    """Refuse a text column bound to a numeric model input, exactly as ``sql`` does (bind_models).

    Shared by every path that scores a frame outside SQL (``score``, ``jobs/score.py``,
    ``ss.spark.predict``); it lives here, not in batch.py, because the Spark paths must not import duckdb.

    One rule for both paths: a string column is never parsed into numbers behind the user's back
    (``'1e3'``, ``' 7'`` or a locale's ``'1,5'`` would score silently, or wrongly); the error says
    how to cast it.
    """
    from sparkscore.optimizer.bind_models import check_column_type  # sqlglot: only when a job checks

    by_name = dict(columns)
    for col, name in zip(model.signature.inputs, model.bind_columns(list(by_name))):
        if name is not None:
            check_column_type(col, name, by_name[name], ref, fn, dialect)
