"""sqlglot AST nodes and literal builders the optimizer's rules share.

* :class:`ScorePredict` / :class:`ScorePredictProba`: a parsed ``PREDICT(ref, args...)`` /
  ``PREDICT_PROBA(...)`` exactly as written (ref literal, raw arguments incl. ``*`` / ``t.*``).
* :class:`ModelCall`: a *bound* call -- the context key of the model to run, its kind
  (``predict`` | ``proba`` | ``raw``) and one argument expression per model input, in signature
  order.  Every rule after ``bind_models`` works on these; ``batch_to_kernels`` turns the ones
  left into UDF calls.

Class names avoid ``Predict``: sqlglot dispatches generation on the lower-cased class name, and
``predict_sql`` would re-emit BigQuery's ``PREDICT(MODEL ...)``.
"""

from __future__ import annotations

import math
from decimal import Decimal

from sqlglot import exp

KINDS = ("predict", "proba", "raw")


class ScorePredict(exp.Expression, exp.Func):
    """``PREDICT(model_ref, arg, ...)`` before binding."""

    arg_types = {"this": True, "expressions": False}
    is_var_len_args = True
    _sql_names = ["PREDICT"]

    kind = "predict"


class ScorePredictProba(ScorePredict):
    """``PREDICT_PROBA(model_ref, arg, ...)`` before binding."""

    _sql_names = ["PREDICT_PROBA"]

    kind = "proba"


class ScorePredictArm(ScorePredict):
    """``PREDICT_ARM(route_ref, arg, ...)``: which arm (and version) of a route answers a row."""

    _sql_names = ["PREDICT_ARM"]

    kind = "arm"


class ScoreDrift(exp.Expression, exp.Func):
    """``DRIFT(model_ref, query_text [, reference_query_text])`` as a table function (DESIGN section 12);
    the engines replace it by the drift rows before planning (``sparkscore.engines.monitoring``)."""

    arg_types = {"this": True, "expressions": False}
    is_var_len_args = True
    _sql_names = ["DRIFT"]


class ModelCall(exp.Expression, exp.Func):
    """A bound model call: ``this`` = context model key, ``kind``, ``expressions`` = inputs in order."""

    arg_types = {"this": True, "kind": True, "expressions": False}
    is_var_len_args = True
    _sql_names = ["SPARKSCORE_MODEL_CALL"]

    @classmethod
    def build(cls, key: str, kind: str, inputs: list[exp.Expr]) -> "ModelCall":
        if kind not in KINDS:
            raise ValueError(f"unknown model call kind {kind!r}; use one of {KINDS}")
        return cls(this=exp.Literal.string(key), kind=exp.Literal.string(kind), expressions=list(inputs))

    @property
    def model_key(self) -> str:
        return self.this.name

    @property
    def call_kind(self) -> str:
        return self.args["kind"].name

    @property
    def inputs(self) -> list[exp.Expr]:
        return list(self.expressions)


def number(value: float) -> exp.Expr:
    """An exact binary64 SQL literal for ``value``.

    Shortest round-trip digits in scientific notation (``5e-1``): DuckDB reads ``0.5`` as DECIMAL
    but ``5e-1`` as DOUBLE, and Spark reads exponent literals as DOUBLE.  Non-finite values become
    ``CAST('NaN' AS DOUBLE)`` etc.  Never pass numpy scalars through ``repr`` (DESIGN 11).
    """
    x = float(value)
    if math.isnan(x):
        return exp.cast(exp.Literal.string("NaN"), exp.DataType.Type.DOUBLE)
    if math.isinf(x):
        return exp.cast(exp.Literal.string("Infinity" if x > 0 else "-Infinity"), exp.DataType.Type.DOUBLE)
    digits = format(Decimal(repr(abs(x))).normalize(), "e").replace("e+", "e")
    literal = exp.Literal.number(digits)
    return exp.Neg(this=literal) if math.copysign(1.0, x) < 0 else literal


def nan() -> exp.Expr:
    return number(math.nan)
