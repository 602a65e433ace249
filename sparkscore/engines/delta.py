"""Delta input and atomic, idempotent Delta output for batch scoring jobs (Spark and embedded DuckDB).

Two writers, one contract (a killed job leaves the target unchanged; re-running the same job id
with the same model version adds nothing):

* **delta-spark**, when its JARs are on the classpath (clusters): one ``df.write.format("delta")``
  with ``txnAppId`` / ``txnVersion`` (Delta's own idempotent-write key) and the job stamp as
  ``userMetadata``;
* **delta-rs** otherwise (and always for the embedded engine, ``sparkscore.engines.batch``):
  tasks write parquet files into a staging folder *inside* the table
  directory; the driver then commits them, unchanged, in ONE Delta transaction whose commitInfo
  carries the job stamp.  Until that commit the files are unreferenced (VACUUM removes leftovers
  of killed jobs: the folder name is deliberately not hidden).  delta-rs does not dedupe
  application transactions, so :func:`find_commit` checks the stamp before scoring and again,
  under a lock, right before committing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from sparkscore.errors import JobError

_META = "sparkscore."


@dataclass(frozen=True)
class JobStamp:
    """What makes two job runs "the same": job id and the exact model version."""

    job_id: str
    model: str
    version: int
    sha256: str

    @property
    def app_id(self) -> str:
        """Delta application-transaction id (delta-spark's ``txnAppId``)."""
        return f"sparkscore/{self.job_id}/{self.model}/{self.version}/{self.sha256[:16]}"

    def metadata(self) -> dict:
        return {f"{_META}job_id": self.job_id, f"{_META}model": self.model,
                f"{_META}version": self.version, f"{_META}sha256": self.sha256}

    def matches(self, commit_info: dict) -> bool:
        return all(commit_info.get(k) == v for k, v in self.metadata().items())


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


def _user_metadata(info: dict) -> dict:
    try:
        doc = json.loads(info.get("userMetadata") or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def write_delta_spark(df, target: str, mode: str, stamp: JobStamp, is_table: bool) -> None:
    """Write through delta-spark: one atomic commit, deduplicated by Delta's txnAppId/txnVersion."""
    writer = (df.write.format("delta").mode(mode)
              .option("txnAppId", stamp.app_id).option("txnVersion", 1)
              .option("userMetadata", json.dumps(stamp.metadata(), sort_keys=True)))
    writer.saveAsTable(target) if is_table else writer.save(target)


def staging_path(target: str) -> str:
    """A fresh staging folder inside the table directory: its files stay unreferenced until committed."""
    return f"{target.rstrip('/')}/sparkscore-staging-{uuid.uuid4().hex}"


def stage_parquet(df, target: str) -> str:
    """Let the Spark tasks write ``df`` as parquet files into a fresh staging folder of the table."""
    staging = staging_path(target)
    df.write.mode("error").parquet(staging)
    return staging


def commit_staged(target: str, staging: str, schema, mode: str, stamp: JobStamp, started: float) -> CommitResult | None:
    """Commit every parquet file of ``staging`` to the Delta table ``target`` in one transaction.

    Returns None (and drops the staged files) when ``stamp`` was committed meanwhile.
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
        metadata = {**stamp.metadata(), f"{_META}rows": rows, f"{_META}seconds": round(time.time() - started, 3)}
        props = CommitProperties(custom_metadata=metadata, max_commit_retries=50,
                                 app_transactions=[Transaction(stamp.app_id, 1)])
        try:
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
            raise JobError(f"job {stamp.job_id}: Delta commit to {target} failed ({exc}); "
                           "the table is unchanged, re-run the job") from None
    return CommitResult(DeltaTable(target).version(), rows, len(actions))


def _commit_lock(target: str):
    """Serialises check-then-commit of jobs sharing a file system (local paths; no-op elsewhere)."""
    if not is_local(target):
        return contextlib.nullcontext()
    from filelock import FileLock

    Path(_local(target)).mkdir(parents=True, exist_ok=True)
    return FileLock(os.path.join(_local(target), "_sparkscore.lock"))
