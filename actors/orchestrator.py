"""The orchestrator actor: owns one shard's team pools, sessions, deadlines and cancellation.

Sessions are spread over shards by a stable hash (see ``actors.client.shard_of``), so adding shards adds
capacity; a shard never talks to another.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray

from orchestra import (
    ChatResult,
    OrchestraConfig,
    OrchestraError,
    RunEvent,
    RunRequest,
    Session,
    TeamInfo,
    Transcript,
    settings,
)
from orchestra.engine import Engine
from orchestra.providers import make_provider
from orchestra.stores import InMemoryMemoryStore, InMemorySessionStore, MemoryStore, SessionStore
from orchestra.stores.redis import RedisMemoryStore, RedisSessionStore, redis_client

from .agent import AgentActor
from .runtime import RayRuntime

__all__ = ["Orchestrator", "agent_actor_name", "orchestrator_name"]

log = logging.getLogger("orchestra.actors")


def _stores(config: OrchestraConfig) -> tuple[SessionStore, MemoryStore]:
    """Sessions and long-term memory in Redis (shared by every process, kept across restarts) when
    ORCHESTRA_REDIS_URL is set, else in this process."""
    url = settings().redis_url
    ttl = config.runtime.session_ttl_s
    if not url:
        return InMemorySessionStore(ttl), InMemoryMemoryStore()
    redis = redis_client(url)
    return RedisSessionStore(redis, ttl), RedisMemoryStore(redis)


def orchestrator_name(shard: int) -> str:
    return f"orchestrator-{shard}"


def agent_actor_name(shard: int, team: str, instance: str) -> str:
    return f"agent-{shard}-{team}-{instance}"


@ray.remote
class Orchestrator:
    def __init__(self, config: OrchestraConfig, shard: int, env: dict[str, str], namespace: str) -> None:
        self._config = config
        self._namespace = namespace
        self._shard = shard
        self._env = env
        provider = make_provider(config)  # fail here, at start-up, on a bad provider config
        self._provider_label = provider.name
        self._runtime = RayRuntime(config, self._make_agent)
        sessions, memory = _stores(config)
        self._engine = Engine(
            config, self._runtime, config.resolved_provider(), sessions=sessions, memory=memory
        )
        self._sweeper: asyncio.Task[None] | None = None

    def _make_agent(self, team: str, instance: str, agent_name: str) -> Any:
        rt = self._config.runtime
        return AgentActor.options(  # type: ignore[attr-defined]
            name=agent_actor_name(self._shard, team, instance),
            namespace=self._namespace,
            get_if_exists=True,
            num_cpus=rt.agent_num_cpus,
            max_concurrency=rt.agent_max_concurrency,
            runtime_env={"env_vars": self._env},
        ).remote(self._config, team, instance, agent_name)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        interval = min(60.0, max(1.0, self._config.runtime.session_ttl_s / 10))
        while True:
            await asyncio.sleep(interval)
            for session in await self._engine.sessions.expire():
                log.info("session %s of %s expired", session.session_id, session.tenant)

    # -- runs --------------------------------------------------------------------------------------

    async def chat(self, request: RunRequest) -> ChatResult:
        self._ensure_sweeper()
        return await self._engine.run(request)

    async def chat_many(
        self, requests: list[RunRequest]
    ) -> AsyncIterator[list[tuple[str, ChatResult | OrchestraError]]]:
        """Run many chats; yield (run_id, result or error) in batches as they finish.

        One call and a few yields instead of one call per chat: on a busy orchestrator the Ray per-call
        cost, not the swarm, is what limits throughput (benchmarks W1/W2).
        """
        self._ensure_sweeper()
        done: asyncio.Queue[tuple[str, ChatResult | OrchestraError]] = asyncio.Queue()

        async def one(request: RunRequest) -> None:
            try:
                outcome: ChatResult | OrchestraError = await self._engine.run(request)
            except OrchestraError as e:
                outcome = e
            done.put_nowait((request.run_id, outcome))

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        remaining = len(tasks)
        try:
            while remaining:
                batch = [await done.get()]
                await asyncio.sleep(0)  # let chats finishing in this same tick join the batch
                while not done.empty():
                    batch.append(done.get_nowait())
                remaining -= len(batch)
                yield batch
        finally:
            for task in tasks:
                task.cancel()

    async def stream(self, request: RunRequest) -> AsyncIterator[list[RunEvent]]:
        self._ensure_sweeper()
        async for batch in self._engine.stream(request):
            yield batch

    async def cancel(self, tenant: str, run_id: str) -> bool:
        return await self._engine.cancel(tenant, run_id)

    async def warm_up(self, teams: list[str] | None = None) -> int:
        """Create the agent actors of ``teams`` (all by default) now rather than on first use."""
        names = teams or list(self._config.teams)
        actors = []
        for team in names:
            cfg = self._config.teams[team]
            for agent in dict.fromkeys([*cfg.flow_agents(), *([cfg.judge] if cfg.judge else [])]):
                for instance in cfg.max_instances(agent):
                    actors.append(self._runtime.actor(team, instance))
        await asyncio.gather(*(a.info.remote() for a in actors))
        return len(actors)

    # -- inspection --------------------------------------------------------------------------------

    async def teams(self) -> list[TeamInfo]:
        return await self._engine.teams()

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        return await self._engine.transcript(tenant, run_id)

    def running(self, tenant: str | None = None) -> list[str]:
        return self._engine.running(tenant)

    async def session(self, tenant: str, session_id: str) -> Session:
        return await self._engine.session(tenant, session_id)

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        return await self._engine.reset_session(tenant, session_id)

    async def end_session(self, tenant: str, session_id: str) -> Session:
        return await self._engine.end_session(tenant, session_id)

    async def agents(self) -> list[dict[str, Any]]:
        infos = await asyncio.gather(
            *(a.info.remote() for a in self._runtime.actors.values()), return_exceptions=True
        )
        return [i for i in infos if isinstance(i, dict)]

    async def info(self) -> dict[str, Any]:
        return {
            "shard": self._shard,
            "pid": os.getpid(),
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "provider": self._provider_label,
            "running": len(self._engine.running()),
            "sessions": await self._engine.sessions.count(),
            "agents": len(self._runtime.actors),
        }
