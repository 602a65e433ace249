"""MLflow models (a model directory, ``models:/name@alias``, ``models:/name/3``, ``runs:/<id>/path``) -> IR.

An MLflow model is a directory with an ``MLmodel`` YAML file naming its *flavors*.  The LightGBM
and XGBoost flavors keep the library's own file (``model.lgb`` from ``Booster.save_model``;
``model.ubj`` / ``.json`` / ``.xgb`` from XGBoost's ``save_model``), so they are read here with
the library's native loader and converted by the LightGBM / XGBoost importers: nothing is
unpickled.  ``mlflow.pyfunc.load_model`` is never called: it imports the flavor's loader module
and, for most flavors, unpickles with cloudpickle.

Refused (:class:`UnsupportedModelError`, one line naming the model and the fix):

* the sklearn flavor (and LightGBM's scikit-learn wrappers, which MLflow stores through the
  sklearn serializer) unless the caller opts in with ``allow_pickle=True`` (CLI
  ``--allow-pickle``): unpickling runs any code the file holds;
* the ``skops`` serialization (the ``skops`` package would be needed and it is not a dependency);
* every other flavor (custom ``python_function`` models, pytorch, ...).

MLflow's signature is checked against the native model: its input names become the model's input
names when the native file has none, and names that contradict the fitted ones are refused
(scoring by them would shuffle features).  Its column types become the signature's logical types.

What MLflow knows about the model (run id, logged-model id, registered name / version / aliases,
the run's params, metrics and tags, the datasets logged as the run's inputs with their digest and
source) is returned as :attr:`MlflowImport.lineage`; ``Registry.register`` stores it with the
version under ``mlflow`` (covered by the record's sha256).  It is not put into the model's own
metadata: the same model bytes reached through ``models:/churn/3`` and ``models:/churn@champion``
stay one version.

URIs resolve against MLflow's own configuration (``MLFLOW_TRACKING_URI`` /
``mlflow.set_tracking_uri`` and the registry URI), exactly as ``mlflow`` itself would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

from sparkscore.errors import IntegrityError, SignatureError, UnsupportedModelError
from sparkscore.ir.model import Model
from sparkscore.ir.signature import Signature

URI_SCHEMES = ("models:/", "runs:/")
MLMODEL = "MLmodel"
#: flavors imported, in the order they are preferred when a model has several
FLAVORS = ("lightgbm", "xgboost", "sklearn")
#: MLflow column types -> sparkscore logical types (numbers are scored as doubles either way)
_COLSPEC_TYPES = {"double": "double", "float": "float", "long": "bigint", "integer": "integer",
                  "boolean": "boolean", "string": "varchar"}
#: XGBoost model classes MLflow records in ``model_class`` that load natively with ``load_model``
_XGB_CLASSES = ("xgboost.core.Booster", "xgboost.Booster", "xgboost.sklearn.XGBClassifier",
                "xgboost.sklearn.XGBRegressor", "xgboost.sklearn.XGBRanker", "xgboost.sklearn.XGBRFClassifier",
                "xgboost.sklearn.XGBRFRegressor")
_LGB_NATIVE = ("lightgbm.basic.Booster", "lightgbm.Booster")
_PICKLE_FORMATS = ("pickle", "cloudpickle")


@dataclass(frozen=True)
class MlflowImport:
    """One imported MLflow model: the converted IR, the natively loaded object and MLflow's lineage."""

    source: str
    model: Model
    #: the native object the flavor's file loaded into (a Booster / XGBModel / unpickled estimator)
    native: Any
    flavor: str
    #: JSON-able: uri, run id, model id, registered version, signature, params, metrics, tags, datasets
    lineage: Mapping[str, Any]


def is_mlflow_source(source: Any) -> bool:
    """Whether ``source`` names an MLflow model: a ``models:/`` or ``runs:/`` URI, or a directory
    (or its ``MLmodel`` file) of a saved MLflow model."""
    if isinstance(source, str) and source.startswith(URI_SCHEMES):
        return True
    if not isinstance(source, (str, os.PathLike)):
        return False
    path = Path(source)
    try:
        return (path.is_dir() and (path / MLMODEL).is_file()) or (path.name == MLMODEL and path.is_file())
    except OSError:
        return False


def convert(source: str | os.PathLike, feature_names: Sequence[str] | None = None, *,
            allow_pickle: bool = False) -> Model:
    """The sparkscore Model of an MLflow model directory or ``models:/`` / ``runs:/`` URI."""
    return load(source, feature_names, allow_pickle=allow_pickle).model


def load(source: str | os.PathLike, feature_names: Sequence[str] | None = None, *,
         allow_pickle: bool = False) -> MlflowImport:
    """Import an MLflow model and collect its lineage (see the module docstring for what is refused)."""
    text = os.fspath(source)
    lineage: dict[str, Any] = {"uri": text}
    if text.startswith(URI_SCHEMES):
        mlflow = _mlflow(text)
        lineage["tracking_uri"] = _without_credentials(mlflow.get_tracking_uri())
        registered = _registered_version(mlflow, text)
        if registered is not None:
            lineage["registered_model"] = registered
        with tempfile.TemporaryDirectory(prefix="sparkscore-mlflow-") as tmp:  # every file is read before it goes
            local = _download(mlflow, text, tmp)
            model, native, flavor = _import_dir(text, Path(local), feature_names, allow_pickle, lineage)
    else:
        path = Path(text)
        if path.name == MLMODEL and path.is_file():
            path = path.parent
        lineage["path"] = str(path.absolute())
        model, native, flavor = _import_dir(text, path, feature_names, allow_pickle, lineage)
    if lineage.get("run_id"):
        lineage.update(_run_lineage(lineage["run_id"], configured_only=not text.startswith(URI_SCHEMES)))
    return MlflowImport(text, model, native, flavor, lineage)


# ------------------------------------------------------------------------------ resolution
def _mlflow(uri: str):
    try:
        import mlflow
    except ImportError:
        raise UnsupportedModelError(f"MLflow model {uri}: resolving models:/ and runs:/ URIs needs MLflow; "
                                    "install sparkscore[mlflow] (mlflow-skinny)") from None
    return mlflow


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?(?P<rest>/.*)?$")


def _registered_version(mlflow, uri: str) -> dict[str, Any] | None:
    """Name, version, aliases, source and tags of the registry version a ``models:/`` URI names."""
    if not uri.startswith("models:/"):
        return None
    match = _MODELS_URI.match(uri)
    if match is None or (match["alias"] is None and match["version"] is None):
        if re.match(r"^models:/m-[0-9a-f]+/?$", uri):  # an MLflow 3 logged-model id: no registry entry
            return None
        raise UnsupportedModelError(f"MLflow model {uri}: not a registry URI sparkscore resolves; use "
                                    "models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH")
    if match["version"] is not None and not match["version"].isdigit():
        raise UnsupportedModelError(f"MLflow model {uri}: stage {match['version']!r} URIs are deprecated in MLflow; "
                                    f"use models:/{match['name']}@ALIAS or models:/{match['name']}/VERSION")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        client = MlflowClient()
        mv = (client.get_model_version_by_alias(match["name"], match["alias"]) if match["alias"] is not None
              else client.get_model_version(match["name"], match["version"]))
    except MlflowException as exc:
        raise UnsupportedModelError(f"MLflow model {uri}: {_first_line(exc)}; check the name, version or alias "
                                    f"in the registry at {_without_credentials(mlflow.get_registry_uri())}") from None
    return {"name": mv.name, "version": int(mv.version), "aliases": sorted(mv.aliases or ()),
            "source": mv.source, "run_id": mv.run_id, "tags": dict(mv.tags or {}),
            "description": mv.description or None, "creation_timestamp": mv.creation_timestamp}


def _download(mlflow, uri: str, dst: str) -> str:
    """Download the model's artifacts into ``dst`` (without MLflow's progress bar on stderr, unless the
    user turned it on: the CLI shows its own status line and prints errors as one line)."""
    from mlflow.exceptions import MlflowException

    quiet = _PROGRESS_BAR not in os.environ
    if quiet:
        os.environ[_PROGRESS_BAR] = "false"
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
    except (MlflowException, OSError) as exc:
        raise UnsupportedModelError(f"MLflow model {uri}: artifacts could not be downloaded ({_first_line(exc)}); "
                                    "check the URI and MLFLOW_TRACKING_URI") from None
    finally:
        if quiet:
            os.environ.pop(_PROGRESS_BAR, None)


_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def _run_lineage(run_id: str, configured_only: bool) -> dict[str, Any]:
    """The run's params, metrics, tags and logged datasets; a run the tracking store does not hold
    (a model directory copied from elsewhere) is recorded as such, it does not block the import.

    ``configured_only`` (model directories): ask only a tracking store the user configured, never
    MLflow's default one, which would create ``mlruns`` / ``mlflow.db`` in the working directory.
    """
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        return {"run": None, "run_unavailable": "mlflow is not installed"}
    if configured_only and not mlflow.is_tracking_uri_set():
        return {"run": None, "run_unavailable": "no MLflow tracking URI is set (MLFLOW_TRACKING_URI); the run's "
                                                "params, metrics and datasets were not read"}
    try:
        run = MlflowClient().get_run(run_id)
    except (MlflowException, OSError) as exc:
        return {"run": None, "run_unavailable": _first_line(exc)}
    datasets = []
    for item in (run.inputs.dataset_inputs if run.inputs is not None else ()):
        ds = item.dataset
        try:
            source = json.loads(ds.source)
        except (TypeError, ValueError):
            source = ds.source
        datasets.append({"name": ds.name, "digest": ds.digest, "source_type": ds.source_type, "source": source,
                         "context": next((t.value for t in item.tags if t.key == "mlflow.data.context"), None),
                         "schema": _json_or_text(ds.schema), "profile": _json_or_text(ds.profile)})
    info = run.info
    return {"run": {"run_id": info.run_id, "run_name": info.run_name, "experiment_id": info.experiment_id,
                    "status": info.status, "start_time": info.start_time, "end_time": info.end_time,
                    "user_id": info.user_id,
                    "params": dict(sorted(run.data.params.items())),
                    "metrics": dict(sorted(run.data.metrics.items())),
                    "tags": dict(sorted(run.data.tags.items()))},
            "datasets": datasets}


# ------------------------------------------------------------------------------ the model directory
def _import_dir(source: str, path: Path, feature_names: Sequence[str] | None, allow_pickle: bool,
                lineage: dict[str, Any]) -> tuple[Model, Any, str]:
    """Convert the model in ``path`` and add what its MLmodel file says to ``lineage``."""
    label = f"MLflow model {source}"
    doc = _read_mlmodel(path, label)
    flavors = doc.get("flavors") or {}
    if not isinstance(flavors, Mapping):
        raise IntegrityError(f"{label}: MLmodel has no flavors mapping; re-log the model with mlflow")
    flavor = next((f for f in FLAVORS if f in flavors), None)
    if flavor is None:
        found = sorted(flavors) or ["none"]
        raise UnsupportedModelError(f"{label}: flavors {found} are not supported; sparkscore imports the lightgbm "
                                    "and xgboost flavors (and sklearn with allow_pickle=True / --allow-pickle)")
    spec = flavors[flavor] or {}
    native, data_file = _load_native(label, path, flavor, spec, allow_pickle)
    mlflow_signature = _parse_signature(doc.get("signature"), label)
    names = _signature_names(mlflow_signature, feature_names, label)
    from sparkscore.importers import convert as convert_native

    try:
        model = convert_native(native, names)
    except SignatureError as exc:
        if feature_names is None and names is not None:
            raise SignatureError(f"{label}: the input names of its MLflow signature {list(names)[:4]}... do not match "
                                 f"the native model's ({exc}); re-log the model with a matching signature") from None
        raise
    model = _typed(model, mlflow_signature, label)
    lineage.update({
        "flavor": flavor, "model_class": spec.get("model_class"), "data_file": data_file.name,
        "data_sha256": _sha256(data_file), "allow_pickle": bool(allow_pickle),
        "run_id": doc.get("run_id"), "model_id": doc.get("model_id") or doc.get("model_uuid"),
        "artifact_path": doc.get("artifact_path"), "mlflow_version": doc.get("mlflow_version"),
        "utc_time_created": doc.get("utc_time_created"),
        "flavor_versions": {k: v for k, v in spec.items() if k.endswith("_version")},
        "signature": None if mlflow_signature is None else mlflow_signature,
    })
    return model, native, flavor


def _read_mlmodel(path: Path, label: str) -> dict[str, Any]:
    file = path / MLMODEL
    if not file.is_file():
        raise IntegrityError(f"{label}: {path} holds no MLmodel file; pass an MLflow model directory or URI")
    try:
        import yaml
    except ImportError:
        raise UnsupportedModelError(f"{label}: reading MLmodel needs PyYAML; install sparkscore[mlflow]") from None
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))  # safe_load: no Python object tags
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{label}: MLmodel is not valid YAML ({_first_line(exc)}); re-log the model") from None
    if not isinstance(doc, dict):
        raise IntegrityError(f"{label}: MLmodel is not a YAML mapping; re-log the model with mlflow")
    return doc


def _data_file(label: str, path: Path, name: Any) -> Path:
    """The flavor's data file, which must stay inside the model directory."""
    if not isinstance(name, str) or not name:
        raise IntegrityError(f"{label}: MLmodel names no data file for its flavor; re-log the model")
    file = (path / name).resolve()
    if path.resolve() not in file.parents or not file.is_file():
        raise IntegrityError(f"{label}: data file {name!r} is missing from {path}; re-download the model")
    return file


def _load_native(label: str, path: Path, flavor: str, spec: Mapping[str, Any], allow_pickle: bool):
    """The flavor's native object and its data file: native loaders, or pickle with the opt-in."""
    model_class = str(spec.get("model_class") or "")
    if flavor == "xgboost":
        file = _data_file(label, path, spec.get("data"))
        if model_class and model_class not in _XGB_CLASSES:
            raise UnsupportedModelError(f"{label}: XGBoost model class {model_class!r} is not supported; log a "
                                        "Booster, XGBClassifier, XGBRegressor or XGBRanker")
        import xgboost

        cls = getattr(xgboost, model_class.rsplit(".", 1)[-1], xgboost.Booster) if model_class else xgboost.Booster
        try:
            if cls is xgboost.Booster:
                return xgboost.Booster(model_file=str(file)), file
            native = cls()
            native.load_model(str(file))
            return native, file
        except xgboost.core.XGBoostError as exc:
            raise IntegrityError(f"{label}: {file.name} is not a readable XGBoost model ({_first_line(exc)}); "
                                 "re-log it with model_format='ubj' or 'json'") from None
    if flavor == "lightgbm" and (not model_class or model_class in _LGB_NATIVE):
        file = _data_file(label, path, spec.get("data"))
        import lightgbm

        try:
            return lightgbm.Booster(model_file=str(file)), file
        except lightgbm.basic.LightGBMError as exc:
            raise IntegrityError(f"{label}: {file.name} is not a readable LightGBM model ({_first_line(exc)}); "
                                 "re-log the model") from None
    # the sklearn flavor, or LightGBM's scikit-learn wrappers (stored through the sklearn serializer)
    file = _data_file(label, path, spec.get("pickled_model") or spec.get("data"))
    fmt = str(spec.get("serialization_format") or "cloudpickle")
    what = f"{flavor} flavor ({model_class or 'scikit-learn model'}, {fmt} file {file.name})"
    if fmt not in _PICKLE_FORMATS:
        raise UnsupportedModelError(f"{label}: the {what} cannot be read without the {fmt} package; re-log it with "
                                    "serialization_format='cloudpickle' (and import with allow_pickle=True), or "
                                    "log a LightGBM/XGBoost Booster")
    if not allow_pickle:
        raise UnsupportedModelError(f"{label}: the {what} is a pickle and unpickling runs any code it holds; pass "
                                    "allow_pickle=True (CLI --allow-pickle) if you trust it, or log a LightGBM or "
                                    "XGBoost Booster with its own flavor")
    warnings.warn(f"unpickling {file} ({label}) runs any code it contains; only do this for models you trust",
                  stacklevel=4)
    return _unpickle(file, fmt), file


def _unpickle(file: Path, fmt: str):
    if fmt == "cloudpickle":
        try:
            import cloudpickle as loader
        except ImportError:
            import pickle as loader
    else:
        import pickle as loader
    with file.open("rb") as handle:
        return loader.load(handle)  # noqa: S301 - explicit allow_pickle opt-in, warned above


# ------------------------------------------------------------------------------ signature
def _parse_signature(signature: Any, label: str) -> dict[str, Any] | None:
    """MLflow's ``signature`` block with its JSON-in-YAML strings parsed (None when absent)."""
    if not signature:
        return None
    if not isinstance(signature, Mapping):
        raise IntegrityError(f"{label}: MLmodel signature is not a mapping; re-log the model")
    out = {}
    for key in ("inputs", "outputs", "params"):
        value = signature.get(key)
        try:
            out[key] = json.loads(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise IntegrityError(f"{label}: MLmodel signature {key} is not JSON ({exc}); re-log the model") from None
    return out


def _signature_names(signature: Mapping[str, Any] | None, given: Sequence[str] | None,
                     label: str) -> Sequence[str] | None:
    """Input names to convert with: the caller's, else the MLflow signature's column names."""
    specs = _column_specs(signature)
    if not specs or any(not isinstance(s.get("name"), str) for s in specs):
        return None if given is None else list(given)
    names = [s["name"] for s in specs]
    if given is not None and [str(g) for g in given] != names:
        raise SignatureError(f"{label}: feature_names {list(given)[:4]}... differ from its MLflow signature's "
                             f"inputs {names[:4]}...; omit feature_names or pass the signature's names")
    return names


def _column_specs(signature: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    inputs = (signature or {}).get("inputs") or []
    if not isinstance(inputs, list):
        return []
    return [s for s in inputs if isinstance(s, Mapping) and s.get("type") != "tensor"]


def _typed(model: Model, signature: Mapping[str, Any] | None, label: str) -> Model:
    """The model with MLflow's column types as its input types (tensor specs: only the width is checked)."""
    inputs = (signature or {}).get("inputs") or []
    if not isinstance(inputs, list) or not inputs:
        return model
    tensors = [s for s in inputs if isinstance(s, Mapping) and s.get("type") == "tensor"]
    if tensors:
        shape = (tensors[0].get("tensor-spec") or {}).get("shape") or []
        width = shape[-1] if len(tensors) == 1 and len(shape) == 2 else None
        if width not in (-1, len(model.signature)):
            raise SignatureError(f"{label}: its MLflow tensor signature has shape {shape} but the model takes "
                                 f"{len(model.signature)} features; re-log the model with a matching signature")
        return model
    specs = _column_specs(signature)
    if len(specs) != len(model.signature):
        raise SignatureError(f"{label}: its MLflow signature has {len(specs)} inputs but the model takes "
                             f"{len(model.signature)}; re-log the model with a matching signature")
    columns = []
    for column, spec in zip(model.signature.inputs, specs):
        mlflow_type = spec.get("type")
        dtype = _COLSPEC_TYPES.get(mlflow_type)
        if dtype is None or (dtype == "varchar") != (column.dtype == "varchar"):
            raise UnsupportedModelError(f"{label}: input {column.name!r} is {mlflow_type!r} in its MLflow signature "
                                        f"but the model reads it as {column.dtype}; re-log the model with a "
                                        "numeric signature for numeric features")
        columns.append(dataclasses.replace(column, dtype=dtype) if column.categories is None else column)
    return dataclasses.replace(model, signature=Signature(tuple(columns), model.signature.outputs))


# ------------------------------------------------------------------------------ small helpers
def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _without_credentials(uri: str | None) -> str | None:
    """A tracking URI fit for a record: ``user:password@`` removed."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return uri


def _json_or_text(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] or type(exc).__name__)


