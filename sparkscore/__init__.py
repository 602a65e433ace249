"""sparkscore: score trained ML models inside Spark SQL / PySpark and DuckDB.

``import sparkscore`` stays fast and light: heavy modules (torch, pyspark, engines, importers
of optional libraries) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sparkscore import errors
from sparkscore.ir.model import Model

__version__ = "0.1.0"

_LAZY = {
    "convert": ("sparkscore.importers", "convert"),
    "Registry": ("sparkscore.registry", "Registry"),
    "ModelVersion": ("sparkscore.registry", "ModelVersion"),
    "explain": ("sparkscore.engines", "explain"),
    "duckdb": ("sparkscore.engines.duckdb", None),
    "spark": ("sparkscore.engines.spark", None),
    "monitor": ("sparkscore.monitor", None),
}

__all__ = ["Model", "errors", "__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from sparkscore.importers import convert  # noqa: F401
    from sparkscore.registry import ModelVersion, Registry  # noqa: F401


def __getattr__(name: str):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'sparkscore' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
