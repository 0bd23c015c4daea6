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
from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
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
from orchestra.serving import _keys_api as keys_api
from orchestra.serving import _openai as openai_api
from orchestra.serving import _webhooks as hooks
from orchestra.serving._admission import Admission
from orchestra.serving._auth import ApiKeys, Principal, describe_key, parse_api_keys_env, require_scope
from orchestra.serving._budgets import Budgets
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
from orchestra.stores import (
    WS_CAPACITY,
    WS_REFILL_PER_S,
    ApiKeyRecord,
    InMemoryUsageStore,
    InMemoryWebhookStore,
    LocalTokenBucket,
    RateLimiter,
    Session,
    Subscription,
    WebhookStore,
)
from orchestra.stores.redis import (
    RedisKeyStore,
    RedisTokenBucket,
    RedisUsageStore,
    RedisWebhookStore,
    redis_client,
)
from orchestra.webhooks import TEST_EVENT, EventPublisher

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
        self.admitted: str | None = None  # the key id counted in by the admission, until the answer ends


Handler = Callable[[_Ctx], Awaitable[tuple[Any, int]]]
ErrorBody = Callable[[OrchestraError, _Ctx], Any]
"""An error's JSON body: the envelope (native routes) or OpenAI's error shape (/v1 routes)."""


def _envelope_error(error: OrchestraError, ctx: _Ctx) -> Any:
    return api.error_envelope(error, request_id=ctx.request_id, version=ctx.version)


def _openai_error(error: OrchestraError, ctx: _Ctx) -> Any:
    return openai_api.error_body(error)


def http_error_response(
    request: Request, status: int, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    """A framework-level error (unknown route, wrong method...) in the envelope. A wrong method on a known
    path is 405 with ``Allow`` (its code stays ``NOT_FOUND``: the route does not exist for that method)."""
    request_id = api.new_request_id(request.headers.get("x-request-id"))
    error: OrchestraError
    extra: dict[str, str] = {}
    if status == 405:
        allow = (headers or {}).get("Allow", "")
        error = NotFoundError(
            f"method {request.method} not allowed on {request.url.path}",
            details={"method": request.method, "allowed": [m.strip() for m in allow.split(",") if m.strip()]},
        )
        extra["Allow"] = allow
    elif status == 404:
        error = NotFoundError(f"no route {request.method} {request.url.path}")
    elif status == 413:
        error = PayloadTooLargeError("request body over 256 KiB")
    elif status >= 500:
        error = ServiceUnavailableError("request could not be served")
    else:
        error = ValidationError(detail)
    return JSONResponse(
        api.error_envelope(error, request_id=request_id, version="v2"),
        status_code=status if status == 405 else error.http_status,
        headers={**api.error_headers(error), **extra},
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
        budgets: Budgets | None = None,
        webhooks: WebhookStore | None = None,
        ws_resume_grace_s: float = 0.0,
    ) -> None:
        """``probes``: ``runtime`` (the coordinators), ``modes`` (the mode deployments), ``store`` (Redis).
        ``budgets``: the daily token budgets (default: counted in this process's memory); ``webhooks``:
        where subscriptions and their deliveries live (in this process by default);
        ``ws_resume_grace_s``: how long a dropped WebSocket's running chat waits for a ``resume``."""
        self._ws_resume_grace_s = ws_resume_grace_s
        self.service = service
        self.webhooks: WebhookStore = webhooks or InMemoryWebhookStore()
        self._events = EventPublisher(self.webhooks)
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics
        self.budgets = budgets or Budgets(InMemoryUsageStore(), metrics=metrics)
        self._teams = frozenset(teams)
        self._probes = probes
        self._version = version
        self._bootstrap: asyncio.Task[None] | None = None
        self.admission = Admission(settings().max_inflight)
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
            budgets=Budgets(RedisUsageStore(redis), metrics=metrics),
            webhooks=RedisWebhookStore(redis),
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

    async def authorize(self, headers: Mapping[str, str], ctx: _Ctx, scope: str | None = "chat") -> Principal:
        """Authenticate, check ``scope`` (None: any valid key) and take a token from the key's bucket
        (at the key's own ``rpm`` when it has one)."""
        await self.ready()
        principal = await self.keys.authenticate(headers.get("authorization"))
        if scope is not None:
            require_scope(principal, scope)
        if ctx.admitted is None:  # shed real overload before any store call (orchestra.serving._admission)
            self.admission.enter(principal.key_id)
            ctx.admitted = principal.key_id
        decision = await self.limiter.acquire(principal.key_id, limit_per_minute=principal.rpm)
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
        except ClientDisconnect:
            # Gone mid-body (or refused by the input guard, which answered already): one line, no trace.
            log.info("request %s: the client left before its body was read", ctx.request_id)
            self._leave(ctx)
            return Response(status_code=400)  # never sent: there is no one to send it to
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
        except BaseException:  # cancelled: the client left, there is no answer to give
            self._leave(ctx)
            raise
        response.headers.update(ctx.headers)
        if isinstance(response, StreamingResponse):
            response.body_iterator = self._observed(
                response.body_iterator, request.method, endpoint, response.status_code, started
            )
        else:
            self.metrics.observe_http(
                request.method, endpoint, response.status_code, time.perf_counter() - started
            )
        self._leave(ctx)  # a stream counts until its answer starts: its body may never be iterated
        return response

    def _leave(self, ctx: _Ctx) -> None:
        if ctx.admitted is not None:
            self.admission.leave(ctx.admitted)
            ctx.admitted = None

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
        result = await self.budgets.service(self.service, principal).run(run)
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

    # -- webhooks (api.md §9; orchestra.serving._webhooks) ---------------------------------------------

    async def _own_subscription(self, tenant: str, subscription_id: str) -> Subscription:
        found = await self.webhooks.subscription(tenant, subscription_id)
        if found is None:  # also another tenant's: indistinguishable on purpose
            raise NotFoundError(f"no webhook {subscription_id!r}")
        return found

    async def create_webhook(self, request: Request, endpoint: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            body = hooks.parse_subscription(await self._body(request))
            if len(await self.webhooks.subscriptions(principal.tenant)) >= hooks.MAX_SUBSCRIPTIONS:
                reason = f"at most {hooks.MAX_SUBSCRIPTIONS} webhooks per key; delete one first"
                raise ValidationError(
                    f"invalid request: {reason}",
                    details={
                        "field": "<body>",
                        "reason": reason,
                        "errors": [{"field": "<body>", "reason": reason}],
                    },
                )
            subscription = hooks.new_subscription(principal.tenant, body)
            await self.webhooks.add_subscription(subscription)
            return hooks.subscription_data(subscription), 201

        return await self.respond(request, endpoint, "v2", handle)

    async def list_webhooks(self, request: Request, endpoint: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            found = await self.webhooks.subscriptions(principal.tenant)
            return {"webhooks": [hooks.subscription_data(s) for s in found]}, 200

        return await self.respond(request, endpoint, "v2", handle)

    async def get_webhook(self, request: Request, endpoint: str, subscription_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            return hooks.subscription_data(
                await self._own_subscription(principal.tenant, subscription_id)
            ), 200

        return await self.respond(request, endpoint, "v2", handle)

    async def delete_webhook(self, request: Request, endpoint: str, subscription_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            if not await self.webhooks.remove_subscription(principal.tenant, subscription_id):
                raise NotFoundError(f"no webhook {subscription_id!r}")
            return {"id": subscription_id, "deleted": True}, 200

        return await self.respond(request, endpoint, "v2", handle)

    async def webhook_deliveries(self, request: Request, endpoint: str, subscription_id: str) -> Response:
        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            subscription = await self._own_subscription(principal.tenant, subscription_id)
            attempts = await self.webhooks.attempts(subscription.id)
            return {"id": subscription.id, "deliveries": [hooks.attempt_data(a) for a in attempts]}, 200

        return await self.respond(request, endpoint, "v2", handle)

    async def test_webhook(self, request: Request, endpoint: str, subscription_id: str) -> Response:
        """Queue a ``webhook.test`` event for this one subscription (202: the dispatcher delivers it)."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx)
            subscription = await self._own_subscription(principal.tenant, subscription_id)
            if subscription.disabled_reason is not None:
                reason = f"the webhook is disabled ({subscription.disabled_reason}); create it again"
                raise ValidationError(
                    f"invalid request: {reason}",
                    details={"field": "id", "reason": reason, "errors": [{"field": "id", "reason": reason}]},
                )
            data = {"webhook_id": subscription.id, "message": "a test event from AI Orchestra"}
            event_id, ids = await self._events.publish(
                principal.tenant, TEST_EVENT, data, only=subscription.id
            )
            return {"event_id": event_id, "delivery_id": ids[0] if ids else None}, 202

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
            service = self.budgets.service(self.service, principal)
            if not call.stream:
                return JSONResponse(openai_api.completion(await service.run(call.run), call)), 200
            stream = await openai_api.open_stream(call, service.stream(call.run))
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

    # -- API keys (orchestra.serving._keys_api) ------------------------------------------------------

    async def _views(self, records: list[ApiKeyRecord]) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        last_used = await self.keys.last_used()
        used = await self.budgets.used_today([r.key_id for r in records])
        return [
            describe_key(r, now=now, last_used=last_used.get(r.key_id), tokens_today=u)
            for r, u in zip(records, used, strict=True)
        ]

    async def keys_create(self, request: Request, endpoint: str) -> Response:
        """``POST /keys/v2`` (admin): a new key, shown once."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self.authorize(request.headers, ctx, scope="admin")
            body, expires_in = keys_api.parse_create(await self._body(request))
            now = datetime.now(UTC)
            key, record = await self.keys.create(
                body.tenant,
                body.scopes,
                body.name,
                expires_at=None if expires_in is None else now + expires_in,
                rpm=body.rpm,
                daily_tokens=body.daily_tokens,
            )
            return {**describe_key(record, now=now, last_used=None, tokens_today=0), "key": key}, 201

        return await self.respond(request, endpoint, "v2", handle)

    async def keys_list(self, request: Request, endpoint: str) -> Response:
        """``GET /keys/v2`` (admin): every key, oldest first, never the key itself."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self.authorize(request.headers, ctx, scope="admin")
            return {"keys": await self._views(await self.keys.list())}, 200

        return await self.respond(request, endpoint, "v2", handle)

    async def keys_revoke(self, request: Request, endpoint: str, ref: str) -> Response:
        """``DELETE /keys/v2/{key}`` (admin; id or name): revoked here at once, everywhere within the
        key cache's bound."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self.authorize(request.headers, ctx, scope="admin")
            record = await self.keys.find(ref)
            await self.keys.revoke(record.key_id)
            revoked = await self.keys.store.by_id(record.key_id)
            return (await self._views([revoked or record]))[0], 200

        return await self.respond(request, endpoint, "v2", handle)

    async def keys_rotate(self, request: Request, endpoint: str, ref: str) -> Response:
        """``POST /keys/v2/{key}/rotate`` (admin): a new secret, shown once; the old one works for the
        grace period."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            await self.authorize(request.headers, ctx, scope="admin")
            grace = keys_api.parse_rotate(await self._body(request))
            record = await self.keys.find(ref)
            key, rotated = await self.keys.rotate(record.key_id, grace)
            return {**(await self._views([rotated]))[0], "key": key}, 200

        return await self.respond(request, endpoint, "v2", handle)

    async def keys_me(self, request: Request, endpoint: str) -> Response:
        """``GET /keys/v2/me`` (any valid key): the caller's own key and its usage today."""

        async def handle(ctx: _Ctx) -> tuple[Any, int]:
            principal = await self.authorize(request.headers, ctx, scope=None)
            record = await self.keys.store.by_id(principal.key_id)
            if record is None:  # revoked and removed between the two reads
                raise NotFoundError("no such API key")
            view = (await self._views([record]))[0]
            return {"key": view, "usage": await self.budgets.today(record.key_id, record.daily_tokens)}, 200

        return await self.respond(request, endpoint, "v2", handle)

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
        decision = await self.limiter.acquire(principal.key_id, limit_per_minute=principal.rpm)
        if not decision.allowed:
            self.metrics.rate_limited()
            await ws.close(code=CLOSE_RATE_LIMITED, reason="rate limited")
            return
        try:
            connection = WsConnection(
                self.budgets.service(self.service, principal),
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
