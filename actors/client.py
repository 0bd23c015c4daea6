"""``connect()``: a handle to the live orchestrator actors, for scripts, notebooks and the Serve app."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import ray

from orchestra import (
    ChatResult,
    InternalError,
    NotFoundError,
    OrchestraConfig,
    OrchestraError,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    Session,
    TeamInfo,
    Transcript,
    error_from_dict,
    load_config,
    make_provider,
    parse_run_request,
)
from orchestra.engine._batching import KeyedBatcher

from ._env import actor_env
from .orchestrator import Orchestrator, orchestrator_name

__all__ = ["OrchestraHandle", "connect", "shard_of"]


def shard_of(tenant: str, session_id: str, shards: int) -> int:
    """Stable across processes (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(f"{tenant}\x00{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _orchestrator_failure(error: BaseException) -> BaseException:
    """What a chat of a failed ``chat_many`` call resolves to: the actor's own error when it raised one."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, Exception):
        return cause
    return InternalError("the orchestrator call failed", details={"reason": type(error).__name__})


def _no_answer() -> BaseException:
    return InternalError("the orchestrator ended without an answer")


def _send_chats(shard: Any) -> Any:
    """``KeyedBatcher`` send function: one ``chat_many`` call, its result batches as they stream back."""

    def send(requests: list[RunRequest]) -> AsyncIterator[list[tuple[str, Any]]]:
        generator = shard.chat_many.remote(requests)  # on its way now, not a tick later

        async def answers() -> AsyncIterator[list[tuple[str, Any]]]:
            async for ref in generator:
                yield await ref

        return answers()

    return send


class OrchestraHandle:
    """Talks to the orchestrator shards. Sync methods block; ``a``-prefixed ones and ``stream`` are async."""

    def __init__(self, config: OrchestraConfig, shards: list[Any], tenant: str = "local") -> None:
        self.config = config
        self._shards = shards
        self.tenant = tenant
        self._batchers: dict[tuple[int, int], KeyedBatcher[RunRequest, ChatResult | BaseException]] = {}

    # -- helpers -----------------------------------------------------------------------------------

    def _request(self, message: str, **fields: Any) -> tuple[Any, Any]:
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.setdefault("tenant", self.tenant)
        # A session id chosen here keeps a new session's later turns on the same shard.
        fields.setdefault("session_id", uuid.uuid4().hex)
        request = parse_run_request({"message": message, **fields})
        return request, self._shard_for(request)

    def _shard_for(self, request: RunRequest) -> Any:
        assert request.session_id is not None
        return self._shards[shard_of(request.tenant, request.session_id, len(self._shards))]

    @staticmethod
    def _with_session(request: RunRequest) -> RunRequest:
        # A session id chosen here keeps a new session's later turns on the same shard.
        return request if request.session_id else request.model_copy(update={"session_id": uuid.uuid4().hex})

    @staticmethod
    def _unwrap(error: BaseException) -> BaseException:
        # Errors raised inside an actor arrive wrapped in RayTaskError; give callers the real one.
        cause = getattr(error, "cause", None)
        return cause if isinstance(cause, Exception) else error

    # -- chat --------------------------------------------------------------------------------------

    def chat(
        self,
        message: str,
        *,
        swarm_type: str | None = None,
        optimization_mode: str = "balanced",
        session_id: str | None = None,
        user_context: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> ChatResult:
        """Run a swarm on ``message`` and wait for the answer (spec §5 ``data``)."""
        request, shard = self._request(
            message,
            swarm_type=swarm_type,
            optimization_mode=optimization_mode,
            session_id=session_id,
            user_context=user_context,
            run_id=run_id,
        )
        try:
            return ray.get(shard.chat.remote(request))  # type: ignore[no-any-return]
        except Exception as e:
            raise self._unwrap(e) from None

    async def achat(
        self,
        message: str,
        *,
        swarm_type: str | None = None,
        optimization_mode: str = "balanced",
        session_id: str | None = None,
        user_context: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> ChatResult:
        request, _ = self._request(
            message,
            swarm_type=swarm_type,
            optimization_mode=optimization_mode,
            session_id=session_id,
            user_context=user_context,
            run_id=run_id,
        )
        return await self.run(request)

    async def run(self, request: RunRequest) -> ChatResult:
        """Run an already validated request (its ``tenant`` is used as is): the serving layer's entry."""
        request = self._with_session(request)
        shard = self._shard_for(request)
        future = self._batcher(shard).submit(request)
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.cancel()
            await shard.cancel.remote(request.run_id, request.tenant)
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _batcher(self, shard: Any) -> KeyedBatcher[RunRequest, ChatResult | BaseException]:
        # Chats started in one loop tick travel as one chat_many call to their shard.
        loop = asyncio.get_running_loop()
        key = (id(loop), id(shard))
        batcher = self._batchers.get(key)
        if batcher is None or batcher.loop is not loop:
            batcher = self._batchers[key] = KeyedBatcher(
                _send_chats(shard),
                lambda r: r.run_id,
                on_error=_orchestrator_failure,
                on_missing=_no_answer,
            )
        return batcher

    async def run_many(
        self, requests: list[RunRequest]
    ) -> AsyncIterator[list[tuple[str, ChatResult | OrchestraError]]]:
        """Run validated requests (tenants used as is) with one ``chat_many`` call per shard; yield
        ``(run_id, result or error)`` in batches as they finish. Leaving early cancels the unfinished."""
        by_shard: dict[int, list[RunRequest]] = {}
        for request in map(self._with_session, requests):
            by_shard.setdefault(id(self._shard_for(request)), []).append(request)
        shards = {id(s): s for s in self._shards}
        queue: asyncio.Queue[list[tuple[str, ChatResult | OrchestraError]] | None] = asyncio.Queue()

        async def pump(shard: Any, batch: list[RunRequest]) -> None:
            unanswered = {r.run_id for r in batch}
            try:
                async for ref in shard.chat_many.remote(batch):
                    group = await ref
                    unanswered.difference_update(run_id for run_id, _ in group)
                    queue.put_nowait(group)
            except Exception as e:
                error = _orchestrator_failure(e)
                failure = error if isinstance(error, OrchestraError) else InternalError(str(error))
                queue.put_nowait([(run_id, failure) for run_id in unanswered])
                unanswered.clear()
            finally:
                if unanswered:
                    queue.put_nowait([(run_id, InternalError("no answer")) for run_id in unanswered])
                queue.put_nowait(None)

        unfinished = {r.run_id: (shards[k], r.tenant) for k, b in by_shard.items() for r in b}
        tasks = [asyncio.ensure_future(pump(shards[k], b)) for k, b in by_shard.items()]
        running = len(tasks)
        try:
            while running:
                group = await queue.get()
                if group is None:
                    running -= 1
                elif group:
                    for run_id, _ in group:
                        unfinished.pop(run_id, None)
                    yield group
        finally:
            for task in tasks:
                task.cancel()
            if unfinished:  # the caller left early (client gone, request cancelled): stop those runs
                await asyncio.gather(
                    *(shard.cancel.remote(run_id, tenant) for run_id, (shard, tenant) in unfinished.items()),
                    return_exceptions=True,
                )

    async def stream(
        self,
        message: str,
        *,
        swarm_type: str | None = None,
        optimization_mode: str = "balanced",
        session_id: str | None = None,
        user_context: dict[str, Any] | None = None,
        run_id: str | None = None,
        raise_on_error: bool = False,
    ) -> AsyncIterator[RunEvent]:
        """The run's events as they happen: turn_start / token / turn_end per agent, then the result.

        Ends with ``RunCompleted`` (or ``RunFailed``, which is raised instead when ``raise_on_error``).
        Leaving the loop early cancels the run.
        """
        request, _ = self._request(
            message,
            swarm_type=swarm_type,
            optimization_mode=optimization_mode,
            session_id=session_id,
            user_context=user_context,
            run_id=run_id,
        )
        async for event in self.run_stream(request, raise_on_error=raise_on_error):
            yield event

    async def run_stream(
        self, request: RunRequest, *, raise_on_error: bool = False
    ) -> AsyncIterator[RunEvent]:
        """``stream`` for an already validated request (its ``tenant`` is used as is)."""
        async for batch in self.run_stream_batches(request):
            for event in batch:
                if isinstance(event, RunFailed) and raise_on_error:
                    raise error_from_dict(event.error)
                yield event

    async def run_stream_batches(self, request: RunRequest) -> AsyncIterator[list[RunEvent]]:
        """The run's events in the batches the orchestrator sends (what a relay should forward as is)."""
        request = self._with_session(request)
        shard = self._shard_for(request)
        finished = False
        try:
            async for ref in shard.stream.remote(request):
                batch: list[RunEvent] = await ref
                finished = finished or any(isinstance(e, RunCompleted | RunFailed) for e in batch)
                yield batch
        finally:
            if not finished:
                await shard.cancel.remote(request.run_id, request.tenant)

    async def acancel(self, run_id: str) -> bool:
        """Cancel a run of this tenant on whichever shard runs it."""
        found = await asyncio.gather(*(s.cancel.remote(run_id, self.tenant) for s in self._shards))
        return any(found)

    def cancel(self, run_id: str) -> bool:
        return any(ray.get([s.cancel.remote(run_id, self.tenant) for s in self._shards]))

    # -- inspection --------------------------------------------------------------------------------

    def teams(self) -> list[TeamInfo]:
        """The configured teams with each mode's agents, rounds, judge, model and deadline."""
        return ray.get(self._shards[0].teams.remote())  # type: ignore[no-any-return]

    def transcript(self, run_id: str) -> Transcript:
        """Every turn of a finished (or failed) run with its full text."""
        for t in ray.get([s.transcript.remote(run_id, self.tenant) for s in self._shards]):
            if t is not None:
                return t  # type: ignore[no-any-return]
        raise NotFoundError(f"no run {run_id!r}")

    def _session_shard(self, session_id: str) -> Any:
        return self._shards[shard_of(self.tenant, session_id, len(self._shards))]

    @staticmethod
    def _found(session: Session | None, session_id: str) -> Session:
        if session is None:  # the shard answers None for a missing session or another tenant's
            raise NotFoundError(f"no session {session_id!r}")
        return session

    def session(self, session_id: str) -> Session:
        """The session with its turns (NotFoundError if it is not this tenant's)."""
        shard = self._session_shard(session_id)
        return self._found(ray.get(shard.session.remote(self.tenant, session_id)), session_id)

    def end_session(self, session_id: str) -> Session:
        shard = self._session_shard(session_id)
        return self._found(ray.get(shard.end_session.remote(self.tenant, session_id)), session_id)

    async def asession(self, session_id: str) -> Session:
        shard = self._session_shard(session_id)
        return self._found(await shard.session.remote(self.tenant, session_id), session_id)

    async def aend_session(self, session_id: str) -> Session:
        shard = self._session_shard(session_id)
        return self._found(await shard.end_session.remote(self.tenant, session_id), session_id)

    async def areset_session(self, session_id: str) -> bool:
        """Forget the session's turns (its context); False when there is no such session."""
        shard = self._session_shard(session_id)
        return await shard.reset_session.remote(self.tenant, session_id)  # type: ignore[no-any-return]

    async def ateams(self) -> list[TeamInfo]:
        return await self._shards[0].teams.remote()  # type: ignore[no-any-return]

    async def ainfo(self) -> list[dict[str, Any]]:
        """Every shard's info; raises when a shard does not answer (used by health probes)."""
        return list(await asyncio.gather(*(s.info.remote() for s in self._shards)))

    def running(self) -> list[str]:
        return [r for rs in ray.get([s.running.remote(self.tenant) for s in self._shards]) for r in rs]

    def actors(self) -> list[dict[str, Any]]:
        """The live named actors: each orchestrator shard and every agent actor it has started."""
        out: list[dict[str, Any]] = []
        for shard, info, agents in zip(
            self._shards,
            ray.get([s.info.remote() for s in self._shards]),
            ray.get([s.agents.remote() for s in self._shards]),
            strict=True,
        ):
            del shard
            out.append({"kind": "orchestrator", "name": orchestrator_name(info["shard"]), **info})
            out.extend({"kind": "agent", "shard": info["shard"], **a} for a in agents)
        return out

    def warm_up(self, teams: list[str] | None = None) -> int:
        """Start the agent actors now (they start on first use otherwise). Returns how many exist."""
        return sum(ray.get([s.warm_up.remote(teams) for s in self._shards]))

    def with_tenant(self, tenant: str) -> OrchestraHandle:
        """The same orchestrator seen as another tenant (the serving layer uses one per API key)."""
        return OrchestraHandle(self.config, self._shards, tenant)

    def shutdown(self) -> None:
        """Kill the orchestrator shards (and with them the agent actors they own)."""
        for shard in self._shards:
            ray.kill(shard)


def connect(
    address: str | None = None,
    *,
    config: OrchestraConfig | str | None = None,
    namespace: str | None = None,
    shards: int | None = None,
    detached: bool = False,
    tenant: str = "local",
    init_kwargs: dict[str, Any] | None = None,
) -> OrchestraHandle:
    """Connect to (or start) the orchestrator.

    - ``address``: a Ray cluster (``auto``, ``ray://host:10001``...). None: ``RAY_ADDRESS`` when set,
      else a Ray already initialised in this process, else a new local Ray.
    - ``config``: an OrchestraConfig or a YAML path (default ``configs/swarms.yaml``/``ORCHESTRA_CONFIG``).
    - ``detached``: orchestrators outlive this process (stop them with ``handle.shutdown()``).
    Existing orchestrator actors of the namespace are reused, not replaced.
    """
    cfg = config if isinstance(config, OrchestraConfig) else load_config(config)
    # Build the provider here first: a bad provider config (no API key...) is a clear ConfigError now,
    # instead of an actor that died in its constructor.
    make_provider(cfg)
    ns = namespace or cfg.runtime.namespace
    if not ray.is_initialized():
        ray.init(address=address, namespace=ns, **(init_kwargs or {}))
    n = shards or cfg.runtime.orchestrator_shards
    env = actor_env(cfg)
    handles = []
    for i in range(n):
        handles.append(
            Orchestrator.options(  # type: ignore[attr-defined]
                name=orchestrator_name(i),
                namespace=ns,
                get_if_exists=True,
                lifetime="detached" if detached else None,
                num_cpus=cfg.runtime.orchestrator_num_cpus,
                max_concurrency=cfg.runtime.agent_max_concurrency,
                runtime_env={"env_vars": env},
            ).remote(cfg, i, env, ns)
        )
    ray.get([h.info.remote() for h in handles])  # surfaces a start-up error (bad provider config) now
    return OrchestraHandle(cfg, handles, tenant)
