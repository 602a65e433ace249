"""Names that models get inside SQL engines (shared by the optimizer and the engines)."""

from __future__ import annotations

import re

_NON_IDENT = re.compile(r"[^A-Za-z0-9_]")


def udf_name(model_name: str, version: int, kind: str = "predict") -> str:
    """Engine function name of one model version: ``churn_v3`` / ``churn_v3_proba``.

    Registry names allow ``.`` and ``-``; they become ``_``.  The result is always a plain SQL
    identifier; the SQL generator still quotes it where the dialect needs.
    """
    base = f"{_NON_IDENT.sub('_', model_name)}_v{int(version)}"
    return base if kind == "predict" else f"{base}_{kind}"
