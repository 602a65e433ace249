"""Delta input and atomic, idempotent Delta output for batch scoring jobs (Spark and embedded DuckDB).

Two writers, one contract (a killed job leaves the target unchanged; re-running the same job id
with the same model version adds nothing):

* **delta-spark**, when its JARs are on the classpath (clusters): one ``df.write.format("delta")``
  with ``txnAppId`` / ``txnVersion`` (Delta's own idempotent-write key) and the job stamp as
  ``userMetadata``;
* **delta-rs** otherwise (and always for the embedded engine, ``sparkscore.engines.batch``):
  tasks write parquet files into a staging folder *inside* the table
  directory; the driver then commits them, unchanged, in ONE Delta transaction whose commitInfo
  carries the job stamp.  Until that commit the files are unreferenced.  delta-rs does not dedupe
  application transactions, so :func:`find_commit` checks the stamp before scoring and again,
  under a lock, right before committing.

Integrity rules both writers share (issue 12):

* **Schema.** An append (or overwrite) whose columns differ from the table's fails before anything
  is written, naming the added / missing / type-changed columns (:func:`check_schema`): delta-rs's
  low-level commit would otherwise record the files under the table's old schema and readers would
  never see the new columns.  ``schema_mode="merge"`` asks for Delta's own schema evolution
  (delta-rs ``schema_mode="merge"``, delta-spark ``mergeSchema``).
* **Which model wrote a row.** New tables get ``model`` / ``model_version`` columns
  (:data:`MODEL_COLUMNS`); appends follow the table (:func:`wants_model_columns`).
* **Safe re-runs.** Without an explicit job id, :func:`derive_job_id` hashes what makes two runs
  the same (input identity, pinned model, output, row-changing options), so a retried command
  finds its own commit instead of adding the rows twice.
* **Leftovers.** A staging folder is owned by a process through a lock held for the run
  (:func:`staging`): a failed or interrupted run removes its folder; a ``kill -9`` leftover (lock
  no longer held, files referenced by no commit) is removed by the next run on the table or by
  :func:`remove_leftovers` (``sparkscore vacuum``).  Delta's own VACUUM only removes files the log
  once referenced, so it never sees them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence
from urllib.parse import unquote, urlparse

from sparkscore.errors import JobError, SparkscoreError

_META = "sparkscore."
_STAGING_PREFIX = "sparkscore-staging-"
_OWNER_LOCK = "_{name}.lock"  # beside the staging folder: Spark creates the folder itself
SCHEMA_MODES = ("strict", "merge")
#: per-row record of the pinned model: name (STRING) and version (BIGINT), filterable without parsing
MODEL_COLUMNS = ("model", "model_version")


@dataclass(frozen=True)
class JobStamp:
    """What makes two job runs "the same": job id and the exact model version.

    A route's job stamps the route (``model`` = ``name@route``, its version and the digest of its
    pins) and lists in ``arms`` every answering arm's ``(name, version, sha256)``, so lineage
    finds the tables each model version wrote through a route (:mod:`sparkscore.engines.outputs`).
    """

    job_id: str
    model: str
    version: int
    sha256: str
    arms: tuple[tuple[str, int, str], ...] = ()

    @property
    def app_id(self) -> str:
        """Delta application-transaction id (delta-spark's ``txnAppId``)."""
        return f"sparkscore/{self.job_id}/{self.model}/{self.version}/{self.sha256[:16]}"

    def _identity(self) -> dict:
        return {f"{_META}job_id": self.job_id, f"{_META}model": self.model,
                f"{_META}version": self.version, f"{_META}sha256": self.sha256}

    def metadata(self) -> dict:
        doc = self._identity()
        if self.arms:  # JSON text: commitInfo values written by delta-rs are strings or numbers
            doc[f"{_META}arms"] = json.dumps([list(a) for a in self.arms], separators=(",", ":"))
        return doc

    def matches(self, commit_info: dict) -> bool:
        """Same job id and pinned model (``arms`` follow from a route's pins: not compared, so commits
        written before stamps listed them still make a re-run a no-op)."""
        return all(commit_info.get(k) == v for k, v in self._identity().items())


@dataclass(frozen=True)
class CommitResult:
    table_version: int
    rows: int
    files: int


def is_local(path: str) -> bool:
    return urlparse(path).scheme in ("", "file")


def is_delta_path(path: str) -> bool:
    return is_local(path) and Path(_local(path), "_delta_log").is_dir()


def _local(path: str) -> str:
    return urlparse(path).path if path.startswith("file:") else path


def has_delta_spark(spark) -> bool:
    """Whether the session can read/write Delta itself (delta-spark JARs loaded)."""
    jvm = spark._jvm
    try:
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", False,
                                    jvm.java.lang.Thread.currentThread().getContextClassLoader())
    except Exception:  # py4j raises its own error type for ClassNotFoundException
        return False
    return True


def read_input(spark, source: str):
    """A DataFrame over a catalog table / temp view, a Delta path or a parquet path."""
    if is_delta_path(source) or (not is_local(source) and has_delta_spark(spark)):
        if has_delta_spark(spark):
            return spark.read.format("delta").load(source)
        from deltalake import DeltaTable

        files = DeltaTable(source).file_uris()
        if not files:
            raise JobError(f"input Delta table {source} holds no data files; score a non-empty table")
        return spark.read.parquet(*files)
    if "/" in source or os.path.exists(source):
        return spark.read.parquet(source)
    return spark.table(source)


def find_commit(path: str, stamp: JobStamp) -> dict | None:
    """The commitInfo of an earlier commit of ``stamp`` into the Delta table at ``path``, if any."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        return None
    for info in table.history():
        if stamp.matches(info) or stamp.matches(_user_metadata(info)):  # delta-rs | delta-spark commits
            return info
    return None


def stamp_of(info: dict) -> dict | None:
    """The job stamp a commitInfo carries (``sparkscore.*`` keys), or None for a commit no sparkscore
    job made: delta-rs commits carry it as top-level commitInfo fields, delta-spark commits as the
    JSON text of ``userMetadata`` (:func:`write_delta_spark`)."""
    for doc in (info, _user_metadata(info)):
        stamp = {k[len(_META):]: v for k, v in doc.items() if k.startswith(_META)}
        if {"job_id", "model", "version", "sha256"} <= set(stamp):
            stamp["arms"] = _arm_pins(stamp.get("arms"))
            return stamp
    return None


def _arm_pins(text: Any) -> tuple[tuple[str, int, str], ...]:
    """A stamp's ``arms`` ((name, version, sha256) of a route job's arms); () when absent or unreadable."""
    try:
        pins = json.loads(text) if isinstance(text, str) else []
        return tuple((str(n), int(v), str(s)) for n, v, s in pins)
    except (ValueError, TypeError):
        return ()


def _user_metadata(info: dict) -> dict:
    try:
        doc = json.loads(info.get("userMetadata") or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def write_delta_spark(df, target: str, mode: str, stamp: JobStamp, is_table: bool, merge_schema: bool = False) -> None:
    """Write through delta-spark: one atomic commit, deduplicated by Delta's txnAppId/txnVersion."""
    writer = (df.write.format("delta").mode(mode)
              .option("txnAppId", stamp.app_id).option("txnVersion", 1)
              .option("userMetadata", json.dumps(stamp.metadata(), sort_keys=True)))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    writer.saveAsTable(target) if is_table else writer.save(target)


def staging_path(target: str) -> str:
    """A fresh staging folder inside the table directory: its files stay unreferenced until committed."""
    return f"{target.rstrip('/')}/{_STAGING_PREFIX}{uuid.uuid4().hex}"


def stage_parquet(df, staging_dir: str) -> str:
    """Let the Spark tasks write ``df`` as parquet files into the (not yet existing) staging folder."""
    df.write.mode("error").parquet(staging_dir)
    return staging_dir


# ---------------------------------------------------------------------- schema
@dataclass(frozen=True)
class SchemaDiff:
    """How a job's output columns differ from the table's (names; ``changed`` as ``name: old -> new``)."""

    added: tuple[str, ...]
    missing: tuple[str, ...]
    changed: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.missing or self.changed)

    def describe(self) -> str:
        parts = [f"{label} {', '.join(names)}" for label, names in
                 (("added", self.added), ("missing", self.missing), ("type-changed", self.changed)) if names]
        return "; ".join(parts)


def table_schema(target: str):
    """The Delta schema (``deltalake.Schema``) of the table at ``target``, or None when there is no table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(target).schema()
    except TableNotFoundError:
        return None


def schema_diff(existing, new) -> SchemaDiff:
    """Columns of ``new`` (Arrow schema) vs the table's ``existing`` (Delta or Arrow schema), by name.

    Order does not matter (Delta reads parquet columns by name); types are compared as Delta types,
    so Arrow spellings of one type (``string`` / ``string_view``) are equal.
    """
    old, cur = _delta_types(existing), _delta_types(new)
    changed = tuple(f"{n}: {old[n]} -> {cur[n]}" for n in cur if n in old and old[n] != cur[n])
    return SchemaDiff(tuple(n for n in cur if n not in old), tuple(n for n in old if n not in cur), changed)


def _delta_types(schema) -> dict[str, str]:
    from deltalake import Schema

    if not isinstance(schema, Schema):
        schema = Schema.from_arrow(schema)
    return {f.name: _type_text(f.type) for f in schema.fields}


def _type_text(dtype) -> str:
    text = dtype.to_json() if hasattr(dtype, "to_json") else str(dtype)
    return text.strip('"')


def check_schema(target: str, existing, new, schema_mode: str = "strict") -> None:
    """Refuse, before anything is written, a job whose columns differ from the table's.

    ``existing`` is the table's schema (None: no table yet, anything goes).  ``merge`` accepts added
    and missing columns (Delta's schema evolution: new columns are added, missing ones read as NULL
    in the new rows) but no type change, which Delta cannot merge either.
    """
    if schema_mode not in SCHEMA_MODES:
        raise JobError(f"unknown schema mode {schema_mode!r}; use one of {', '.join(SCHEMA_MODES)}")
    if existing is None:
        return
    diff = schema_diff(existing, new)
    if diff.changed:
        raise JobError(f"{target}: the job's columns differ from the table's ({diff.describe()}); Delta cannot change "
                       "a column's type: cast the input column, choose another --output-col, or write a new table")
    if diff and schema_mode != "merge":
        raise JobError(f"{target}: the job's columns differ from the table's ({diff.describe()}); nothing was "
                       "written: pass the table's columns (--keep-columns), or --schema merge to evolve the table")


def wants_model_columns(existing, record_model: Optional[bool]) -> bool:
    """Whether to store :data:`MODEL_COLUMNS` per row: as asked, else on for new tables and as the table does.

    On by default because a table that several models append to otherwise holds nothing that tells
    their rows apart (the commit stamp names the model, but rows outlive commits: compaction,
    copies, exports); appends follow the table so an old table keeps its schema.
    """
    if record_model is not None:
        return record_model
    return existing is None or all(c in _delta_types(existing) for c in MODEL_COLUMNS)


def check_model_columns(columns: Sequence[str], record_model: bool) -> None:
    clash = [c for c in MODEL_COLUMNS if c in columns] if record_model else []
    if clash:
        raise JobError(f"output column {clash[0]!r} is also the per-row model record ({', '.join(MODEL_COLUMNS)}); "
                       "drop it from --keep-columns, rename it, or pass --no-model-columns")


# ---------------------------------------------------------------------- job ids
def file_identity(paths: Sequence[str]) -> list[list]:
    """``[path, size, mtime_ns]`` of each local file: what a re-run of the same input sees unchanged."""
    out = []
    for path in sorted(paths):
        local = os.path.abspath(_local(path))
        st = os.stat(local)
        out.append([local, st.st_size, st.st_mtime_ns])
    return out


def derive_job_id(source: Mapping, stamp_model: tuple[str, int, str], output: str, options: Mapping) -> str:
    """The default job id: a hash of the input's identity, the pinned model, the output and row options.

    Two runs of the same command over unchanged input get the same id, so the second finds the
    first's commit and adds nothing (a cron retry, an operator's up-arrow); a changed input file
    (size or mtime), another model version or other options give a new id.  ``source`` is e.g.
    ``{"files": file_identity(...)}`` or ``{"delta": path, "version": 7}``.
    """
    name, version, sha256 = stamp_model
    out = os.path.abspath(_local(output)) if is_local(output) else output.rstrip("/")
    doc = {"input": source, "model": [name, version, sha256], "output": out, "options": dict(options)}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"auto-{digest[:24]}"


def row_options(mode: str, keep_columns: Sequence[str], output_col: str, model_columns: bool) -> dict:
    """The options that change what a job writes: part of its derived id (both engines spell them so)."""
    return {"mode": mode, "keep_columns": list(keep_columns), "output_col": output_col, "model_columns": model_columns}


def spark_input_identity(spark, source: str, df) -> dict:
    """What makes a Spark job's input the same next time: a Delta table's version, else its files.

    Files are listed by Spark itself (``inputFiles``: parquet paths, catalog tables over files) and
    stat-ed locally or through Hadoop's FileSystem.  An input with no files (a view over in-memory
    data) has no identity: the job then needs an explicit ``--job-id``.
    """
    if is_delta_path(source):
        from deltalake import DeltaTable

        return {"delta": os.path.abspath(_local(source)), "version": DeltaTable(source).version()}
    if not is_local(source) and has_delta_spark(spark):
        try:
            version = spark._jvm.io.delta.tables.DeltaTable.forPath(spark._jsparkSession, source) \
                .history(1).head().getLong(0)
            return {"delta": source.rstrip("/"), "version": int(version)}
        except Exception:  # not a Delta path: fall back to its files
            pass
    files = list(df.inputFiles())
    if not files:
        raise JobError(f"--input {source} has no files to fingerprint (a view or in-memory table), so no job id can "
                       "be derived; pass --job-id to make re-runs safe")
    local = [f for f in files if is_local(f)]
    identity = file_identity([unquote(urlparse(f).path) if f.startswith("file:") else f for f in local])
    hadoop = spark._jsc.hadoopConfiguration()
    for uri in sorted(set(files) - set(local)):
        path = spark._jvm.org.apache.hadoop.fs.Path(uri)
        status = path.getFileSystem(hadoop).getFileStatus(path)
        identity.append([uri, int(status.getLen()), int(status.getModificationTime())])
    return {"files": identity}


# ---------------------------------------------------------------------- staging and leftovers
def table_state(target: str) -> str:
    """``the table T is unchanged at version N`` (or that no table was created), for failure messages."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return f"the table {target} is unchanged at version {DeltaTable(target).version()}"
    except TableNotFoundError:
        return f"no table was created at {target}"
    except Exception:  # the message must not fail while reporting another failure
        return f"the table {target} is unchanged"


def with_table_state(exc: SparkscoreError, target: str) -> SparkscoreError:
    """The same error (same class, so callers still catch it), its one line ending with what became of ``target``.

    Messages raised inside a run never state the table's version themselves; the run's one
    ``except`` adds it here after its staging folder is gone, so the line says it exactly once.
    """
    message = f"{str(exc).rstrip().rstrip('.')}; staging files removed, {table_state(target)}"
    try:
        return type(exc)(message)
    except TypeError:  # a subclass with another constructor
        return JobError(message)


def check_output(target: str, flag: str = "--output") -> None:
    """Refuse an output that is a file, or a directory holding anything but a Delta table (or our own leftovers).

    deltalake would otherwise fail on a file with its own internals, and would happily create a
    table inside a directory of unrelated files (then a failed first run could not tell its own
    directory from the user's).  An empty directory is fine: ``mkdir out`` before the first run.
    """
    if not is_local(target):
        return
    root = Path(_local(target))
    if root.is_dir():
        if (root / "_delta_log").is_dir():
            return
        foreign = sorted(p.name for p in root.iterdir() if not _is_own(p.name))
        if foreign:
            raise JobError(f"{flag} {target} is a directory that is not a Delta table (it holds {foreign[0]!r}"
                           f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); pass a new or empty "
                           "directory, or an existing Delta table")
        return
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is a file" if existing == root else f"is inside {existing}, which is a file"
        raise JobError(f"{flag} {target} {what}, not a Delta table directory; pass a new directory path or an "
                       "existing Delta table")


def _is_own(name: str) -> bool:
    """Files sparkscore itself keeps in a table directory (commit lock, staging folders and their locks)."""
    return name == "_sparkscore.lock" or name.startswith((_STAGING_PREFIX, f"_{_STAGING_PREFIX}"))


@contextlib.contextmanager
def staging(target: str, create: bool = True) -> Iterator[str]:
    """A staging folder of ``target`` owned by this process for the ``with`` block.

    The owner lock (a file beside the folder, ``flock``-ed until the block ends or the process
    dies) tells a live run from a ``kill -9`` leftover (:func:`remove_leftovers`, which every run
    calls first).  Any exception (KeyboardInterrupt included) removes the folder; a first run also
    removes the table directory it created.  Local targets only; elsewhere a plain folder.
    """
    path = staging_path(target)
    if not is_local(target):
        yield path
        return
    root = Path(_local(target))
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / Path(path).name
    lock = root / _OWNER_LOCK.format(name=folder.name)
    tmp = lock.with_name(lock.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, lock)  # appears already locked: no cleaner can mistake it for a dead owner's
        if create:
            folder.mkdir()
        try:
            yield str(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            if created_root:
                _remove_if_not_a_table(root)
            raise
        lock.unlink(missing_ok=True)  # committed (or dropped by commit_staged): no longer a candidate
    finally:
        os.close(fd)


def _remove_if_not_a_table(root: Path) -> None:
    """A failed first run must not leave a non-Delta directory behind (unless another run is using it)."""
    if (root / "_delta_log").exists():
        return
    leftover = {p.name for p in root.iterdir()} - {"_sparkscore.lock"}
    if not leftover:
        shutil.rmtree(root, ignore_errors=True)


def remove_leftovers(target: str, include_unlocked: bool = False, dry_run: bool = False) -> list[str]:
    """Remove staging folders of dead runs that no commit references; returns their paths.

    A leftover is a staging folder whose owner lock exists but is no longer held (its run was
    killed).  ``include_unlocked`` also takes folders without a lock file (runs of versions before
    the lock, or a lost lock): ``sparkscore vacuum``.  Either way a folder that any commit in the
    log references is kept: it holds table data.  ``dry_run`` lists them and removes nothing.
    """
    if not is_local(target):
        return []
    root = Path(_local(target))
    if not root.is_dir():
        return []
    candidates: dict[str, Optional[Path]] = {}
    for entry in root.iterdir():
        name = entry.name
        if name.startswith(_STAGING_PREFIX) and entry.is_dir():
            candidates.setdefault(name, None)
        elif name.startswith(f"_{_STAGING_PREFIX}") and name.endswith(".lock"):
            candidates[name[1:-len(".lock")]] = entry
    if not include_unlocked:
        candidates = {k: v for k, v in candidates.items() if v is not None}
    if not candidates:
        return []
    removed, referenced = [], None
    for name, lock in sorted(candidates.items()):
        fd = None
        if lock is not None:
            try:
                fd = os.open(lock, os.O_RDWR)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except FileNotFoundError:  # its run just finished
                continue
            except BlockingIOError:  # a live run
                os.close(fd)
                continue
        try:
            if referenced is None:
                referenced = _referenced_folders(root)
            if referenced is None:
                return removed
            if name not in referenced and (root / name).exists():
                if not dry_run:
                    shutil.rmtree(root / name)
                removed.append(str(root / name))
            if lock is not None and not dry_run:
                lock.unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)
    for tmp in root.glob(f"_{_STAGING_PREFIX}*.lock.tmp"):  # died between open and rename
        if not dry_run and time.time() - tmp.stat().st_mtime > 60:
            tmp.unlink(missing_ok=True)
    return removed


def _referenced_folders(root: Path) -> Optional[set[str]]:
    """Top-level folders of every file the Delta log adds: in the current snapshot or any kept commit.

    None when the snapshot cannot be read: then nothing counts as unreferenced.
    """
    paths: set[str] = set()
    log = root / "_delta_log"
    if not log.is_dir():
        return set()
    from deltalake import DeltaTable

    try:
        paths.update(str(p) for p in DeltaTable(str(root)).get_add_actions(flatten=True).column("path").to_pylist())
    except Exception:  # no readable snapshot (a checkpoint may hide older adds): remove nothing
        return None
    for commit in log.glob("*.json"):
        with commit.open() as fh:
            for line in fh:
                if '"add"' in line:
                    action = json.loads(line).get("add")
                    if action:
                        paths.add(action["path"])
    return {p.split("/", 1)[0] for p in paths if "/" in p}


def commit_staged(target: str, staging: str, schema, mode: str, stamp: JobStamp, started: float,
                  schema_mode: str = "strict") -> CommitResult | None:
    """Commit every parquet file of ``staging`` to the Delta table ``target`` in one transaction.

    Returns None (and drops the staged files) when ``stamp`` was committed meanwhile.  The schema is
    checked again under the commit lock (another run may have evolved the table meanwhile).  When
    the columns differ and ``schema_mode`` is ``merge``, the staged rows go through delta-rs's own
    schema evolution (``write_deltalake(schema_mode="merge")``: one commit with the new metadata;
    the rows are rewritten once, since a plain add-files commit cannot change the schema).
    """
    import pyarrow.parquet as pq
    from deltalake import DeltaTable, Schema
    from deltalake.exceptions import DeltaError, TableNotFoundError
    from deltalake.transaction import AddAction, CommitProperties, Transaction, create_table_with_add_actions

    root = _local(target).rstrip("/")
    actions, rows = [], 0
    for file in sorted(Path(_local(staging)).glob("*.parquet")):
        n = pq.read_metadata(file).num_rows
        st = file.stat()
        actions.append(AddAction(os.path.relpath(file, root), st.st_size, {}, int(st.st_mtime * 1000), True,
                                 json.dumps({"numRecords": n})))
        rows += n
    with _commit_lock(target):
        if find_commit(target, stamp) is not None:
            shutil.rmtree(_local(staging), ignore_errors=True)
            return None
        existing = table_schema(target)
        check_schema(target, existing, schema, schema_mode)
        metadata = {**stamp.metadata(), f"{_META}rows": rows, f"{_META}seconds": round(time.time() - started, 3)}
        props = CommitProperties(custom_metadata=metadata, max_commit_retries=50,
                                 app_transactions=[Transaction(stamp.app_id, 1)])
        try:
            if existing is not None and schema_diff(existing, schema):
                _merge_write(target, staging, schema, mode, props)
                return CommitResult(DeltaTable(target).version(), rows, len(actions))
            try:
                DeltaTable(target).create_write_transaction(actions, mode, schema, commit_properties=props)
            except TableNotFoundError:
                try:
                    create_table_with_add_actions(target, Schema.from_arrow(schema), actions, mode="error",
                                                  commit_properties=props)
                except DeltaError as exc:  # another job created the table meanwhile: append to it
                    if "already exists" not in str(exc):
                        raise
                    DeltaTable(target).create_write_transaction(actions, mode, schema, commit_properties=props)
        except DeltaError as exc:
            # the table's state is the caller's to add (with_table_state), once, after staging is gone
            raise JobError(f"job {stamp.job_id}: Delta commit to {target} failed ({exc}), re-run the same "
                           "command") from None
    return CommitResult(DeltaTable(target).version(), rows, len(actions))


def _merge_write(target: str, staging: str, schema, mode: str, props) -> None:
    """Delta's schema evolution for the staged rows: one commit adding columns and rows together."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import write_deltalake

    files = sorted(str(p) for p in Path(_local(staging)).glob("*.parquet"))
    dataset = ds.dataset(files, schema=pa.schema(schema), format="parquet")
    write_deltalake(target, dataset.scanner().to_reader(), mode=mode, schema_mode="merge", commit_properties=props)
    shutil.rmtree(_local(staging), ignore_errors=True)  # rewritten into the table: the staged copies are unreferenced


def _commit_lock(target: str):
    """Serialises check-then-commit of jobs sharing a file system (local paths; no-op elsewhere)."""
    if not is_local(target):
        return contextlib.nullcontext()
    from filelock import FileLock

    Path(_local(target)).mkdir(parents=True, exist_ok=True)
    return FileLock(os.path.join(_local(target), "_sparkscore.lock"))
