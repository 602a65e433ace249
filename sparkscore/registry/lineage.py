"""What a registered version records about where it came from (MLflow-style lineage).

Lineage answers "which library, data and code produced this model, in which environment", so a
prediction can be traced back and a model rebuilt.  Package versions are read from installed
distribution metadata (no imports), so recording them is cheap and never loads torch or pyspark.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata as importlib_metadata
from typing import Any, Mapping

from sparkscore.errors import RegistryError

#: distributions whose versions are recorded when installed (they shape what a model predicts)
TRACKED_PACKAGES = ("numpy", "pandas", "pyarrow", "scikit-learn", "lightgbm", "xgboost", "xgboost-cpu",
                    "pyspark", "duckdb", "sqlglot", "torch")

#: the keys a caller is encouraged to pass in ``lineage=`` (any other JSON-able key is kept too)
CALLER_KEYS = ("data_fingerprint", "code_version", "config")


@lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Python, platform and installed package versions of this process."""
    from sparkscore import __version__  # a source checkout has no distribution metadata

    packages = {"sparkscore": __version__}
    for dist in TRACKED_PACKAGES:
        try:
            packages[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "executable": sys.executable, "packages": packages}


def utc_now() -> str:
    """Current time as an ISO-8601 UTC timestamp (``2024-05-01T12:00:00.123456+00:00``)."""
    return datetime.now(timezone.utc).isoformat()


def version_record(name: str, version: int, sha256: str, created_at: str, model_metadata: Mapping[str, Any],
                   caller_lineage: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``version.json`` document of one registered version."""
    return {
        "name": name,
        "version": version,
        "sha256": sha256,
        "created_at": created_at,
        "source": {"library": model_metadata.get("source"),
                   "library_version": model_metadata.get("library_version"),
                   "class": model_metadata.get("class")},
        "environment": environment(),
        "lineage": dict(caller_lineage or {}),
    }


def check_lineage(name: str, lineage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Caller lineage as a JSON-able dict; RegistryError names the model if it is not one."""
    if lineage is None:
        return {}
    if not isinstance(lineage, Mapping):
        raise RegistryError(f"lineage of model {name!r} must be a dict like {{'code_version': 'abc123'}}, "
                            f"got {type(lineage).__name__}")
    try:
        json.dumps(lineage, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"lineage of model {name!r} must be JSON-serialisable ({exc}); pass strings, "
                            "numbers, lists and dicts") from None
    return dict(lineage)
