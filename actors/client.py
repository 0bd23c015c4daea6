"""``connect()``: a handle to the live orchestrator actors, for scripts, notebooks and the Serve app."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from orchestra import (
    ChatResult,
    ConfigError,
    InternalError,
    NotFoundError,
    OrchestraConfig,
    OrchestraHandle,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    Session,
    TeamInfo,
    Transcript,
    load_config,
    settings,
)
from orchestra.cli._server_file import read_server_file
from orchestra.engine import CHATS, KeyedBatcher
from orchestra.providers import make_provider
from orchestra.serving._auth import ApiKeys
from orchestra.stores import RunRecord
from orchestra.stores.redis import RedisKeyStore, redis_client

from ._env import actor_env, split_env
from .coordinator import shutdown_agents
from .orchestrator import Orchestrator, orchestrator_name

__all__ = ["RayChatService", "connect", "shard_of"]


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
        generator = shard.chat_many.remote(CHATS.requests(requests))  # on its way now, not a tick later

        async def answers() -> AsyncIterator[list[tuple[str, Any]]]:
            async for ref in generator:
                yield CHATS.read_outcomes(await ref)

        return answers()

    return send


class RayChatService:
    """``ChatService`` over the orchestrator shards; also the ``HostControl`` of the notebook handle.

    A session lives on the shard its ``(tenant, session_id)`` hashes to; chats started in one loop tick
    travel to their shard as one ``chat_many`` call.
    """

    def __init__(self, config: OrchestraConfig, shards: list[Any], namespace: str) -> None:
        self.config = config
        self._shards = shards
        self._namespace = namespace
        self._batchers: dict[tuple[int, int], KeyedBatcher[RunRequest, ChatResult | BaseException]] = {}

    def _shard(self, tenant: str, session_id: str) -> Any:
        return self._shards[shard_of(tenant, session_id, len(self._shards))]

    @staticmethod
    def _with_session(request: RunRequest) -> RunRequest:
        # A session id chosen here keeps a new session's later turns on the same shard.
        return request if request.session_id else request.model_copy(update={"session_id": uuid.uuid4().hex})

    def _shard_for(self, request: RunRequest) -> Any:
        assert request.session_id is not None
        return self._shard(request.tenant, request.session_id)

    # -- ChatService -----------------------------------------------------------------------------------

    async def run(self, request: RunRequest) -> ChatResult:
        request = self._with_session(request)
        shard = self._shard_for(request)
        future = self._batcher(shard).submit(request)
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.cancel()
            await shard.cancel.remote(request.tenant, request.run_id)
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

    async def stream(self, request: RunRequest) -> AsyncGenerator[list[RunEvent], None]:
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
                await shard.cancel.remote(request.tenant, request.run_id)

    async def cancel(self, tenant: str, run_id: str) -> bool:
        found = await asyncio.gather(*(s.cancel.remote(tenant, run_id) for s in self._shards))
        return any(found)

    async def session(self, tenant: str, session_id: str) -> Session:
        return await self._session_call("session", tenant, session_id)

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        return await self._session_call("reset_session", tenant, session_id)

    async def end_session(self, tenant: str, session_id: str) -> Session:
        return await self._session_call("end_session", tenant, session_id)

    async def _session_call(self, method: str, tenant: str, session_id: str) -> Session:
        session: Session = await self._unwrap(
            getattr(self._shard(tenant, session_id), method).remote(tenant, session_id)
        )
        return session

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        for found in await asyncio.gather(
            *(s.transcript.remote(tenant, run_id) for s in self._shards), return_exceptions=True
        ):
            if isinstance(found, Transcript):
                return found
        raise NotFoundError(f"no run {run_id!r}")

    async def run_record(self, tenant: str, run_id: str) -> RunRecord:
        return (await self._run_shard(tenant, run_id))[1]

    async def _run_shard(self, tenant: str, run_id: str) -> tuple[Any, RunRecord]:
        # Over Redis every shard sees every run; in memory only the one that ran it.
        found = await asyncio.gather(
            *(s.run_record.remote(tenant, run_id) for s in self._shards), return_exceptions=True
        )
        for shard, record in zip(self._shards, found, strict=True):
            if isinstance(record, RunRecord):
                return shard, record
        raise NotFoundError(f"no run {run_id!r}")

    async def follow(self, tenant: str, run_id: str, after: int = 0) -> AsyncGenerator[list[RunEvent], None]:
        shard, _ = await self._run_shard(tenant, run_id)
        async for ref in shard.follow.remote(tenant, run_id, after):
            yield await ref

    async def teams(self) -> list[TeamInfo]:
        return await self._shards[0].teams.remote()  # type: ignore[no-any-return]

    @staticmethod
    async def _unwrap(ref: Any) -> Any:
        # Errors raised inside an actor arrive wrapped in RayTaskError; give callers the real one.
        try:
            return await ref
        except Exception as e:
            cause = getattr(e, "cause", None)
            raise (cause if isinstance(cause, Exception) else e) from None

    # -- beyond ChatService ---------------------------------------------------------------------------

    async def info(self) -> list[dict[str, Any]]:
        """Every shard's info; raises when a shard does not answer (used by health probes)."""
        return list(await asyncio.gather(*(s.info.remote() for s in self._shards)))

    # -- HostControl -----------------------------------------------------------------------------------

    def actors(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        infos = ray.get([s.info.remote() for s in self._shards])
        agents = ray.get([s.agents.remote() for s in self._shards])
        for info, shard_agents in zip(infos, agents, strict=True):
            out.append({"kind": "orchestrator", "name": orchestrator_name(info["shard"]), **info})
            out.extend({"kind": "agent", "shard": info["shard"], **a} for a in shard_agents)
        return out

    def warm_up(self, teams: list[str] | None = None) -> int:
        return sum(ray.get([s.warm_up.remote(teams) for s in self._shards]))

    def running(self, tenant: str) -> list[str]:
        return [r for rs in ray.get([s.running.remote(tenant) for s in self._shards]) for r in rs]

    def shutdown(self) -> None:
        for shard in self._shards:
            ray.kill(shard)
        shutdown_agents(self._namespace)


def _use_ray_auth_mode(mode: str) -> None:
    """Join a cluster in ``mode``: Ray turns token auth on by itself only for clusters it finds on its own
    (address None/"auto"), never for an explicit address, and reads the mode once at import."""
    from ray._raylet import Config  # type: ignore[attr-defined]  # what Ray's _enable_token_auth refreshes

    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")


def _tenant_of(api_key: str, redis_url: str | None) -> str:
    """The tenant of ``api_key``, looked up in the store the server uses (``AuthenticationError`` if none)."""
    if not redis_url:
        raise ConfigError(
            "api_key needs the server's store: run orchestra serve from this directory, or set "
            "ORCHESTRA_REDIS_URL",
            details={"field": "api_key", "reason": "no store"},
        )

    async def lookup() -> str:
        redis = redis_client(redis_url)
        keys = ApiKeys(RedisKeyStore(redis))  # the secret: the environment's or the data directory's
        try:
            principal = await keys.authenticate(f"Bearer {api_key}")
        finally:
            await keys.drain()
            await redis.aclose()
        return principal.tenant

    # A thread of its own: in a notebook this thread already runs an event loop.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, lookup()).result()


def connect(
    address: str | None = None,
    *,
    config: OrchestraConfig | str | None = None,
    namespace: str | None = None,
    shards: int | None = None,
    detached: bool = False,
    tenant: str = "local",
    api_key: str | None = None,
    init_kwargs: dict[str, Any] | None = None,
) -> OrchestraHandle:
    """Connect to (or start) the orchestrator.

    - ``address``: a Ray cluster (``auto``, ``ray://host:10001``...). None: ``RAY_ADDRESS`` when set,
      else a Ray already initialised in this process, else the running ``orchestra serve`` of this
      data directory (``ORCHESTRA_DATA_DIR``, found through its ``server.json``: same Ray, same
      namespace, same store, so the same sessions and agent actors as its HTTP clients), else a new
      local Ray.
    - ``api_key``: act as that key's tenant (its sessions and memory, as over HTTP); looked up in the
      store. Otherwise ``tenant``.
    - ``config``: an OrchestraConfig or a YAML path (default ``configs/swarms.yaml``/``ORCHESTRA_CONFIG``).
    - ``detached``: orchestrators outlive this process (stop them with ``handle.shutdown()``).
    Existing orchestrator actors of the namespace are reused, not replaced.
    """
    cfg = config if isinstance(config, OrchestraConfig) else load_config(config)
    # Build the provider here first: a bad provider config (no API key...) is a clear ConfigError now,
    # instead of an actor that died in its constructor.
    make_provider(cfg)
    ns = namespace or cfg.runtime.namespace
    env = actor_env(cfg)
    server = None
    if address is None and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized():
        server = read_server_file(settings().data_dir)
    if server is not None:
        address, ns = server["ray_address"], namespace or server["namespace"]
        if server["redis_url"]:
            env["ORCHESTRA_REDIS_URL"] = server["redis_url"]
        if server["ray_auth_mode"] and "RAY_AUTH_MODE" not in os.environ:
            _use_ray_auth_mode(server["ray_auth_mode"])
    if not ray.is_initialized():
        ray.init(address=address, namespace=ns, **(init_kwargs or {}))
    if api_key is not None:
        tenant = _tenant_of(api_key, env.get("ORCHESTRA_REDIS_URL"))
    n = shards or cfg.runtime.orchestrator_shards
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
                runtime_env={"env_vars": split_env(env)[0]},  # the secrets travel in `env`, unlogged
            ).remote(cfg, i, env, ns)
        )
    ray.get([h.info.remote() for h in handles])  # surfaces a start-up error (bad provider config) now
    service = RayChatService(cfg, handles, ns)
    return OrchestraHandle(service, cfg, tenant=tenant, host=service)
