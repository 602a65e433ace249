"""What SQL cannot aggregate: KLL sketches, category discovery and (small batches only) raw values.

Built per Arrow record batch (DuckDB streams the scored query as batches) or per Spark partition
(``mapInArrow`` yields one serialized :class:`SketchState` per partition), then merged on the
driver.  Memory is bounded by the sketches and the category dictionaries, never by the rows: raw
values are kept only while the whole stream has at most ``exact_rows`` rows (they feed the exact
scipy path of KS / Wasserstein).
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sparkscore.monitor.profile import DEFAULT_KLL_K, kll_from_bytes, kll_sketch

DEFAULT_EXACT_ROWS = 20_000


@dataclass
class SketchState:
    """Mergeable per-column state: a KLL sketch of the finite values (numeric), category counts
    (categorical), and the finite raw values while the stream is small."""

    kinds: tuple[str, ...]
    k: int = DEFAULT_KLL_K
    exact_rows: int = DEFAULT_EXACT_ROWS
    rows: int = 0
    sketches: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    raw: list | None = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sketches:
            self.sketches = [kll_sketch(self.k) if kind == "numeric" else None for kind in self.kinds]
            self.counts = [None if kind == "numeric" else {} for kind in self.kinds]
            self.raw = [[] for _ in self.kinds]

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add one Arrow batch whose columns are the profiled columns, in order."""
        self.rows += batch.num_rows
        if self.raw is not None and self.rows > self.exact_rows:
            self.raw = None
        for i, kind in enumerate(self.kinds):
            column = batch.column(i)
            if kind == "numeric":
                values = finite_values(column)
                if values.size:
                    self.sketches[i].update(values)
                if self.raw is not None:
                    self.raw[i].append(values)
            else:
                _add_counts(self.counts[i], column)

    def merge(self, other: "SketchState") -> "SketchState":
        self.rows += other.rows
        for i, kind in enumerate(self.kinds):
            if kind == "numeric":
                self.sketches[i].merge(other.sketches[i])
            else:
                for value, count in other.counts[i].items():
                    self.counts[i][value] = self.counts[i].get(value, 0) + count
        if self.raw is None or other.raw is None or self.rows > self.exact_rows:
            self.raw = None
        else:
            for mine, theirs in zip(self.raw, other.raw):
                mine.extend(theirs)
        return self

    def raw_values(self, i: int) -> np.ndarray | None:
        """Every finite value of numeric column ``i``, or None when the stream was too large to keep them."""
        if self.raw is None:
            return None
        parts = self.raw[i]
        return np.concatenate(parts) if parts else np.empty(0)

    # -------------------------------------------------------------- transport (Spark partitions)
    def to_bytes(self) -> bytes:
        """JSON (sketches as base64 of their DataSketches bytes, raw values as .npy without pickle)."""
        doc = {"kinds": list(self.kinds), "k": self.k, "exact_rows": self.exact_rows, "rows": self.rows,
               "sketches": [None if s is None else base64.b64encode(s.serialize()).decode() for s in self.sketches],
               "counts": [None if c is None else [[_json_key(v), n] for v, n in c.items()] for c in self.counts],
               "raw": None if self.raw is None else [_npy(np.concatenate(p) if p else np.empty(0)) for p in self.raw]}
        return json.dumps(doc).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SketchState":
        doc = json.loads(data.decode())
        state = cls(tuple(doc["kinds"]), doc["k"], doc["exact_rows"], doc["rows"],
                    sketches=[None if s is None else kll_from_bytes(base64.b64decode(s)) for s in doc["sketches"]],
                    counts=[None if c is None else {v: n for v, n in c} for c in doc["counts"]])
        state.raw = None if doc["raw"] is None else [[_from_npy(r)] for r in doc["raw"]]
        return state


def finite_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The finite float64 values of a numeric Arrow column (NULL, NaN and ±inf dropped)."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False) if len(column) else np.empty(0)
    values = np.asarray(values, dtype=np.float64)  # NULL arrives as NaN here
    return values[np.isfinite(values)]


def _add_counts(counts: dict, column: pa.Array | pa.ChunkedArray) -> None:
    """Category counts of one batch (vectorised by Arrow); NULL and NaN are missing, not categories."""
    if not len(column):
        return
    if pa.types.is_floating(column.type):
        column = pc.filter(column, pc.invert(pc.fill_null(pc.is_nan(column), True)))
    found = pc.value_counts(column)
    for value, count in zip(found.field("values").to_pylist(), found.field("counts").to_pylist()):
        if value is not None:
            counts[value] = counts.get(value, 0) + count


def _json_key(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _npy(values: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values, dtype=np.float64), allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode()


def _from_npy(text: str) -> np.ndarray:
    return np.load(io.BytesIO(base64.b64decode(text)), allow_pickle=False)


def state_of_batches(kinds: Sequence[str], batches: Iterable[pa.RecordBatch], k: int = DEFAULT_KLL_K,
                     exact_rows: int = DEFAULT_EXACT_ROWS) -> SketchState:
    """One :class:`SketchState` over a stream of record batches."""
    state = SketchState(tuple(kinds), k, exact_rows)
    for batch in batches:
        state.update(batch)
    return state


def partition_states(kinds: Sequence[str], k: int, exact_rows: int,
                     batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: the partition's batches in, one row ``state: binary`` out."""
    state = state_of_batches(kinds, batches, k, exact_rows)
    yield pa.RecordBatch.from_arrays([pa.array([state.to_bytes()], type=pa.binary())], names=["state"])
