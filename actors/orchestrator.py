"""The orchestrator actor: the named entry point for notebooks and scripts (``orchestra.connect()``).

It hosts a ``Coordinator`` — the same code the mode deployment replicas run for HTTP and WebSocket
chats — over the same store and the same agent actors, so a notebook sees the sessions and live actors
HTTP clients use. Several shards (``runtime.orchestrator_shards``) spread notebook chats by a stable hash
of the session (see ``actors.client.shard_of``); a shard never talks to another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ray

from orchestra import (
    ChatResult,
    OrchestraConfig,
    RunEvent,
    RunRequest,
    Session,
    TeamInfo,
    Transcript,
)
from orchestra.engine import CHATS, Outcomes
from orchestra.stores import RunRecord

from ._env import apply_secrets, split_env
from ._process import tune_gc
from .coordinator import Coordinator

__all__ = ["Orchestrator", "orchestrator_name"]


def orchestrator_name(shard: int) -> str:
    return f"orchestrator-{shard}"


@ray.remote
class Orchestrator:
    def __init__(self, config: OrchestraConfig, shard: int, env: dict[str, str], namespace: str) -> None:
        self._shard = shard
        apply_secrets(split_env(env)[1])  # handed over as an argument: never in a (logged) runtime_env
        self._coordinator = Coordinator(config, namespace, env)
        self._engine = self._coordinator.engine
        tune_gc(config.runtime.gc_threshold)

    # -- runs --------------------------------------------------------------------------------------

    async def chat(self, request: RunRequest) -> ChatResult:
        self._coordinator.start()
        return await self._engine.run(request)

    async def chat_many(self, requests: bytes) -> AsyncIterator[Outcomes]:
        """Run a batch of chats; yield their outcomes in groups as they finish (``orchestra.engine.CHATS``
        both ways)."""
        async for group in self._coordinator.run_many(CHATS.read_requests(requests)):
            yield CHATS.outcomes(group)

    async def stream(self, request: RunRequest) -> AsyncIterator[list[RunEvent]]:
        self._coordinator.start()
        async for batch in self._engine.stream(request):
            yield batch

    async def cancel(self, tenant: str, run_id: str) -> bool:
        return await self._engine.cancel(tenant, run_id)

    async def warm_up(self, teams: list[str] | None = None) -> int:
        return await self._coordinator.warm_up(teams)

    # -- inspection --------------------------------------------------------------------------------

    async def teams(self) -> list[TeamInfo]:
        return await self._engine.teams()

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        return await self._engine.transcript(tenant, run_id)

    async def run_record(self, tenant: str, run_id: str) -> RunRecord:
        return await self._engine.run_record(tenant, run_id)

    async def follow(self, tenant: str, run_id: str, after: int = 0) -> AsyncIterator[list[RunEvent]]:
        async for batch in self._engine.follow(tenant, run_id, after):
            yield batch

    def running(self, tenant: str | None = None) -> list[str]:
        return self._engine.running(tenant)

    async def session(self, tenant: str, session_id: str) -> Session:
        return await self._engine.session(tenant, session_id)

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        return await self._engine.reset_session(tenant, session_id)

    async def end_session(self, tenant: str, session_id: str) -> Session:
        return await self._engine.end_session(tenant, session_id)

    async def agents(self) -> list[dict[str, Any]]:
        return await self._coordinator.agents()

    async def info(self) -> dict[str, Any]:
        return {
            "shard": self._shard,
            "actor_id": ray.get_runtime_context().get_actor_id(),
            "sessions": await self._engine.sessions.count(),
            **self._coordinator.info(),
        }
