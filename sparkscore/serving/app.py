"""The ASGI app: OIP v2 + MLflow ``/invocations`` + ``/metrics`` over a :class:`~sparkscore.registry.Registry`.

Built on Starlette (small, well kept, the routing layer of FastAPI without its validation cost)
and served by uvicorn (``sparkscore serve``); any ASGI server can run :func:`create_app`'s result.

Refs in URLs (exactly the SQL refs):

* OIP v2: ``/v2/models/{name}``, ``/v2/models/{name}/versions/{v}``, ``/v2/models/{name@alias}``
  (``@`` may be sent raw or as ``%40``; tritonclient sends ``%40``), and ``/v2/models/{name}/{v}``
  (the ``name/3`` ref written into the path).  A ``/`` inside the name part cannot be escaped
  (``%2F`` is decoded before routing), so a version always goes after a ``/``.
* MLflow: ``POST /invocations`` answers for the one served model; with several, name it with
  ``?model=<ref>`` (``@`` raw or ``%40``, ``/`` raw or ``%2F``) or the ``x-sparkscore-model`` header.

Every prediction response carries ``model_name`` / ``model_version`` fields and the headers
``x-sparkscore-model-name`` / ``x-sparkscore-model-version`` naming the version that computed it.

Status codes: 400 bad input (one line naming the input and the model), 401 bad token, 404 unknown
model/version/path, 413 body or row count over the limit, 503 over the concurrency or queue limit
(retry), 500 only for a server-side fault (e.g. a damaged model file), never for client input.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from typing import Any, Awaitable, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sparkscore.errors import InvalidModelNameError, ModelNotFoundError, ScoringError, SignatureError
from sparkscore.monitor import predlog
from sparkscore.registry import ModelRef, Registry, parse_ref
from sparkscore.serving import mlflow, v2
from sparkscore.serving.batcher import BatchStats, OverloadedError
from sparkscore.serving.common import BadRequestError, PayloadTooLargeError, UnauthorizedError, output_values
from sparkscore.serving.config import ServeConfig
from sparkscore.serving.metrics import CONTENT_TYPE_LATEST, Metrics
from sparkscore.serving.models import LoadedVersion, ModelManager
from sparkscore.serving import routing
from sparkscore.serving.common import DATATYPE_OF, jsonable, matrix, named_columns, output_type, output_values
from sparkscore.registry.routes import ResolvedRoute, emit_shadow, shadow_sink

log = logging.getLogger("sparkscore.serving")
_VERSIONED = re.compile(r"(.+)/versions/([^/]*)")
JSON = "application/json"


def _status(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, UnauthorizedError):
        return 401, "unauthorized"
    if isinstance(exc, PayloadTooLargeError):
        return 413, "too_large"
    if isinstance(exc, ModelNotFoundError):
        return 404, "not_found"
    if isinstance(exc, (BadRequestError, InvalidModelNameError, SignatureError, ScoringError)):
        return 400, "bad_request"
    if isinstance(exc, OverloadedError):
        return 503, "overloaded"
    return 500, "internal"


def v2_ref(rest: str) -> ModelRef:
    """The ref of a ``/v2/models/...`` path remainder (without ``/infer`` or ``/ready``)."""
    m = _VERSIONED.fullmatch(rest)
    if m:
        name, version = m.groups()
        if "@" in name or "/" in name:
            raise BadRequestError(f"{name[:60]!r}/versions/{version[:20]}: give either an alias or a version, not both")
        return parse_ref(f"{name}/{version}")
    return parse_ref(rest)


class Server:
    """The app's state: the model manager, the metrics and the request limits."""

    def __init__(self, registry: Registry, config: ServeConfig = ServeConfig()) -> None:
        self.registry = registry
        self.config = config
        self.metrics = Metrics()
        self.manager = ModelManager(registry, config, on_batch=self._on_batch, on_change=self._on_change)
        self._inflight = 0
        self._reloads_seen = 0
        self._gauged: dict[tuple[str, int], LoadedVersion] = {}
        self._token = config.token.encode() if config.token else None
        self._shadow_tasks: set[asyncio.Task] = set()
        self._feedback_lock = asyncio.Lock()  # one bandit update at a time: each reads the version the last wrote
        self.instance_id = config.instance_id or f"serve-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.request_log: predlog.LogWriter | None = None
        self.app = Starlette(routes=[  # prediction routes first: Starlette tries them in order
            Route("/invocations", self.invocations, methods=["POST"]),
            Route("/v2/models/{rest:path}", self.v2_post, methods=["POST"]),
            Route("/v2/models/{rest:path}", self.v2_get, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/routes/{ref}/feedback", self.route_feedback, methods=["POST"]),
            Route("/ping", self.ready, methods=["GET"]),
            Route("/health", self.ready, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
        ], lifespan=self._lifespan)
        self.app.state.server = self

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self.config.log_table and self.request_log is None:
            self.request_log = predlog.LogWriter(
                self.config.log_table, self.instance_id, queue_size=self.config.log_queue_size,
                on_drop=self.metrics.log_dropped.inc, on_write=self.metrics.log_written.inc)
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()
        if self.request_log is not None:  # flush what is queued (in a thread: the loop stays free)
            writer, self.request_log = self.request_log, None
            await asyncio.to_thread(writer.close)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def _on_batch(self, lv: LoadedVersion, stats: BatchStats) -> None:
        self.metrics.child(self.metrics.batch_rows, lv.name).observe(stats.rows)
        self.metrics.child(self.metrics.batch_requests, lv.name).observe(stats.requests)

    def _on_change(self) -> None:
        m = self.metrics
        current = {lv.key: lv for lv in self.manager.loaded.values()}
        for key, lv in current.items():
            if self._gauged.get(key) is not lv:
                labels = (lv.name, str(lv.version))
                m.queue_depth.labels(*labels).set_function(lambda b=lv.batcher: b.depth)
                m.batch_delay.labels(*labels).set_function(lambda b=lv.batcher: b.delay_s)
        for key in set(self._gauged) - set(current):
            for gauge in (m.queue_depth, m.batch_delay):
                with contextlib.suppress(KeyError):
                    gauge.remove(key[0], str(key[1]))
        self._gauged = current
        m.loaded.set(len(current))
        m.loaded_bytes.set(self.manager.loaded_bytes)
        moved = self.manager.reloads - self._reloads_seen
        if moved > 0:
            m.reloads.inc(moved)
            self._reloads_seen = self.manager.reloads

    # ------------------------------------------------------------------ plumbing
    def _check_token(self, request: Request) -> None:
        if self._token is None:
            return
        got = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(got, b"Bearer " + self._token):
            raise UnauthorizedError("missing or wrong bearer token: send 'Authorization: Bearer <token>'")

    async def _body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLargeError(f"request body of {length} bytes is over the limit of {limit}; send fewer rows")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes; send fewer rows")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _handle(self, request: Request, protocol: str,
                      work: Callable[[Request], Awaitable[tuple[Any, dict, str]]], auth: bool = True) -> Response:
        """Run ``work`` under the token check and the concurrency limit; map every error to its status."""
        t0 = time.perf_counter()
        label = ""
        headers: dict[str, str] = {}
        try:
            if auth:
                self._check_token(request)
            if auth and self._inflight >= self.config.max_concurrency:  # health checks stay answerable
                raise OverloadedError(f"{self._inflight} requests in flight (max_concurrency); retry later")
            self._inflight += 1
            try:
                doc, headers, label = await work(request)
            finally:
                self._inflight -= 1
            status = 200
        except Exception as exc:  # every failure is one line; never a traceback to the client
            status, kind = _status(exc)
            self.metrics.errors.labels(kind).inc()
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            message = message.replace(f" at {self.registry.root}", "").replace(f" in {self.registry.root}", "")
            if status == 500:
                log.exception("internal error on %s %s", request.method, request.url.path)
                message = f"internal error ({type(exc).__name__}: {message[:200]}); see the server log"
            if status == 401:
                headers = {"www-authenticate": "Bearer"}
            if status == 503:
                headers = {"retry-after": "1"}
            doc = {"error": message} if protocol != "mlflow" else {"error_code": kind.upper(), "message": message}
        if label:
            self.metrics.child(self.metrics.latency, protocol, label).observe(time.perf_counter() - t0)
        if isinstance(doc, (bytes, str)):
            return Response(doc, status, headers=headers, media_type=CONTENT_TYPE_LATEST)
        return Response(json.dumps(doc).encode(), status, headers=headers, media_type=JSON)

    @staticmethod
    def _version_headers(lv: LoadedVersion) -> dict[str, str]:
        return {"x-sparkscore-model-name": lv.name, "x-sparkscore-model-version": str(lv.version)}

    async def _predict(self, protocol: str, ref: ModelRef, parse: Callable[[LoadedVersion], Any],
                       answer: Callable[[LoadedVersion, Any, Any], dict],
                       request_id: str | None = None) -> tuple[dict, dict, str]:
        lv = await self.manager.acquire(ref)
        try:
            parsed = parse(lv)
            X = parsed[0] if isinstance(parsed, tuple) else parsed
            S = await lv.scores(X)
            doc = answer(lv, S, parsed)
            self.metrics.child(self.metrics.requests, protocol, lv.name, str(lv.version)).inc()
            if self.request_log is not None and random.random() < self.config.log_sample:
                self._log(lv, X, S, request_id or (parsed[2] if isinstance(parsed, tuple) else None))
            return doc, self._version_headers(lv), lv.name
        finally:
            self.manager.release(lv)

    def _log(self, lv: LoadedVersion, X, S, request_id: str | None, **route_fields) -> None:
        """Offer the request to the log writer: no I/O and no output arithmetic here, never a wait.

        ``route_fields``: ``route`` / ``arm`` / ``shadow`` / ``rows`` / ``request_rows`` of a routed request
        (see :class:`~sparkscore.monitor.predlog.LogRecord`)."""
        model = lv.model

        def outputs(S=S):  # run by the writer thread: the same values the response holds
            return (output_values(model, S, "predict"),
                    output_values(model, S, "proba") if model.is_classifier else None)
        self.request_log.offer(predlog.LogRecord(predlog.now(), request_id or uuid.uuid4().hex, lv.name, lv.version,
                                                 lv.sha256, model, X, outputs, **route_fields))

    async def _predict_route(self, protocol: str, rr: ResolvedRoute, doc: Any, raw: bytes,
                             kind: str | None, header_id: str | None = None) -> tuple[dict, dict, str]:
        """Score a request on a route: each row on its own arm (see :mod:`sparkscore.serving.routing`)."""
        route = rr.route
        who = f"route {route.ref} v{route.version}"
        lvs = [await self.manager.acquire(ModelRef(a.name, version=a.version)) for a in rr.arms]
        try:
            inputs = set().union(*(lv.model.signature.names for lv in lvs))
            if protocol == "v2":
                keys, doc, raw = routing.v2_keys(doc, raw, route.key, inputs, who)
                parsed = [v2.parse_infer(doc, raw, lv.model, who, self.config.max_rows) for lv in lvs]
                matrices, wanted, request_id = [p[0] for p in parsed], parsed[0][1], parsed[0][2]
            else:
                columns = mlflow.columns(doc, lvs[0].model.signature.names, who)
                keys = routing.mlflow_keys(columns, route.key, who)
                matrices = [matrix(lv.model, named_columns(lv.model, columns, who), who, self.config.max_rows)
                            for lv in lvs]
                if kind == "proba" and not lvs[0].model.is_classifier:
                    raise BadRequestError(f"{who}: kind=proba needs a classifier; this model is a regressor")
                wanted, request_id = (kind,), None
            n = matrices[0].shape[0]
            if len(keys) != n:
                raise BadRequestError(f"{who}: route key {route.key!r} has {len(keys)} values for {n} rows")
            arm_of = routing.arm_of_rows(rr, keys, who)
            # one draw per request: a sampled request logs every arm's rows and its shadow arms' rows
            log_id = (header_id or request_id or uuid.uuid4().hex) if (
                self.request_log is not None and random.random() < self.config.log_sample) else None
            outputs: dict[str, np.ndarray] = {}
            answered = []
            for i, (arm, lv) in enumerate(zip(rr.arms, lvs)):
                rows = np.flatnonzero(arm_of == i)
                if rows.size == 0:
                    continue
                answered.append(f"{arm.label}={arm.ref}")
                S = await lv.scores(matrices[i][rows])
                for out in wanted:
                    values = np.asarray(output_values(lv.model, S, out))
                    if out not in outputs:
                        outputs[out] = np.empty((n, *values.shape[1:]), dtype=object)
                    outputs[out][rows] = values
                self.metrics.child(self.metrics.requests, protocol, lv.name, str(lv.version)).inc()
                if log_id is not None:
                    self._log(lv, matrices[i][rows], S, log_id, route=route.ref, arm=arm.label,
                              rows=rows.tolist(), request_rows=n)
            labels = [rr.arms[i].label for i in arm_of]
            versions = [rr.arms[i].version for i in arm_of]
            answered_versions = ",".join(sorted({str(v) for v in versions}, key=int))
            model = lvs[0].model
            if protocol == "v2":
                tensors = [{"name": out, "datatype": DATATYPE_OF[output_type(model, out)],
                            "shape": list(values.shape), "data": jsonable(_typed(values, output_type(model, out)))}
                           for out, values in outputs.items()]
                tensors += [{"name": "arm", "datatype": "BYTES", "shape": [n], "data": labels},
                            {"name": "version", "datatype": "INT64", "shape": [n], "data": versions}]
                doc_out = {"model_name": route.name, "model_version": answered_versions, "outputs": tensors,
                           "route": route.ref, "route_version": route.version}
                if request_id is not None:
                    doc_out["id"] = request_id
            else:
                values = _typed(outputs[kind], output_type(model, kind))
                doc_out = {"predictions": values.tolist() if values.ndim == 2 else jsonable(values),
                           "model_name": route.name, "model_version": answered_versions,
                           "route": route.ref, "route_version": route.version, "arms": labels, "versions": versions}
            headers = {"x-sparkscore-model-name": route.name, "x-sparkscore-model-version": answered_versions,
                       "x-sparkscore-route": route.ref, "x-sparkscore-route-version": str(route.version),
                       "x-sparkscore-arms": ",".join(answered)}
            if rr.shadows and (shadow_sink() is not None or log_id is not None):
                task = asyncio.get_running_loop().create_task(self._shadow(rr, doc, raw, protocol, who, log_id))
                self._shadow_tasks.add(task)
                task.add_done_callback(self._shadow_tasks.discard)
            return doc_out, headers, route.name
        finally:
            for lv in lvs:
                self.manager.release(lv)

    async def _shadow(self, rr: ResolvedRoute, doc: Any, raw: bytes, protocol: str, who: str,
                      log_id: str | None = None) -> None:
        """Score the shadow arms on every row of a routed request, hand them to the sink and, for a
        sampled request (``log_id``), to the prediction log with ``shadow`` set; never raises."""
        for arm in rr.shadows:
            try:
                lv = await self.manager.acquire(ModelRef(arm.name, version=arm.version))
                try:
                    if protocol == "v2":
                        X = v2.parse_infer(doc, raw, lv.model, who, self.config.max_rows)[0]
                    else:
                        columns = mlflow.columns(doc, lv.model.signature.names, who)
                        X = matrix(lv.model, named_columns(lv.model, columns, who), who, self.config.max_rows)
                    S = await lv.scores(X)
                    emit_shadow(rr, arm, X, output_values(lv.model, S, "predict"))
                    if log_id is not None and self.request_log is not None:
                        self._log(lv, X, S, log_id, route=rr.route.ref, arm=arm.label, shadow=True)
                finally:
                    self.manager.release(lv)
            except Exception:  # noqa: BLE001 - a shadow arm never fails (or slows) the answer
                log.exception("shadow arm %s of route %s failed", arm.ref, rr.route.ref)

    # ------------------------------------------------------------------ endpoints
    async def live(self, request: Request) -> Response:
        return await self._handle(request, "v2", self._live, auth=False)

    async def _live(self, request: Request):
        return {"live": True}, {}, ""

    async def ready(self, request: Request) -> Response:
        return await self._handle(request, "v2", self._ready, auth=False)

    async def _ready(self, request: Request):
        if not self.manager.ready:
            raise OverloadedError("loading models; not ready yet")
        return {"ready": True}, {}, ""

    async def server_metadata(self, request: Request) -> Response:
        from sparkscore import __version__

        async def work(request):
            return {"name": "sparkscore", "version": __version__, "extensions": ["binary_tensor_data"]}, {}, ""
        return await self._handle(request, "v2", work)

    async def v2_get(self, request: Request) -> Response:
        async def work(request):
            rest = request.path_params["rest"].strip("/")
            is_ready = rest.endswith("/ready")
            ref = v2_ref(rest[:-len("/ready")] if is_ready else rest)
            lv = await self.manager.acquire(ref)
            self.manager.release(lv)
            doc = {"name": lv.name, "ready": True} if is_ready else v2.metadata(lv.name, lv.version, lv.model)
            return doc, self._version_headers(lv), ""
        return await self._handle(request, "v2", work)

    async def v2_post(self, request: Request) -> Response:
        async def work(request):
            rest = request.path_params["rest"].strip("/")
            if not rest.endswith("/infer"):
                raise ModelNotFoundError(f"no such endpoint POST /v2/models/{rest[:80]}; use .../infer")
            ref = v2_ref(rest[:-len("/infer")])
            body = await self._body(request)
            text, raw = v2.split_binary(body, request.headers.get("inference-header-content-length"))
            doc = v2.loads(text)
            max_rows = self.config.max_rows
            rr = await self.manager.traffic_route(ref)
            if rr is not None:
                return await self._predict_route("v2", rr, doc, raw, None, request.headers.get("x-request-id"))
            return await self._predict(
                "v2", ref, lambda lv: v2.parse_infer(doc, raw, lv.model, lv.who, max_rows),
                lambda lv, S, parsed: v2.infer_response(lv.name, lv.version, lv.model, S, parsed[1], parsed[2]),
                request.headers.get("x-request-id"))
        return await self._handle(request, "v2", work)

    async def invocations(self, request: Request) -> Response:
        async def work(request):
            ref_text = request.query_params.get("model") or request.headers.get("x-sparkscore-model")
            kind = request.query_params.get("kind", "predict")
            if kind not in ("predict", "proba"):
                raise BadRequestError(f"unknown kind {kind[:20]!r}; use predict or proba")
            ref = parse_ref(ref_text) if ref_text else self._only_model()
            if request.headers.get("content-type", JSON).split(";")[0].strip() not in (JSON, ""):
                raise BadRequestError("send the body as application/json (dataframe_split, dataframe_records, "
                                      "instances or inputs)")
            body = await self._body(request)
            doc = v2.loads(body)
            max_rows = self.config.max_rows
            rr = await self.manager.traffic_route(ref)
            if rr is not None:
                return await self._predict_route("mlflow", rr, doc, b"", kind, request.headers.get("x-request-id"))

            def parse(lv):
                if kind == "proba" and not lv.model.is_classifier:
                    raise BadRequestError(f"{lv.who}: kind=proba needs a classifier; this model is a regressor")
                return mlflow.parse(doc, lv.model, lv.who, max_rows)
            return await self._predict("mlflow", ref, parse,
                                       lambda lv, S, _: mlflow.response(lv.name, lv.version, lv.model, S, kind),
                                       request.headers.get("x-request-id"))
        return await self._handle(request, "mlflow", work)

    async def route_feedback(self, request: Request) -> Response:
        """``POST /v2/routes/{NAME@ROUTE}/feedback``: labels for answered requests update the route's weights.

        Body ``{"feedback": [{"request_id", "arm", "prediction", "label"}, ...], "policy": "exp3",
        "params": {"eta": 0.01, ...}}`` (policy and params optional; at most ``bandit.MAX_ITEMS``
        items): ``arm`` and ``prediction`` are what the route answered (its ``arm`` output and
        ``predict`` value), so the server keeps no memory of requests.  The new weights are written
        as the route's next version (sparkscore/monitor/bandit.py); the watcher serves them from its
        next poll.  Bad feedback is a 400, an unknown route a 404.
        """
        async def work(request):
            from sparkscore.errors import RegistryError
            from sparkscore.monitor import bandit

            ref = request.path_params["ref"]
            doc = v2.loads(await self._body(request))
            if not isinstance(doc, dict) or not isinstance(doc.get("feedback"), list):
                raise BadRequestError(f"route {ref[:80]}: send {{\"feedback\": [{{\"request_id\", \"arm\", "
                                      "\"prediction\", \"label\"}, ...]}")
            policy, params = doc.get("policy"), doc.get("params") or {}
            if (policy is not None and not isinstance(policy, str)) or not isinstance(params, dict) or any(
                    isinstance(v, (dict, list, bool)) or not isinstance(v, (int, float, str)) for v in params.values()):
                raise BadRequestError(f"route {ref[:80]}: 'policy' must be a name and 'params' an object of numbers "
                                      "or names")
            try:
                async with self._feedback_lock:
                    up = await asyncio.to_thread(bandit.update_from_items, self.registry, ref, doc["feedback"],
                                                 policy=policy, source=self.instance_id, **params)
            except (bandit.BanditError, RegistryError, TypeError) as exc:
                raise BadRequestError(str(exc).splitlines()[0]) from None
            r = up.route
            return ({"route": r.ref, "route_version": r.version, "policy": r.policy["params"]["policy"],
                     "weights": up.weights, "stats": {a: {"n": s.n, "loss_sum": s.loss_sum} for a, s in up.stats.items()}},
                    {"x-sparkscore-route": r.ref, "x-sparkscore-route-version": str(r.version)}, r.name)
        return await self._handle(request, "v2", work)

    def _only_model(self) -> ModelRef:
        names = sorted({name for name, _ in self.manager.routes})
        if len(names) != 1:
            raise BadRequestError(f"this server serves {len(names)} models ({', '.join(names[:8])}); "
                                  "name one with /invocations?model=<ref> or the x-sparkscore-model header")
        return ModelRef(names[0])

    async def metrics_endpoint(self, request: Request) -> Response:
        async def work(request):
            return self.metrics.render(), {}, ""
        return await self._handle(request, "metrics", work)


def _typed(values: np.ndarray, sql_type: str) -> np.ndarray:
    """Per-arm values assembled in row order (an object array) as the output's SQL type."""
    if sql_type in ("DOUBLE", "DOUBLE[]"):
        return values.astype(np.float64)
    if sql_type == "BIGINT":
        return values.astype(np.int64)
    return values


def create_app(registry: Registry | None = None, config: ServeConfig = ServeConfig()) -> Starlette:
    """The ASGI app serving ``registry`` (default: $SPARKSCORE_HOME or ~/.sparkscore)."""
    return Server(registry if registry is not None else Registry(), config).app
