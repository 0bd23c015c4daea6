"""The runtime contract the team patterns are written against, and its in-process implementation.

Patterns never know where agents live: they hand a ``TurnRequest`` to an ``AgentRuntime``. The in-process
``LocalRuntime`` calls the agent directly (unit tests, plain scripts); ``actors.RayRuntime`` sends the
message to the agent's Ray actor.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, runtime_checkable

from orchestra.engine._agent import Agent, EventSink
from orchestra.engine._config import OrchestraConfig
from orchestra.engine._messages import TurnRequest, TurnResult
from orchestra.providers._base import LLMProvider

__all__ = ["AgentRuntime", "LocalRuntime"]


@runtime_checkable
class AgentRuntime(Protocol):
    def send(self, request: TurnRequest, sink: EventSink | None = None) -> Awaitable[TurnResult]:
        """Deliver ``request`` to agent ``request.agent`` of team ``request.team``; awaiting the result
        gives its answer (a coroutine, or a future when the runtime sends at once)."""
        ...

    async def cancel_run(self, run_id: str) -> None:
        """Stop every turn of ``run_id`` still running anywhere (best effort, idempotent)."""
        ...

    def forget_run(self, run_id: str) -> None:
        """The run is over: drop any bookkeeping kept for it."""
        ...


class LocalRuntime:
    """Agents as plain objects in this process, created on first use."""

    def __init__(
        self, config: OrchestraConfig, provider: LLMProvider, *, coalesce_s: float | None = None
    ) -> None:
        self._config = config
        self._provider = provider
        self._agents: dict[tuple[str, str], Agent] = {}
        self._coalesce_s = config.runtime.stream_coalesce_s if coalesce_s is None else coalesce_s

    def agent(self, team: str, instance: str, agent_name: str) -> Agent:
        key = (team, instance)
        if key not in self._agents:
            self._agents[key] = Agent(instance, self._config.teams[team].agents[agent_name], self._provider)
        return self._agents[key]

    async def send(self, request: TurnRequest, sink: EventSink | None = None) -> TurnResult:
        agent_name = agent_name_of(self._config, request.team, request.agent)
        return await self.agent(request.team, request.agent, agent_name).run_turn(
            request, sink, coalesce_s=self._coalesce_s
        )

    async def cancel_run(self, run_id: str) -> None:
        # In-process turns belong to the run's task; cancelling that task already stops them.
        return None

    def forget_run(self, run_id: str) -> None:
        return None


def agent_name_of(config: OrchestraConfig, team: str, instance: str) -> str:
    """``coder-2`` → ``coder`` (the config entry an instance was made from)."""
    agents = config.teams[team].agents
    if instance in agents:
        return instance
    base, _, suffix = instance.rpartition("-")
    if base in agents and suffix.isdigit():
        return base
    raise KeyError(f"team {team!r} has no agent instance {instance!r}")
