"""Model signatures: the ordered, typed input columns a model reads and the outputs it returns.

The signature is the contract between a model and a query engine: ``PREDICT(m, *)`` binds
columns by these names, positional arguments by this order, and the engines type their UDFs
from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sparkscore.errors import SignatureError

#: Logical input/output types.  Engines map them to their own SQL types.
LOGICAL_TYPES = ("double", "float", "bigint", "integer", "boolean", "varchar", "double[]")

_COLUMN_NAME = re.compile(r"^[^\x00-\x1f]{1,255}$")


@dataclass(frozen=True)
class Column:
    """One typed column.

    ``categories`` is set for categorical inputs: the values (strings or numbers) in code order.
    The reference encoder maps a value to its index in ``categories`` (unknown and NULL -> NaN),
    which is the number the model's splits / one-hot indicators compare against.

    ``accepts`` is set for inputs a strict encoder reads (sklearn ``OneHotEncoder`` with
    ``handle_unknown='error'``, its default): the only values (strings, or numbers compared as
    float64) the native pipeline scores; ``None`` in it means NULL / NaN is accepted too (an
    imputer in front turns it into a known category).  Any other value fails the query, as
    sklearn's ``transform`` raises, instead of scoring the all-zero one-hot row a lenient encoder
    would give it.  It lives on the column, not in the feature map, because the check must see
    the raw value (an unknown string is encoded to NaN, indistinguishable from NULL) and must
    survive every model the optimizer derives (pruned, folded, factorized maps keep the columns).
    Absent in model.json for every other column, so older models load and hash as before.
    """

    name: str
    dtype: str = "double"
    nullable: bool = True
    categories: tuple | None = None
    accepts: tuple | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _COLUMN_NAME.match(self.name):
            raise SignatureError(f"invalid column name {self.name!r}: use 1-255 printable characters")
        if self.dtype not in LOGICAL_TYPES:
            raise SignatureError(
                f"column {self.name!r} has unknown type {self.dtype!r}; use one of {', '.join(LOGICAL_TYPES)}"
            )
        if self.categories is not None:
            object.__setattr__(self, "categories", tuple(self.categories))
        if self.accepts is not None:
            object.__setattr__(self, "accepts", tuple(self.accepts))

    @property
    def is_categorical(self) -> bool:
        return self.categories is not None

    @property
    def is_strict(self) -> bool:
        """Values outside :attr:`accepts` fail the query (see the class docstring)."""
        return self.accepts is not None

    @property
    def accepts_null(self) -> bool:
        return self.accepts is not None and None in self.accepts

    @property
    def accepted_values(self) -> tuple:
        """:attr:`accepts` without its NULL marker."""
        return tuple(v for v in self.accepts or () if v is not None)

    def to_json(self) -> dict:
        out: dict = {"name": self.name, "dtype": self.dtype, "nullable": self.nullable}
        if self.categories is not None:
            out["categories"] = [_json_scalar(c) for c in self.categories]
        if self.accepts is not None:
            out["accepts"] = [_json_scalar(c) for c in self.accepts]
        return out

    @classmethod
    def from_json(cls, data: dict) -> "Column":
        cats = data.get("categories")
        accepts = data.get("accepts")
        return cls(data["name"], data.get("dtype", "double"), bool(data.get("nullable", True)),
                   tuple(cats) if cats is not None else None, tuple(accepts) if accepts is not None else None)


@dataclass(frozen=True)
class Signature:
    """Ordered inputs and outputs of a model."""

    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        seen: set[str] = set()
        for col in self.inputs:
            if col.name in seen:
                raise SignatureError(f"duplicate input column {col.name!r} in signature; rename it")
            seen.add(col.name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    def index(self, name: str) -> int:
        for i, col in enumerate(self.inputs):
            if col.name == name:
                return i
        raise SignatureError(f"model has no input column {name!r}")

    def to_json(self) -> dict:
        return {"inputs": [c.to_json() for c in self.inputs],
                "outputs": [c.to_json() for c in self.outputs]}

    @classmethod
    def from_json(cls, data: dict) -> "Signature":
        return cls(tuple(Column.from_json(c) for c in data["inputs"]),
                   tuple(Column.from_json(c) for c in data.get("outputs", ())))

    @classmethod
    def from_names(cls, names, dtype: str = "double") -> "Signature":
        return cls(tuple(Column(str(n), dtype) for n in names))


def _json_scalar(value):
    """Python scalar for JSON (numpy scalars -> int/float/str/bool)."""
    if hasattr(value, "item"):
        return value.item()
    return value
