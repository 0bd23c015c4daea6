"""``Gateway``: everything an ingress route does, free of Ray.

The Serve ingress (``serve_app.Ingress``) keeps only its routes; each calls one method here with the
Starlette request or WebSocket. The gateway authenticates (``ApiKeys``), applies the per-key limit
(a ``RateLimiter``), speaks the contract (envelope, error headers, v1 deprecation headers), runs chats
through a ``ChatService`` and records metrics. Health is computed from probes the host supplies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Collection, Mapping
from contextlib import suppress
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from orchestra.engine import ChatService, RunRequest, TeamInfo
from orchestra.errors import (
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationError,
)
from orchestra.serving import _contract as api
from orchestra.serving import _openai as openai_api
from orchestra.serving._auth import ApiKeys, Principal, parse_api_keys_env, require_scope
from orchestra.serving._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from orchestra.serving._metrics import Metrics
from orchestra.serving.ws import (
    CLOSE_AUTH_FAILED,
    CLOSE_INVALID_PATH,
    CLOSE_RATE_LIMITED,
    WsConnection,
    handshake_credentials,
)
from orchestra.settings import settings
from orchestra.stores import WS_CAPACITY, WS_REFILL_PER_S, LocalTokenBucket, RateLimiter, Session
from orchestra.stores.redis import RedisKeyStore, RedisTokenBucket, redis_client

__all__ = ["Gateway", "Probe", "http_error_response"]

log = logging.getLogger("orchestra.serve")

Probe = Callable[[], Awaitable[Any]]
"""A health check: returns when the component answers, raises (or hangs past the limit) when not."""

STARTED = time.time()
PROBE_LIMIT_S = 2.0
CANCEL_GRACE_S = 5.0
"""How long a streamed chat whose client left may take to cancel its run and release its stream."""


class _Ctx:
    """Per-request state the handlers share.

    ``X-Request-ID`` is not set here: Serve's proxy echoes the request's id on every response, and
    ``orchestra.serving._proxy`` makes that id follow the spec before the request reaches us.
    """

    def __init__(self, request_id: str, version: api.ApiVersion) -> None:
        self.request_id = request_id
        self.version = version
        self.headers: dict[str, str] = {}


Handler = Callable[[_Ctx], Awaitable[tuple[Any, int]]]
ErrorBody = Callable[[OrchestraError, _Ctx], Any]
"""An error's JSON body: the envelope (native routes) or OpenAI's error shape (/v1 routes)."""


def _envelope_error(error: OrchestraError, ctx: _Ctx) -> Any:
    return api.error_envelope(error, request_id=ctx.request_id, version=ctx.version)


def _openai_error(error: OrchestraError, ctx: _Ctx) -> Any:
    return openai_api.error_body(error)


def http_error_response(request: Request, status: int, detail: str) -> Response:
    """A framework-level error (unknown route, wrong method...) in the envelope."""
    request_id = api.new_request_id(request.headers.get("x-request-id"))
    error: OrchestraError
    if status in (404, 405):
        error = NotFoundError(f"no route {request.method} {request.url.path}")
    elif status == 413:
        error = PayloadTooLargeError("request body over 256 KiB")
    elif status >= 500:
        error = ServiceUnavailableError("request could not be served")
    else:
        error = ValidationError(detail)
    return JSONResponse(
        api.error_envelope(error, request_id=request_id, version="v2"), status_code=error.http_status
    )


def session_data(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "swarm_type": session.swarm_type,
        "created_at": session.created_at,
        "last_active": session.last_active,
        "turns": [t.model_dump(mode="json") for t in session.turns],
    }


class Gateway:
    def __init__(
        self,
        service: ChatService,
        *,
        keys: ApiKeys,
        limiter: RateLimiter,
        metrics: Metrics,
        teams: Collection[str],
        probes: Mapping[str, Probe],
        version: str,
        ws_resume_grace_s: float = 0.0,
    ) -> None:
        """``probes``: ``runtime`` (the coordinators), ``modes`` (the mode deployments), ``store`` (Redis).
        ``ws_resume_grace_s``: how long a dropped WebSocket's running chat waits for a ``resume``."""
        self._ws_resume_grace_s = ws_resume_grace_s
        self.service = service
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics
        self._teams = frozenset(teams)
        self._probes = probes
        self._version = version
        self._bootstrap: asyncio.Task[None] | None = None
        self._team_infos: list[TeamInfo] | None = None

    @classmethod
    def over_redis(
        cls,
        service: ChatService,
        *,
        metrics: Metrics,
        teams: Collection[str],
        probes: Mapping[str, Probe],
        version: str,
        ws_resume_grace_s: float = 0.0,
    ) -> Gateway:
        """The production gateway: keys and the per-key limit in the Redis of ``ORCHESTRA_REDIS_URL``
        (shared by every replica), limits from the settings; the ``store`` probe pings that Redis."""
        env = settings()
        redis = redis_client()
        limiter = RedisTokenBucket(
            redis,
            capacity=env.rate_limit_burst,
            refill_per_s=env.rate_limit_per_minute / 60,
            limit_per_minute=env.rate_limit_per_minute,
        )
        return cls(
            service,
            keys=ApiKeys(RedisKeyStore(redis)),
            limiter=limiter,
            metrics=metrics,
            teams=teams,
            probes={**probes, "store": redis.ping},
            version=version,
            ws_resume_grace_s=ws_resume_grace_s,
        )

    async def ready(self) -> None:
        """Register the ``ORCHESTRA_API_KEYS`` once per replica (idempotent) before the first request."""
        if self._bootstrap is None:
            self._bootstrap = asyncio.ensure_future(self._register_env_keys())
        try:
            await asyncio.shield(self._bootstrap)
        except OrchestraError:
            # The store was down: the next request tries again (a failed task would fail them all).
            if self._bootstrap.done():
                self._bootstrap = None
            raise

    async def _register_env_keys(self) -> None:
        for key, scopes in parse_api_keys_env(settings().api_keys.get_secret_value()):
            await self.keys.add_plaintext(key, scopes, name="env")

    # -- the frame of every authenticated route ------------------------------------------------------

    async def authorize(self, headers: Mapping[str, str], ctx: _Ctx, scope: str = "chat") -> Principal:
        await self.ready()
        principal = await self.keys.authenticate(headers.get("authorization"))
        require_scope(principal, scope)
        decision = await self.limiter.acquire(principal.key_id)
        ctx.headers.update(api.rate_limit_headers(decision))
        if not decision.allowed:
            self.metrics.rate_limited()
            raise api.rate_limit_error(decision)
        return principal

    async def respond(
        self,
        request: Request,
        endpoint: str,
        version: api.ApiVersion,
        handler: Handler,
        error_body: ErrorBody = _envelope_error,
    ) -> Response:
        """Run ``handler`` and answer in the envelope; any error becomes its spec code, never a trace.

        ``error_body`` renders errors (the envelope unless told otherwise). A streamed response is
        recorded in the metrics when its body ends, so its duration is the whole stream's.
        """
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
            response = JSONResponse(error_body(error, ctx), status_code=status)
        except Exception:
            log.exception("request %s failed unexpectedly", ctx.request_id)
            internal = InternalError("internal error", details={"request_id": ctx.request_id})
            response = JSONResponse(error_body(internal, ctx), status_code=500)
        response.headers.update(ctx.headers)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._observed(
                response.body_iterator, request.method, endpoint, response.status_code, started
            )
        else:
            self.metrics.observe_http(
                request.method, endpoint, response.status_code, time.perf_counter() - started
            )
        return response

    async def _observed(
        self, body: AsyncIterable[Any], method: str, endpoint: str, status: int, started: float
    ) -> AsyncIterator[Any]:
        try:
            async for part in body:
                yield part
        finally:
            self.metrics.observe_http(method, endpoint, status, time.perf_counter() - started)
            aclose = getattr(body, "aclose", None)
            if aclose is not None:  # closed with us, not whenever it is collected
                await aclose()

    # -- chat ----------------------------------------------------------------------------------------

    async def chat(self, request: Request, endpoint: str, version: api.ApiVersion | None) -> Response:
        """A chat route: ``version`` fixed (v1, v2) or None to detect it (``POST /chat/chat``)."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            if version == "v1":
                ctx.headers.update(api.v1_headers())
            raw = await self._body(request)
            chosen = version or api.detect_version(dict(request.headers), raw)
            if chosen == "v1":
                ctx.headers.update(api.v1_headers())
            return await self._run_chat(request, ctx, raw, chosen)

        return await self.respond(request, endpoint, version or "v2", handle)

    async def _body(self, request: Request) -> bytes:
        api.check_body_size(request.headers.get("content-length"), 0)
        raw = await request.body()
        api.check_body_size(None, len(raw))
        return raw

    async def _run_chat(
        self, request: Request, ctx: _Ctx, raw: bytes, version: api.ApiVersion
    ) -> tuple[Any, int]:
        principal = await self.authorize(request.headers, ctx)
        ctx.version = version
        body = api.parse_body(raw, version)
        run = api.to_run_request(body, tenant=principal.tenant, run_id=ctx.request_id)
        api.validate_swarm_type(run.swarm_type, self._teams)
        result = await self.service.run(run)
        if version == "v1":
            return api.v1_data(result), 200
        return api.v2_data(result), 200

    # -- sessions ------------------------------------------------------------------------------------

    async def get_session(self, request: Request, endpoint: str, session_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            return session_data(await self.service.session(principal.tenant, session_id)), 200

        return await self.respond(request, endpoint, "v2", handle)

    async def end_session(self, request: Request, endpoint: str, session_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            session = await self.service.end_session(principal.tenant, session_id)
            return {"session_id": session.session_id, "ended": True, "turns": len(session.turns)}, 200

        return await self.respond(request, endpoint, "v2", handle)

    # -- the OpenAI-compatible API (orchestra.serving._openai) ---------------------------------------

    async def openai_models(self, request: Request, endpoint: str) -> Response:
        """``GET /v1/models``: every team and mode as a model, plus ``orchestra/auto``."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self.authorize(request.headers, ctx)
            if self._team_infos is None:  # the configuration does not change while we run
                self._team_infos = await self.service.teams()
            return JSONResponse(openai_api.models_list(self._team_infos, created=int(STARTED))), 200

        return await self.respond(request, endpoint, "v2", handle, _openai_error)

    async def openai_chat(self, request: Request, endpoint: str) -> Response:
        """``POST /v1/chat/completions``: a chat (``ChatService.run``) or, with ``stream``, server-sent
        events (``ChatService.stream``), in OpenAI's shapes; errors in OpenAI's error shape."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            call = openai_api.parse_completion_request(
                await self._body(request), teams=self._teams, tenant=principal.tenant, run_id=ctx.request_id
            )
            if not call.stream:
                return JSONResponse(openai_api.completion(await self.service.run(call.run), call)), 200
            stream = await openai_api.open_stream(call, self.service.stream(call.run))
            sse = self._until_done(stream, call.run)
            headers = {"Cache-Control": "no-cache"}
            return StreamingResponse(sse, media_type="text/event-stream", headers=headers), 200

        return await self.respond(request, endpoint, "v2", handle, _openai_error)

    async def _until_done(self, stream: openai_api.CompletionStream, run: RunRequest) -> AsyncIterator[bytes]:
        """The stream's events; a client that leaves before the end cancels its run, and only its own.

        The clean-up is shielded: the server cancels a response whose client left, and a cancelled scope
        would cancel every await of the clean-up too.
        """
        body = stream.body()
        try:
            async for event in body:
                yield event
        finally:
            with anyio.move_on_after(CANCEL_GRACE_S, shield=True):
                if not stream.finished:
                    with suppress(Exception):
                        await self.service.cancel(run.tenant, run.run_id)
                with suppress(Exception):
                    await body.aclose()
                    await stream.aclose()

    # -- metrics and health --------------------------------------------------------------------------

    async def metrics_text(self, request: Request, render: Callable[[], Awaitable[bytes]]) -> Response:
        """``GET /metrics`` (scope ``metrics``): ``render`` returns the deployment-wide totals."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self.authorize(request.headers, ctx, scope="metrics")
            return Response(await render(), media_type=METRICS_CONTENT_TYPE), 200

        return await self.respond(request, "/metrics", "v2", handle)

    async def _check(self, name: str) -> bool:
        try:
            await asyncio.wait_for(self._probes[name](), PROBE_LIMIT_S)
            return True
        except Exception:
            return False

    async def components(self) -> dict[str, str]:
        runtime, modes, store = await asyncio.gather(
            self._check("runtime"), self._check("modes"), self._check("store")
        )
        return {
            "orchestra_manager": "healthy" if runtime else "unhealthy",
            "command_dispatcher": "healthy" if modes else "unhealthy",
            "memory_system": "healthy" if store else "degraded",
            # the runtime built the provider at start-up; the scripted one is always usable
            "swarm_intelligence": "healthy" if runtime else "degraded",
        }

    async def health(self) -> Response:
        started = time.perf_counter()
        components = await self.components()
        if "unhealthy" in components.values():
            status = "unhealthy"
        elif "degraded" in components.values():
            status = "degraded"
        else:
            status = "healthy"
        body = {
            "status": status,
            "version": self._version,
            "uptime": int(time.time() - STARTED),
            "components": components,
        }
        response = JSONResponse(body, status_code=503 if status == "unhealthy" else 200)
        self.metrics.observe_http("GET", "/health", response.status_code, time.perf_counter() - started)
        return response

    async def readiness(self) -> Response:
        started = time.perf_counter()
        components = await self.components()
        store_ok = components["memory_system"] == "healthy"
        checks = {
            "database": store_ok,
            "cache": store_ok,
            "external_services": components["orchestra_manager"] == "healthy"
            and components["command_dispatcher"] == "healthy",
        }
        ready = all(checks.values())
        response = JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
        self.metrics.observe_http("GET", "/readiness", response.status_code, time.perf_counter() - started)
        return response

    # -- WebSocket -----------------------------------------------------------------------------------

    async def websocket(self, ws: WebSocket, client_id: str, session_id: str) -> None:
        """One WebSocket connection (spec §7), from the handshake to the close."""
        await self.ready()
        offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
        key, subprotocol = handshake_credentials(ws.headers.get("authorization"), offered)
        await ws.accept(subprotocol=subprotocol)  # accepted first: close codes 44xx need an open socket
        try:
            principal = await self.keys.authenticate(f"Bearer {key}" if key else None)
            require_scope(principal, "chat")
        except OrchestraError:
            await ws.close(code=CLOSE_AUTH_FAILED, reason="authentication failed")
            return
        decision = await self.limiter.acquire(principal.key_id)
        if not decision.allowed:
            self.metrics.rate_limited()
            await ws.close(code=CLOSE_RATE_LIMITED, reason="rate limited")
            return
        try:
            connection = WsConnection(
                self.service,
                send=ws.send_json,
                tenant=principal.tenant,
                client_id=client_id,
                session_id=session_id,
                limiter=LocalTokenBucket(capacity=WS_CAPACITY, refill_per_s=WS_REFILL_PER_S),
                resume_grace_s=self._ws_resume_grace_s,
            )
        except OrchestraError:
            await ws.close(code=CLOSE_INVALID_PATH, reason="invalid client_id or session_id")
            return
        self.metrics.ws_opened()
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
            self.metrics.ws_closed()
            await connection.close()
