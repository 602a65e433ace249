"""Downstream lineage: which Delta tables (and table versions) batch jobs wrote with a model version.

Every batch job stamps its one commit with the pinned model (``sparkscore.job_id`` / ``model`` /
``version`` / ``sha256``, :class:`sparkscore.engines.delta.JobStamp`): delta-rs commits as
commitInfo fields, delta-spark commits as ``userMetadata`` JSON.  This module reads those stamps
back from the Delta logs of the tables it is given, so "what did ``churn/3`` score?" is answered
from the tables themselves, not from a side list that a crashed job could leave out of date.

It lives in the engines layer, not in the registry: the stamp format belongs to the Delta writers
in :mod:`sparkscore.engines.delta`, and the registry (below the engines) must not import them.  The
registry only resolves the ref to ``(name, version, sha256)``; a commit matches when all three do,
so a same-named model of another registry is not counted.

Where to search: the tables (or folders of tables) passed in, plus the comma-separated locations
of the ``spark.sparkscore.lineage.outputs`` setting, read from a spark-defaults style properties
file (``conf/sparkscore.conf``), a mapping, or a Spark session's conf.  A folder stands for every
Delta table under it (local paths).  A location that cannot be read is reported with the reason,
never silently skipped.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sparkscore.engines import delta
from sparkscore.errors import SparkscoreError

#: conf key listing output locations to search (comma-separated tables or folders of tables)
OUTPUTS_CONF = "spark.sparkscore.lineage.outputs"


@dataclass(frozen=True)
class OutputCommit:
    """One Delta commit a batch job made with the model version."""

    table: str
    table_version: int
    job_id: str
    rows: int | None
    time: str            # commit time, ISO-8601 UTC
    writer: str          # "delta-rs" | "delta-spark"
    operation: str | None
    route: str | None = None  # "name@route vN" when the version wrote as an arm (rows: every arm's rows)


@dataclass(frozen=True)
class Outputs:
    """What :func:`model_outputs` found: the commits, every table searched, and what it could not read."""

    ref: str
    sha256: str
    commits: tuple[OutputCommit, ...]
    searched: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...]

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "sha256": self.sha256, "commits": [asdict(c) for c in self.commits],
                "searched": list(self.searched), "unreadable": [list(u) for u in self.unreadable]}


def model_outputs(ref: str, tables: Sequence[str] = (), *, registry=None, conf: Any = None) -> Outputs:
    """The Delta commits batch jobs made with the version behind ``ref``, oldest first per table.

    ``tables``: Delta table paths/URIs or local folders holding tables; ``conf``: where to read
    ``spark.sparkscore.lineage.outputs`` (a properties file path, a mapping or a Spark session).
    """
    from sparkscore.registry import Registry

    reg = registry if registry is not None else Registry()
    mv = reg.get(ref)
    locations = [*tables, *configured_outputs(conf)]
    if not locations:
        raise SparkscoreError(f"no tables to search for the outputs of {mv.ref}: pass tables (--table PATH) or set "
                              f"{OUTPUTS_CONF} to a comma-separated list of tables or folders (--conf FILE)")
    searched, unreadable, commits = [], [], []
    for table in _tables(locations, unreadable):
        searched.append(table)
        try:
            commits.extend(_commits(table, mv.name, mv.version, mv.sha256))
        except Exception as exc:  # noqa: BLE001 - one unreadable table must not hide the others; the reason is kept
            unreadable.append((table, _reason(exc)))
    return Outputs(mv.ref, mv.sha256, tuple(commits), tuple(searched), tuple(unreadable))


def configured_outputs(conf: Any) -> list[str]:
    """The locations ``spark.sparkscore.lineage.outputs`` lists in ``conf`` (none when unset)."""
    if conf is None:
        return []
    if isinstance(conf, (str, os.PathLike)):
        value = read_properties(Path(conf)).get(OUTPUTS_CONF)
    elif isinstance(conf, Mapping):
        value = conf.get(OUTPUTS_CONF)
    elif hasattr(conf, "conf"):  # a SparkSession
        value = conf.conf.get(OUTPUTS_CONF, None)
    else:
        raise SparkscoreError(f"conf must be a properties file, a dict or a SparkSession, got {type(conf).__name__}")
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def read_properties(path: Path) -> dict[str, str]:
    """A spark-defaults style file (``key  value`` lines, ``#`` comments) as a dict."""
    if not path.is_file():
        raise SparkscoreError(f"conf file {path} does not exist; pass a spark-defaults style file "
                              "(e.g. conf/sparkscore.conf)")
    props = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"^([^\s=:]+)\s*(?:[=:]|\s)\s*(.*)$", line)
        if match:
            props[match[1]] = match[2].strip()
    return props


def _tables(locations: Iterable[str], unreadable: list) -> list[str]:
    """Delta tables named by ``locations`` (a local folder expands to the tables under it), deduplicated."""
    out: list[str] = []
    for location in locations:
        if not delta.is_local(location) or delta.is_delta_path(location):
            found = [location]
        else:
            root = Path(delta._local(location))
            found = sorted(str(p.parent) for p in root.rglob("_delta_log") if p.is_dir()) if root.is_dir() else []
            found = [f for f in found if not any(f.startswith(other + os.sep) for other in found)]
            if not found:
                unreadable.append((location, "no Delta table there" if root.exists() else "no such path"))
        out.extend(f for f in found if f not in out)
    return out


def _commits(table: str, name: str, version: int, sha256: str) -> list[OutputCommit]:
    from deltalake import DeltaTable

    found = []
    for info in DeltaTable(table).history():
        stamp = delta.stamp_of(info)
        if stamp is None:
            continue
        direct = (stamp["model"], stamp["version"], stamp["sha256"]) == (name, version, sha256)
        if not direct and (name, version, sha256) not in stamp["arms"]:
            continue
        spark_written = delta.stamp_of({k: v for k, v in info.items() if k != "userMetadata"}) is None
        rows = stamp.get("rows")
        if rows is None:  # delta-spark: the writer's own metrics
            rows = (info.get("operationMetrics") or {}).get("numOutputRows")
        found.append(OutputCommit(table=table, table_version=int(info["version"]), job_id=str(stamp["job_id"]),
                                  rows=None if rows is None else int(rows), time=_iso(info.get("timestamp")),
                                  writer="delta-spark" if spark_written else "delta-rs",
                                  operation=info.get("operation"),
                                  route=None if direct else f"{stamp['model']} v{stamp['version']}"))
    return sorted(found, key=lambda c: c.table_version)


def _iso(millis: Any) -> str:
    if millis is None:
        return ""
    return datetime.fromtimestamp(int(millis) / 1000, timezone.utc).isoformat(timespec="milliseconds")


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200]
