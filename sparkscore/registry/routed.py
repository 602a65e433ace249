"""A route loaded for the Python API: ``reg.load('churn@ab')`` -> :class:`RoutedModel`.

Why ``load`` returns this instead of refusing: a route ref is accepted wherever a ref is (PREDICT,
``ss.spark.predict``, serving), and the Python API is where a route is tried out, replayed offline
or checked against SQL, so it should mean the same there: ``predict(frame, key=...)`` scores each
row with the arm its key hashes to (:func:`sparkscore.registry.routes.bucket`, the function the
SQL bucket expression and serving compute), NULL / NaN / non-integral keys take bucket 0 (the
control arm), exactly as in SQL.  Arms are pinned when the route is loaded (like a query pins
them when it is planned): a later alias move or route version does not change a loaded object.

It is deliberately *not* an :class:`~sparkscore.ir.Model`: a route has no single signature, sha256
or version, so code that needs one model (``get``, ``describe``, ``Model.save``) keeps refusing a
route ref with a pointer here rather than silently picking an arm.  Shadow arms are not scored
(they have no sink in the Python API; serving scores them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from sparkscore.errors import RegistryError, SignatureError
from sparkscore.ir import Model
from sparkscore.registry.refs import ModelRef
from sparkscore.registry.routes import BUCKETS, ResolvedArm, ResolvedRoute, Route, bucket, resolve_route

if TYPE_CHECKING:
    from sparkscore.registry.store import Registry


@dataclass(frozen=True)
class RoutedModel:
    """A route version with its arms pinned and loaded; :meth:`predict` scores each row on its own arm."""

    resolved: ResolvedRoute
    models: tuple[Model, ...]        # one per ``resolved.arms``, same order

    @property
    def route(self) -> Route:
        return self.resolved.route

    @property
    def ref(self) -> str:
        return self.route.ref

    @property
    def key(self) -> str:
        """The column whose value picks a row's arm."""
        return self.route.key

    @property
    def arms(self) -> dict[str, ResolvedArm]:
        """``{label: pinned arm}`` of the arms with traffic, in arm order."""
        return {a.label: a for a in self.resolved.arms}

    def model(self, label: str) -> Model:
        """The loaded model of arm ``label``."""
        for arm, model in zip(self.resolved.arms, self.models):
            if arm.label == label:
                return model
        raise RegistryError(f"route {self.ref} v{self.route.version} has no arm {label!r} with traffic "
                            f"(arms: {', '.join(self.arms)})")

    @property
    def is_classifier(self) -> bool:
        return all(m.is_classifier for m in self.models)

    def __repr__(self) -> str:
        return f"RoutedModel({self.resolved.describe()})"

    # ------------------------------------------------------------------ assignment
    def arm_index(self, keys: Any) -> np.ndarray:
        """Index into :attr:`arms` of each key's arm (int64)."""
        values = _key_values(keys, self.ref)
        buckets = np.fromiter((bucket(self.route.salt, k) for k in values), dtype=np.int64, count=len(values))
        owner = np.empty(BUCKETS, dtype=np.int64)
        labels = [a.label for a in self.resolved.arms]
        for start, end, label in self.route.ranges:
            owner[start:end] = labels.index(label)  # a zero-weight arm owns no range
        return owner[buckets]

    def arm_of(self, keys: Any) -> np.ndarray:
        """The arm label each key value goes to (the same arm as SQL's ``PREDICT_ARM(...).arm``)."""
        labels = np.array([a.label for a in self.resolved.arms], dtype=object)
        return labels[self.arm_index(keys)]

    # ------------------------------------------------------------------ scoring
    def predict(self, X: Any, key: Any = None, backend: str = "auto", device: str = "cpu") -> np.ndarray:
        """Each row's prediction from its own arm (regression values or class labels).

        ``key``: None reads the route's key column from ``X`` (pandas, Arrow, a dict of columns);
        a string names another column of ``X``; anything else is the key values, one per row
        (needed for a numpy matrix, which has no column names).
        """
        return self._scored(X, key, "predict", backend, device)

    def predict_proba(self, X: Any, key: Any = None, backend: str = "auto", device: str = "cpu") -> np.ndarray:
        """Each row's class probabilities from its own arm; the arms must share their classes."""
        if not self.is_classifier:
            raise RegistryError(f"route {self.ref}: predict_proba needs classifier arms; use predict")
        classes = {tuple(m.classes) for m in self.models}
        if len(classes) > 1:
            raise RegistryError(f"route {self.ref}: its arms have different classes, so a probability column would "
                                "mean different classes on different rows; use predict")
        return self._scored(X, key, "predict_proba", backend, device)

    def _scored(self, X: Any, key: Any, method: str, backend: str, device: str) -> np.ndarray:
        keys = _column(X, self.key if key is None else key, self.ref) if key is None or isinstance(key, str) else key
        index = self.arm_index(keys)
        n = _rows(X)
        if len(index) != n:
            raise SignatureError(f"route {self.ref}: {len(index)} key values for {n} rows; give one key per row")
        parts = []
        for i, model in enumerate(self.models):
            rows = np.flatnonzero(index == i)
            if rows.size:
                parts.append((rows, np.asarray(getattr(model, method)(_take(X, rows), backend=backend, device=device))))
        if not parts:  # no rows: the first arm's (empty) answer keeps the output's shape and type
            return np.asarray(getattr(self.models[0], method)(X, backend=backend, device=device))
        dtypes = {p.dtype for _, p in parts}
        out = np.empty((n, *parts[0][1].shape[1:]), dtype=dtypes.pop() if len(dtypes) == 1 else object)
        for rows, values in parts:
            out[rows] = values
        return out


def load_routed(reg: "Registry", ref: ModelRef) -> RoutedModel | None:
    """The route behind ``ref`` with its arms pinned and loaded (verified), None when it is no route."""
    resolved = resolve_route(reg, ref)
    if resolved is None:
        return None
    return RoutedModel(resolved, tuple(reg.load(ModelRef(a.name, version=a.version)) for a in resolved.arms))


# ---------------------------------------------------------------------------- frames
def _rows(X: Any) -> int:
    if isinstance(X, Mapping):
        return len(next(iter(X.values()))) if X else 0
    if hasattr(X, "num_rows"):  # Arrow
        return int(X.num_rows)
    return len(X)


def _column(X: Any, name: str, ref: str) -> Sequence[Any]:
    """Key values of column ``name`` of a frame (None for NULLs)."""
    if isinstance(X, np.ndarray):
        raise SignatureError(f"route {ref}: a numpy matrix has no column {name!r}; pass the key values, "
                             "predict(X, key=ids)")
    if isinstance(X, Mapping):
        names = list(X)
    elif hasattr(X, "num_rows"):  # Arrow (its .columns are arrays)
        names = list(X.schema.names)
    else:
        names = list(getattr(X, "columns", ()))
    if name not in names:
        raise SignatureError(f"route {ref}: the input has no key column {name!r}; add it, or pass the key values "
                             "with key=...")
    return X[name] if isinstance(X, Mapping) else X.column(name) if hasattr(X, "num_rows") else X[name]


def _key_values(keys: Any, ref: str) -> list:
    """Key values as Python objects, NULL-likes as None (pandas NA / NaT, Arrow nulls)."""
    if hasattr(keys, "to_pylist"):  # Arrow array / chunked array
        return keys.to_pylist()
    if hasattr(keys, "isna") and hasattr(keys, "astype"):  # pandas Series
        return keys.astype(object).where(~keys.isna(), None).tolist()
    if isinstance(keys, np.ndarray):
        return keys.tolist()
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise SignatureError(f"route {ref}: key must be a column name or one key value per row, got "
                             f"{type(keys).__name__}")
    return list(keys)


def _take(X: Any, rows: np.ndarray) -> Any:
    if isinstance(X, np.ndarray):
        return X[rows]
    if isinstance(X, Mapping):
        return {k: np.asarray(v, dtype=object if not hasattr(v, "dtype") else None)[rows] for k, v in X.items()}
    if hasattr(X, "num_rows"):  # Arrow table / record batch
        import pyarrow as pa

        return X.take(pa.array(rows))
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    return np.asarray(X)[rows]
