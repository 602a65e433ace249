"""The registry on object storage (``s3://bucket/prefix``, ``gs://``, ``abfs://``, any fsspec URI).

``Registry("s3://bucket/prefix")`` (or ``$SPARKSCORE_HOME=s3://...``, ``--registry s3://...``)
returns an :class:`ObjectStoreRegistry`: the same API and refs as the local registry, on a store
that has no rename, no locks and no appends.  Everything goes through :class:`Storage`, five
operations an object store can do atomically (read, list, create-if-absent, replace, delete);
:class:`FsspecStorage` implements them with fsspec (``s3fs``: create-if-absent is ``PutObject``
with ``If-None-Match: *``, which AWS S3, MinIO and moto honour).  Credentials and endpoints come
from the usual places (``AWS_*`` variables, ``AWS_ENDPOINT_URL``, fsspec config), so Spark
executors that get only the URI resolve the same store; ``storage_options=`` is for the driver.

Layout under the prefix::

    models/<name>/objects/<uuid>/            model files (Model.save) and profile.json, staged per registration
    models/<name>/versions/<n>.json          the version record: {"record": <version.json text>, "record_sha256": ...}
    models/<name>/deleted/<n>                tombstone: version n was deleted (its record stays, its files go)
    models/<name>/by_sha256/<sha256>         version number holding these model bytes (register's dedup index)
    models/<name>/alias_history/<seq>.json   one alias move (seq zero-padded, 1, 2, 3 ...)
    models/<name>/routes/<route>/<n>.json    route version n (the record routes.py writes, sha256 inside)

Commit protocol (read-after-write and list-after-write consistency assumed, as S3 provides):

* A registration uploads the model under a fresh ``objects/<uuid>/`` prefix: nothing refers to
  it yet, so a writer that dies there leaves only unreferenced objects, never a visible version.
  It then lists ``versions/``, takes ``n = max + 1`` and creates ``versions/<n>.json`` only if
  absent.  That create is the publication: if another writer created ``n`` first, the create
  fails, and the writer lists again and tries the next number.  A number is only ever tried after
  ``n - 1`` was seen, and records are never removed (a delete adds a tombstone), so numbers are
  gap-free and unique under any number of concurrent writers, and never reused after a delete.
* An alias move is one conditional create of the next ``alias_history/<seq>.json`` (seq minted
  the same way): the move, its position in the audit log and its ``from_version`` (read from the
  log up to ``seq - 1``) are one atomic step, and two concurrent moves are ordered by their seq.
  Where an alias points now is the ``to_version`` of its latest move (``None``: unset), so the
  log cannot disagree with the alias.  Time-pinned refs read the same log.
* Integrity as on a filesystem: the record object carries the sha256 of its own text (which holds
  the model's sha256 and the files' prefix); the model files are verified by ``Model.load``
  against the model sha256 on every load.
* A route version (sparkscore/registry/routes.py) is one conditional create of
  ``routes/<route>/<n>.json`` with ``n`` = the latest listed + 1, its layout computed from version
  ``n - 1``: a writer that loses the create re-reads version ``n`` and recomputes on top of it, so no
  version is laid out on a stale predecessor; ``set_route(expected_version=v)`` (the bandit's
  compare-and-set) creates ``v + 1`` or fails, never anything else.
* Weaker than the local registry (no lock spans several objects): two concurrent registrations
  of identical bytes can both mint a version, and an alias can be moved to a version that a
  concurrent ``delete`` is removing; an alias and a route of one name set at the same instant can
  both be created (a ref then means the route: ``resolve_route`` is asked first).  All need writers
  racing on the same name at the same instant.
  ``by_sha256/`` is written after the publication: a writer killed between the two leaves a
  version that a later registration of the same bytes does not recognise (it mints a new one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol
from urllib.parse import urlparse

from sparkscore.errors import IntegrityError, RegistryError
from sparkscore.ir import Model
from sparkscore.registry.lineage import utc_now, version_record
from sparkscore.registry.refs import ModelRef, validate_name, validate_version
from sparkscore.registry.store import (RECORD_FORMAT, AliasMove, Damage, Deleted, ModelStatus, ModelVersion,
                                       Registry, _checked_reason, _is_valid_name, _os_user, _parsed_move,
                                       _training_profile, target_text)

#: fsspec schemes that cannot create-if-absent, so cannot number versions safely
READ_ONLY_SCHEMES = frozenset({"http", "https", "ftp", "github", "zip", "tar"})
#: attempts at minting a number before giving up (each failure means another writer just won one)
MAX_CREATE_ATTEMPTS = 1000


class Storage(Protocol):
    """What the registry needs from a store; keys are ``/``-separated, relative to the registry root."""

    def read(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when absent."""

    def list(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursively), relative to the root."""

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist, atomically; False when it already existed."""

    def replace(self, key: str, data: bytes) -> None:
        """Write ``key`` whole (readers see the old or the new bytes)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (absent is fine)."""


class FsspecStorage:
    """:class:`Storage` on an fsspec filesystem (create-if-absent = ``pipe_file(mode="create")``)."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None) -> None:
        try:
            from fsspec.core import url_to_fs
        except ImportError:  # pragma: no cover - fsspec comes with the s3 extra
            raise RegistryError(f"registry URI {uri!r} needs fsspec and the store's driver: "
                                "pip install 'sparkscore[s3]' (or gcsfs / adlfs)") from None
        try:
            self.fs, root = url_to_fs(uri, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise RegistryError(f"registry URI {uri!r} cannot be opened ({exc}); install the store's fsspec "
                                "driver, e.g. pip install 'sparkscore[s3]'") from None
        self.root = root.rstrip("/")

    def _full(self, key: str) -> str:
        return f"{self.root}/{key}"

    def read(self, key: str) -> bytes:
        if "s3" in _protocols(self.fs):  # one GET (else s3fs asks for the size first)
            return self.fs.cat_file(self._full(key), max_concurrency=1)
        return self.fs.cat_file(self._full(key))

    def list(self, prefix: str) -> list[str]:
        base = self._full(prefix.rstrip("/"))
        parent, _, last = base.rpartition("/")
        try:
            if "s3" in _protocols(self.fs):  # one LIST call (a bare find adds a HEAD and a second LIST when empty)
                found = self.fs.find(parent, prefix=f"{last}/")
            else:
                found = self.fs.find(base)
        except FileNotFoundError:
            return []
        cut = len(self.root) + 1
        return sorted(str(k)[cut:] for k in found)

    def create(self, key: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(self._full(key), data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:  # s3fs maps 412 PreconditionFailed to a plain OSError on some versions
            if "Precondition" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def replace(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._full(key), data)

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._full(key))
        except FileNotFoundError:
            pass


def _back_off(attempt: int) -> None:
    """After a lost conditional create, wait a little (jittered) so racing writers spread out."""
    if attempt:
        time.sleep(random.uniform(0.0, 0.005 * min(attempt, 20)))


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


class ObjectStoreRegistry(Registry):
    """The registry on an object store; see the module docstring for the commit protocol."""

    def __init__(self, uri: str | None = None, storage_options: Mapping[str, Any] | None = None,
                 storage: Storage | None = None) -> None:
        uri = os.environ.get("SPARKSCORE_HOME") if uri is None else uri
        self.uri = self.root = str(uri).rstrip("/")
        if urlparse(self.uri).scheme in READ_ONLY_SCHEMES:
            raise RegistryError(f"registry URI {self.uri!r} is read-only (no conditional writes over HTTP): use "
                                "s3://, gs://, abfs://, a local path or a mount of the store")
        self.storage = storage if storage is not None else FsspecStorage(self.uri, storage_options)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    # ------------------------------------------------------------------ keys
    def _name_dir(self, name: str) -> Path:
        """No local directory exists for a name here: a path below ``os.devnull`` makes every inherited
        existence check (a route folder, say) answer "absent" instead of touching the local disk."""
        return Path(os.devnull, "models", validate_name(name))

    def _name_lock(self, name: str) -> Any:
        raise RegistryError(f"model {name!r}: {self.uri} is an object store, which has no lock; this operation "
                            "is only available on a local or shared-filesystem registry")

    def _key(self, name: str, *parts: str) -> str:
        return "/".join(("models", validate_name(name), *parts))

    def _keys(self, name: str, part: str) -> list[str]:
        """Last path component of every key under ``models/<name>/<part>/``."""
        return [k.rsplit("/", 1)[1] for k in self.storage.list(self._key(name, part))]

    def model_path(self, name: str, version: int) -> str:  # type: ignore[override]
        """The URI of the model files of ``name/version`` (from its record)."""
        files = self._read_record(name, validate_version(version, name))["files"]
        return f"{self.uri}/{self._key(name, files)}"

    # ------------------------------------------------------------------ writing
    def _store_version(self, name: str, model: Model, caller_lineage: dict[str, Any], observed: dict[str, Any],
                       training_data: Any, training_labels: str | None, profile: bool | None,
                       profile_bins: int) -> ModelVersion:
        files = f"objects/{uuid.uuid4().hex}"
        uploaded: list[str] = []
        try:
            with tempfile.TemporaryDirectory(prefix="sparkscore-stage-") as tmp:
                staging = Path(tmp)
                sha256 = model.save(staging)
                same = self._version_with_sha256(name, sha256)
                if same is not None:
                    return dataclasses.replace(same, existing=True)
                if training_data is not None and profile is not False:
                    observed["profile"] = _training_profile(name, model, training_data, training_labels, profile,
                                                            profile_bins, staging)
                for path in sorted(p for p in staging.rglob("*") if p.is_file()):  # ensembles nest members/<i>/
                    key = self._key(name, files, path.relative_to(staging).as_posix())
                    self.storage.replace(key, path.read_bytes())
                    uploaded.append(key)
            for attempt in range(MAX_CREATE_ATTEMPTS):
                _back_off(attempt)
                version = self._last_version(name) + 1
                created_at = utc_now()
                record = {**version_record(name, version, sha256, created_at, model.metadata, caller_lineage,
                                           observed),
                          "record_format": RECORD_FORMAT, "files": files}
                text = json.dumps(record, indent=2, sort_keys=True, allow_nan=False)
                envelope = {"record": text, "record_sha256": hashlib.sha256(text.encode()).hexdigest()}
                if self.storage.create(self._key(name, "versions", f"{version}.json"),
                                       json.dumps(envelope, sort_keys=True).encode()):
                    self.storage.replace(self._key(name, "by_sha256", sha256), str(version).encode())
                    return ModelVersion(name, version, sha256, created_at, f"{self.uri}/{self._key(name, files)}")
            raise RegistryError(f"model {name!r}: {MAX_CREATE_ATTEMPTS} other registrations won every version number "
                                "in a row; retry")
        except BaseException:
            for key in uploaded:  # best effort: unreferenced objects are invisible anyway
                try:
                    self.storage.delete(key)
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
            raise

    def set_alias(self, name: str, alias: str, version: int, reason: str | None = None) -> None:
        """Point ``name@alias`` at ``version``: one conditional create in the alias log."""
        validate_name(alias, "alias")
        reason = _checked_reason(name, reason)
        self.get(ModelRef(name, version=validate_version(version, name)))
        if self._route_numbers(name, alias):  # 'name@alias' cannot mean a route too
            raise RegistryError(f"model {name!r} has a route {alias!r}, and '{name}@{alias}' cannot mean both; "
                                f"pick another alias name")
        self._append_move(name, alias, None, version, reason)

    def delete_alias(self, name: str, alias: str, reason: str | None = None) -> None:
        validate_name(alias, "alias")
        reason = _checked_reason(name, reason)
        if self._previous_target(name, alias) is None:
            raise self._no_alias(name, alias)
        self._refuse_if_routed(name, {alias}, f"alias {name}@{alias}")
        self._append_move(name, alias, None, None, reason)

    def delete(self, name: str, version: int | None = None, force: bool = False) -> Deleted:
        """As :meth:`Registry.delete`; a tombstone object hides a version at once, then its files go."""
        validate_name(name)
        if version is not None:
            validate_version(version, name)
        numbers, doomed, status, pointing = self._deletion_plan(name, version, force)
        for alias in pointing:
            self._append_move(name, alias, None, None, f"deleted with {target_text(name, version)}")
        for number in doomed:
            found = self._record_or_damage(name, number)
            self.storage.create(self._key(name, "deleted", str(number)), utc_now().encode())
            if not isinstance(found, Damage) and isinstance(found.get("sha256"), str):
                self.storage.delete(self._key(name, "by_sha256", found["sha256"]))
            if not isinstance(found, Damage) and isinstance(found.get("files"), str):
                for key in self.storage.list(self._key(name, found["files"])):
                    self.storage.delete(key)
        return Deleted(name, tuple(doomed), tuple(pointing))

    def _append_move(self, name: str, alias: str, from_version: int | None, to_version: int | None,
                     reason: str | None, ts: str | None = None) -> None:
        """Create the next ``alias_history/<seq>.json``; ``from_version`` is read from the log before it."""
        for attempt in range(MAX_CREATE_ATTEMPTS):
            _back_off(attempt)
            entries, _damaged = self._history_entries(name)
            seq = max([n for n, _ in entries] + [n for n, _ in _damaged] + [0]) + 1
            previous = next((m.to_version for _, m in reversed(entries) if m.alias == alias), None)
            move = AliasMove(ts or utc_now(), alias, previous, to_version, _os_user(), socket.gethostname(), reason)
            data = json.dumps(move.to_json(), sort_keys=True, ensure_ascii=True).encode()
            if self.storage.create(self._key(name, "alias_history", f"{seq:010d}.json"), data):
                return
        raise RegistryError(f"model {name!r}: {MAX_CREATE_ATTEMPTS} other alias moves won every slot in a row; retry")

    # routes: the same records as on a filesystem (routes.py), published by conditional create
    def _route_lock(self, name: str) -> Any:
        """No lock: the conditional create of ``routes/<route>/<n>.json`` is the publication."""
        return contextlib.nullcontext()

    def _route_names(self, name: str) -> list[str]:
        keys = self.storage.list(self._key(name, "routes"))
        found = {k.split("/")[3] for k in keys if k.count("/") == 4 and k.endswith(".json")}
        return sorted(r for r in found if _is_valid_name(r) and self._route_numbers(name, r))

    def _route_numbers(self, name: str, route: str) -> list[int]:
        stems = (k[:-len(".json")] for k in self._keys(name, f"routes/{validate_name(route, 'route name')}")
                 if k.endswith(".json"))
        return sorted(int(s) for s in stems if s.isascii() and s.isdigit() and not s.startswith("0"))

    def _route_bytes(self, name: str, route: str, version: int) -> tuple[bytes, str]:
        key = self._key(name, "routes", validate_name(route, "route name"), f"{int(version)}.json")
        return self.storage.read(key), f"{self.uri}/{key}"

    def _publish_route(self, name: str, route: str, version: int, data: bytes) -> bool:
        """Create ``routes/<route>/<version>.json`` only if absent: False when another writer created it first."""
        return self.storage.create(self._key(name, "routes", route, f"{int(version)}.json"), data)

    # ------------------------------------------------------------------ reading
    def watch_token(self, names: Any = None) -> tuple:
        """A fingerprint of ``names``' versions, deletions and alias moves from LIST calls alone
        (every write here adds a key, so an unchanged listing means nothing a ref resolves to changed)."""
        names = self.models() if names is None else list(names)
        return tuple((name, tuple(self.storage.list(self._key(name, "versions"))),
                      tuple(self.storage.list(self._key(name, "deleted"))),
                      tuple(self.storage.list(self._key(name, "alias_history"))),
                      tuple(self.storage.list(self._key(name, "routes")))) for name in names)

    def models(self) -> list[str]:
        names = {k.split("/")[1] for k in self.storage.list("models") if k.count("/") >= 2}
        return sorted(n for n in names if _is_valid_name(n) and self._version_numbers(n))

    def _version_with_sha256(self, name: str, sha256: str) -> ModelVersion | None:
        """The live version holding these model bytes, from the ``by_sha256/`` index (one GET)."""
        try:
            number = int(self.storage.read(self._key(name, "by_sha256", sha256)))
        except (FileNotFoundError, ValueError):
            return None
        if number not in self._version_numbers(name):
            return None
        found = self._record_or_damage(name, number)
        if isinstance(found, Damage) or found["sha256"] != sha256:
            return None
        return self._read_version(name, number)

    def _version_numbers(self, name: str) -> list[int]:
        minted = self._minted(name)
        deleted = {int(k) for k in self._keys(name, "deleted") if k.isdigit()}
        return [n for n in minted if n not in deleted]

    def _minted(self, name: str) -> list[int]:
        stems = (k[:-len(".json")] for k in self._keys(name, "versions") if k.endswith(".json"))
        return [int(s) for s in stems if s.isascii() and s.isdigit() and not s.startswith("0")]

    def _last_version(self, name: str) -> int:
        return max(self._minted(name), default=0)

    def _record_or_damage(self, name: str, version: int) -> dict[str, Any] | Damage:
        key = self._key(name, "versions", f"{version}.json")
        fix = (f"`sparkscore delete {name}/{version} --force`, then register the model again "
               f"(it gets a new version number)")
        where = f"{self.uri}/{key}"
        try:
            envelope = json.loads(self.storage.read(key).decode("utf-8"))
            text, expected = envelope["record"], envelope["record_sha256"]
        except FileNotFoundError:
            return Damage(f"{name}/{version}", where, "the version record is missing", fix)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return Damage(f"{name}/{version}", where, "the version record is not valid JSON", fix)
        if not isinstance(text, str) or hashlib.sha256(text.encode()).hexdigest() != expected:
            return Damage(f"{name}/{version}", where,
                          "the version record does not match its record_sha256 (modified or damaged)", fix)
        record = json.loads(text)
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            return Damage(f"{name}/{version}", where, "the version record has no sha256", fix)
        return record

    def _read_version(self, name: str, version: int) -> ModelVersion:
        record = self._read_record(name, version)
        return ModelVersion(name, version, record["sha256"], str(record.get("created_at", "")),
                            f"{self.uri}/{self._key(name, record['files'])}")

    def _has_version(self, name: str, version: int) -> bool:
        return version in self._version_numbers(name)

    def load(self, ref: str | ModelRef) -> Model:
        """The model behind ``ref``: its files downloaded to a temporary folder and verified (a route
        ref gives a RoutedModel, as on a filesystem)."""
        routed = self._routed(ref)
        if routed is not None:
            return routed
        mv = self.get(ref)
        prefix = mv.path[len(self.uri) + 1:] + "/"
        with tempfile.TemporaryDirectory(prefix="sparkscore-load-") as tmp:
            for key in self.storage.list(prefix):
                target = Path(tmp, *key[len(prefix):].split("/"))
                if ".." in target.relative_to(tmp).parts:  # keys come from the store: stay inside the folder
                    raise IntegrityError(f"model {mv.ref}: object {key!r} is outside its version's files")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.storage.read(key))
            return self._verified_model(mv, tmp)

    @contextlib.contextmanager
    def _version_file(self, mv: ModelVersion, file: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="sparkscore-file-") as tmp:
            path = Path(tmp, file)
            path.write_bytes(self.storage.read(f"{mv.path[len(self.uri) + 1:]}/{file}"))
            yield path

    def aliases(self, name: str) -> dict[str, int]:
        out = {}
        for alias, found in self._alias_targets(name).items():
            if isinstance(found, Damage):
                raise IntegrityError(str(found))
            out[alias] = found
        return out

    def status(self, name: str) -> ModelStatus:
        versions, damaged = [], []
        for number in sorted(self._version_numbers(name)):
            found = self._record_or_damage(name, number)
            if isinstance(found, Damage):
                damaged.append(found)
            else:
                versions.append(ModelVersion(name, number, found["sha256"], str(found.get("created_at", "")),
                                             f"{self.uri}/{self._key(name, found['files'])}"))
        aliases = []
        for alias, found in self._alias_targets(name).items():
            if isinstance(found, Damage):
                damaged.append(found)
            else:
                aliases.append((alias, found))
        return ModelStatus(name, tuple(versions), tuple(aliases), tuple(damaged))

    def _alias_targets(self, name: str) -> dict[str, int | Damage]:
        """Every set alias -> the ``to_version`` of its latest move, from one read of the log.

        A damaged log entry after an alias's latest readable move could be a later move of it, so
        that alias is reported as Damage (as an unreadable alias file is on a filesystem).
        """
        entries, damaged = self._history_entries(name)
        latest: dict[str, tuple[int, AliasMove]] = {}
        for seq, move in entries:
            latest[move.alias] = (seq, move)
        out: dict[str, int | Damage] = {}
        for alias, (seq, move) in sorted(latest.items()):
            later = [d for n, d in damaged if n > seq]
            if later:
                out[alias] = Damage(f"{name}@{alias}", later[0].path, "a later alias move is unreadable",
                                    f"`sparkscore alias {name} {alias} VERSION` to point it again")
            elif move.to_version is not None:
                out[alias] = move.to_version
        return out

    def _alias_or_damage(self, name: str, alias: str) -> int | Damage:
        """Where ``alias`` points, or Damage; FileNotFoundError when unset (as a missing alias file)."""
        found = self._alias_targets(name).get(alias)
        if found is None:
            raise FileNotFoundError(alias)
        return found

    def _previous_target(self, name: str, alias: str) -> int | None:
        found = self._alias_targets(name).get(alias)
        return None if isinstance(found, Damage) else found

    def _history_entries(self, name: str) -> tuple[list[tuple[int, AliasMove]], list[tuple[int, Damage]]]:
        """(seq, move) of every readable alias-log object and (seq, Damage) of every unreadable one."""
        entries, damaged = [], []
        for key in self.storage.list(self._key(name, "alias_history")):
            stem = key.rsplit("/", 1)[1].removesuffix(".json")
            if not stem.isdigit():
                continue
            seq = int(stem)
            try:
                move = _parsed_move(self.storage.read(key))
            except FileNotFoundError:
                continue
            if move is None:
                damaged.append((seq, Damage(f"{name} alias history entry {seq}", f"{self.uri}/{key}",
                                            "the entry is not a valid alias move",
                                            "none needed; the log is append-only: leave it as it is")))
            else:
                entries.append((seq, move))
        entries.sort(key=lambda e: e[0])
        damaged.sort(key=lambda e: e[0])
        return entries, damaged
