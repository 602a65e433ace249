"""Routes: a named, versioned traffic split of one model over its arms (DESIGN section 14).

``reg.set_route("churn", "ab", arms={"prod": 90, "challenger": 10}, key="customer_id",
shadow=["candidate"])`` writes route version 1 of ``churn@ab``; every later ``set_route`` of the
same route writes version 2, 3, ... (gap-free, minted under the model's name lock like model
versions).  ``'churn@ab'`` is then accepted wherever a ref is (PREDICT, serving); an alias and a
route of one model share that namespace, so the registry refuses a route named like an alias and
an alias named like a route.

Layout::

    <root>/models/<name>/routes/<route>/<n>.json   {"record": {...}, "sha256": sha256 of the record's canonical JSON}

One file per version, published with one ``os.rename`` under the name lock: readers see a whole
version or none; a record whose bytes do not match its sha256 is refused (IntegrityError).  On an
object-store registry the same record is published by a conditional create of
``models/<name>/routes/<route>/<n>.json`` (objstore.py); the registry's five ``_route_*`` methods
are all this module asks of a store.  ``set_route(expected_version=v)`` publishes only on top of
version ``v`` (compare-and-set, :class:`RouteConflictError`): the bandit's updates use it.

A time-pinned ref ``name@route#TIME`` means the version live at ``TIME`` with its alias arms
resolved at ``TIME`` too (:func:`resolve_route`, :func:`route_version_at`).

Arms and weights
    An arm is an alias (``"prod"``) or a version (``3`` / ``"3"``) of the *same* model; it is
    resolved when a query or a server resolves the route (``resolve_route``), which records the
    version each arm answered with.  Weights are non-negative integers that sum to 100 (percent)
    or to 10000 (basis points); they are stored as bucket counts out of :data:`BUCKETS` = 10000.
    Shadow arms are refs of the same model that are scored and never returned.

Assignment (the one function DuckDB, Spark and serving all compute)
    ``bucket = int(md5(salt + ":" + text(key)).hexdigest()[:16], 16) % 10000``: the first 64 bits
    of the MD5 digest, big-endian, modulo 10000.  MD5 is the one digest DuckDB (``md5``), Spark
    (``md5``) and Python (``hashlib``) all have; SQL evaluates the modulo as
    ``(hi * 7296 + lo) % 10000`` over the two 32-bit halves (2**32 % 10000 = 7296), which is the
    same number and never overflows a BIGINT.  ``text(key)`` is the key's canonical text, hashed
    as UTF-8:

    * integers (any width) -> decimal digits with a leading ``-`` for negatives (``"42"``);
    * booleans -> ``"true"`` / ``"false"``;
    * strings -> the string itself;
    * floats -> the integer's text when the value is integral and ``|x| < 2**63`` (``3.0`` hashes
      as ``"3"``, ``-0.0`` as ``"0"``, so ids that pandas or Spark turned into doubles keep their
      bucket); a non-integral, NaN or infinite float has no text and routes like NULL;
    * NULL (``None``) -> no text: the row takes **bucket 0**, which the first arm of the route's
      arm order (its first arm ever, the control) owns while its weight is positive.

    The salt defaults to ``"<name>@<route>"`` (so two routes of one model split independently) and
    is kept by later versions unless one sets another; it is printable ASCII without ``:``.

Bucket layout (sticky and monotone)
    Arms have a fixed order: the order of first appearance across the route's versions.  Each arm
    owns a list of bucket ranges in the order it acquired them.  A new version computes its layout
    from the previous one: an arm whose share shrinks gives back its most recently acquired buckets
    (its last range, from the end), then arms whose share grows take the lowest free buckets, in
    arm order, each appending to its list (a range that continues the arm's last one merges with
    it: ranges grow at their end).  Hence an arm whose weight does not change keeps every bucket, a
    weight increase only adds buckets (10% -> 20% moves no challenger key back), a decrease only
    removes some, and undoing a change restores the previous assignment exactly.  Version 1 lays
    the arms out contiguously in order.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from sparkscore.errors import IntegrityError, ModelNotFoundError, RegistryError
from sparkscore.registry.refs import ModelRef, validate_name, validate_version

if TYPE_CHECKING:
    from sparkscore.registry.store import Registry

BUCKETS = 10_000
#: 2**32 % BUCKETS: SQL computes (hi * 2**32 + lo) % BUCKETS as (hi * LOW_FACTOR + lo) % BUCKETS
LOW_FACTOR = (1 << 32) % BUCKETS
ROUTE_FORMAT = 1
#: |x| below this (2**63) converts to a BIGINT exactly in every engine
FLOAT_KEY_LIMIT = float(2 ** 63)
_SALT = re.compile(r"[ -9;-~]{1,128}")  # printable ASCII without ':'


@dataclass(frozen=True)
class Arm:
    """One arm of a route version: its label (an alias name or a version number as text) and buckets."""

    label: str
    buckets: int                               # out of BUCKETS
    ranges: tuple[tuple[int, int], ...]        # [start, end) in acquisition order

    def ref(self, name: str) -> str:
        return arm_ref(name, self.label)

    @property
    def percent(self) -> float:
        return self.buckets * 100.0 / BUCKETS


@dataclass(frozen=True)
class Route:
    """One immutable route version (what ``<n>.json`` holds), verified against its sha256."""

    name: str                        # the model
    route: str
    version: int
    key: str                         # the key column
    salt: str
    arms: tuple[Arm, ...]            # in the fixed arm order (first appearance), zero-weight arms included
    shadow: tuple[str, ...]          # labels of shadow arms
    created_at: str
    sha256: str
    reason: str | None = None
    #: the selection policy's record (sparkscore/monitor/bandit.py): name, parameters, state and the
    #: feedback window that produced this version's weights; None for fixed weights
    policy: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.route}"

    @property
    def ranges(self) -> tuple[tuple[int, int, str], ...]:
        """Every (start, end, label) sorted by start: together they cover 0..BUCKETS-1 once."""
        return tuple(sorted((s, e, a.label) for a in self.arms for s, e in a.ranges))

    def arm_of_bucket(self, bucket: int) -> str:
        for start, end, label in self.ranges:
            if start <= bucket < end:
                return label
        raise IntegrityError(f"route {self.ref} v{self.version}: bucket {bucket} has no arm; the record is damaged")

    def arm_of_key(self, key: Any) -> str:
        return self.arm_of_bucket(bucket(self.salt, key))

    @property
    def weights(self) -> dict[str, int]:
        """{label: percent-or-basis-points as buckets} of the arms that receive traffic."""
        return {a.label: a.buckets for a in self.arms if a.buckets}


@dataclass(frozen=True)
class ResolvedArm:
    """An arm pinned for one query / one server: the version it resolved to when the route was resolved."""

    label: str
    name: str
    version: int
    sha256: str
    shadow: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class ResolvedRoute:
    """A route version with every arm (and shadow arm) pinned to a model version."""

    route: Route
    arms: tuple[ResolvedArm, ...]        # arms with buckets, in arm order
    shadows: tuple[ResolvedArm, ...]

    def arm(self, label: str) -> ResolvedArm:
        return next(a for a in self.arms if a.label == label)

    def describe(self) -> str:
        """``churn@ab v2 (key customer_id): prod=churn/7 90%, challenger=churn/8 10%; shadow candidate=churn/9``"""
        r = self.route
        arms = ", ".join(f"{a.label}={a.ref} {r_arm.percent:g}%" for a in self.arms
                         for r_arm in r.arms if r_arm.label == a.label)
        shadow = "; shadow " + ", ".join(f"{a.label}={a.ref}" for a in self.shadows) if self.shadows else ""
        return f"{r.ref} v{r.version} (key {r.key}): {arms}{shadow}"


# ---------------------------------------------------------------------------- the hash
def key_text(value: Any) -> str | None:
    """The canonical text of a key value (module docstring), or None for NULL-like keys."""
    if value is None:
        return None
    if type(value) is int:  # the common case first: this runs once per served row
        return str(value)
    if type(value) is str:
        return value
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isfinite(x) and abs(x) < FLOAT_KEY_LIMIT and x == math.floor(x):
            return str(int(x))
        return None
    if isinstance(value, str):
        return value
    raise RegistryError(f"route key value {value!r} is a {type(value).__name__}; keys must be integers, "
                        "strings, booleans or integral floats: cast the key column")


def bucket_of_text(salt: str, text: str | None) -> int:
    if text is None:
        return 0
    digest = hashlib.md5(f"{salt}:{text}".encode("utf-8")).digest()  # noqa: S324 - a bucket, not security
    return int.from_bytes(digest[:8], "big") % BUCKETS  # = int(hexdigest()[:16], 16) % BUCKETS


def bucket(salt: str, value: Any) -> int:
    """The bucket 0..9999 of one key value: what SQL's bucket expression computes for the same key."""
    return bucket_of_text(salt, key_text(value))


# ---------------------------------------------------------------------------- layout
def buckets_of_weights(weights: Mapping[str, int], who: str) -> dict[str, int]:
    """Percent (sum 100) or basis points (sum 10000) as bucket counts; RegistryError otherwise."""
    for label, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 0:
            raise RegistryError(f"{who}: weight of arm {label!r} must be a non-negative integer, got {w!r}")
    total = sum(int(w) for w in weights.values())
    if total == 100:
        scale = BUCKETS // 100
    elif total == BUCKETS:
        scale = 1
    else:
        raise RegistryError(f"{who}: arm weights sum to {total}; give integer percents that sum to 100 "
                            f"(or basis points that sum to {BUCKETS})")
    return {label: int(w) * scale for label, w in weights.items()}


def allocate(previous: Sequence[Arm], order: Sequence[str], targets: Mapping[str, int]) -> dict[str, list[tuple[int, int]]]:
    """Each arm's bucket ranges (acquisition order) for ``targets`` given the previous layout (module docstring)."""
    held: dict[str, list[int]] = {label: [] for label in order}
    for arm in previous:
        held[arm.label] = [b for s, e in arm.ranges for b in range(s, e)]
    taken = {b for bs in held.values() for b in bs}
    free = [b for b in range(BUCKETS) if b not in taken]
    for label in order:  # shrink: give back the most recently acquired buckets
        extra = len(held[label]) - targets.get(label, 0)
        if extra > 0:
            free.extend(held[label][-extra:])
            del held[label][-extra:]
    free.sort()
    at = 0
    for label in order:  # grow: lowest free buckets, in arm order
        need = targets.get(label, 0) - len(held[label])
        if need > 0:
            held[label].extend(free[at:at + need])
            at += need
    return {label: _runs(bs) for label, bs in held.items()}


def _runs(buckets: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive increasing runs of an acquisition-ordered bucket list as [start, end) ranges."""
    out: list[tuple[int, int]] = []
    for b in buckets:
        if out and out[-1][1] == b:
            out[-1] = (out[-1][0], b + 1)
        else:
            out.append((b, b + 1))
    return out


# ---------------------------------------------------------------------------- arms
def arm_label(spec: Any, name: str, who: str) -> str:
    """``"prod"`` / ``"@prod"`` / ``"churn@prod"`` -> ``"prod"``; ``3`` / ``"3"`` / ``"/3"`` / ``"churn/3"`` -> ``"3"``."""
    if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
        return str(validate_version(int(spec), name))
    if not isinstance(spec, str):
        raise RegistryError(f"{who}: arm {spec!r} must be an alias name or a version number of {name!r}")
    text = spec
    for sep in ("@", "/"):
        head, found, tail = text.partition(sep)
        if found:
            if head and head != name:
                raise RegistryError(f"{who}: arm {spec!r} is a ref of model {head!r}; every arm must be "
                                    f"an alias or version of {name!r}")
            text = tail
            break
    if text.isdigit():
        return str(validate_version(int(text), name))
    return validate_name(text, "arm alias")


def arm_ref(name: str, label: str) -> str:
    return f"{name}/{label}" if label.isdigit() else f"{name}@{label}"


# ---------------------------------------------------------------------------- storage
#: attempts at publishing a version before giving up (each lost create means another writer just won one)
MAX_PUBLISH_ATTEMPTS = 1000


class RouteConflictError(RegistryError):
    """``set_route(..., expected_version=v)`` found the route at another version: a concurrent writer won."""


def routes_dir(reg: "Registry", name: str) -> Any:
    """The local folder of ``name``'s routes (filesystem registries only)."""
    return reg._name_dir(name) / "routes"


def route_names(reg: "Registry", name: str) -> list[str]:
    """Routes of model ``name``, sorted."""
    return reg._route_names(validate_name(name))


def is_route(reg: "Registry", name: str, route: str) -> bool:
    return bool(reg._route_numbers(name, route))


def _route_versions(folder) -> list[int]:
    """Version numbers of the ``<n>.json`` files in a local route folder, sorted."""
    try:
        entries = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(int(e[:-5]) for e in entries if e.endswith(".json") and e[:-5].isdigit() and not e.startswith("0"))


def publish_local(folder, version: int, data: bytes) -> bool:
    """Publish ``<version>.json`` in a local route folder (the caller holds the name lock): one rename."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / f"{version}.json").exists():
        return False
    tmp = folder / f".{version}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, folder / f"{version}.json")
    return True


def set_route(reg: "Registry", name: str, route: str, arms: Mapping[Any, int], key: str | None = None,
              shadow: Iterable[Any] = (), salt: str | None = None, reason: str | None = None,
              policy: Mapping[str, Any] | None = None, expected_version: int | None = None) -> Route:
    """Write the next version of route ``name@route`` (see the module docstring); returns it.

    ``policy`` (JSON-able; written by the bandit update, sparkscore/monitor/bandit.py) is kept in
    the version so the weights it chose can be replayed; a version without one has fixed weights.

    ``expected_version`` makes the write a compare-and-set: it is published only if the route's
    latest version is still ``expected_version`` (0: the route does not exist yet), else
    :class:`RouteConflictError`.  Why: an update computed from version v (a bandit window) is only
    right on top of v; without the check two updaters that both read v would both write on top of
    it and the second would silently drop the first one's window.

    Publication is one create-if-absent of ``<n>.json``: on a filesystem under the model's name
    lock, on an object store a conditional create (objstore.py); a writer that loses that create
    re-reads the latest version and recomputes the layout from it (or, with ``expected_version``,
    raises the conflict).
    """
    validate_name(name)
    validate_name(route, "route name")
    who = f"route {name}@{route}"
    if expected_version is not None and (isinstance(expected_version, bool) or not isinstance(expected_version, int)
                                         or expected_version < 0):
        raise RegistryError(f"{who}: expected_version must be a route version number (0: not created yet), "
                            f"got {expected_version!r}")
    if not isinstance(arms, Mapping) or not arms:
        raise RegistryError(f"{who}: give at least one arm, e.g. arms={{'prod': 90, 'challenger': 10}}")
    weights: dict[str, int] = {}
    for spec, weight in arms.items():
        label = arm_label(spec, name, who)
        if label in weights:
            raise RegistryError(f"{who}: arm {label!r} is given twice; give each arm once")
        weights[label] = weight
    targets = buckets_of_weights(weights, who)
    shadows = tuple(dict.fromkeys(arm_label(s, name, who) for s in ([shadow] if isinstance(shadow, str) else shadow)))
    both = [s for s in shadows if s in weights]
    if both:
        raise RegistryError(f"{who}: {both[0]!r} is both an arm and a shadow; a shadow is scored, never returned: "
                            "drop it from one of them")
    if reason is not None and not isinstance(reason, str):
        raise RegistryError(f"{who}: reason must be text, got {type(reason).__name__}")
    for attempt in range(MAX_PUBLISH_ATTEMPTS):
        with reg._route_lock(name):
            if route in reg.aliases(name):
                raise RegistryError(f"{who}: model {name!r} has an alias {route!r}, and '{name}@{route}' cannot mean "
                                    f"both; pick another route name or remove the alias "
                                    f"(`sparkscore alias {name} {route} --delete`)")
            for label in (*weights, *shadows):  # every arm must resolve now, to a model version, not a route
                if not label.isdigit() and is_route(reg, name, label):
                    raise RegistryError(f"{who}: arm {label!r} is a route; arms are aliases or versions of {name!r}")
                reg.get(arm_ref(name, label))
            numbers_ = reg._route_numbers(name, route)
            latest = numbers_[-1] if numbers_ else 0
            if expected_version is not None and latest != expected_version:
                raise _conflict(who, expected_version, latest)
            record, sha = _next_record(reg, name, route, latest, weights, targets, shadows, key, salt, reason,
                                       policy, who)
            data = json.dumps({"record": record, "sha256": sha}, indent=1, sort_keys=True).encode()
            if reg._publish_route(name, route, record["version"], data):
                return _route_of(record, sha)
        if expected_version is not None:  # another writer created expected_version + 1 first
            raise _conflict(who, expected_version, record["version"])
        from sparkscore.registry.objstore import _back_off  # only object stores lose a create

        _back_off(attempt + 1)
    raise RegistryError(f"{who}: {MAX_PUBLISH_ATTEMPTS} other writers won every route version in a row; retry")


def _conflict(who: str, expected: int, found: int) -> RouteConflictError:
    return RouteConflictError(f"{who}: expected version {expected} but another writer published version {found}; "
                              "re-read the route and apply the change again")


def _next_record(reg: "Registry", name: str, route: str, latest: int, weights: Mapping[str, int],
                 targets: Mapping[str, int], shadows: tuple[str, ...], key: str | None, salt: str | None,
                 reason: str | None, policy: Mapping[str, Any] | None, who: str) -> tuple[dict[str, Any], str]:
    """(record, sha256) of version ``latest + 1``, laid out on top of version ``latest``."""
    previous = read_route(reg, name, route, latest) if latest else None
    key = previous.key if key is None and previous is not None else key
    if not isinstance(key, str) or not key or len(key) > 128 or not key.isprintable():
        raise RegistryError(f"{who}: key must be the name of the column that identifies a row "
                            f"(e.g. key='customer_id'), got {key!r}")
    salt = (previous.salt if previous is not None else f"{name}@{route}") if salt is None else salt
    if not isinstance(salt, str) or not _SALT.fullmatch(salt):
        raise RegistryError(f"{who}: salt must be 1-128 printable ASCII characters without ':', got {salt!r}")
    order = [a.label for a in previous.arms] if previous is not None else []
    order += [label for label in weights if label not in order]
    layout = allocate(previous.arms if previous is not None else (), order, targets)
    from sparkscore.registry.lineage import utc_now

    record = {
        "format": ROUTE_FORMAT, "model": name, "route": route, "version": latest + 1, "key": key, "salt": salt,
        "arms": [{"arm": label, "buckets": sum(e - s for s, e in layout[label]),
                  "ranges": [list(r) for r in layout[label]]} for label in order],
        "shadow": list(shadows), "created_at": utc_now(), "reason": reason,
    }
    if policy is not None:  # absent (not null) otherwise: records written before policies keep their sha256
        record["policy"] = json.loads(json.dumps(policy, allow_nan=False))
    return record, _record_sha(record)


def _record_sha(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()


def _route_of(record: Mapping[str, Any], sha: str) -> Route:
    arms = tuple(Arm(a["arm"], int(a["buckets"]), tuple((int(s), int(e)) for s, e in a["ranges"])) for a in record["arms"])
    return Route(record["model"], record["route"], int(record["version"]), record["key"], record["salt"], arms,
                 tuple(record["shadow"]), record["created_at"], sha, record.get("reason"), record.get("policy"))


def read_route(reg: "Registry", name: str, route: str, version: int | None = None) -> Route:
    """Route version ``version`` (default: the latest) of ``name@route``, verified against its sha256."""
    validate_name(name)
    validate_name(route, "route name")
    numbers_ = reg._route_numbers(name, route)
    if not numbers_:
        raise ModelNotFoundError(f"model {name!r} has no route {route!r}; create it with "
                                 f"`sparkscore route set {name} {route} --arm ALIAS=PERCENT ... --key COLUMN`")
    version = numbers_[-1] if version is None else version
    fix = "routes are append-only: set the route again to write a new version"
    try:
        raw, path = reg._route_bytes(name, route, version)
        doc = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ModelNotFoundError(f"route {name}@{route} has no version {version} (it has 1..{numbers_[-1]})") from None
    except (UnicodeDecodeError, ValueError):
        raise IntegrityError(f"route {name}@{route} v{version}: {path} is not valid JSON; {fix}") from None
    record = doc.get("record") if isinstance(doc, dict) else None
    if not isinstance(record, dict) or doc.get("sha256") != _record_sha(record):
        raise IntegrityError(f"route {name}@{route} v{version}: {path} does not match its sha256 (modified or "
                             f"damaged); {fix}")
    route_ = _route_of(record, doc["sha256"])
    if not route_.ranges or (route_.ranges[0][0] != 0 or sum(e - s for s, e, _ in route_.ranges) != BUCKETS
                          or any(route_.ranges[i][1] != route_.ranges[i + 1][0] for i in range(len(route_.ranges) - 1))):
        raise IntegrityError(f"route {name}@{route} v{version}: its bucket ranges do not cover 0..{BUCKETS - 1} "
                             f"exactly once; {fix}")
    return route_


def route_history(reg: "Registry", name: str, route: str) -> list[Route]:
    """Every version of ``name@route``, oldest first."""
    numbers_ = reg._route_numbers(validate_name(name), validate_name(route, "route name"))
    if not numbers_:
        read_route(reg, name, route)  # raises the not-found error
    return [read_route(reg, name, route, n) for n in numbers_]


def resolve_route(reg: "Registry", ref: str | ModelRef) -> ResolvedRoute | None:
    """The route behind ``ref`` with every arm pinned to a version, or None when ``ref`` is not a route.

    A time-pinned ref ``name@route#TIME`` resolves to the route version live at ``TIME`` (see
    :func:`route_version_at`) with every alias arm pinned to where that alias pointed at ``TIME``
    (the alias history), so the ref means what ``name@route`` meant then, arms included; version
    arms (``churn/3``) are already pinned.
    """
    from sparkscore.registry.refs import parse_ref

    parsed = ref if isinstance(ref, ModelRef) else parse_ref(ref)
    if parsed.alias is None or not is_route(reg, parsed.name, parsed.alias):
        return None
    if parsed.at is None:
        route = read_route(reg, parsed.name, parsed.alias)
    else:
        route = route_version_at(reg, parsed.name, parsed.alias, parsed.at)

    def pin(label: str, shadow: bool) -> ResolvedArm:
        arm = ModelRef(route.name, version=int(label)) if label.isdigit() else ModelRef(route.name, alias=label,
                                                                                         at=parsed.at)
        mv = reg.get(arm)
        return ResolvedArm(label, mv.name, mv.version, mv.sha256, shadow)

    arms = tuple(pin(a.label, False) for a in route.arms if a.buckets)
    return ResolvedRoute(route, arms, tuple(pin(s, True) for s in route.shadow))


def route_version_at(reg: "Registry", name: str, route: str, at: str) -> Route:
    """The version of ``name@route`` live at instant ``at``: the last version created at or before it.

    Refused like an alias pin (store.py ``_alias_version_at``): an instant in the future (its
    answer could still change, and a pinned job must not drift) and one before the route's first
    version (the route did not exist) are ModelNotFoundError.
    """
    from datetime import datetime, timezone

    from sparkscore.registry.refs import parse_timestamp

    when = parse_timestamp(at, f"{name}@{route}")
    if when > datetime.now(timezone.utc):
        raise ModelNotFoundError(f"route {name}@{route}: time pin {at} is in the future; pin a past instant, or use "
                                 f"'{name}@{route}' for its current version")
    numbers_ = reg._route_numbers(name, route)
    if not numbers_:
        read_route(reg, name, route)  # raises the not-found error
    # versions are created in order (one writer at a time), so their times are sorted: bisect them
    # (a route a bandit updates online has thousands of versions; this reads ~log2 of them)
    lo, hi, live = 0, len(numbers_), None
    while lo < hi:
        mid = (lo + hi) // 2
        found = read_route(reg, name, route, numbers_[mid])
        if datetime.fromisoformat(found.created_at) <= when:
            live, lo = found, mid + 1
        else:
            hi = mid
    if live is None:
        first = read_route(reg, name, route, numbers_[0]).created_at
        raise ModelNotFoundError(f"route {name}@{route} did not exist at {at} (its first version is from {first}); "
                                 f"see `sparkscore route history {name} {route}`")
    return live


# ---------------------------------------------------------------------------- shadow scoring
#: One function receives every shadow score: (route, arm, version, inputs, outputs).  None (the
#: default) means no prediction-log sink is configured, and shadow arms are then not scored at all.
ShadowSink = Callable[[ResolvedRoute, ResolvedArm, int, Any, Any], None]
_SHADOW_SINK: list[ShadowSink | None] = [None]


def set_shadow_sink(sink: ShadowSink | None) -> ShadowSink | None:
    """Install the function shadow scores go to (the prediction log at merge); returns the previous one."""
    previous, _SHADOW_SINK[0] = _SHADOW_SINK[0], sink
    return previous


def shadow_sink() -> ShadowSink | None:
    return _SHADOW_SINK[0]


def emit_shadow(route: ResolvedRoute, arm: ResolvedArm, inputs: Any, outputs: Any) -> None:
    """Hand one shadow arm's scores to the configured sink (nothing when none is configured)."""
    sink = _SHADOW_SINK[0]
    if sink is not None:
        sink(route, arm, arm.version, inputs, outputs)
