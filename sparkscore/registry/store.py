"""The model registry: named, versioned, aliased models in a directory tree.

Layout (plain files, so a shared filesystem that every Spark executor mounts works as is)::

    <root>/models/<name>/.lock                     filelock serialising version numbering per name
    <root>/models/<name>/versions/<n>/             Model.save format + version.json (lineage)
    <root>/models/<name>/aliases/<alias>.json      {"version": n, "updated_at": ...}

A version is staged in a temporary directory next to ``versions/`` (the expensive write happens
outside the lock), then numbered and published with one ``os.rename`` under the per-name lock, so
readers never see a half-written version and numbers have no gaps or duplicates.  Versions are
never rewritten.  An alias is one small JSON file replaced with ``os.replace``: a move is atomic.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import unquote, urlparse

from filelock import FileLock, Timeout

from sparkscore.errors import (IntegrityError, ModelNotFoundError, RegistryError, SignatureError,
                              SparkscoreError)
from sparkscore.ir import Model, Signature
from sparkscore.registry.lineage import check_lineage, utc_now, version_record
from sparkscore.registry.refs import ModelRef, parse_ref, validate_name, validate_version

VERSION_JSON = "version.json"
LOCK_TIMEOUT_S = 120.0

_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class ModelVersion:
    """One immutable registered version; ``path`` is its model directory (``Model.load`` reads it)."""

    name: str
    version: int
    sha256: str
    created_at: str
    path: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


def default_root() -> Path:
    """``$SPARKSCORE_HOME`` if set, else ``~/.sparkscore``."""
    home = os.environ.get("SPARKSCORE_HOME")
    return Path(home).expanduser() if home else Path.home() / ".sparkscore"


def root_from_uri(uri: str | os.PathLike | None) -> Path:
    """Registry root for a local path or ``file://`` URI (None -> :func:`default_root`)."""
    if uri is None:
        return default_root()
    text = os.fspath(uri)
    if "://" in text:
        parsed = urlparse(text)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
            raise RegistryError(f"registry URI {text!r} is not supported: use a local path or file:///path "
                                "(mount object stores, e.g. /dbfs/... or s3fs, and pass the mount path)")
        text = unquote(parsed.path)
    return Path(text).expanduser()


class Registry:
    """Models on a local or shared filesystem, addressed by refs ``name``, ``name/3``, ``name@alias``."""

    def __init__(self, uri: str | os.PathLike | None = None) -> None:
        self.root = root_from_uri(uri).absolute()
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry root {self.root} is a file, not a directory; pick another path")

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    # ------------------------------------------------------------------ paths
    def _name_dir(self, name: str) -> Path:
        return self.root / "models" / validate_name(name)

    def model_path(self, name: str, version: int) -> Path:
        """The directory of ``name`` version ``version`` (whether or not it exists)."""
        return self._name_dir(name) / "versions" / str(validate_version(version, name))

    def _alias_file(self, name: str, alias: str) -> Path:
        return self._name_dir(name) / "aliases" / f"{validate_name(alias, 'alias')}.json"

    # ------------------------------------------------------------------ writing
    def register(self, name: str, model: Any, feature_names: Sequence[str] | None = None,
                 signature: Signature | None = None, metadata: Mapping[str, Any] | None = None,
                 lineage: Mapping[str, Any] | None = None) -> ModelVersion:
        """Store ``model`` (a native model or an ``ss.Model``) as the next version of ``name``.

        ``metadata`` is merged into ``Model.metadata`` (which also gets ``name``); ``lineage`` is
        JSON the caller wants kept with the version: ``data_fingerprint``, ``code_version``, ``config``...
        """
        validate_name(name)
        caller_lineage = check_lineage(name, lineage)
        model = _prepared(name, model, feature_names, signature, metadata)
        name_dir = self._name_dir(name)
        (name_dir / "versions").mkdir(parents=True, exist_ok=True)
        staging = name_dir / f".staging-{uuid.uuid4().hex}"
        try:
            staging.mkdir()  # not tempfile.mkdtemp: its 0o700 would hide the version from executors of other users
            sha256 = model.save(staging)
            with self._name_lock(name):
                version = max(self._version_numbers(name), default=0) + 1
                created_at = utc_now()
                record = version_record(name, version, sha256, created_at, model.metadata, caller_lineage)
                (staging / VERSION_JSON).write_text(json.dumps(record, indent=2, sort_keys=True, allow_nan=False))
                target = self.model_path(name, version)
                os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelVersion(name, version, sha256, created_at, str(target))

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``name@alias`` at ``version`` (atomically replacing any previous target)."""
        alias_file = self._alias_file(name, alias)
        self.get(ModelRef(name, version=validate_version(version, name)))
        alias_file.parent.mkdir(exist_ok=True)
        _write_json_atomic(alias_file, {"version": version, "updated_at": utc_now()})

    def delete_alias(self, name: str, alias: str) -> None:
        alias_file = self._alias_file(name, alias)
        try:
            alias_file.unlink()
        except FileNotFoundError:
            raise ModelNotFoundError(f"model {name!r} has no alias {alias!r} in {self.root}; "
                                     f"list aliases with `sparkscore models`") from None

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names that hold at least one version, sorted."""
        models_dir = self.root / "models"
        if not models_dir.is_dir():
            return []
        return sorted(p.name for p in models_dir.iterdir() if _is_valid_name(p.name) and self._version_numbers(p.name))

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first."""
        numbers = sorted(self._version_numbers(name))
        if not numbers:
            raise self._not_found(name)
        return [self._read_version(name, n) for n in numbers]

    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of ``name``."""
        alias_dir = self._name_dir(name) / "aliases"
        if not alias_dir.is_dir():
            return {}
        out = {}
        for path in sorted(alias_dir.glob("*.json")):
            if _is_valid_name(path.stem):
                out[path.stem] = self._alias_version(name, path.stem)
        return out

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """Resolve a ref to one version; ModelNotFoundError / InvalidModelNameError otherwise."""
        parsed = ref if isinstance(ref, ModelRef) else parse_ref(ref)
        name = parsed.name
        if parsed.alias is not None:
            version = self._alias_version(name, parsed.alias)
        elif parsed.version is not None:
            version = validate_version(parsed.version, name)
        else:
            version = max(self._version_numbers(name), default=None)
            if version is None:
                raise self._not_found(name)
        if not self.model_path(name, version).is_dir():
            known = sorted(self._version_numbers(name))
            if not known:
                raise self._not_found(name)
            raise ModelNotFoundError(f"model {name!r} has no version {version} in {self.root} "
                                     f"(it has {_ranges(known)}); use one of those")
        return self._read_version(name, version)

    def load(self, ref: str | ModelRef) -> Model:
        """The model behind ``ref``, verified against the sha256 recorded at registration."""
        mv = self.get(ref)
        model = Model.load(mv.path)
        if model.sha256 != mv.sha256:
            raise IntegrityError(f"model {mv.ref}: content sha256 {model.sha256[:12]}… differs from the "
                                 f"registered {mv.sha256[:12]}… in {VERSION_JSON}; the version was modified: "
                                 "register the model again")
        return model

    def describe(self, ref: str | ModelRef) -> dict[str, Any]:
        """Lineage, aliases and a summary of the model behind ``ref`` (JSON-able)."""
        mv = self.get(ref)
        model = self.load(mv.ref)
        record = self._read_record(mv.name, mv.version)
        return {
            **record,
            "ref": mv.ref,
            "path": mv.path,
            "aliases": sorted(a for a, v in self.aliases(mv.name).items() if v == mv.version),
            "model": {"kind": model.kind, "task": model.task,
                      "classes": list(model.classes) if model.classes is not None else None,
                      "inputs": [c.to_json() for c in model.signature.inputs],
                      "metadata": dict(model.metadata)},
        }

    # ------------------------------------------------------------------ internals
    def _name_lock(self, name: str) -> "_NameLock":
        return _NameLock(self._name_dir(name) / ".lock", name)

    def _version_numbers(self, name: str) -> list[int]:
        versions_dir = self._name_dir(name) / "versions"
        try:
            entries = os.listdir(versions_dir)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [int(e) for e in entries if e.isascii() and e.isdigit() and not e.startswith("0")]

    def _read_record(self, name: str, version: int) -> dict[str, Any]:
        path = self.model_path(name, version) / VERSION_JSON
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IntegrityError(f"model {name}/{version}: {VERSION_JSON} is missing from {path.parent}; "
                                 "the version was damaged: register the model again") from None
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"model {name}/{version}: {path} is not valid JSON; register the model again") from None
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise IntegrityError(f"model {name}/{version}: {path} has no sha256; register the model again")
        return record

    def _read_version(self, name: str, version: int) -> ModelVersion:
        record = self._read_record(name, version)
        return ModelVersion(name, version, record["sha256"], str(record.get("created_at", "")),
                            str(self.model_path(name, version)))

    def _alias_version(self, name: str, alias: str) -> int:
        path = self._alias_file(name, alias)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if not self._version_numbers(name):
                raise self._not_found(name) from None
            known = ", ".join(self.aliases(name)) or "none"
            raise ModelNotFoundError(f"model {name!r} has no alias {alias!r} (aliases: {known}); "
                                     f"set it with `sparkscore alias {name} {alias} VERSION`") from None
        except (UnicodeDecodeError, ValueError):
            raise IntegrityError(f"alias {name}@{alias}: {path} is not valid JSON; set the alias again") from None
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise IntegrityError(f"alias {name}@{alias}: {path} holds no valid version; set the alias again")
        return version

    def _not_found(self, name: str) -> ModelNotFoundError:
        known = self.models()
        hint = f"registered: {', '.join(known[:10])}{', ...' if len(known) > 10 else ''}" if known else "it is empty"
        return ModelNotFoundError(f"model {name!r} is not in the registry at {self.root} ({hint}); "
                                  "register it first or check SPARKSCORE_HOME / --registry")


class _NameLock:
    """Per-name exclusive section: a thread lock (fcntl locks on NFS are per process) plus a file lock."""

    def __init__(self, lock_path: Path, name: str) -> None:
        with _THREAD_LOCKS_GUARD:
            self._thread_lock = _THREAD_LOCKS.setdefault(lock_path, threading.Lock())
        self._file_lock = FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S)
        self._name = name
        self._lock_path = lock_path

    def __enter__(self) -> None:
        if not self._thread_lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise self._timeout()
        try:
            self._file_lock.acquire()
        except Timeout:
            self._thread_lock.release()
            raise self._timeout() from None

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._file_lock.release()
        finally:
            self._thread_lock.release()

    def _timeout(self) -> RegistryError:
        return RegistryError(f"model {self._name!r}: could not lock {self._lock_path} within {LOCK_TIMEOUT_S:.0f} s; "
                             "another process holds it: retry, or remove the lock file if that process died")


def _prepared(name: str, model: Any, feature_names: Sequence[str] | None, signature: Signature | None,
              metadata: Mapping[str, Any] | None) -> Model:
    """``model`` as an ss.Model with the requested signature and ``metadata['name'] == name``."""
    if not isinstance(model, Model):
        from sparkscore.importers import convert

        model = convert(model, feature_names)
    elif feature_names is not None:
        names = [str(n) for n in feature_names]
        if len(names) != len(model.signature):
            raise SignatureError(f"model {name!r} takes {len(model.signature)} inputs but {len(names)} feature_names "
                                 "were given; pass one name per input column")
        signature = Signature(tuple(dataclasses.replace(c, name=n) for c, n in zip(model.signature.inputs, names)),
                              model.signature.outputs) if signature is None else signature
    changes: dict[str, Any] = {"metadata": {**model.metadata, **dict(metadata or {}), "name": name}}
    if signature is not None:
        if len(signature) != len(model.signature):
            raise SignatureError(f"model {name!r} takes {len(model.signature)} inputs but the signature has "
                                 f"{len(signature)}; pass a signature with one column per input")
        changes["signature"] = signature
    try:
        return dataclasses.replace(model, **changes)
    except SparkscoreError:
        raise
    except ValueError as exc:
        raise RegistryError(f"model {name!r} cannot be registered: {exc}") from None


def _write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True))
    os.replace(tmp, path)


def _is_valid_name(text: str) -> bool:
    try:
        validate_name(text)
    except ValueError:
        return False
    return True


def _ranges(numbers: list[int]) -> str:
    """``versions 1..4`` style summary of a sorted version list."""
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"version {numbers[0]}" if len(numbers) == 1 else f"versions {numbers[0]}..{numbers[-1]}"
    return "versions " + ", ".join(map(str, numbers))
