"""What a registered version records about where it came from (ModelDB/Verta-style lineage).

Lineage answers "which code, data, configuration and environment made this model", so a
prediction can be traced back and a model rebuilt.  It is observed where it can be (the git commit
of the working directory, the native model's hyper-parameters, installed package versions) and
taken from arguments where it cannot (``code=``, ``training_data=``, metrics, tags, parent).
Everything lands in ``version.json``, which ``version.sha256`` covers, so lineage is as
tamper-evident as the weights.  Package versions are read from distribution metadata (no
imports), so recording them is cheap and never loads torch or pyspark.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Mapping

from sparkscore.errors import RegistryError

#: distributions whose versions are recorded when installed (they shape what a model predicts)
#: (onnx and mlflow: the importers of section 15 read their files with them)
TRACKED_PACKAGES = ("numpy", "pandas", "pyarrow", "scikit-learn", "lightgbm", "xgboost", "xgboost-cpu", "catboost",
                    "onnx", "mlflow", "mlflow-skinny", "pyspark", "duckdb", "sqlglot", "torch")

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
            "platform": platform.platform(), "executable": sys.executable, "packages": packages,
            "distributions_sha256": _distributions_sha256()}


def _distributions_sha256() -> str:
    """sha256 of the sorted ``name==version`` lines of every installed distribution: one value that
    changes whenever anything in the resolved environment does (two environments with equal hashes
    hold the same package versions)."""
    lines = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in importlib_metadata.distributions()})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


GIT_TIMEOUT_S = 10.0


def code_lineage(code: Any = None, cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    """Which code made the model: ``code`` as given, else the git commit of the repository holding
    ``cwd`` (default: the working directory) plus the sha256 of ``git diff HEAD`` when it is dirty.

    Untracked files are not in ``git diff``; ``untracked`` counts them so a clean-looking record
    with new scripts beside it says so.  No git, or not a repository: ``{"source": "none"}``.
    """
    if code is not None:
        return {"source": "argument", "value": code}
    where = os.fspath(cwd) if cwd is not None else os.getcwd()

    def git(*args: str) -> bytes:
        return subprocess.run(["git", *args], cwd=where, capture_output=True, check=True, timeout=GIT_TIMEOUT_S,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout

    try:
        commit = git("rev-parse", "HEAD").decode().strip()
        top = git("rev-parse", "--show-toplevel").decode().strip()
        diff = git("diff", "HEAD", "--binary")
        untracked = git("ls-files", "--others", "--exclude-standard", "-z").count(b"\0")
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return {"source": "none"}
    return {"source": "git", "repository": top, "commit": commit, "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None, "untracked": untracked}


def data_fingerprint(data: Any, what: str) -> dict[str, Any]:
    """Schema, row count and content hash of training data (pandas, Arrow, numpy, or a file/folder path).

    In-memory data is hashed as Arrow IPC stream bytes (so the hash covers values and types, and
    equal frames give equal hashes); files by their bytes, with path, size and modification time.
    """
    import numpy as np

    if isinstance(data, (str, os.PathLike)):
        return _files_fingerprint(Path(data), what)
    if isinstance(data, np.ndarray):
        array = np.ascontiguousarray(data)
        return {"kind": "numpy", "dtype": str(array.dtype), "shape": list(array.shape),
                "rows": int(array.shape[0]) if array.ndim else 1,
                "sha256": hashlib.sha256(array.tobytes()).hexdigest()}
    import pyarrow as pa

    kind = type(data).__module__.split(".", 1)[0]
    try:
        if isinstance(data, pa.RecordBatch):
            table = pa.Table.from_batches([data])
        elif isinstance(data, pa.Table):
            table = data
        elif kind == "pandas":
            table = pa.Table.from_pandas(data)
        else:
            raise TypeError(type(data).__name__)
    except (TypeError, pa.ArrowException) as exc:
        raise RegistryError(f"training_data of {what} cannot be fingerprinted ({exc}); pass a pandas DataFrame, "
                            "an Arrow table, a numpy array or a parquet path") from None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return {"kind": "pandas" if kind == "pandas" else "arrow",
            "schema": [[f.name, str(f.type)] for f in table.schema], "rows": table.num_rows,
            "sha256": hashlib.sha256(sink.getvalue()).hexdigest(), "hash_of": "Arrow IPC stream bytes"}


def _files_fingerprint(path: Path, what: str) -> dict[str, Any]:
    """Path, size, mtime and sha256 of a file, or of every file under a folder (a parquet dataset)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    elif path.is_file():
        files = [path]
    else:
        raise RegistryError(f"training_data of {what}: {path} does not exist; pass an existing file or folder")
    entries = []
    for file in files:
        digest = hashlib.sha256()
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        stat = file.stat()
        entries.append({"path": str(file.absolute()), "size": stat.st_size,
                        "mtime": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(),
                        "sha256": digest.hexdigest()})
    return {"kind": "files", "path": str(path.absolute()), "files": entries}


def native_config(native: Any) -> dict[str, Any] | None:
    """The native model's hyper-parameters: sklearn ``get_params(deep=False)``, LightGBM's parameters
    from its model string, XGBoost's ``save_config``; None for an already converted ``ss.Model``."""
    try:
        return _native_config(native)
    except Exception as exc:  # noqa: BLE001 - lineage must not block a model that converted fine
        return {"library": type(native).__module__.split(".", 1)[0], "error": f"{type(exc).__name__}: {exc}"[:300]}


def _native_config(native: Any) -> dict[str, Any] | None:
    root = type(native).__module__.split(".", 1)[0]
    if root == "lightgbm":
        booster = getattr(native, "booster_", native)
        return {"library": "lightgbm", "params": _lightgbm_params(booster.model_to_string())}
    if root == "xgboost":
        booster = native.get_booster() if hasattr(native, "get_booster") else native
        return {"library": "xgboost", "config": json.loads(booster.save_config())}
    if root == "catboost":  # every parameter the model was trained with, defaults resolved
        return {"library": "catboost", "params": json_safe(native.get_all_params())}
    if root == "onnx" and hasattr(native, "graph"):  # a ModelProto: who exported it, against which opsets
        return {"library": "onnx", "producer": f"{native.producer_name} {native.producer_version}".strip(),
                "graph": native.graph.name,
                "opsets": {(o.domain or "ai.onnx"): int(o.version) for o in native.opset_import},
                "nodes": [f"{n.domain or 'ai.onnx'}.{n.op_type}" for n in native.graph.node]}
    if root == "sklearn" and hasattr(native, "get_params"):
        return {"library": "sklearn", "class": type(native).__qualname__,
                "params": {k: json_safe(v) for k, v in sorted(native.get_params(deep=False).items())}}
    return None


def _lightgbm_params(model_string: str) -> dict[str, str]:
    """``[key: value]`` lines between ``parameters:`` and ``end of parameters`` of a LightGBM model string."""
    params, inside = {}, False
    for line in model_string.splitlines():
        if line == "parameters:":
            inside = True
        elif line == "end of parameters":
            break
        elif inside and line.startswith("[") and line.endswith("]") and ": " in line:
            key, _, value = line[1:-1].partition(": ")
            params[key] = value
    return params


def json_safe(value: Any) -> Any:
    """``value`` as JSON (non-finite floats and objects become their repr, tagged), recursively."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # numpy scalars
        return json_safe(value.item())
    return {"repr": repr(value)[:500], "type": f"{type(value).__module__}.{type(value).__qualname__}"}


def utc_now() -> str:
    """Current time as an ISO-8601 UTC timestamp (``2024-05-01T12:00:00.123456+00:00``)."""
    return datetime.now(timezone.utc).isoformat()


def version_record(name: str, version: int, sha256: str, created_at: str, model_metadata: Mapping[str, Any],
                   caller_lineage: Mapping[str, Any] | None,
                   observed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``version.json`` document of one registered version (``observed``: code, data, config...)."""
    return {
        **dict(observed or {}),
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


#: the sections of a version record that ``lineage`` prints and ``diff`` compares, in order
LINEAGE_SECTIONS = ("code", "data", "configuration", "importer", "environment", "source", "metrics", "tags",
                    "description", "parent", "mlflow", "lineage")


_OTHER_SECTIONS = ("importer", "source", "metrics", "tags", "description", "parent", "mlflow", "lineage")


def changed_leaves(a: Any, b: Any, prefix: str = "") -> dict[str, list[Any]]:
    """``{dotted.path: [a_value, b_value]}`` for every leaf that differs between two JSON documents
    (a key missing on one side shows as None there)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: dict[str, list[Any]] = {}
        for key in sorted(set(a) | set(b), key=str):
            out.update(changed_leaves(a.get(key), b.get(key), f"{prefix}{key}."))
        return out
    if isinstance(a, Mapping) and b is None:
        return changed_leaves(a, {}, prefix)
    if a is None and isinstance(b, Mapping):
        return changed_leaves({}, b, prefix)
    return {} if a == b else {prefix.rstrip("."): [a, b]}


def record_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """What differs between two lineage documents (:meth:`Registry.lineage`), grouped the way a
    reviewer asks: parameters, signature, data, environment, code, and everything else."""
    def part(doc: Mapping[str, Any], key: str) -> Any:
        return doc.get(key)

    groups = {
        "parameters": (part(a, "configuration") or {}, part(b, "configuration") or {}),
        "signature": (part(a, "signature") or {}, part(b, "signature") or {}),
        "data": (part(a, "data"), part(b, "data")),
        "environment": (part(a, "environment") or {}, part(b, "environment") or {}),
        "code": (part(a, "code"), part(b, "code")),
        "other": ({k: a.get(k) for k in _OTHER_SECTIONS}, {k: b.get(k) for k in _OTHER_SECTIONS}),
    }
    return {group: changed_leaves(x, y) for group, (x, y) in groups.items()}
