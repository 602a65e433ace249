"""What SQL cannot aggregate: KLL sketches, category discovery and (small batches only) raw values.

Built per Arrow record batch (DuckDB streams the scored query as batches) or per Spark partition
(``mapInArrow`` yields one serialized :class:`SketchState` per partition), then merged on the
driver.  Memory is bounded by the sketches and the category dictionaries, never by the rows: raw
values are kept only while the whole stream has at most ``exact_rows`` rows (they feed the exact
scipy path of KS / Wasserstein).

Per slice (``groups``: the slice specs, each a list of slice-key columns that follow the profiled
columns in the stream) the same state keeps one KLL sketch per numeric column and slice value, so
KS / Wasserstein per slice and per window come from the same one pass.  Bounded: at most
``max_slices`` values per slice spec (:data:`MAX_SLICE_SKETCHES`); a spec with more keeps no
per-slice sketches at all and says so (``overflow``), the drift rows carry the reason.
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
#: per slice spec, the most slice values that get their own sketches (memory: values x numeric columns
#: x one KLL sketch, ~3 KB each at k=200 once compacted; 256 daily windows x 50 columns ~ 40 MB)
MAX_SLICE_SKETCHES = 256


@dataclass
class SketchState:
    """Mergeable per-column state: a KLL sketch of the finite values (numeric), category counts
    (categorical), and the finite raw values while the stream is small; per slice value of each spec
    in ``groups``, a KLL sketch (and while small the raw values) of every numeric column."""

    kinds: tuple[str, ...]
    k: int = DEFAULT_KLL_K
    exact_rows: int = DEFAULT_EXACT_ROWS
    rows: int = 0
    sketches: list = field(default_factory=list)
    counts: list = field(default_factory=list)
    raw: list | None = field(default_factory=list)
    groups: tuple[tuple[int, ...], ...] = ()
    max_slices: int | None = None  # None: MAX_SLICE_SKETCHES
    #: (spec index, slice value text) -> per column: [KLL sketch (numeric) or None, raw parts or None]
    slices: dict = field(default_factory=dict)
    #: spec index -> distinct values seen when they passed ``max_slices`` (its slice sketches are dropped)
    overflow: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groups = tuple(tuple(int(i) for i in g) for g in self.groups)
        if self.max_slices is None:
            self.max_slices = MAX_SLICE_SKETCHES
        if not self.sketches:
            self.sketches = [kll_sketch(self.k) if kind == "numeric" else None for kind in self.kinds]
            self.counts = [None if kind == "numeric" else {} for kind in self.kinds]
            self.raw = [[] for _ in self.kinds]

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add one Arrow batch whose columns are the profiled columns, in order, then the slice keys."""
        self.rows += batch.num_rows
        if self.raw is not None and self.rows > self.exact_rows:
            self.raw = None
            for columns in self.slices.values():
                for cell in columns:
                    cell[1] = None
        numeric = {}
        for i, kind in enumerate(self.kinds):
            column = batch.column(i)
            if kind == "numeric":
                values = numeric[i] = _as_float(column)
                finite = values[np.isfinite(values)]
                if finite.size:
                    self.sketches[i].update(finite)
                if self.raw is not None:
                    self.raw[i].append(finite)
            else:
                _add_counts(self.counts[i], column)
        for g, group in enumerate(self.groups):
            if g in self.overflow or not batch.num_rows:
                continue
            codes, texts = group_codes([batch.column(len(self.kinds) + i) for i in group])
            known = {text for (h, text) in self.slices if h == g}
            new = [t for t in texts if t not in known]
            if len(known) + len(new) > self.max_slices:
                self._overflow(g, len(known) + len(new))
                continue
            order = np.argsort(codes, kind="stable")  # rows grouped by slice value: one gather per column
            bounds = np.searchsorted(codes[order], np.arange(len(texts) + 1))
            grouped = {i: values[order] for i, values in numeric.items()}
            for code, text in enumerate(texts):
                cells = self._cells(g, text)
                for i, values in grouped.items():
                    part = values[bounds[code]:bounds[code + 1]]
                    part = part[np.isfinite(part)]
                    if part.size:
                        cells[i][0].update(part)
                    if cells[i][1] is not None:
                        cells[i][1].append(part)

    def _cells(self, g: int, text: str) -> list:
        cells = self.slices.get((g, text))
        if cells is None:
            keep = self.raw is not None
            cells = self.slices[g, text] = [[kll_sketch(self.k), [] if keep else None] if kind == "numeric"
                                            else [None, None] for kind in self.kinds]
        return cells

    def _overflow(self, g: int, seen: int) -> None:
        self.overflow[g] = max(seen, self.overflow.get(g, 0))
        for key in [key for key in self.slices if key[0] == g]:
            del self.slices[key]

    def merge(self, other: "SketchState") -> "SketchState":
        self.rows += other.rows
        for i, kind in enumerate(self.kinds):
            if kind == "numeric":
                self.sketches[i].merge(other.sketches[i])
            else:
                for value, count in other.counts[i].items():
                    self.counts[i][value] = self.counts[i].get(value, 0) + count
        keep = not (self.raw is None or other.raw is None or self.rows > self.exact_rows)
        if not keep:
            self.raw = None
        else:
            for mine, theirs in zip(self.raw, other.raw):
                mine.extend(theirs)
        for g, seen in other.overflow.items():
            self._overflow(g, seen)
        for (g, text), theirs in other.slices.items():
            if g in self.overflow:
                continue
            if (g, text) not in self.slices and sum(1 for h, _ in self.slices if h == g) >= self.max_slices:
                self._overflow(g, self.max_slices + 1)
                continue
            mine = self._cells(g, text)
            for cell, other_cell in zip(mine, theirs):
                if cell[0] is not None:
                    cell[0].merge(other_cell[0])
                cell[1] = cell[1] + other_cell[1] if keep and cell[1] is not None and other_cell[1] is not None else None
        if not keep:
            for cells in self.slices.values():
                for cell in cells:
                    cell[1] = None
        return self

    def raw_values(self, i: int) -> np.ndarray | None:
        """Every finite value of numeric column ``i``, or None when the stream was too large to keep them."""
        if self.raw is None:
            return None
        parts = self.raw[i]
        return np.concatenate(parts) if parts else np.empty(0)

    def slice_sketch(self, g: int, text: str, i: int):
        """The KLL sketch of numeric column ``i`` in value ``text`` of slice spec ``g`` (None: not kept)."""
        cells = self.slices.get((g, text))
        return None if cells is None else cells[i][0]

    def slice_raw(self, g: int, text: str, i: int) -> np.ndarray | None:
        cells = self.slices.get((g, text))
        if cells is None or cells[i][1] is None or self.raw is None:
            return None
        return np.concatenate(cells[i][1]) if cells[i][1] else np.empty(0)

    # -------------------------------------------------------------- transport (Spark partitions)
    def to_bytes(self) -> bytes:
        """JSON (sketches as base64 of their DataSketches bytes, raw values as .npy without pickle)."""
        doc = {"kinds": list(self.kinds), "k": self.k, "exact_rows": self.exact_rows, "rows": self.rows,
               "sketches": [_b64(s) for s in self.sketches],
               "counts": [None if c is None else [[_json_key(v), n] for v, n in c.items()] for c in self.counts],
               "raw": None if self.raw is None else [_npy(np.concatenate(p) if p else np.empty(0)) for p in self.raw],
               "groups": [list(g) for g in self.groups], "max_slices": self.max_slices,
               "overflow": [[g, n] for g, n in self.overflow.items()],
               "slices": [[g, text, [[_b64(c[0]), None if c[1] is None else _npy(np.concatenate(c[1]) if c[1] else np.empty(0))]
                                     for c in cells]] for (g, text), cells in self.slices.items()]}
        return json.dumps(doc).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "SketchState":
        doc = json.loads(data.decode())
        state = cls(tuple(doc["kinds"]), doc["k"], doc["exact_rows"], doc["rows"],
                    sketches=[None if s is None else kll_from_bytes(base64.b64decode(s)) for s in doc["sketches"]],
                    counts=[None if c is None else {v: n for v, n in c} for c in doc["counts"]],
                    groups=tuple(tuple(g) for g in doc.get("groups", ())), max_slices=doc.get("max_slices"))
        state.raw = None if doc["raw"] is None else [[_from_npy(r)] for r in doc["raw"]]
        state.overflow = {int(g): int(n) for g, n in doc.get("overflow", ())}
        state.slices = {(int(g), text): [[None if s is None else kll_from_bytes(base64.b64decode(s)),
                                          None if r is None else [_from_npy(r)]] for s, r in cells]
                        for g, text, cells in doc.get("slices", ())}
        return state


def slice_text(value: Any) -> str:
    """A slice key value as the drift rows spell it (``slice_value``): NULL, true / false, else ``str``."""
    if value is None:
        return "NULL"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def group_codes(columns: Sequence[pa.Array | pa.ChunkedArray]) -> tuple[np.ndarray, list[str]]:
    """Per row the index of its slice value, and each value's text (``a,b`` for crossed keys).

    Arrow dictionary-encodes each key (NULL its own entry), so only the distinct values become
    Python objects; a crossed key's code mixes the keys' codes.
    """
    code = None
    values: list[list[Any]] = []
    for column in columns:
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if pa.types.is_boolean(column.type):  # dictionary_encode has no boolean kernel
            encoded = pc.dictionary_encode(pc.cast(column, pa.int8()), null_encoding="encode")
            dictionary = [None if v is None else bool(v) for v in encoded.dictionary.to_pylist()]
        else:
            encoded = pc.dictionary_encode(column, null_encoding="encode")
            dictionary = encoded.dictionary.to_pylist()
        idx = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        code = idx if code is None else code * len(dictionary) + idx
        values.append(dictionary)
    unique, inverse = np.unique(code, return_inverse=True)
    texts = []
    for u in unique:
        parts, rest = [], int(u)
        for dictionary in reversed(values):
            rest, j = divmod(rest, len(dictionary))
            parts.append(slice_text(dictionary[j]))
        texts.append(",".join(reversed(parts)))
    return inverse.reshape(-1).astype(np.int64), texts


def _b64(sketch) -> str | None:
    return None if sketch is None else base64.b64encode(sketch.serialize()).decode()


def _as_float(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric Arrow column as float64 (NULL -> NaN)."""
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False) if len(column) else np.empty(0)
    return np.asarray(values, dtype=np.float64)


def finite_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The finite float64 values of a numeric Arrow column (NULL, NaN and ±inf dropped)."""
    values = _as_float(column)  # NULL arrives as NaN here
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
                     exact_rows: int = DEFAULT_EXACT_ROWS, groups: Sequence[Sequence[int]] = (),
                     max_slices: int | None = None) -> SketchState:
    """One :class:`SketchState` over a stream of record batches."""
    state = SketchState(tuple(kinds), k, exact_rows, groups=tuple(tuple(g) for g in groups), max_slices=max_slices)
    for batch in batches:
        state.update(batch)
    return state


def partition_states(kinds: Sequence[str], k: int, exact_rows: int, batches: Iterator[pa.RecordBatch],
                     groups: Sequence[Sequence[int]] = (), max_slices: int | None = None
                     ) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: the partition's batches in, one row ``state: binary`` out."""
    state = state_of_batches(kinds, batches, k, exact_rows, groups, max_slices)
    yield pa.RecordBatch.from_arrays([pa.array([state.to_bytes()], type=pa.binary())], names=["state"])
