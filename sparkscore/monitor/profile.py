"""Profiles: small, versioned, mergeable summaries of a dataset against one model's signature.

A :class:`Profile` holds one :class:`ColumnProfile` per model input, per model output and (when
given) for the label.  Numeric columns keep counts (rows, NULL, NaN, +inf, -inf, finite), exact
moments of the finite values (min, max, mean, M2), a histogram on fixed edges and a KLL quantile
sketch (Apache DataSketches ``kll_doubles_sketch``) of the finite values.  Categorical columns keep
the top-k category counts plus ``other``.

Histogram layout (shared by profiles and drift): ``edges`` are the *interior* edges
``e_1 < ... < e_{B-1}`` (training quantiles at i/B); bin 0 is ``(-inf, e_1)``, bin i is
``[e_i, e_{i+1})``, the last bin ``[e_{B-1}, +inf]``.  So values outside the training range fall
into the end bins and ±inf are counted there (and also in ``pos_inf`` / ``neg_inf``); NULL and
NaN are never in the histogram: they are the ``missing`` bucket that the drift metrics append.

Rank error of the sketch: KLL with parameter ``k`` answers a rank query within
``normalized_rank_error`` of the true normalized rank with 99% confidence (about 1.33% for
the default k=200; 0 while the sketch has not compacted, i.e. holds every value: then quantiles,
CDF and the KS / Wasserstein values computed from it are exact).

Storage: one JSON document (the sketch as base64 of its DataSketches serialization), never pickle;
:meth:`Profile.save` writes ``profile.json`` and returns its sha256.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sparkscore.errors import IntegrityError, MonitorError

PROFILE_FORMAT = 1
PROFILE_JSON = "profile.json"
DEFAULT_BINS = 10
DEFAULT_TOPK = 20
DEFAULT_KLL_K = 200
ROLES = ("input", "output", "label")
KINDS = ("numeric", "categorical")


def kll_sketch(k: int = DEFAULT_KLL_K):
    """An empty KLL sketch (the one place datasketches is imported)."""
    from datasketches import kll_doubles_sketch

    return kll_doubles_sketch(int(k))


def kll_from_bytes(data: bytes):
    from datasketches import kll_doubles_sketch

    return kll_doubles_sketch.deserialize(bytes(data))


def rank_error(sketch) -> float:
    """Normalized rank error of ``sketch``: 0 while it holds every value (exact mode)."""
    if sketch is None or sketch.is_empty() or not sketch.is_estimation_mode():
        return 0.0
    return float(sketch.normalized_rank_error(False))


@dataclass(frozen=True)
class ColumnProfile:
    """The summary of one column (see the module docstring for the histogram layout)."""

    name: str
    role: str                  # input | output | label
    kind: str                  # numeric | categorical
    count: int = 0             # rows
    nulls: int = 0
    nans: int = 0
    pos_inf: int = 0
    neg_inf: int = 0
    finite: int = 0
    min: float | None = None   # of the finite values
    max: float | None = None
    mean: float | None = None
    m2: float = 0.0            # sum of squared deviations from the mean (finite values)
    edges: tuple[float, ...] = ()
    hist: tuple[int, ...] = ()
    categories: tuple[tuple[Any, int], ...] = ()   # top-k (value, count), most frequent first
    other: int = 0             # non-missing values outside ``categories``
    kll: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES or self.kind not in KINDS:
            raise MonitorError(f"column {self.name!r}: role {self.role!r} / kind {self.kind!r} unknown")
        if self.kind == "numeric" and self.hist and len(self.hist) != len(self.edges) + 1:
            raise IntegrityError(f"column {self.name!r}: {len(self.hist)} histogram counts for {len(self.edges)} edges")

    @property
    def missing(self) -> int:
        """NULL + NaN: the ``missing`` bucket of the drift metrics."""
        return self.nulls + self.nans

    @property
    def std(self) -> float | None:
        """Population standard deviation of the finite values."""
        return math.sqrt(self.m2 / self.finite) if self.finite else None

    @property
    def sketch(self):
        return None if self.kll is None else kll_from_bytes(self.kll)

    @property
    def rank_error(self) -> float:
        return rank_error(self.sketch)

    def distribution(self) -> np.ndarray:
        """Counts the drift metrics compare: histogram (or categories + other) then ``missing``."""
        body = self.hist if self.kind == "numeric" else [c for _, c in self.categories] + [self.other]
        return np.asarray([*body, self.missing], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["edges"] = [float(e) for e in self.edges]
        doc["hist"] = [int(h) for h in self.hist]
        doc["categories"] = [[v, int(c)] for v, c in self.categories]
        doc["kll"] = None if self.kll is None else base64.b64encode(self.kll).decode("ascii")
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "ColumnProfile":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(doc) - names
        if unknown:
            raise IntegrityError(f"profile column {doc.get('name')!r} has unknown fields {sorted(unknown)}")
        values = dict(doc)
        values["edges"] = tuple(float(e) for e in values.get("edges", ()))
        values["hist"] = tuple(int(h) for h in values.get("hist", ()))
        values["categories"] = tuple((v, int(c)) for v, c in values.get("categories", ()))
        kll = values.get("kll")
        values["kll"] = None if kll is None else base64.b64decode(kll)
        return cls(**values)

    def merge(self, other: "ColumnProfile", topk: int) -> "ColumnProfile":
        """Both halves together (same column, same edges).  Moments merge exactly (Chan et al.);
        category counts are exact when each half kept all its categories, otherwise lower bounds."""
        if (self.name, self.role, self.kind) != (other.name, other.role, other.kind):
            raise MonitorError(f"cannot merge profile column {self.name!r} with {other.name!r}")
        if self.kind == "numeric" and self.edges != other.edges:
            raise MonitorError(f"column {self.name!r}: profiles with different histogram edges do not merge; "
                               "profile partitions against the same reference edges")
        n = self.finite + other.finite
        if n:
            ma, mb = (self.mean or 0.0), (other.mean or 0.0)
            delta = mb - ma
            mean = ma + delta * other.finite / n
            m2 = self.m2 + other.m2 + delta * delta * self.finite * other.finite / n
        else:
            mean, m2 = None, 0.0
        counts: dict[Any, int] = {}
        for v, c in (*self.categories, *other.categories):
            counts[v] = counts.get(v, 0) + c
        top = top_categories(counts, topk)
        kept = sum(c for _, c in top)
        nonmissing = (self.count - self.missing) + (other.count - other.missing)
        sketch = None
        if self.kll is not None or other.kll is not None:
            sketch = kll_sketch(self.sketch.k if self.kll is not None else other.sketch.k)
            for part in (self.sketch, other.sketch):
                if part is not None:
                    sketch.merge(part)
        return dataclasses.replace(
            self, count=self.count + other.count, nulls=self.nulls + other.nulls, nans=self.nans + other.nans,
            pos_inf=self.pos_inf + other.pos_inf, neg_inf=self.neg_inf + other.neg_inf, finite=n,
            min=_opt(min, self.min, other.min), max=_opt(max, self.max, other.max), mean=mean, m2=m2,
            hist=tuple(a + b for a, b in zip(self.hist, other.hist)) if self.hist else other.hist,
            categories=top, other=(nonmissing - kept) if self.kind == "categorical" else 0,
            kll=None if sketch is None else sketch.serialize())


def _opt(fn, a, b):
    present = [x for x in (a, b) if x is not None]
    return fn(present) if present else None


def top_categories(counts: Mapping[Any, int], topk: int) -> tuple[tuple[Any, int], ...]:
    """The ``topk`` most frequent (value, count), ties broken by the value's text (deterministic)."""
    ordered = sorted(counts.items(), key=lambda vc: (-vc[1], str(vc[0])))
    return tuple((_plain(v), int(c)) for v, c in ordered[:topk])


def _plain(value: Any) -> Any:
    """A category value as a JSON scalar (numpy scalars become Python numbers)."""
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class Profile:
    """Profile of one dataset against one model (``model``: name, version, sha256 when known)."""

    columns: tuple[ColumnProfile, ...]
    rows: int
    bins: int = DEFAULT_BINS
    topk: int = DEFAULT_TOPK
    kll_k: int = DEFAULT_KLL_K
    model: Mapping[str, Any] | None = None
    source: str = "batch"       # "training" when stored with a registry version
    format: int = PROFILE_FORMAT

    def column(self, name: str, role: str | None = None) -> ColumnProfile:
        for col in self.columns:
            if col.name == name and (role is None or col.role == role):
                return col
        known = ", ".join(c.name for c in self.columns)
        raise MonitorError(f"profile has no column {name!r} (it has {known}); profile that column first")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def merge(self, other: "Profile") -> "Profile":
        """The profile of both datasets (e.g. two Spark partitions profiled on the same edges)."""
        if [(c.name, c.role) for c in self.columns] != [(c.name, c.role) for c in other.columns]:
            raise MonitorError("cannot merge profiles of different columns; profile both against the same model")
        return dataclasses.replace(self, rows=self.rows + other.rows,
                                   columns=tuple(a.merge(b, self.topk) for a, b in zip(self.columns, other.columns)))

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "rows": self.rows, "bins": self.bins, "topk": self.topk,
                "kll_k": self.kll_k, "model": None if self.model is None else dict(self.model),
                "source": self.source, "columns": [c.to_json() for c in self.columns]}

    def to_bytes(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "Profile":
        if not isinstance(doc, Mapping) or doc.get("format") != PROFILE_FORMAT:
            found = doc.get("format") if isinstance(doc, Mapping) else None
            raise IntegrityError(f"profile format {found!r} is not {PROFILE_FORMAT}; recompute it with "
                                 "`sparkscore profile REF --data PATH`")
        try:
            return cls(columns=tuple(ColumnProfile.from_json(c) for c in doc["columns"]), rows=int(doc["rows"]),
                       bins=int(doc["bins"]), topk=int(doc["topk"]), kll_k=int(doc["kll_k"]), model=doc.get("model"),
                       source=str(doc.get("source", "batch")))
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"profile document is damaged ({exc}); recompute it") from None

    def save(self, path: str | Path) -> str:
        """Write ``profile.json`` into directory ``path`` (or to ``path`` if it ends in .json); its sha256."""
        target = Path(path)
        if target.suffix != ".json":
            target.mkdir(parents=True, exist_ok=True)
            target = target / PROFILE_JSON
        data = self.to_bytes()
        target.write_bytes(data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> "Profile":
        """Read a saved profile; with ``sha256``, verify it first (IntegrityError when it differs)."""
        target = Path(path)
        if target.is_dir():
            target = target / PROFILE_JSON
        try:
            data = target.read_bytes()
        except FileNotFoundError:
            raise MonitorError(f"no profile at {target}; compute one with `sparkscore profile REF --data PATH`") from None
        if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
            raise IntegrityError(f"profile {target} does not match the sha256 in its version record "
                                 "(modified or damaged); recompute it with `sparkscore profile REF --data PATH`")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"profile {target} is not valid JSON; recompute it") from None
        return cls.from_json(doc)


def column_specs(model, labels: str | None = None) -> list[tuple[str, str, str]]:
    """(name, role, kind) of every column a profile of ``model`` holds: inputs, ``prediction``, label."""
    from sparkscore.ir.naming import output_type

    specs = [(c.name, "input", "categorical" if is_categorical(c) else "numeric") for c in model.signature.inputs]
    if output_type(model, "predict") == "DOUBLE[]":
        raise MonitorError(f"model {model.name}: multi-output regressors cannot be monitored yet (PREDICT returns "
                           "DOUBLE[]); monitor one output per model")
    multiclass = model.is_classifier and model.n_classes != 2  # PREDICT returns the label, not P(positive)
    specs.append(("prediction", "output", "categorical" if multiclass else "numeric"))
    if labels is not None:
        specs.append((labels, "label", "categorical" if model.is_classifier else "numeric"))
    return specs


def is_categorical(column) -> bool:
    """A model input profiled by category: strings, or a declared categorical (LightGBM/XGBoost natives)."""
    return column.dtype == "varchar" or bool(column.categories)
