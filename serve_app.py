"""Ray Serve application: a FastAPI ingress plus one autoscaled deployment per optimization mode.

    client ──HTTP/WS──▶ Ingress (auth, rate limit, envelope, WS protocol)
                          │ deployment handle (streaming for WS)
                          ▼
                ModeLite / ModeBalanced / ModeQuality ──▶ orchestrator shard ──▶ agent actors

Everything else (contract, auth, limits, WS frames, metrics) is Ray-free code in ``orchestra``; this module
only wires it to Serve. ``serve run configs/serve.yaml`` imports ``app``; ``orchestra serve`` builds the
same application with ``build_app``.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the ingress methods.

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import ray
import yaml
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import orchestra
from orchestra import (
    ChatResult,
    InternalError,
    NotFoundError,
    OrchestraError,
    RunEvent,
    RunRequest,
    ServiceUnavailableError,
)
from orchestra._types import MODES
from orchestra.engine._batching import KeyedBatcher
from orchestra.engine._config import packaged_config
from orchestra.serving import _contract as api
from orchestra.serving._auth import KeyStore, Principal, parse_api_keys_env, require_scope
from orchestra.serving._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from orchestra.serving._metrics import Metrics, MetricsAggregator, MetricsPusher
from orchestra.serving._ws import (
    CLOSE_AUTH_FAILED,
    CLOSE_INVALID_PATH,
    CLOSE_RATE_LIMITED,
    WsConnection,
    handshake_credentials,
)
from orchestra.stores._ratelimit import (
    LocalTokenBucket,
    RedisTokenBucket,
    limits_from_env,
    rate_limit_headers,
)

log = logging.getLogger("orchestra.serve")

DEPLOYMENT_OF_MODE = {mode: f"Mode{mode.capitalize()}" for mode in MODES}
SERVE_CONFIG = packaged_config("serve.yaml")
METRICS_ACTOR = "orchestra-metrics"
STARTED = time.time()


def _redis_url() -> str:
    url = os.environ.get("ORCHESTRA_REDIS_URL")
    if not url:
        raise orchestra.ConfigError(
            "ORCHESTRA_REDIS_URL is not set: `orchestra serve` starts an embedded redis-server and sets it",
            details={"field": "ORCHESTRA_REDIS_URL", "reason": "missing"},
        )
    return url


# -- metrics aggregation: one named actor sums the snapshots every replica pushes ----------------------


@ray.remote(num_cpus=0)
class MetricsActor:
    def __init__(self) -> None:
        self._aggregator = MetricsAggregator()

    def update(self, source: str, snapshot: Any) -> None:
        self._aggregator.update(source, snapshot)

    def forget(self, source: str) -> None:
        self._aggregator.forget(source)

    def render(self) -> bytes:
        # A replica silent for 30 s (pushers send at least every 10 s) is gone: drop its gauges, keep counts.
        self._aggregator.prune(30.0)
        return self._aggregator.render()


def _metrics_actor() -> Any:
    return MetricsActor.options(  # type: ignore[attr-defined]
        name=METRICS_ACTOR, get_if_exists=True, lifetime="detached", namespace="orchestra-serve"
    ).remote()


class _ReplicaMetrics:
    """This replica's registry, pushed every second to the named aggregator actor."""

    def __init__(self, role: str) -> None:
        self.metrics = Metrics()
        self.actor = _metrics_actor()
        self.source = f"{role}:{serve.get_replica_context().replica_id.unique_id}"
        self.pusher = MetricsPusher(self.metrics, self._push, self.source, interval_s=1.0)
        self._started = False

    async def _push(self, source_id: str, snapshot: Any) -> None:
        await self.actor.update.remote(source_id, snapshot)

    def ensure_started(self) -> None:
        if not self._started:  # needs a running loop, which __init__ may not have
            self.pusher.start()
            self._started = True

    async def push_now(self) -> None:
        await self.pusher.push_now(force=True)


# -- mode deployments -------------------------------------------------------------------------------------


class ModeRunner:
    """Runs the chats of one optimization mode through the orchestrator (errors travel as values)."""

    def __init__(self, mode: str) -> None:
        self._mode = mode
        self._handle = orchestra.connect()
        self._provider = self._handle.config.resolved_provider()
        self._replica_metrics = _ReplicaMetrics(f"mode-{mode}")
        self._metrics = self._replica_metrics.metrics

    def _record(self, result: ChatResult | None, swarm_type: str, outcome: str) -> None:
        self._metrics.swarm_run(swarm_type, self._mode, outcome)
        if result is not None:
            self._metrics.agent_turns(swarm_type, result.metadata.processing_steps, provider=self._provider)

    def _ensure_pusher(self) -> None:
        self._replica_metrics.ensure_started()

    async def chat_many(
        self, requests: list[RunRequest]
    ) -> AsyncIterator[list[tuple[str, ChatResult | OrchestraError]]]:
        """Run a batch of chats (validated by the ingress: not parsed again); yield (run_id, outcome)
        groups as they finish. Errors travel as values, so one bad chat cannot fail its batch."""
        self._ensure_pusher()
        kinds = {r.run_id: r.swarm_type or "auto" for r in requests}
        try:
            async for group in self._handle.run_many(requests):
                for run_id, outcome in group:
                    if isinstance(outcome, ChatResult):
                        self._record(outcome, outcome.metadata.swarm_type, "completed")
                    else:
                        self._record(None, kinds.get(run_id, "auto"), _outcome(outcome))
                yield group
        except Exception:
            log.exception("a batch of %d chats failed", len(requests))
            raise

    async def stream(self, request: RunRequest) -> AsyncIterator[list[RunEvent]]:
        """The run's events, forwarded in the orchestrator's batches (one Serve stream item per batch)."""
        self._ensure_pusher()
        async for batch in self._handle.run_stream_batches(request):
            for event in batch:
                if isinstance(event, orchestra.RunCompleted):
                    self._record(event.result, event.result.metadata.swarm_type, "completed")
                elif isinstance(event, orchestra.RunFailed):
                    self._record(None, request.swarm_type or "auto", _outcome(event.error["code"]))
            yield batch

    async def cancel(self, run_id: str, tenant: str) -> bool:
        return await self._handle.with_tenant(tenant).acancel(run_id)

    def probe(self) -> dict[str, Any]:
        return {"mode": self._mode, "provider": self._provider}


def _outcome(error: OrchestraError | str) -> str:
    code = error.code if isinstance(error, OrchestraError) else error
    return {"TIMEOUT_ERROR": "timeout", "CANCELLED": "cancelled"}.get(code, "error")


def _mode_failure(error: BaseException | None = None) -> OrchestraError:
    if error is not None:
        log.warning("mode deployment call failed: %r", error)
    return ServiceUnavailableError("the swarm service is unavailable", retry_after=1)


def openapi_chat(model: type[Any], example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI request body for a chat route whose body the handler parses itself (to control errors)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema(), "example": example}},
        },
        "responses": {
            "400": {"description": "VALIDATION_ERROR in the envelope"},
            "401": {"description": "AUTHENTICATION_ERROR (WWW-Authenticate: Bearer)"},
            "413": {"description": "PAYLOAD_TOO_LARGE (body over 256 KiB)"},
            "429": {"description": "RATE_LIMIT_ERROR with Retry-After"},
            "503": {"description": "SERVICE_UNAVAILABLE with Retry-After"},
            "504": {"description": "TIMEOUT_ERROR: the swarm exceeded its mode's deadline"},
        },
    }


# -- ingress ----------------------------------------------------------------------------------------------

fastapi_app = FastAPI(
    title="AI Orchestra",
    version=orchestra.__version__,
    description=(
        "Teams of LLM agents behind one API. Every endpoint but /health and /readiness needs "
        "`Authorization: Bearer <api-key>`. Answers use the envelope {success, data, metadata, error}. "
        "The WebSocket protocol (WS /chat/ws/{client_id}/{session_id}) is documented in docs/websocket.md "
        "and docs/asyncapi.yaml."
    ),
)


_V2_EXAMPLE = {
    "message": "Write a Python function that merges overlapping intervals",
    "session_id": "user-123-session-456",
    "optimization_mode": "balanced",
    "swarm_type": "coding-team",
}
_V1_EXAMPLE = {"text": "Hello", "sessionId": "123"}


class _Ctx:
    """Per-request state the handlers share.

    ``X-Request-ID`` is not set here: Serve's proxy echoes the request's id on every response, and
    ``orchestra.serving._proxy`` makes that id follow the spec before the request reaches us.
    """

    def __init__(self, request_id: str, version: api.ApiVersion) -> None:
        self.request_id = request_id
        self.version = version
        self.headers: dict[str, str] = {}


# Helpers the ingress uses live above it: Serve pickles the decorated class by value when it is defined,
# so names defined below it would be missing in the replicas.


# -- errors outside the routes: unknown route / method → 404 in the envelope --------------------------


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    request_id = api.new_request_id(request.headers.get("x-request-id"))
    if exc.status_code in (404, 405):
        error: OrchestraError = NotFoundError(f"no route {request.method} {request.url.path}")
    elif exc.status_code == 413:
        error = orchestra.PayloadTooLargeError("request body over 256 KiB")
    else:
        error = (
            ServiceUnavailableError("request could not be served")
            if exc.status_code >= 500
            else (orchestra.ValidationError(str(exc.detail)))
        )
    return JSONResponse(
        api.error_envelope(error, request_id=request_id, version="v2"), status_code=error.http_status
    )


class _RayChatBackend:
    """The WS protocol's view of the runtime: streams through the mode deployments, sessions via Ray."""

    def __init__(self, ingress: "Ingress", tenant: str) -> None:
        self._ingress = ingress
        self._tenant = tenant
        self._handle = ingress._orchestra.with_tenant(tenant)

    async def stream(self, request: RunRequest) -> AsyncIterator[RunEvent]:
        gen = self._ingress._streams[request.optimization_mode].stream.remote(request)
        async for batch in gen:  # type: ignore[union-attr]
            for event in batch:
                yield event

    async def cancel(self, run_id: str, tenant: str) -> bool:
        return await self._handle.with_tenant(tenant).acancel(run_id)

    async def history(self, tenant: str, session_id: str) -> list[dict[str, Any]]:
        try:
            session = await self._handle.with_tenant(tenant).asession(session_id)
        except NotFoundError:
            return []
        return [t.model_dump(mode="json") for t in session.turns]

    async def reset(self, tenant: str, session_id: str) -> None:
        await self._handle.with_tenant(tenant).areset_session(session_id)

    async def end(self, tenant: str, session_id: str) -> bool:
        try:
            await self._handle.with_tenant(tenant).aend_session(session_id)
            return True
        except NotFoundError:
            return False

    async def teams(self) -> list[dict[str, Any]]:
        return [t.model_dump(mode="json") for t in await self._ingress._orchestra.ateams()]


def _session_data(session: orchestra.Session) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "swarm_type": session.swarm_type,
        "created_at": session.created_at,
        "last_active": session.last_active,
        "turns": [t.model_dump(mode="json") for t in session.turns],
    }


@serve.deployment
@serve.ingress(fastapi_app)
class Ingress:
    def __init__(self, **modes: DeploymentHandle[Any]) -> None:
        import redis.asyncio as aioredis

        self._modes: dict[str, DeploymentHandle[Any]] = {mode: modes[mode] for mode in MODES}
        self._orchestra = orchestra.connect()
        self._config = self._orchestra.config
        # Serve's replica-to-replica gRPC channel skips Ray's object store: ~1 ms less per call (W2/W3).
        by_ref = not self._config.runtime.serve_grpc_handles
        self._streams = {m: h.options(stream=True, _by_reference=by_ref) for m, h in self._modes.items()}
        self._redis = aioredis.Redis.from_url(_redis_url(), socket_timeout=2, socket_connect_timeout=2)
        self._keys = KeyStore(self._redis)
        per_minute, burst = limits_from_env()  # spec default 1000/min, burst 50
        self._limiter = RedisTokenBucket(
            self._redis, capacity=burst, refill_per_s=per_minute / 60, limit_per_minute=per_minute
        )
        self._replica_metrics = _ReplicaMetrics("ingress")
        self._metrics = self._replica_metrics.metrics
        self._bootstrap: asyncio.Task[None] | None = None
        self._batchers: dict[str, KeyedBatcher[RunRequest, ChatResult | OrchestraError]] = {}

    async def _ready(self) -> None:
        # Keys from the environment are (re)registered once per replica; idempotent.
        if self._bootstrap is None:
            self._bootstrap = asyncio.ensure_future(self._register_env_keys())
            self._replica_metrics.ensure_started()
        await self._bootstrap

    async def _register_env_keys(self) -> None:
        for key, scopes in parse_api_keys_env(os.environ.get("ORCHESTRA_API_KEYS", "")):
            await self._keys.add_plaintext(key, scopes, name="env")

    def _batcher(self, mode: str) -> KeyedBatcher[RunRequest, ChatResult | OrchestraError]:
        """Chats for one mode arriving close together go to its deployment as one streaming call."""
        batcher = self._batchers.get(mode)
        if batcher is None:
            stream = self._streams[mode]

            def send(requests: list[RunRequest]) -> AsyncIterator[Any]:
                # a DeploymentResponseGenerator, on its way now (not a tick later) and async-iterable
                response: Any = stream.chat_many.remote(requests)
                return response.__aiter__()  # type: ignore[no-any-return]

            runtime = self._config.runtime
            batcher = self._batchers[mode] = KeyedBatcher(
                send,
                lambda r: r.run_id,
                on_error=_mode_failure,
                on_missing=_mode_failure,
                window_s=runtime.serve_batch_window_s,
                max_batch=runtime.serve_max_batch,
                max_inflight=runtime.serve_max_inflight,
            )
        return batcher

    # -- shared request handling ------------------------------------------------------------------

    async def _authorize(self, request: Request, ctx: _Ctx, scope: str = "chat") -> Principal:
        await self._ready()
        principal = await self._keys.authenticate(request.headers.get("authorization"))
        require_scope(principal, scope)
        decision = await self._limiter.acquire(principal.key_id)
        ctx.headers.update(rate_limit_headers(decision))
        if not decision.allowed:
            self._metrics.rate_limited()
            raise orchestra.RateLimitError(
                f"rate limit exceeded: {self._limiter.limit} requests per minute, "
                f"burst {self._limiter.capacity}",
                details={"limit": decision.limit, "retry_after": decision.retry_after_s},
                retry_after=decision.retry_after_s,
            )
        return principal

    async def _respond(
        self,
        request: Request,
        endpoint: str,
        version: api.ApiVersion,
        handler: Callable[[_Ctx], Awaitable[tuple[Any, int]]],
    ) -> Response:
        started = time.perf_counter()
        ctx = _Ctx(api.new_request_id(request.headers.get("x-request-id")), version)
        try:
            data, status = await handler(ctx)
            if isinstance(data, Response):
                response = data
            else:
                response = JSONResponse(
                    api.envelope(data, request_id=ctx.request_id, version=ctx.version), status_code=status
                )
        except OrchestraError as error:
            if error.http_status >= 500:
                log.warning("request %s failed: %r", ctx.request_id, error)
            ctx.headers.update(api.error_headers(error))
            status = error.http_status if error.http_status != 499 else 503
            response = JSONResponse(
                api.error_envelope(error, request_id=ctx.request_id, version=ctx.version), status_code=status
            )
        except Exception:
            log.exception("request %s failed unexpectedly", ctx.request_id)
            internal = InternalError("internal error", details={"request_id": ctx.request_id})
            response = JSONResponse(
                api.error_envelope(internal, request_id=ctx.request_id, version=ctx.version), status_code=500
            )
        response.headers.update(ctx.headers)
        self._metrics.observe_http(
            request.method, endpoint, response.status_code, time.perf_counter() - started
        )
        return response

    async def _run_chat(
        self, request: Request, ctx: _Ctx, raw: bytes, version: api.ApiVersion
    ) -> tuple[Any, int]:
        principal = await self._authorize(request, ctx)
        ctx.version = version
        body = api.parse_body(raw, version)
        run = api.to_run_request(body, tenant=principal.tenant, run_id=ctx.request_id)
        if run.swarm_type is not None:
            api.validate_swarm_type(run.swarm_type, list(self._config.teams))
        future = self._batcher(run.optimization_mode).submit(run)
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:  # the client went away: stop its run, not the others of the batch
            await self._orchestra.with_tenant(run.tenant).acancel(run.run_id)
            raise
        if isinstance(outcome, OrchestraError):
            raise outcome
        if version == "v1":
            ctx.headers.update(api.v1_headers())
            return api.v1_data(outcome), 200
        return api.v2_data(outcome), 200

    async def _body(self, request: Request) -> bytes:
        api.check_body_size(request.headers.get("content-length"), 0)
        raw = await request.body()
        api.check_body_size(None, len(raw))
        return raw

    # -- chat -------------------------------------------------------------------------------------

    @fastapi_app.post(
        "/chat/v2/chat",
        summary="Chat with a swarm (v2)",
        openapi_extra=openapi_chat(api.V2ChatRequest, _V2_EXAMPLE),
    )
    async def chat_v2(self, request: Request) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            return await self._run_chat(request, ctx, await self._body(request), "v2")

        return await self._respond(request, "/chat/v2/chat", "v2", handle)

    @fastapi_app.post(
        "/chat/v1/chat",
        summary="Chat (v1, deprecated)",
        deprecated=True,
        openapi_extra=openapi_chat(api.V1ChatRequest, _V1_EXAMPLE),
    )
    async def chat_v1(self, request: Request) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            ctx.headers.update(api.v1_headers())
            return await self._run_chat(request, ctx, await self._body(request), "v1")

        return await self._respond(request, "/chat/v1/chat", "v1", handle)

    @fastapi_app.post(
        "/chat/chat",
        summary="Chat with automatic version detection",
        description="Version from the API-Version header (v1/v2), else from the body shape.",
        openapi_extra=openapi_chat(api.V2ChatRequest, _V2_EXAMPLE),
    )
    async def chat_auto(self, request: Request) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            raw = await self._body(request)
            version = api.detect_version(dict(request.headers), raw)
            if version == "v1":
                ctx.headers.update(api.v1_headers())
            return await self._run_chat(request, ctx, raw, version)

        return await self._respond(request, "/chat/chat", "v2", handle)

    # -- sessions ---------------------------------------------------------------------------------

    @fastapi_app.get("/chat/v2/sessions/{session_id}", summary="A session of the caller, with its turns")
    async def get_session(self, request: Request, session_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self._authorize(request, ctx)
            session = await self._orchestra.with_tenant(principal.tenant).asession(session_id)
            return _session_data(session), 200

        return await self._respond(request, "/chat/v2/sessions/{session_id}", "v2", handle)

    @fastapi_app.delete("/chat/v2/sessions/{session_id}", summary="End a session of the caller")
    async def delete_session(self, request: Request, session_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self._authorize(request, ctx)
            session = await self._orchestra.with_tenant(principal.tenant).aend_session(session_id)
            return {"session_id": session.session_id, "ended": True, "turns": len(session.turns)}, 200

        return await self._respond(request, "/chat/v2/sessions/{session_id}", "v2", handle)

    # -- health -----------------------------------------------------------------------------------

    async def _probe(self, coro: Awaitable[Any], limit_s: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(coro, limit_s)
            return True
        except Exception:
            return False

    async def _components(self) -> dict[str, str]:
        orchestrator, modes, redis_ok = await asyncio.gather(
            self._probe(self._orchestra.ainfo()),
            self._probe(asyncio.gather(*(h.probe.remote() for h in self._modes.values()))),
            self._probe(self._redis.ping()),
        )
        provider_ok = orchestrator  # the orchestrator built the provider; scripted is always usable
        return {
            "orchestra_manager": "healthy" if orchestrator else "unhealthy",
            "command_dispatcher": "healthy" if modes else "unhealthy",
            "memory_system": "healthy" if redis_ok else "degraded",
            "swarm_intelligence": "healthy" if provider_ok else "degraded",
        }

    @fastapi_app.get("/health", summary="Component health (no auth)")
    async def health(self, request: Request) -> Response:
        started = time.perf_counter()
        components = await self._components()
        if "unhealthy" in components.values():
            status = "unhealthy"
        elif "degraded" in components.values():
            status = "degraded"
        else:
            status = "healthy"
        body = {
            "status": status,
            "version": orchestra.__version__,
            "uptime": int(time.time() - STARTED),
            "components": components,
        }
        response = JSONResponse(body, status_code=503 if status == "unhealthy" else 200)
        self._metrics.observe_http("GET", "/health", response.status_code, time.perf_counter() - started)
        return response

    @fastapi_app.get("/readiness", summary="Ready to accept requests (no auth)")
    async def readiness(self, request: Request) -> Response:
        started = time.perf_counter()
        components = await self._components()
        redis_ok = components["memory_system"] == "healthy"
        checks = {
            "database": redis_ok,
            "cache": redis_ok,
            "external_services": components["orchestra_manager"] == "healthy"
            and components["command_dispatcher"] == "healthy",
        }
        ready = all(checks.values())
        response = JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
        self._metrics.observe_http("GET", "/readiness", response.status_code, time.perf_counter() - started)
        return response

    @fastapi_app.get("/metrics", summary="Prometheus metrics, totals over all replicas (scope metrics)")
    async def metrics(self, request: Request) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self._authorize(request, ctx, scope="metrics")
            await self._replica_metrics.push_now()  # this replica's latest counts are in the total
            text = await self._replica_metrics.actor.render.remote()
            return Response(text, media_type=METRICS_CONTENT_TYPE), 200

        return await self._respond(request, "/metrics", "v2", handle)

    # -- websocket --------------------------------------------------------------------------------

    @fastapi_app.websocket("/chat/ws/{client_id}/{session_id}")
    async def websocket(self, ws: WebSocket, client_id: str, session_id: str) -> None:
        await self._ready()
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        key, subprotocol = handshake_credentials(ws.headers.get("authorization"), offered)
        header = f"Bearer {key}" if key else None
        await ws.accept(subprotocol=subprotocol)  # accepted first: close codes 44xx need an open socket
        try:
            principal = await self._keys.authenticate(header)
            require_scope(principal, "chat")
        except OrchestraError:
            await ws.close(code=CLOSE_AUTH_FAILED, reason="authentication failed")
            return
        decision = await self._limiter.acquire(principal.key_id)
        if not decision.allowed:
            self._metrics.rate_limited()
            await ws.close(code=CLOSE_RATE_LIMITED, reason="rate limited")
            return

        async def send(frame: dict[str, Any]) -> None:
            await ws.send_json(frame)

        try:
            connection = WsConnection(
                _RayChatBackend(self, principal.tenant),
                send=send,
                tenant=principal.tenant,
                client_id=client_id,
                session_id=session_id,
                limiter=LocalTokenBucket(capacity=10, refill_per_s=100 / 60),
            )
        except OrchestraError:
            await ws.close(code=CLOSE_INVALID_PATH, reason="invalid client_id or session_id")
            return
        self._metrics.ws_opened()
        try:
            await connection.open()
            while not connection.should_close:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("text") is not None:
                    await connection.receive_text(message["text"])
                elif message.get("bytes") is not None:
                    await connection.receive_bytes(message["bytes"])
            if connection.should_close:
                await ws.close(code=connection.close_code or 1000)
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self._metrics.ws_closed()
            await connection.close()


# -- building the application -----------------------------------------------------------------------------


def deployment_options(path: Path = SERVE_CONFIG) -> dict[str, dict[str, Any]]:
    """Per-deployment options from configs/serve.yaml, so `orchestra serve` matches `serve run`."""
    raw = yaml.safe_load(path.read_text())
    app_cfg = raw["applications"][0]
    return {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app_cfg.get("deployments", [])}


def build_app(options: dict[str, dict[str, Any]] | None = None, *, env: dict[str, str] | None = None) -> Any:
    """The application: deployment options from configs/serve.yaml, ``env`` given to every replica.

    ``env`` matters when joining a Ray that was started before the variables were set (replicas inherit
    the raylet's environment, not this process's).
    """
    opts = deployment_options() if options is None else options

    def with_env(name: str) -> dict[str, Any]:
        o = dict(opts.get(name, {}))
        if env:
            actor_options = dict(o.get("ray_actor_options", {}))
            runtime_env = dict(actor_options.get("runtime_env", {}))
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
            actor_options["runtime_env"] = runtime_env
            o["ray_actor_options"] = actor_options
        return o

    modes = {
        mode: serve.deployment(ModeRunner).options(name=name, **with_env(name)).bind(mode)  # type: ignore[attr-defined]
        for mode, name in DEPLOYMENT_OF_MODE.items()
    }
    return Ingress.options(name="Ingress", **with_env("Ingress")).bind(**modes)  # type: ignore[attr-defined]


app = build_app()
