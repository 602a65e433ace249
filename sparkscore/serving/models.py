"""Loaded model versions, ref routing, hot reload and the memory-bounded LRU.

Why this shape (TF Serving's, in small): a request resolves its ref against an in-memory route
table (``name`` -> latest, ``name@alias`` -> version), never against the disk, so the hot path
does no I/O.  A watcher polls the registry every ``poll_s`` (<= 1 s; ``stat`` calls only, re-reading
the records when one changed) and, when a route moves,
loads and warms the new version *first* and only then swaps the route (availability preserving);
the version no route points at any more drains (its queued requests finish on it) and unloads.
A request holds the :class:`LoadedVersion` it was routed to until it answers, so the version a
response names is always the version that computed it.  Loaded versions live in an LRU bounded
by ``memory_budget_bytes``; versions that a route points at or that hold requests are never evicted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sparkscore import compiler
from sparkscore.errors import ModelNotFoundError
from sparkscore.ir.model import Model
from sparkscore.registry import ModelRef, Registry, parse_ref
from sparkscore.registry.routes import ResolvedRoute, resolve_route
from sparkscore.serving.batcher import BatchPolicy, Batcher, BatchStats
from sparkscore.serving.config import ServeConfig

log = logging.getLogger("sparkscore.serving")
DEVICE = "cpu"
#: a row's answer must not depend on the requests batched with it: under ``auto`` a GLM races BLAS (whose sum
#: order depends on the other rows) against numba per batch size, last-bit apart (tests/serving/test_reload.py)
BACKEND = compiler.row_stable_backend()
MAX_PINNED_ROUTES = 256  # time-pinned route refs remembered (oldest forgotten first)
FULL_REFRESH_S = 10.0  # the watcher re-reads the registry at least this often even when no stat changed


def scorer_key(name: str, version: int, sha256: str) -> tuple:
    """The ``compiler.cached`` key PREDICT's UDFs use (``ScoringFunction._scored``): one compiled model."""
    return (name, int(version), sha256, DEVICE)


def model_bytes(model: Model) -> int:
    """Memory estimate of a loaded version: its IR arrays twice (IR + the compiled layouts)."""
    _, arrays = model.to_payload()
    return 2 * sum(int(np.asarray(a).nbytes) for a in arrays.values()) + 64 * 1024


@dataclass(eq=False)
class LoadedVersion:
    """One model version in memory: its model, its compiled scorer and its batcher."""

    name: str
    version: int
    sha256: str
    model: Model
    batcher: Batcher
    nbytes: int
    inflight: int = 0
    closed: bool = False
    last_used: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> tuple[str, int]:
        return (self.name, self.version)

    @property
    def who(self) -> str:
        return f"model {self.name}/{self.version}"

    async def scores(self, X: np.ndarray) -> np.ndarray:
        return await self.batcher.submit(X)


def load_version(registry: Registry, name: str, version: int) -> tuple[Model, str, Callable]:
    """(model, sha256, score function) of one version, compiled and warmed (runs in a thread)."""
    mv = registry.get(ModelRef(name, version=version))
    model = registry.load(ModelRef(name, version=version))
    key = scorer_key(mv.name, mv.version, model.sha256)
    scorer = compiler.cached(key, load=lambda: model, backend=BACKEND, device=DEVICE)
    warm = np.zeros((1, len(model.signature)), dtype=np.float64)
    scorer.scores(warm)  # first call after calibration: every lazy path taken before traffic moves
    return model, model.sha256, scorer.scores


@dataclass(frozen=True)
class RouteMove:
    """One route the watcher moved: when (perf_counter), from/to which version, load + warm seconds."""

    at: float
    route: tuple[str, str | None]
    old: int | None
    new: int
    load_s: float


class ModelManager:
    """Routes refs to loaded versions; the watcher keeps aliases and "latest" current."""

    def __init__(self, registry: Registry, config: ServeConfig,
                 on_batch: Callable[[LoadedVersion, BatchStats], None] | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.registry = registry
        self.config = config
        self.policy = BatchPolicy(max_batch_rows=config.max_batch_rows, max_delay_s=config.max_delay_s,
                                  latency_objective_s=config.latency_objective_s, queue_size=config.queue_size)
        self.on_batch = on_batch
        self.on_change = on_change
        self.served: frozenset[str] | None = frozenset(parse_ref(m).name for m in config.models) or None
        self.routes: dict[tuple[str, str | None], int] = {}      # (name, alias or None=latest) -> version
        self.loaded: collections.OrderedDict[tuple[str, int], LoadedVersion] = collections.OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Future] = {}
        self._retired: list[LoadedVersion] = []
        self._watcher: asyncio.Task | None = None
        self.ready = False
        self.reloads = 0
        self.moves: collections.deque[RouteMove] = collections.deque(maxlen=256)  # recent route moves
        #: registry routes (``name@route``) in use, arms pinned; the watcher re-resolves them
        self.traffic_routes: dict[tuple[str, str], ResolvedRoute] = {}
        #: time-pinned route refs ``name@route#TIME`` -> what they resolved to (a past instant cannot change)
        self.pinned_routes: dict[tuple[str, str, str], ResolvedRoute] = {}

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Load and warm every served name's latest version and aliases, then start the watcher."""
        names = sorted(self.served) if self.served else await asyncio.to_thread(self.registry.models)
        for name in names:
            try:
                aliases = await asyncio.to_thread(self.registry.aliases, name)
                latest = (await asyncio.to_thread(self.registry.get, ModelRef(name))).version
            except ModelNotFoundError:
                if self.served:
                    raise
                continue
            self.routes[(name, None)] = latest
            for alias, version in aliases.items():
                self.routes[(name, alias)] = version
        for version_key in sorted({(n, v) for (n, _), v in self.routes.items()}):
            await self._get(*version_key)
        self.ready = True
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="sparkscore registry watcher")

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            try:
                await self._watcher
            except asyncio.CancelledError:
                pass
        for lv in list(self.loaded.values()) + self._retired:
            await self._unload(lv, forget=False)  # the process-wide compiled cache outlives one server
        self.ready = False

    # ------------------------------------------------------------------ request path
    def check_served(self, name: str) -> None:
        if self.served is not None and name not in self.served:
            raise ModelNotFoundError(f"model {name!r} is not served here (serving {', '.join(sorted(self.served))}); "
                                     "start the server with --models including it")

    async def acquire(self, ref: ModelRef) -> LoadedVersion:
        """The loaded version ``ref`` routes to, marked in use; pair with :meth:`release`."""
        self.check_served(ref.name)
        if ref.version is not None:
            version = ref.version
        elif ref.at is not None:  # a time pin: the alias history decides, never the live alias route
            version = (await asyncio.to_thread(self.registry.get, ref)).version
        else:
            version = self.routes.get((ref.name, ref.alias))
            if version is None:  # a ref no route knows yet: ask the registry once, then keep it current
                mv = await asyncio.to_thread(self.registry.get, ref)
                version = self.routes.setdefault((ref.name, ref.alias), mv.version)
        lv = self.loaded.get((ref.name, version))
        if lv is None or lv.closed:
            lv = await self._get(ref.name, version)
        lv.inflight += 1  # no await between the lookup and this: an unload cannot slip in
        lv.last_used = time.monotonic()
        self.loaded.move_to_end(lv.key)
        return lv

    def release(self, lv: LoadedVersion) -> None:
        lv.inflight -= 1

    async def traffic_route(self, ref: ModelRef) -> ResolvedRoute | None:
        """The registry route ``ref`` names (arms pinned), None when it is a model ref."""
        if ref.alias is None:
            return None
        if ref.at is not None:
            return await self._pinned_route(ref)
        key = (ref.name, ref.alias)
        found = self.traffic_routes.get(key)
        if found is not None or key in self.routes:  # a route in use, or a known alias
            return found
        self.check_served(ref.name)
        found = await asyncio.to_thread(resolve_route, self.registry, ref)
        if found is not None:
            for arm in (*found.arms, *found.shadows):  # loaded and warmed before traffic reaches them
                await self._get(arm.name, arm.version)
            self.traffic_routes[key] = found
        return found

    async def _pinned_route(self, ref: ModelRef) -> ResolvedRoute | None:
        """A time-pinned route ref: the route version and arm versions live at that instant
        (routes.resolve_route), resolved once and kept (future instants are refused there, so the
        answer cannot change); its arms load on demand like pinned versions, and stay evictable."""
        key = (ref.name, ref.alias, ref.at)
        found = self.pinned_routes.get(key)
        if found is not None:
            return found
        self.check_served(ref.name)
        found = await asyncio.to_thread(resolve_route, self.registry, ref)
        if found is not None:
            if len(self.pinned_routes) >= MAX_PINNED_ROUTES:  # arbitrary instants must not grow it without bound
                self.pinned_routes.pop(next(iter(self.pinned_routes)))
            self.pinned_routes[key] = found
        return found

    # ------------------------------------------------------------------ loading
    async def _get(self, name: str, version: int) -> LoadedVersion:
        key = (name, version)
        lv = self.loaded.get(key)
        if lv is not None and not lv.closed:
            return lv
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            try:
                model, sha, fn = await asyncio.to_thread(load_version, self.registry, name, version)
                lv = LoadedVersion(name, version, sha, model, Batcher(fn, self.policy, f"{name}/{version}"),
                                   model_bytes(model))
                if self.on_batch is not None:
                    lv.batcher.on_batch = lambda stats, lv=lv: self.on_batch(lv, stats)
                self.loaded[key] = lv
                pending.set_result(lv)
                log.info("loaded %s/%s (%d bytes est.)", name, version, lv.nbytes)
                await self._enforce_budget(keep=lv)
                self._changed()
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: later waiters re-raise it themselves
                raise
            finally:
                self._loading.pop(key, None)
            return lv
        return await asyncio.shield(pending)

    async def _unload(self, lv: LoadedVersion, forget: bool = True) -> None:
        lv.closed = True
        if self.loaded.get(lv.key) is lv:
            del self.loaded[lv.key]
        await lv.batcher.close(self.config.drain_timeout_s)
        if lv in self._retired:
            self._retired.remove(lv)
        still_used = any(o.sha256 == lv.sha256 and o.key == lv.key for o in self.loaded.values())
        if forget and not still_used:
            compiler.forget(scorer_key(lv.name, lv.version, lv.sha256), BACKEND, DEVICE)
        log.info("unloaded %s/%s", lv.name, lv.version)
        self._changed()

    def _routed(self) -> set[tuple[str, int]]:
        arms = {(a.name, a.version) for rr in self.traffic_routes.values() for a in (*rr.arms, *rr.shadows)}
        return {(name, v) for (name, _), v in self.routes.items()} | arms

    async def _enforce_budget(self, keep: LoadedVersion | None = None) -> None:
        """Evict least recently used, idle, unrouted versions while over the memory budget."""
        routed = self._routed()
        for lv in list(self.loaded.values()):  # oldest first
            if self.loaded_bytes <= self.config.memory_budget_bytes:
                return
            if lv is keep or lv.key in routed or lv.inflight or not lv.batcher.idle:
                continue
            await self._unload(lv)

    @property
    def loaded_bytes(self) -> int:
        return sum(lv.nbytes for lv in self.loaded.values())

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # ------------------------------------------------------------------ watcher
    def _resolve_routes(self) -> dict[tuple[str, str | None], int | None]:
        """Every route's current version in the registry (None: gone)."""
        out: dict[tuple[str, str | None], int | None] = {}
        for name, alias in list(self.routes):
            try:
                out[(name, alias)] = self.registry.get(ModelRef(name, alias=alias)).version
            except ModelNotFoundError:
                out[(name, alias)] = None
        if self.served is None:  # new models registered while serving
            for name in self.registry.models():
                if (name, None) not in out:
                    try:
                        out[(name, None)] = self.registry.get(ModelRef(name)).version
                    except ModelNotFoundError:
                        pass
        return out

    async def refresh(self) -> int:
        """One watcher pass: load + warm moved targets, then move the routes; returns routes moved."""
        current = self._resolve_routes()  # a few small file reads, only when something changed: on the loop,
        # because a worker thread doing them under load waits ~5 ms for the GIL after every syscall
        moved = 0
        left: set[tuple[str, int]] = set()
        for key, rr in list(self.traffic_routes.items()):  # a new route version or a moved arm alias
            try:
                now = await asyncio.to_thread(resolve_route, self.registry, ModelRef(*key[:1], alias=key[1]))
                if now is not None and now != rr:
                    for arm in (*now.arms, *now.shadows):
                        await self._get(arm.name, arm.version)
                    self.traffic_routes[key] = now
                    left |= {(a.name, a.version) for a in (*rr.arms, *rr.shadows)}
                    moved += 1
            except Exception as exc:  # keep serving the route as it was
                log.error("cannot re-resolve route %s@%s, it stays as it was: %s", key[0], key[1], exc)
        for route, version in current.items():
            old = self.routes.get(route)
            if version == old:
                continue
            if version is None:
                del self.routes[route]
            else:
                t0 = time.perf_counter()
                try:
                    await self._get(route[0], version)  # warmed before any request is routed to it
                except Exception as exc:  # a damaged new version must not take the old one down
                    log.error("cannot load %s/%s, %s stays on %s: %s", route[0], version, route, old, exc)
                    continue
                self.routes[route] = version
                self.moves.append(RouteMove(time.perf_counter(), route, old, version, time.perf_counter() - t0))
            moved += 1
            if old is not None:
                left.add((route[0], old))
            log.info("route %s moved %s -> %s", route, old, version)
        if moved:
            self.reloads += moved
            routed = self._routed()
            for key in left - routed:  # requests already holding it finish on it (it drains)
                if key in self.loaded:
                    self._retire(self.loaded[key])
        await self._drain_retired()
        await self._enforce_budget()
        if moved:
            self._changed()
        return moved

    def _retire(self, lv: LoadedVersion) -> None:
        """No route points at ``lv`` any more: it stops taking new requests and unloads once drained."""
        if self.loaded.get(lv.key) is lv:
            del self.loaded[lv.key]
        lv.closed = True
        self._retired.append(lv)

    async def _drain_retired(self) -> None:
        for lv in list(self._retired):
            if lv.inflight == 0 and lv.batcher.idle:
                await self._unload(lv)

    async def _watch(self) -> None:
        """Poll :meth:`Registry.watch_token` (stat calls, on the loop: no thread to convoy on the GIL) and
        re-read the registry only when it changed, or every ``FULL_REFRESH_S`` as a safety net."""
        token, last_full = None, time.monotonic()
        while True:
            await asyncio.sleep(self.config.poll_s)
            try:
                now = self.registry.watch_token(sorted(self.served) if self.served else None)
                if now == token and time.monotonic() - last_full < FULL_REFRESH_S:
                    continue
                await self.refresh()  # the token was taken first: a change during the refresh is seen next poll
                token, last_full = now, time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the registry briefly unreadable: keep serving what is loaded
                log.warning("registry watcher: %s", exc)
