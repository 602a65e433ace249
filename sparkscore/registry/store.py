"""The model registry: named, versioned, aliased models in a directory tree.

This module is the local / shared-filesystem registry (paths and ``file://`` URIs).  Object-store
URIs (``s3://bucket/prefix``, ``gs://``, ``abfs://``) give the subclass in
:mod:`sparkscore.registry.objstore`, same API, whose docstring describes the commit protocol that
keeps these guarantees without rename or locks (conditional create of the version record and of
each alias move).

Layout (plain files, so a shared filesystem that every Spark executor mounts works as is)::

    <root>/models/<name>/.lock                     filelock serialising numbering, alias moves and deletes per name
    <root>/models/<name>/last_version.json         {"last_version": n}: the highest number ever minted
    <root>/models/<name>/versions/<n>/             Model.save format + version.json (lineage)
                                                   + version.sha256 (sha256 of version.json's bytes)
    <root>/models/<name>/aliases/<alias>.json      {"version": n, "updated_at": ...}
    <root>/models/<name>/alias_history.jsonl       append-only audit log: one JSON line per alias move

A version is staged in a temporary directory next to ``versions/`` (the expensive write happens
outside the lock), then numbered and published with one ``os.rename`` under the per-name lock, so
readers never see a half-written version and numbers are never skipped or duplicated when minting.
Versions are never rewritten.  An alias is one small JSON file replaced with ``os.replace``: a move
is atomic.

Alias history: every move (set, move, delete, forced delete with a version) appends one JSON line
(ts, alias, from_version, to_version, user, host, reason) to ``alias_history.jsonl`` with a single
``write`` on an ``O_APPEND`` descriptor followed by ``fsync``, under the same per-name lock as the
move, so the log order is the move order.  The log is never rewritten (not even by ``delete`` of a
whole name: the audit trail outlives the versions, like the ``last_version.json`` tombstone).  A
time-pinned ref ``name@alias#TIME`` resolves through it.  A damaged line (a torn write, an edit) is
reported as :class:`Damage` by :meth:`Registry.alias_history`; it only blocks a time-pinned lookup
whose answer it could change.

Integrity: the model files are covered by the model's own ``sha256``; the version record is covered
by ``version.sha256`` (so a flipped byte in the lineage or in the recorded model sha256 is caught).
Registries written before the record hash existed (no ``version.sha256`` and no ``record_format``
in ``version.json``) still load, with their record unverified, as they always did.

Registering bytes that equal an existing version of the same name returns that version
(``ModelVersion.existing``) instead of minting a duplicate.  ``delete`` removes a version (or every
version and alias of a name) but never gives a number back: ``last_version.json`` stays behind as a
tombstone, so ``churn/3`` pinned in some job can never silently mean a different model later.

A damaged file (truncated alias, version record that fails its hash) costs only its own entry:
:meth:`Registry.status` lists what is healthy and reports each damaged entry as a :class:`Damage`
with its path and the command that repairs it; strict readers (``get``, ``load``) raise
``IntegrityError`` with the same text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import hashlib
import json
import math
import os
import shutil
import socket
import threading
import uuid
from datetime import datetime, timezone
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import unquote, urlparse

from filelock import FileLock, Timeout

from sparkscore.errors import (IntegrityError, ModelNotFoundError, RegistryError, SignatureError,
                              SparkscoreError)
from sparkscore.ir import Model, Signature
from sparkscore.registry.lineage import (LINEAGE_SECTIONS, check_lineage, code_lineage, data_fingerprint,
                                         json_safe, native_config, record_diff, utc_now, version_record)
from sparkscore.registry.refs import ModelRef, parse_ref, parse_timestamp, validate_name, validate_version

VERSION_JSON = "version.json"
RECORD_SHA256 = "version.sha256"
LAST_VERSION = "last_version.json"
ALIAS_HISTORY = "alias_history.jsonl"
#: version.json layout: 2 = covered by version.sha256 (wave-1 records have no ``record_format``)
RECORD_FORMAT = 2
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
    #: True when ``register`` found these exact bytes already registered and returned that version
    existing: bool = field(default=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class Damage:
    """One registry entry that cannot be read: which, where, what is wrong, and a command that repairs it."""

    ref: str       # "churn/3" or "churn@prod"
    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.problem} ({self.path}); fix: {self.fix}"


@dataclass(frozen=True)
class ModelStatus:
    """What :meth:`Registry.status` found for one name: healthy versions and aliases, and the damage."""

    name: str
    versions: tuple[ModelVersion, ...]
    aliases: tuple[tuple[str, int], ...]
    damaged: tuple[Damage, ...]


@dataclass(frozen=True)
class Deleted:
    """What :meth:`Registry.delete` removed."""

    name: str
    versions: tuple[int, ...]
    aliases: tuple[str, ...]
    routes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AliasMove:
    """One line of the alias audit log: ``alias`` went from ``from_version`` to ``to_version`` (None = unset)."""

    ts: str            # ISO-8601 UTC, e.g. 2026-11-01T00:00:00.123456+00:00
    alias: str
    from_version: int | None
    to_version: int | None
    user: str
    host: str
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.ts)


@dataclass(frozen=True)
class AliasHistory:
    """What :meth:`Registry.alias_history` read: the moves in log order, and each damaged line."""

    name: str
    moves: tuple[AliasMove, ...]
    damaged: tuple[Damage, ...]


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


def is_remote_uri(uri: str | os.PathLike | None) -> bool:
    """True for a URI with a scheme other than ``file`` (``s3://bucket/prefix``, ``gs://``, ``abfs://``)."""
    if uri is None or not isinstance(uri, str) or "://" not in uri:
        return False
    return urlparse(uri).scheme not in ("", "file")


class Registry:
    """Models on a local or shared filesystem, addressed by refs ``name``, ``name/3``, ``name@alias``."""

    def __new__(cls, uri: str | os.PathLike | None = None, **kwargs: Any) -> "Registry":
        """``s3://``, ``gs://``, ``abfs://`` ... URIs (also in ``$SPARKSCORE_HOME``) give an
        :class:`~sparkscore.registry.objstore.ObjectStoreRegistry`; paths and ``file://`` stay here."""
        if cls is Registry and is_remote_uri(os.environ.get("SPARKSCORE_HOME") if uri is None else uri):
            from sparkscore.registry.objstore import ObjectStoreRegistry  # lazy: fsspec only for remote URIs

            return super().__new__(ObjectStoreRegistry)
        return super().__new__(cls)

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
                 lineage: Mapping[str, Any] | None = None, *, code: Any = None, training_data: Any = None,
                 metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
                 description: str | None = None, parent: str | ModelRef | None = None,
                 allow_pickle: bool = False, training_labels: str | None = None,
                 profile: bool | None = None, profile_bins: int = 10) -> ModelVersion:
        """Store ``model`` (a native model, an ``ss.Model``, or an MLflow model directory / ``models:/``
        / ``runs:/`` URI) as the next version of ``name``.

        ``metadata`` is merged into ``Model.metadata`` (which also gets ``name``); ``lineage`` is
        JSON the caller wants kept with the version.  Recorded as well, all covered by the record's
        sha256: the code (``code`` if given, else the git commit and dirty-diff hash of the working
        directory), a fingerprint of ``training_data`` (pandas / Arrow / numpy / file or folder
        path), the native hyper-parameters and feature names, the importer and its options, the
        environment, and the optional ``metrics``, ``tags``, ``description`` and ``parent`` (a ref
        that must resolve; it is stored as ``name/version`` with its sha256).
        If a version of ``name`` already holds the same model bytes (same sha256), that version is
        returned with ``existing=True`` and nothing is written: re-running a training or demo script
        does not pile up identical versions (the first registration's lineage is kept).
        An MLflow model also records what MLflow knows (``mlflow``: run id, registered version, its
        signature, the run's params, metrics, tags and logged datasets; ``data`` lists those datasets
        when ``training_data`` is not given); ``allow_pickle`` opts into its sklearn flavor (a pickle).

        Training profile (``sparkscore.monitor``): with ``training_data`` holding the model's inputs
        (pandas, Arrow, a DuckDB relation or a parquet/csv path), a profile of every input, of the
        model's prediction and of the ``training_labels`` column is stored as ``profile.json`` in the
        version; its sha256 is in the record, so ``version.sha256`` covers it.  ``profile=None``
        profiles when the data can be profiled and otherwise records why not; ``True`` fails
        instead; ``False`` skips it.  ``profile_bins``: histogram bins.
        """
        validate_name(name)
        caller_lineage = check_lineage(name, lineage)
        from sparkscore.importers import mlflow as mlflow_importer  # light: mlflow itself loads only for URIs

        imported = None
        if mlflow_importer.is_mlflow_source(model):
            imported = mlflow_importer.load(model, feature_names, allow_pickle=allow_pickle)
        observed = self._observed_lineage(name, model if imported is None else imported.native, feature_names, code,
                                          training_data, metrics, tags, description, parent)
        if imported is not None:
            observed["importer"] = {"name": mlflow_importer.__name__,
                                    "flavor_importer": observed["importer"]["name"],
                                    "options": {**observed["importer"]["options"], "source": imported.source,
                                                "allow_pickle": bool(allow_pickle)}}
            observed["mlflow"] = json_safe(imported.lineage)  # a NaN metric must not fail the record's JSON
            if observed["data"] is None and imported.lineage.get("datasets"):
                observed["data"] = {"kind": "mlflow", "datasets": [
                    {k: d.get(k) for k in ("name", "digest", "source_type", "source", "context")}
                    for d in observed["mlflow"]["datasets"]]}
            model, feature_names = imported.model, None
        model = _prepared(name, model, feature_names, signature, metadata)
        observed["configuration"]["feature_names"] = list(model.signature.names)
        return self._store_version(name, model, caller_lineage, observed, training_data, training_labels, profile,
                                   profile_bins)

    def _store_version(self, name: str, model: Model, caller_lineage: dict[str, Any], observed: dict[str, Any],
                       training_data: Any, training_labels: str | None, profile: bool | None,
                       profile_bins: int) -> ModelVersion:
        """Stage, number and publish one prepared version (the storage-specific half of :meth:`register`)."""
        name_dir = self._name_dir(name)
        (name_dir / "versions").mkdir(parents=True, exist_ok=True)
        staging = name_dir / f".staging-{uuid.uuid4().hex}"
        try:
            staging.mkdir()  # not tempfile.mkdtemp: its 0o700 would hide the version from executors of other users
            sha256 = model.save(staging)
            if training_data is not None and profile is not False:
                observed["profile"] = _training_profile(name, model, training_data, training_labels, profile,
                                                        profile_bins, staging)
            with self._name_lock(name):
                same = next((mv for mv in self.status(name).versions if mv.sha256 == sha256), None)
                if same is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                    return dataclasses.replace(same, existing=True)
                version = self._last_version(name) + 1
                created_at = utc_now()
                record = {**version_record(name, version, sha256, created_at, model.metadata, caller_lineage,
                                           observed),
                          "record_format": RECORD_FORMAT}
                record_bytes = json.dumps(record, indent=2, sort_keys=True, allow_nan=False).encode()
                (staging / VERSION_JSON).write_bytes(record_bytes)
                (staging / RECORD_SHA256).write_text(hashlib.sha256(record_bytes).hexdigest() + "\n")
                target = self.model_path(name, version)
                os.rename(staging, target)
                _write_json_atomic(name_dir / LAST_VERSION, {"last_version": version})
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelVersion(name, version, sha256, created_at, str(target))

    def register_ensemble(self, name: str, members: Sequence[str | ModelRef], combiner: str = "mean",
                          weights: Sequence[float] | None = None, *, stack: Any = None,
                          classes: Sequence | None = None, **register_options: Any) -> ModelVersion:
        """Register an ensemble of registered models as the next version of ``name``.

        ``members`` are refs (``churn/3``, ``churn@challenger``, time-pinned refs); aliases resolve
        now, so the ensemble pins each member's name, version and sha256 (in its model document,
        hence in its own sha256) and keeps a copy of each member's files, verified on every load.
        ``combiner``: ``mean`` | ``weighted`` (``weights``) | ``vote`` | ``margin_mean`` | ``stack``
        (``stack``: a LinearModel over the members' outputs; see :mod:`sparkscore.ir.ensemble`).
        ``register_options`` go to :meth:`register` (``metadata``, ``tags``, ``description``, ...);
        the refs as given are added to the version's lineage (``ensemble``).
        """
        from sparkscore.ir.ensemble import MemberRef, build

        validate_name(name)
        refs = [members] if isinstance(members, str) else [str(ref) for ref in members]
        pinned, models = [], []
        for ref in refs:
            mv = self.get(ref)
            models.append(self.load(mv.ref))
            pinned.append(MemberRef(mv.name, mv.version, mv.sha256))
        model = build(models, combiner, weights, refs=pinned, stack=stack, classes=classes, name=name)
        lineage = dict(register_options.pop("lineage", None) or {})
        lineage["ensemble"] = {"combiner": combiner, "members": [
            {"ref": ref, "name": p.name, "version": p.version, "sha256": p.sha256} for ref, p in zip(refs, pinned)]}
        return self.register(name, model, lineage=lineage, **register_options)

    def _observed_lineage(self, name: str, native: Any, feature_names: Sequence[str] | None, code: Any,
                          training_data: Any, metrics: Mapping[str, float] | None, tags: Mapping[str, str] | None,
                          description: str | None, parent: str | ModelRef | None) -> dict[str, Any]:
        """Code, data, configuration, importer and the optional fields of one registration (JSON-able)."""
        what = f"model {name!r}"
        if metrics is not None and not (isinstance(metrics, Mapping) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in metrics.values())):
            raise RegistryError(f"metrics of {what} must be a dict of finite numbers like {{'auc': 0.91}}")
        if tags is not None and not (isinstance(tags, Mapping) and all(isinstance(v, str) for v in tags.values())):
            raise RegistryError(f"tags of {what} must be a dict of strings like {{'team': 'risk'}}")
        if description is not None and not isinstance(description, str):
            raise RegistryError(f"description of {what} must be text, got {type(description).__name__}")
        code_record = check_lineage(name, {"code": code})["code"]  # JSON or a clear error, before any work
        parent_record = None
        if parent is not None:
            mv = self.get(parent)
            parent_record = {"ref": mv.ref, "sha256": mv.sha256}
        importer = "sparkscore.Model (converted by the caller)" if isinstance(native, Model) else _importer_of(native)
        return {
            "code": code_lineage(code_record),
            "data": None if training_data is None else data_fingerprint(training_data, what),
            "configuration": {"native": None if isinstance(native, Model) else native_config(native)},
            "importer": {"name": importer,
                         "options": {"feature_names": None if feature_names is None else [str(f) for f in feature_names]}},
            "metrics": None if metrics is None else {str(k): float(v) for k, v in metrics.items()},
            "tags": None if tags is None else {str(k): v for k, v in tags.items()},
            "description": description,
            "parent": parent_record,
        }

    def set_alias(self, name: str, alias: str, version: int, reason: str | None = None) -> None:
        """Point ``name@alias`` at ``version`` (atomically replacing any previous target).

        The move is appended to the alias history with ``reason`` (free text, e.g. a ticket).
        """
        alias_file = self._alias_file(name, alias)
        reason = _checked_reason(name, reason)
        self.get(ModelRef(name, version=validate_version(version, name)))
        with self._name_lock(name):  # a concurrent delete must not leave the alias pointing at nothing
            self.get(ModelRef(name, version=version))
            if self._route_numbers(name, alias):  # 'name@alias' cannot mean a route too
                raise RegistryError(f"model {name!r} has a route {alias!r}, and '{name}@{alias}' cannot mean both; "
                                    f"pick another alias name")
            previous = self._previous_target(name, alias)
            alias_file.parent.mkdir(exist_ok=True)
            now = utc_now()
            # log first (write-ahead): a crash between the two leaves a logged move that did not happen,
            # which :meth:`_unapplied_lines` recognises; the other order could leave a move with no log line
            self._append_move(name, alias, previous, version, reason, now)
            _write_json_atomic(alias_file, {"version": version, "updated_at": now})

    def delete(self, name: str, version: int | None = None, force: bool = False) -> Deleted:
        """Remove ``name/version``, or with ``version=None`` every version and alias of ``name``.

        Refused (RegistryError) while an alias points at what would be removed, unless ``force``,
        which removes those aliases too.  Deleting the whole name is refused the same way while it has
        routes (their arms are that name's aliases and versions, and a later model registered under
        the name would otherwise inherit them, traffic split included); ``force`` deletes them, their
        version history with them.  Numbers are never given back: the next registration of
        ``name`` gets ``last_version + 1`` even after the latest version or the whole name is deleted.
        Damaged entries can always be deleted (that is the repair for a damaged version record).

        Deleting a version an ensemble pins as a member is not refused: the ensemble stores its own
        copy of every member (``members/<i>``, covered by its sha256), so it still verifies and scores
        exactly as registered; only the member's own ref stops resolving.
        """
        validate_name(name)
        if version is not None:
            validate_version(version, name)
        if not self._version_numbers(name):
            raise self._not_found(name)
        with self._name_lock(name):
            numbers, doomed, status, pointing = self._deletion_plan(name, version, force)
            routes = self._doomed_routes(name, version, force)
            # alias files that cannot be read point nowhere useful; they go with the whole name
            broken = [d.ref.partition("@")[2] for d in status.damaged if "@" in d.ref] if version is None else []
            name_dir = self._name_dir(name)
            _write_json_atomic(name_dir / LAST_VERSION, {"last_version": max(self._last_version(name), numbers[-1])})
            for alias in [*pointing, *broken]:
                previous = self._previous_target(name, alias)
                self._append_move(name, alias, previous, None, f"deleted with {target_text(name, version)}")
                self._alias_file(name, alias).unlink(missing_ok=True)  # after its log line (write-ahead)
            for number in doomed:
                graveyard = name_dir / f".deleted-{number}-{uuid.uuid4().hex}"
                os.rename(self.model_path(name, number), graveyard)  # gone for readers at once
                shutil.rmtree(graveyard, ignore_errors=True)
            if version is None and (name_dir / "routes").is_dir():  # every route, damaged ones included
                graveyard = name_dir / f".deleted-routes-{uuid.uuid4().hex}"
                os.rename(name_dir / "routes", graveyard)
                shutil.rmtree(graveyard, ignore_errors=True)
        return Deleted(name, tuple(doomed), tuple(pointing), tuple(routes))

    def _doomed_routes(self, name: str, version: int | None, force: bool) -> list[str]:
        """The routes a delete of the whole name removes; refused without ``force`` (see :meth:`delete`)."""
        if version is not None:
            return []
        from sparkscore.registry.routes import route_names

        routes = route_names(self, name)
        if routes and not force:
            raise RegistryError(f"model {name} has route {', '.join(f'{name}@{r}' for r in routes)}: deleting the model "
                                f"would leave it pointing at nothing (and a new model named {name} would inherit it); "
                                f"pass --force (force=True) to delete the route too")
        return routes

    def _deletion_plan(self, name: str, version: int | None, force: bool
                       ) -> tuple[list[int], list[int], ModelStatus, list[str]]:
        """What a delete removes: (every version number, the doomed ones, the status, the aliases pointing at
        them); refused while an alias points at a doomed version and ``force`` is not given.  Shared by the
        local and the object-store registry."""
        numbers = sorted(self._version_numbers(name))
        if not numbers:
            raise self._not_found(name)
        if version is not None and version not in numbers:
            raise ModelNotFoundError(f"model {name!r} has no version {version} in {self.root} "
                                     f"(it has {_ranges(numbers)}); use one of those")
        doomed = numbers if version is None else [version]
        status = self.status(name)
        pointing = sorted(a for a, v in status.aliases if v in doomed)
        if pointing and not force:
            target = name if version is None else f"{name}/{version}"
            moves = "; ".join(f"`sparkscore alias {name} {a} --delete`" for a in pointing)
            raise RegistryError(f"model {target} is the target of alias {', '.join(pointing)}: remove or move "
                                f"it first ({moves}) or pass --force (force=True) to delete the alias too")
        if version is not None:  # the whole name takes its routes with it (_doomed_routes)
            self._refuse_if_routed(name, {str(version), *pointing}, f"{name}/{version}")
        return numbers, doomed, status, pointing

    def _refuse_if_routed(self, name: str, labels: set[str], what: str) -> None:
        """Refuse removing what a live or shadow arm of a route's current version names (a version number
        or an alias): the route would fail on its next resolve.  ``--force`` does not override this: a
        route is moved off an arm explicitly (``sparkscore route set``), never broken as a side effect."""
        from sparkscore.registry.routes import read_route, route_names

        using, moved = [], []
        for route_name in route_names(self, name):
            try:
                route = read_route(self, name, route_name)
            except SparkscoreError:  # a damaged route resolves to nothing already: it blocks nothing
                continue
            hit = sorted(({a.label for a in route.arms if a.buckets} | set(route.shadow)) & labels)
            if hit:
                using.append(f"{route.ref} v{route.version} (arm {', '.join(hit)})")
                moved.append(route.route)
        if using:
            raise RegistryError(f"{what} is used by route {'; '.join(using)}: move the route off it first "
                                f"(`sparkscore route set {name} {moved[0]} --arm ...`), then delete it")

    def delete_alias(self, name: str, alias: str, reason: str | None = None) -> None:
        """Remove ``name@alias``; the removal is appended to the alias history with ``reason``."""
        alias_file = self._alias_file(name, alias)
        reason = _checked_reason(name, reason)
        if not alias_file.parent.is_dir():
            raise self._no_alias(name, alias)
        with self._name_lock(name):
            previous = self._previous_target(name, alias)
            if not alias_file.exists():
                raise self._no_alias(name, alias)
            self._refuse_if_routed(name, {alias}, f"alias {name}@{alias}")
            self._append_move(name, alias, previous, None, reason)  # write-ahead, as in set_alias
            alias_file.unlink(missing_ok=True)

    def alias_history(self, name: str, alias: str | None = None) -> AliasHistory:
        """Every recorded move of ``name``'s aliases (or of ``alias`` only), oldest first.

        Never raises for a damaged line: it is returned in ``damaged`` with the line number.
        Registries written before the log existed have no history for their earlier moves.
        """
        validate_name(name)
        if alias is not None:
            validate_name(alias, "alias")
        entries, damaged = self._history_entries(name)
        unapplied = self._unapplied_lines(name, entries)
        moves = tuple(m for n, m in entries if (alias is None or m.alias == alias) and n not in unapplied)
        return AliasHistory(name, moves, tuple(d for _, d in damaged))

    def set_route(self, name: str, route: str, arms: Mapping[Any, int], key: str | None = None,
                  shadow: Sequence[Any] = (), salt: str | None = None, reason: str | None = None,
                  policy: Mapping[str, Any] | None = None, expected_version: int | None = None):
        """Write the next version of route ``name@route`` (sparkscore/registry/routes.py says how it splits);
        with ``expected_version`` only on top of that version (compare-and-set, ``RouteConflictError``)."""
        from sparkscore.registry.routes import set_route

        return set_route(self, name, route, arms, key=key, shadow=shadow, salt=salt, reason=reason, policy=policy,
                         expected_version=expected_version)

    def route(self, name: str, route: str, version: int | None = None):
        """Route version ``version`` (default: the latest) of ``name@route``."""
        from sparkscore.registry.routes import read_route

        return read_route(self, name, route, version)

    def route_history(self, name: str, route: str) -> list:
        """Every version of route ``name@route``, oldest first."""
        from sparkscore.registry.routes import route_history

        return route_history(self, name, route)

    # route storage (routes.py computes the records; these five calls are all it asks of a store)
    def _route_lock(self, name: str) -> Any:
        """Held while a route version is computed and published: the name lock on a filesystem."""
        return self._name_lock(name)

    def _route_names(self, name: str) -> list[str]:
        from sparkscore.registry.routes import _route_versions

        folder = self._name_dir(name) / "routes"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and _route_versions(p))

    def _route_numbers(self, name: str, route: str) -> list[int]:
        """The route's version numbers, sorted (empty: no such route)."""
        from sparkscore.registry.routes import _route_versions

        return _route_versions(self._name_dir(name) / "routes" / validate_name(route, "route name"))

    def _route_bytes(self, name: str, route: str, version: int) -> tuple[bytes, str]:
        """(bytes, where) of one route version record; FileNotFoundError when absent."""
        path = self._name_dir(name) / "routes" / validate_name(route, "route name") / f"{int(version)}.json"
        return path.read_bytes(), str(path)

    def _publish_route(self, name: str, route: str, version: int, data: bytes) -> bool:
        """Publish version ``version`` if absent (the caller holds :meth:`_route_lock`); False if it exists."""
        from sparkscore.registry.routes import publish_local

        return publish_local(self._name_dir(name) / "routes" / route, version, data)

    # ------------------------------------------------------------------ reading
    def models(self) -> list[str]:
        """Names that hold at least one version, sorted."""
        models_dir = self.root / "models"
        if not models_dir.is_dir():
            return []
        return sorted(p.name for p in models_dir.iterdir() if _is_valid_name(p.name) and self._version_numbers(p.name))

    def watch_token(self, names: Sequence[str] | None = None) -> tuple:
        """A fingerprint of ``names``' versions and aliases (None: every name) from ``stat`` calls alone.

        Why: a server polling the registry every 0.5 s must not read and parse every alias and version
        record each time (in a worker thread under load those reads convoy on the GIL: alias moves were
        picked up after up to 0.86 s).  Every write here is a rename or a mkdir/rmdir, so a new alias
        file has a new inode, a version added or removed changes its ``versions`` directory
        (mtime, link count) and a route version adds a file name to ``routes/<route>/`` (listed):
        when the token is unchanged nothing a ref resolves to has changed.
        """
        from sparkscore.registry.routes import _route_versions

        def sig(path: Path) -> tuple | None:
            try:
                st = os.stat(path)
            except OSError:
                return None
            return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_nlink)

        models_dir = self.root / "models"
        out: list = []
        if names is None:
            out.append(sig(models_dir))
            try:
                names = sorted(n for n in os.listdir(models_dir) if _is_valid_name(n))
            except OSError:
                names = []
        for name in names:
            name_dir = self._name_dir(name)
            aliases = name_dir / "aliases"
            out.append((name, sig(name_dir / "versions"), sig(aliases)))
            try:
                entries = sorted(os.listdir(aliases))
            except OSError:
                entries = []
            out.extend((name, entry, sig(aliases / entry)) for entry in entries)
            routes = name_dir / "routes"  # route versions are append-only files: their numbers say it all
            try:
                found = sorted(os.listdir(routes))
            except OSError:
                found = []
            out.extend((name, "routes", route, tuple(_route_versions(routes / route))) for route in found)
        return tuple(out)

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

    def status(self, name: str) -> ModelStatus:
        """Healthy versions and aliases of ``name`` plus each damaged entry; never raises for damage.

        This is what listings (``sparkscore models``/``versions``, ``install``) use, so one damaged
        file costs its own entry, not the whole registry.
        """
        versions, damaged = [], []
        for number in sorted(self._version_numbers(name)):
            found = self._record_or_damage(name, number)
            if isinstance(found, Damage):
                damaged.append(found)
            else:
                versions.append(ModelVersion(name, number, found["sha256"], str(found.get("created_at", "")),
                                             str(self.model_path(name, number))))
        aliases = []
        alias_dir = self._name_dir(name) / "aliases"
        for path in sorted(alias_dir.glob("*.json")) if alias_dir.is_dir() else ():
            if _is_valid_name(path.stem):
                try:
                    target = self._alias_or_damage(name, path.stem)
                except FileNotFoundError:  # deleted since the listing
                    continue
                if isinstance(target, Damage):
                    damaged.append(target)
                else:
                    aliases.append((path.stem, target))
        return ModelStatus(name, tuple(versions), tuple(aliases), tuple(damaged))

    def check(self) -> list[ModelStatus]:
        """:meth:`status` of every name, sorted."""
        return [self.status(name) for name in self.models()]

    def load_all(self) -> tuple[list[tuple[ModelVersion, Model]], list[Damage]]:
        """Every version that loads and verifies, plus the damage that kept the others out.

        ``install`` on the engines uses this: a damaged version or alias is reported, the rest installs.
        """
        loaded, damaged = [], []
        for status in self.check():
            damaged.extend(status.damaged)
            for mv in status.versions:
                try:
                    loaded.append((mv, self.load(mv.ref)))
                except IntegrityError:
                    damaged.append(Damage(mv.ref, mv.path, "its model files fail verification",
                                          f"`sparkscore delete {mv.ref} --force`, then register the model again"))
        return loaded, damaged

    def get(self, ref: str | ModelRef) -> ModelVersion:
        """Resolve a ref to one version; ModelNotFoundError / InvalidModelNameError otherwise."""
        parsed = ref if isinstance(ref, ModelRef) else parse_ref(ref)
        name = parsed.name
        if parsed.at is not None:
            version = self._alias_version_at(name, parsed.alias, parsed.at)
        elif parsed.alias is not None:
            version = self._alias_version(name, parsed.alias)
        elif parsed.version is not None:
            version = validate_version(parsed.version, name)
        else:
            version = max(self._version_numbers(name), default=None)
            if version is None:
                raise self._not_found(name)
        if not self._has_version(name, version):
            known = sorted(self._version_numbers(name))
            if not known:
                raise self._not_found(name)
            raise ModelNotFoundError(f"model {name!r} has no version {version} in {self.root} "
                                     f"(it has {_ranges(known)}); use one of those")
        return self._read_version(name, version)

    def _has_version(self, name: str, version: int) -> bool:
        """Whether version ``version`` of ``name`` exists (a storage's own test: a folder here)."""
        return self.model_path(name, version).is_dir()

    def load(self, ref: str | ModelRef) -> Model:
        """The model behind ``ref``, verified against the sha256 recorded at registration.

        A route ref (``'churn@ab'``, also time-pinned) gives a
        :class:`~sparkscore.registry.routed.RoutedModel` instead: its arms pinned and loaded, its
        ``predict(frame, key=...)`` scoring each row on the arm SQL would (routed.py says why).
        """
        routed = self._routed(ref)
        if routed is not None:
            return routed
        mv = self.get(ref)
        return self._verified_model(mv, mv.path)

    def _routed(self, ref: str | ModelRef):
        """The loaded route behind ``ref``, None when ``ref`` names no route (the common case: one listdir)."""
        parsed = ref if isinstance(ref, ModelRef) else parse_ref(ref)
        if parsed.alias is None or not self._route_numbers(parsed.name, parsed.alias):
            return None
        from sparkscore.registry.routed import load_routed

        return load_routed(self, parsed)

    def _verified_model(self, mv: ModelVersion, folder: str | os.PathLike) -> Model:
        """``Model.load(folder)`` checked against the sha256 recorded for ``mv``."""
        try:
            model = Model.load(folder)
        except IntegrityError as exc:  # name the version and a repair that works, keep the subclass
            raise type(exc)(f"model {mv.ref}: {str(exc).rstrip('.')}; or remove it: "
                            f"`sparkscore delete {mv.ref} --force`") from None
        if model.sha256 != mv.sha256:
            raise IntegrityError(f"model {mv.ref}: content sha256 {model.sha256[:12]}… differs from the "
                                 f"registered {mv.sha256[:12]}… in {VERSION_JSON}; the version was modified: "
                                 "register the model again")
        return model

    def profile(self, ref: str | ModelRef):
        """The training profile stored with the version behind ``ref``, verified against its record."""
        from sparkscore.monitor.profile import MonitorError, Profile  # lazy: see .importlinter

        mv = self.get(ref)
        entry = self._read_record(mv.name, mv.version).get("profile") or {}
        if "sha256" not in entry:
            why = f" ({entry['skipped']})" if "skipped" in entry else ""
            raise MonitorError(f"model {mv.ref} has no training profile{why}; compute one with `sparkscore profile "
                               f"{mv.ref} --data PATH` or pass a reference batch")
        with self._version_file(mv, entry["file"]) as path:
            return Profile.load(path, sha256=entry["sha256"])

    @contextlib.contextmanager
    def _version_file(self, mv: ModelVersion, file: str) -> Iterator[Path]:
        """A local path to one file of a version (an object store downloads it for the block)."""
        yield Path(mv.path) / file

    def describe(self, ref: str | ModelRef) -> dict[str, Any]:
        """Lineage, aliases and a summary of the model behind ``ref`` (JSON-able)."""
        mv = self.get(ref)
        model = self.load(mv.ref)
        record = self._read_record(mv.name, mv.version)
        return {
            **record,
            "ref": mv.ref,
            "path": mv.path,
            "aliases": sorted(a for a, v in self.status(mv.name).aliases if v == mv.version),
            "model": {"kind": model.kind, "task": model.task,
                      "classes": list(model.classes) if model.classes is not None else None,
                      "inputs": [c.to_json() for c in model.signature.inputs],
                      "metadata": dict(model.metadata)},
        }

    def lineage(self, ref: str | ModelRef) -> dict[str, Any]:
        """Which code, data, configuration and environment made the version behind ``ref`` (JSON-able).

        Read from the verified version record; sections a record written before they existed lacks
        are None.  ``signature`` and ``task`` come from the verified model files.
        """
        mv = self.get(ref)
        record = self._read_record(mv.name, mv.version)
        model = self.load(mv.ref)
        return {"ref": mv.ref, "sha256": mv.sha256, "created_at": mv.created_at,
                "task": model.task, "classes": list(model.classes) if model.classes is not None else None,
                "signature": model.signature.to_json(),
                **{section: record.get(section) for section in LINEAGE_SECTIONS}}

    def diff(self, a: str | ModelRef, b: str | ModelRef, data: Any = None) -> dict[str, Any]:
        """How versions ``a`` and ``b`` differ: parameters, signature, data fingerprints, environment,
        code and the rest of their lineage; given ``data`` (a pandas DataFrame or Arrow table holding
        both models' inputs), also how their predictions differ on it."""
        left, right = self.lineage(a), self.lineage(b)
        out: dict[str, Any] = {"a": left["ref"], "b": right["ref"], "same_model": left["sha256"] == right["sha256"],
                               **record_diff(left, right)}
        if data is not None:
            out["predictions"] = prediction_diff(self.load(left["ref"]), self.load(right["ref"]), data)
        return out

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

    def _last_version(self, name: str) -> int:
        """Highest number ever minted for ``name`` (deleted ones included): the tombstone or the versions."""
        path = self._name_dir(name) / LAST_VERSION
        recorded = 0
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            recorded = doc["last_version"] if isinstance(doc, dict) else None
            if isinstance(recorded, bool) or not isinstance(recorded, int) or recorded < 0:
                raise ValueError(recorded)
        except FileNotFoundError:  # registries written before deletes existed
            recorded = 0
        except (UnicodeDecodeError, ValueError, KeyError):
            raise IntegrityError(f"model {name!r}: {path} is damaged; it guards against reusing deleted version "
                                 f"numbers: write the highest number ever used, e.g. "
                                 f"echo '{{\"last_version\": N}}' > {path}") from None
        return max(recorded, max(self._version_numbers(name), default=0))

    def _record_or_damage(self, name: str, version: int) -> dict[str, Any] | Damage:
        """The verified ``version.json`` of ``name/version``, or what is wrong with it."""
        folder = self.model_path(name, version)
        path = folder / VERSION_JSON
        fix = (f"`sparkscore delete {name}/{version} --force`, then register the model again "
               f"(it gets a new version number)")

        def damage(problem: str, where: Path = path) -> Damage:
            return Damage(f"{name}/{version}", str(where), problem, fix)

        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return damage(f"{VERSION_JSON} is missing", folder)
        except OSError as exc:
            return damage(f"{VERSION_JSON} cannot be read ({exc.strerror})")
        try:
            expected = (folder / RECORD_SHA256).read_text(encoding="ascii").strip()
        except FileNotFoundError:
            expected = None
        except (OSError, UnicodeDecodeError):
            return damage(f"{RECORD_SHA256} cannot be read", folder / RECORD_SHA256)
        if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
            return damage(f"the version record does not match its sha256 in {RECORD_SHA256} (modified or damaged)")
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return damage(f"{VERSION_JSON} is not valid JSON")
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            return damage(f"{VERSION_JSON} has no sha256")
        if expected is None and record.get("record_format", 1) != 1:
            return damage(f"{RECORD_SHA256} is missing", folder / RECORD_SHA256)
        return record

    def _read_record(self, name: str, version: int) -> dict[str, Any]:
        found = self._record_or_damage(name, version)
        if isinstance(found, Damage):
            raise IntegrityError(str(found))
        return found

    def _read_version(self, name: str, version: int) -> ModelVersion:
        record = self._read_record(name, version)
        return ModelVersion(name, version, record["sha256"], str(record.get("created_at", "")),
                            str(self.model_path(name, version)))

    def _alias_or_damage(self, name: str, alias: str) -> int | Damage:
        """The version an existing alias file points at, or what is wrong with the file."""
        path = self._alias_file(name, alias)
        fix = (f"`sparkscore alias {name} {alias} VERSION` to point it again, "
               f"or `sparkscore alias {name} {alias} --delete`")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (UnicodeDecodeError, ValueError):
            return Damage(f"{name}@{alias}", str(path), "the alias file is not valid JSON", fix)
        version = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            return Damage(f"{name}@{alias}", str(path), "the alias file holds no valid version", fix)
        return version

    def _alias_version(self, name: str, alias: str) -> int:
        try:
            found = self._alias_or_damage(name, alias)
        except FileNotFoundError:
            if not self._version_numbers(name):
                raise self._not_found(name) from None
            if self._route_numbers(name, alias):
                raise self._route_not_version(name, alias) from None
            known = ", ".join(a for a, _ in self.status(name).aliases) or "none"
            raise ModelNotFoundError(f"model {name!r} has no alias {alias!r} (aliases: {known}); "
                                     f"set it with `sparkscore alias {name} {alias} VERSION`") from None
        if isinstance(found, Damage):
            raise IntegrityError(str(found))
        return found

    def _previous_target(self, name: str, alias: str) -> int | None:
        """The version an alias points at now (None when unset or unreadable): the ``from`` of a move."""
        try:
            found = self._alias_or_damage(name, alias)
        except FileNotFoundError:
            return None
        return None if isinstance(found, Damage) else found

    def _append_move(self, name: str, alias: str, from_version: int | None, to_version: int | None,
                     reason: str | None, ts: str | None = None) -> None:
        """One fsync'd append to the alias log; the caller holds the name lock."""
        move = AliasMove(ts or utc_now(), alias, from_version, to_version, _os_user(), socket.gethostname(), reason)
        line = (json.dumps(move.to_json(), sort_keys=True, ensure_ascii=True) + "\n").encode()
        fd = os.open(self._name_dir(name) / ALIAS_HISTORY, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line must not swallow this move
                line = b"\n" + line
            os.write(fd, line)  # one write of one line: readers see it whole or not at all
            os.fsync(fd)
        finally:
            os.close(fd)

    def _history_entries(self, name: str) -> tuple[list[tuple[int, AliasMove]], list[tuple[int, Damage]]]:
        """(line number, move) of every readable log line, and (line number, Damage) of every unreadable one."""
        path = self._name_dir(name) / ALIAS_HISTORY
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return [], []
        entries, damaged = [], []
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            move = _parsed_move(line)
            if move is None:
                torn = number == len(lines)  # no trailing newline: an append that did not finish
                damaged.append((number, Damage(f"{name} alias history line {number}", str(path),
                                               "the last line is incomplete (a write was interrupted)" if torn
                                               else "the line is not a valid alias move",
                                               "none needed; the log is append-only: leave it as it is")))
            else:
                entries.append((number, move))
        return entries, damaged

    def _unapplied_lines(self, name: str, entries: list[tuple[int, AliasMove]]) -> set[int]:
        """Line numbers of logged moves that never took effect (the writer died between its log line and
        the alias file): a move took effect iff the alias's next move starts where it ended
        (``from == to``), or, for its last move, the alias file holds its target now.  A damaged alias
        file proves nothing: its last move counts as applied."""
        by_alias: dict[str, list[tuple[int, AliasMove]]] = {}
        for number, move in entries:
            by_alias.setdefault(move.alias, []).append((number, move))
        unapplied = set()
        for alias, moves in by_alias.items():
            for (number, move), (_, following) in zip(moves, moves[1:]):
                if following.from_version != move.to_version:
                    unapplied.add(number)
            number, last = moves[-1]
            try:
                now = self._alias_or_damage(name, alias)
            except FileNotFoundError:
                now = None
            if not isinstance(now, Damage) and now != last.to_version:
                unapplied.add(number)
        return unapplied

    def _alias_version_at(self, name: str, alias: str, at: str) -> int:
        """The version ``name@alias`` pointed at at instant ``at``, from the alias history."""
        when = parse_timestamp(at, f"{name}@{alias}")
        if when > datetime.now(timezone.utc):  # its answer could still change: a pinned job must not drift
            raise ModelNotFoundError(f"model {name!r}: time pin {at} of alias {alias!r} is in the future; pin a past "
                                     f"instant, or use '{name}@{alias}' for where it points now")
        if self._route_numbers(name, alias):
            raise self._route_not_version(name, alias)
        entries, damaged = self._history_entries(name)
        if not entries and not damaged and not self._version_numbers(name):
            raise self._not_found(name)
        unapplied = self._unapplied_lines(name, entries)
        mine = [(n, m) for n, m in entries if m.alias == alias and n not in unapplied]
        before = [(n, m) for n, m in mine if m.time <= when]
        last_line = before[-1][0] if before else 0
        next_line = next((n for n, m in mine if n > last_line and m.time > when), None)
        # a damaged line between the answer and the next readable move of this alias could be a move in between
        doubtful = [d for n, d in damaged if last_line < n and (next_line is None or n < next_line)]
        if doubtful:
            raise IntegrityError(f"model {name!r}: cannot tell where alias {alias!r} pointed at {at}: {doubtful[0]}")
        if not before:
            first = f"its first recorded move is at {mine[0][1].ts}" if mine else "it has no recorded moves"
            raise ModelNotFoundError(f"model {name!r}: alias {alias!r} was not set at {at} ({first}); "
                                     f"see `sparkscore alias {name} --history`")
        move = before[-1][1]
        if move.to_version is None:
            raise ModelNotFoundError(f"model {name!r}: alias {alias!r} was unset at {at} (removed at {move.ts}); "
                                     f"see `sparkscore alias {name} --history`")
        return move.to_version

    def _route_not_version(self, name: str, alias: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"'{name}@{alias}' is a route, not one model version: load it with "
                                  f"reg.load('{name}@{alias}') (a RoutedModel), score it with PREDICT, ss.spark.predict "
                                  f"or `sparkscore serve`, or see `sparkscore route show {name} {alias}`")

    def _no_alias(self, name: str, alias: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"model {name!r} has no alias {alias!r} in {self.root}; "
                                  f"list aliases with `sparkscore models`")

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


def _training_profile(name: str, model: Model, data: Any, labels: str | None, required: bool | None, bins: int,
                      folder: Path) -> dict[str, Any]:
    """Profile ``data`` into ``folder/profile.json``; the record entry (file, sha256) or why it was skipped.

    The monitor is imported lazily (a documented ``ignore_imports`` line): the registry only stores
    what it computes, and registrations without training data never load it.
    """
    import numpy as np

    from sparkscore.monitor import api as monitor
    from sparkscore.monitor.profile import PROFILE_JSON, MonitorError

    if isinstance(data, np.ndarray):
        reason = "training_data is a numpy array (no column names); pass a DataFrame or Arrow table to profile it"
        if required:
            raise RegistryError(f"model {name!r}: {reason}")
        return {"skipped": reason}
    columns = _column_names(data)
    bound = model.bind_columns(sorted(columns)) if columns is not None else ()  # the binding rule of PREDICT
    missing = [c for c, b in zip(model.signature.names, bound) if b is None]
    if missing and not required:
        return {"skipped": f"training_data has no column {missing[0]!r} of the model's inputs"}
    try:
        found = monitor.profile(model, data, labels=labels, bins=bins)
    except MonitorError as exc:
        if required:
            raise
        return {"skipped": str(exc)}
    found = dataclasses.replace(found, source="training")
    return {"file": PROFILE_JSON, "sha256": found.save(folder / PROFILE_JSON), "rows": found.rows, "bins": found.bins,
            "labels": labels}


def _column_names(data: Any) -> set[str] | None:
    """Column names of in-memory training data (None when only a scan can tell, e.g. a file)."""
    names = getattr(getattr(data, "schema", None), "names", None)  # Arrow (its .columns are arrays)
    if not isinstance(names, list):
        names = getattr(data, "columns", None)  # pandas, DuckDB and Spark
    return None if names is None else {str(n) for n in names}


def prediction_diff(a: Model, b: Model, data: Any) -> dict[str, Any]:
    """Share of rows whose label changes and max / mean absolute difference of the predictions of
    two models on ``data`` (classifiers: of the class probabilities, when both have the same classes;
    regressors: of the values).  NaN on both sides counts as equal; NaN on one side is counted apart."""
    import numpy as np

    if hasattr(data, "to_pandas") and not hasattr(data, "iloc"):  # Arrow
        data = data.to_pandas()
    rows = len(data)
    out: dict[str, Any] = {"rows": rows}
    if a.is_classifier and b.is_classifier:
        la, lb = np.asarray(a.predict(data)), np.asarray(b.predict(data))
        out["changed_labels"] = int(np.count_nonzero(la != lb))
        out["changed_label_share"] = out["changed_labels"] / rows if rows else 0.0
        same_classes = a.classes is not None and b.classes is not None and list(a.classes) == list(b.classes)
        va, vb = (a.predict_proba(data), b.predict_proba(data)) if same_classes else (None, None)
        out["compared"] = "probabilities" if same_classes else "labels only (the models have different classes)"
    elif not a.is_classifier and not b.is_classifier:
        va, vb = a.predict(data).reshape(rows, -1), b.predict(data).reshape(rows, -1)
        out["compared"] = "values"
    else:
        va = vb = None
        out["compared"] = "nothing (one model is a classifier, the other a regressor)"
    if va is not None and va.shape == vb.shape:
        va, vb = np.asarray(va, dtype=np.float64), np.asarray(vb, dtype=np.float64)
        one_nan = np.isnan(va) != np.isnan(vb)
        both = ~np.isnan(va) & ~np.isnan(vb)
        diff = np.abs(va - vb)[both]
        out.update(max_abs_diff=float(diff.max()) if diff.size else 0.0,
                   mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                   nan_on_one_side=int(np.count_nonzero(one_nan)))
    return out


def _importer_of(native: Any) -> str:
    """The importer module ``convert`` dispatches ``native`` to (the same table it uses)."""
    from sparkscore.importers import _IMPORTERS

    if isinstance(native, str) or hasattr(native, "__fspath__"):
        return _IMPORTERS["pyspark"]
    return _IMPORTERS.get(type(native).__module__.split(".", 1)[0], "unknown")


def target_text(name: str, version: int | None) -> str:
    return name if version is None else f"{name}/{version}"


def _checked_reason(name: str, reason: object) -> str | None:
    if reason is not None and not isinstance(reason, str):
        raise RegistryError(f"reason for moving an alias of model {name!r} must be text, got {type(reason).__name__}")
    return reason


def _os_user() -> str:
    """Login name, or ``uid:N`` where the process has no passwd entry (containers)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _parsed_move(line: bytes) -> AliasMove | None:
    """The move on one log line, or None if the line is damaged."""
    try:
        doc = json.loads(line.decode("utf-8"))
        move = AliasMove(**{f.name: doc.get(f.name) for f in dataclasses.fields(AliasMove)})
        validate_name(move.alias, "alias")
        move.time  # noqa: B018 - must parse
    except (UnicodeDecodeError, ValueError, TypeError, AttributeError):
        return None
    versions_ok = all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)
                      for v in (move.from_version, move.to_version))
    texts_ok = isinstance(move.user, str) and isinstance(move.host, str) and isinstance(move.reason, (str, type(None)))
    if move.time.tzinfo is None or not versions_ok or not texts_ok:
        return None
    return move


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
