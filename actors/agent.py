"""One Ray actor per agent instance. Many runs share it: each turn is its own task, tracked by run id."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import ray

from orchestra import (
    InternalError,
    OrchestraConfig,
    OrchestraError,
    RunCancelledError,
    RunEvent,
)
from orchestra.engine import (
    TURNS,
    Agent,
    Outcomes,
    TurnRequest,
    TurnResult,
    close_queue_when_done,
    queue_batches,
)
from orchestra.providers import make_provider

from ._env import apply_secrets
from ._process import tune_gc

__all__ = ["AgentActor"]


@ray.remote
class AgentActor:
    """Hosts one agent of a team and runs its turns; its tokens stream straight back to the caller."""

    def __init__(
        self,
        config: OrchestraConfig,
        team: str,
        instance: str,
        agent_name: str,
        secrets: dict[str, str] | None = None,
    ) -> None:
        apply_secrets(secrets)  # provider keys, before the provider is built
        self._config = config
        self._agent = Agent(instance, config.teams[team].agents[agent_name], make_provider(config))
        self._team = team
        self._coalesce_s = config.runtime.stream_coalesce_s
        self._tasks: dict[str, set[asyncio.Task[TurnResult]]] = {}
        self._turns = 0
        self._calls = 0
        tune_gc(config.runtime.gc_threshold)

    def _track(self, request: TurnRequest, task: asyncio.Task[TurnResult]) -> None:
        tasks = self._tasks.setdefault(request.run_id, set())
        tasks.add(task)

        def _done(t: asyncio.Task[TurnResult]) -> None:
            tasks.discard(t)
            if not tasks:
                self._tasks.pop(request.run_id, None)

        task.add_done_callback(_done)

    async def handle(self, batch: bytes, keys: list[str]) -> Outcomes:
        """Run a batch of turns concurrently (one actor call for many sessions' turns); the turns and
        their outcomes, under the caller's ``keys``, travel as JSON (``orchestra.engine.TURNS``)."""
        self._calls += 1
        tasks = []
        for request in TURNS.read_requests(batch):
            task = asyncio.ensure_future(self._agent.run_turn(request))
            self._track(request, task)
            tasks.append(task)
        self._turns += len(tasks)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        outcomes = [r if isinstance(r, TurnResult) else self._error(r) for r in results]
        return TURNS.outcomes(list(zip(keys, outcomes, strict=True)))

    def _error(self, error: BaseException) -> OrchestraError:
        """A failed turn as a value (Ray would wrap a raised one in RayTaskError)."""
        if isinstance(error, OrchestraError):
            return error
        if isinstance(error, asyncio.CancelledError):  # cancel_run: the run was cancelled or timed out
            return RunCancelledError("the turn was cancelled", details={"agent": self._agent.name})
        return InternalError("an agent turn failed unexpectedly", details={"agent": self._agent.name})

    async def stream(
        self, request: TurnRequest
    ) -> AsyncIterator[list[RunEvent | TurnResult] | OrchestraError]:
        """Run one turn, yielding its events in batches as they come; the TurnResult ends the last batch.
        A failed turn ends the stream with its error instead."""
        queue: asyncio.Queue[RunEvent | TurnResult | None] = asyncio.Queue()

        async def turn() -> TurnResult:
            result = await self._agent.run_turn(request, queue.put_nowait, coalesce_s=self._coalesce_s)
            # Queued in the tick of the turn's last events, so it rides in their batch: every stream item
            # costs a Ray round of CPU on both sides, and a streamed chat crosses three hops.
            queue.put_nowait(result)
            return result

        task = asyncio.ensure_future(turn())
        self._track(request, task)
        self._turns += 1
        self._calls += 1
        close_queue_when_done(task, queue)
        try:
            async for batch in queue_batches(queue):
                yield batch
            error = asyncio.CancelledError() if task.cancelled() else task.exception()
            if error is not None:
                yield self._error(error)
        finally:
            if not task.done():
                task.cancel()

    async def cancel_run(self, run_id: str) -> int:
        """Cancel every turn of ``run_id`` running here; returns how many were stopped."""
        tasks = list(self._tasks.get(run_id, ()))
        for task in tasks:
            task.cancel()
        return len(tasks)

    def info(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {
            "team": self._team,
            "agent": self._agent.name,
            "role": self._agent.config.role,
            "actor_id": ctx.get_actor_id(),
            "node_id": ctx.get_node_id(),
            "pid": os.getpid(),
            "provider": self._agent.provider.name,
            "turns": self._turns,
            "calls": self._calls,
            "running_runs": len(self._tasks),
        }
