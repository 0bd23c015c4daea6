"""``AgentRuntime`` over Ray actors, with per-actor batching of turns.

Every turn of every run goes to its agent's actor. Turns sent to the same actor within
``runtime.batch_window_s`` (1 ms by default: small next to any model's latency) travel in one actor
call; with many sessions in flight this divides the per-call cost of Ray by the batch size. Streaming
turns use one streaming call each, whose token events the agent coalesces: never one call per token.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray.exceptions import RayActorError

from orchestra import InternalError, OrchestraConfig, OrchestraError, ServiceUnavailableError
from orchestra.engine import (
    TURNS,
    EventSink,
    KeyedBatcher,
    RuntimeConfig,
    TurnRequest,
    TurnResult,
    agent_name_of,
)

__all__ = ["RayRuntime"]

log = logging.getLogger("orchestra.actors")

RETRY_DELAYS_S = (0.2, 1.0, 3.0)
"""Waits before sending again a turn lost with its actor: a restarted actor takes about a second."""

ActorFactory = Callable[[str, str, str], Any]
"""(team, instance, agent_name) → actor handle."""


def _turn_batcher(actor: Any, runtime: RuntimeConfig) -> KeyedBatcher[tuple[str, TurnRequest], Any]:
    """Turns for one actor share one ``handle`` call: at once when none is unanswered, else those that
    arrive within ``batch_window_s`` (or until a call returns) go together."""

    def send(batch: list[tuple[str, TurnRequest]]) -> AsyncIterator[list[tuple[str, Any]]]:
        turns, keys = TURNS.requests([request for _, request in batch]), [key for key, _ in batch]
        ref = actor.handle.remote(turns, keys)  # on its way now, not a tick later

        async def answers() -> AsyncIterator[list[tuple[str, Any]]]:
            yield TURNS.read_outcomes(await ref)

        return answers()

    def failed(error: BaseException) -> OrchestraError | _Lost:
        if isinstance(error, RayActorError):  # the process died (or is restarting): send the turn again
            return _Lost(error)
        return InternalError("an agent actor failed", details={"reason": type(error).__name__})

    return KeyedBatcher(
        send,
        lambda item: item[0],
        on_error=failed,
        on_missing=_no_result,
        window_s=runtime.batch_window_s,
        max_batch=runtime.max_batch_turns,
        max_inflight=runtime.max_inflight_calls,
    )


def _no_result() -> InternalError:
    return InternalError("an agent actor returned no result")


class _Lost:
    """A turn lost with its actor's process (the outcome of a batched call, as a value)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _lost_turn(request: TurnRequest, error: BaseException) -> ServiceUnavailableError:
    log.warning("turn of %s/%s lost with its actor, not retried: %r", request.team, request.agent, error)
    return ServiceUnavailableError(
        "an agent's process was lost; retry the chat",
        details={"agent": request.agent, "reason": type(error).__name__},
        retry_after=1,
    )


class RayRuntime:
    """Sends turns to agent actors created on first use by ``factory``."""

    def __init__(self, config: OrchestraConfig, factory: ActorFactory) -> None:
        self._config = config
        self._factory = factory
        self._actors: dict[tuple[str, str], Any] = {}
        self._batchers: dict[tuple[str, str], KeyedBatcher[tuple[str, TurnRequest], Any]] = {}
        self._keys = itertools.count()
        self._runs: dict[str, set[tuple[str, str]]] = {}

    @property
    def actors(self) -> dict[tuple[str, str], Any]:
        return dict(self._actors)

    def actor(self, team: str, instance: str) -> Any:
        key = (team, instance)
        if key not in self._actors:
            self._actors[key] = self._factory(team, instance, agent_name_of(self._config, team, instance))
        return self._actors[key]

    def send(self, request: TurnRequest, sink: EventSink | None = None) -> Awaitable[TurnResult]:
        """Deliver the turn; a turn lost with its actor's process is sent again (``RETRY_DELAYS_S``) to
        the restarted actor (``max_restarts``). A streamed turn is sent again only when none of its
        events went out yet: the caller never sees a turn twice.

        A turn without events joins its actor's batch now, in the caller's tick, and the answer is a
        future (no task of its own): under a burst every task step is another pass over the loop's
        ready queue before the turn is even on its way.
        """
        if sink is not None:
            return self._send_streamed(request, sink)
        answer: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
        self._submit(request, answer, 0)
        return answer

    def _actor_for(self, request: TurnRequest) -> tuple[tuple[str, str], Any]:
        """The turn's actor (made on first use), noted as one its run has used (for ``cancel_run``)."""
        key = (request.team, request.agent)
        self._runs.setdefault(request.run_id, set()).add(key)
        return key, self.actor(*key)

    def _submit(self, request: TurnRequest, answer: asyncio.Future[TurnResult], attempt: int) -> None:
        if answer.done():  # the caller stopped waiting (its run was cancelled) before a retry
            return
        key, actor = self._actor_for(request)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = _turn_batcher(actor, self._config.runtime)
        outcome = batcher.submit((str(next(self._keys)), request))
        outcome.add_done_callback(lambda done: self._settle(request, answer, attempt, done))

    def _settle(
        self,
        request: TurnRequest,
        answer: asyncio.Future[TurnResult],
        attempt: int,
        done: asyncio.Future[Any],
    ) -> None:
        if answer.done():
            return
        # The batcher answers with values (never cancels its futures): a cancelled one is no answer.
        outcome = _no_result() if done.cancelled() else done.result()
        if isinstance(outcome, _Lost):
            if attempt >= len(RETRY_DELAYS_S):
                answer.set_exception(_lost_turn(request, outcome.error))
                return
            log.info(
                "turn of %s/%s lost with its actor (%r); attempt %d",
                request.team, request.agent, outcome.error, attempt + 2,
            )  # fmt: skip
            self._forget_actor((request.team, request.agent))
            asyncio.get_running_loop().call_later(
                RETRY_DELAYS_S[attempt], self._submit, request, answer, attempt + 1
            )
        elif isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)

    def _forget_actor(self, key: tuple[str, str]) -> None:
        # Look the actor up again: a restarted one keeps its name; one killed for good is made anew.
        self._actors.pop(key, None)
        self._batchers.pop(key, None)

    async def _send_streamed(self, request: TurnRequest, sink: EventSink) -> TurnResult:
        """One streaming call: events arrive in agent-made batches."""
        key, actor = self._actor_for(request)
        for attempt, delay in enumerate((*RETRY_DELAYS_S, None)):
            emitted: list[bool] = [False]
            try:
                return await self._stream(actor, request, sink, emitted)
            except RayActorError as e:
                if emitted[0] or delay is None:
                    raise _lost_turn(request, e) from None
                log.info("turn of %s/%s lost with its actor (%r); attempt %d", *key, e, attempt + 2)
            await asyncio.sleep(delay)
            self._forget_actor(key)
            actor = self.actor(*key)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises

    async def _stream(
        self, actor: Any, request: TurnRequest, sink: EventSink, emitted: list[bool]
    ) -> TurnResult:
        generator = actor.stream.remote(request)
        async for ref in generator:
            item = await ref
            if isinstance(item, OrchestraError):
                raise item
            for element in item:  # events, the last batch ending with the TurnResult
                if isinstance(element, TurnResult):
                    return element
                emitted[0] = True
                sink(element)
        raise InternalError("agent stream ended without a result", details={"agent": request.agent})

    async def cancel_run(self, run_id: str) -> None:
        keys = self._runs.pop(run_id, set())
        calls = [self._actors[k].cancel_run.remote(run_id) for k in keys if k in self._actors]
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)

    def forget_run(self, run_id: str) -> None:
        """Drop the bookkeeping of a finished run."""
        self._runs.pop(run_id, None)
