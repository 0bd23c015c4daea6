"""``AgentRuntime`` over Ray actors, with per-actor batching of turns.

Every turn of every run goes to its agent's actor. Turns sent to the same actor within
``runtime.batch_window_s`` (1 ms by default: small next to any model's latency) travel in one actor
call; with many sessions in flight this divides the per-call cost of Ray by the batch size. Streaming
turns use one streaming call each, whose token events the agent coalesces: never one call per token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from orchestra import InternalError, OrchestraConfig, OrchestraError, TurnRequest, TurnResult
from orchestra._agent import EventSink
from orchestra._runtime import agent_name_of

__all__ = ["RayRuntime"]

log = logging.getLogger("orchestra.actors")

ActorFactory = Callable[[str, str, str], Any]
"""(team, instance, agent_name) → actor handle."""


class _Batcher:
    """Collects the turns for one actor during one loop tick and sends them as one call."""

    def __init__(self, actor: Any, max_batch: int, window_s: float) -> None:
        self._actor = actor
        self._max = max_batch
        self._window = window_s
        self._pending: list[tuple[TurnRequest, asyncio.Future[TurnResult]]] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()  # held so the loop cannot drop a running send

    def submit(self, request: TurnRequest) -> asyncio.Future[TurnResult]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[TurnResult] = loop.create_future()
        self._pending.append((request, future))
        if len(self._pending) >= self._max:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            if self._window > 0:
                loop.call_later(self._window, self._flush)
            else:
                loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _send(self, batch: list[tuple[TurnRequest, asyncio.Future[TurnResult]]]) -> None:
        try:
            results = await self._actor.handle.remote([req for req, _ in batch])
        except Exception as e:  # the actor died or the call failed: every turn in the batch fails
            log.warning("agent actor call failed: %r", e)
            error = InternalError("an agent actor failed", details={"agent": batch[0][0].agent})
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the run was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


class RayRuntime:
    """Sends turns to agent actors created on first use by ``factory``."""

    def __init__(
        self, config: OrchestraConfig, factory: ActorFactory, *, max_batch: int | None = None
    ) -> None:
        self._config = config
        self._factory = factory
        self._max_batch = max_batch or config.runtime.max_batch_turns
        self._actors: dict[tuple[str, str], Any] = {}
        self._batchers: dict[tuple[str, str], _Batcher] = {}
        self._runs: dict[str, set[tuple[str, str]]] = {}

    @property
    def actors(self) -> dict[tuple[str, str], Any]:
        return dict(self._actors)

    def actor(self, team: str, instance: str) -> Any:
        key = (team, instance)
        if key not in self._actors:
            self._actors[key] = self._factory(team, instance, agent_name_of(self._config, team, instance))
            self._batchers[key] = _Batcher(
                self._actors[key], self._max_batch, self._config.runtime.batch_window_s
            )
        return self._actors[key]

    async def send(self, request: TurnRequest, sink: EventSink | None = None) -> TurnResult:
        key = (request.team, request.agent)
        actor = self.actor(*key)
        self._runs.setdefault(request.run_id, set()).add(key)
        if sink is not None:  # events wanted: one streaming call, events arrive in agent-made batches
            return await self._stream(actor, request, sink)
        return await self._batchers[key].submit(request)

    async def _stream(self, actor: Any, request: TurnRequest, sink: EventSink) -> TurnResult:
        generator = actor.stream.remote(request)
        async for ref in generator:
            item = await ref
            if isinstance(item, list):
                for event in item:
                    sink(event)
            elif isinstance(item, OrchestraError):
                raise item
            else:
                return item  # type: ignore[no-any-return]
        raise InternalError("agent stream ended without a result", details={"agent": request.agent})

    async def cancel_run(self, run_id: str) -> None:
        keys = self._runs.pop(run_id, set())
        calls = [self._actors[k].cancel_run.remote(run_id) for k in keys if k in self._actors]
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)

    def forget_run(self, run_id: str) -> None:
        """Drop the bookkeeping of a finished run."""
        self._runs.pop(run_id, None)
