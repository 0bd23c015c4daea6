"""Micro-batching of calls across a process boundary.

Every Ray or Serve call costs about a millisecond of CPU on each side whatever it carries, so the hot
paths (ingress → mode deployment → orchestrator) send the requests that arrive close together as one call
and route the answers, which stream back keyed by id, to each caller's future.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Generic, TypeVar

__all__ = ["KeyedBatcher"]

log = logging.getLogger("orchestra.batching")

Req = TypeVar("Req")
Out = TypeVar("Out")

SendMany = Callable[[list[Req]], AsyncIterator[Iterable[tuple[str, Out]]]]


class KeyedBatcher(Generic[Req, Out]):
    """Collects requests for ``window_s`` (0: the current loop tick) and sends them in one call.

    With ``max_inflight`` set, batching adapts to load: while fewer than that many calls are unanswered,
    requests go at the end of the current tick (no added latency when idle); otherwise they wait for a
    call to finish or for ``window_s``, whichever comes first, and go together.

    ``send`` takes the batch and returns an async iterator of ``(key, outcome)`` groups as they finish, so
    a fast request never waits for a slow one of the same batch. It is called when the batch goes, in
    the tick that fills it: a plain function that issues its call before returning the iterator gets the
    batch on its way a loop tick sooner than an async generator (whose body waits for a task to start),
    which under load is a whole pass over the ready queue. When the call fails, or ends without answering
    a request, that request's future gets ``on_error(exception)`` / ``on_missing()`` as its result:
    outcomes travel as values so one failure cannot raise in unrelated callers.
    """

    def __init__(
        self,
        send: SendMany[Req, Out],
        key: Callable[[Req], str],
        *,
        on_error: Callable[[BaseException], Out],
        on_missing: Callable[[], Out],
        window_s: float = 0.0,
        max_batch: int = 64,
        max_inflight: int | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()  # futures and timers belong to this loop
        self._send = send
        self._key = key
        self._on_error = on_error
        self._on_missing = on_missing
        self._window = window_s
        self._max = max_batch
        self._max_inflight = max_inflight
        self._pending: list[tuple[Req, asyncio.Future[Out]]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._inflight: set[asyncio.Task[None]] = set()  # held so the loop cannot drop a running send

    def submit(self, request: Req) -> asyncio.Future[Out]:
        future: asyncio.Future[Out] = self.loop.create_future()
        self._pending.append((request, future))
        self._schedule()
        return future

    # Timers and calls run in a fresh, empty context, not in that of the request that happened to start the
    # batch: frameworks keep per-request state in contextvars (Ray Serve cancels the calls a request made
    # when its client leaves), and a batch belongs to all of its requests.
    def _schedule(self) -> None:
        if not self._pending:
            return
        if len(self._pending) >= self._max:
            self._flush()
        elif self._window == 0 or (
            self._max_inflight is not None and len(self._inflight) < self._max_inflight
        ):
            if self._timer is None or isinstance(self._timer, asyncio.TimerHandle):  # not yet this tick
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = self.loop.call_soon(self._flush, context=contextvars.Context())
        elif self._timer is None:
            self._timer = self.loop.call_later(self._window, self._flush, context=contextvars.Context())

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._max_inflight is not None:
            self._schedule()  # a call finished: what waited for it can go

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            context = contextvars.Context()  # may run in submit(): not in that caller's context
            try:
                answers = context.run(self._send, [request for request, _ in batch])
            except Exception as e:  # could not even send: nothing to wait for
                self._fail([future for _, future in batch], e)
                return
            task = self.loop.create_task(self._run(batch, answers), context=context)
            self._inflight.add(task)
            task.add_done_callback(self._done)

    async def _run(
        self, batch: list[tuple[Req, asyncio.Future[Out]]], answers: AsyncIterator[Iterable[tuple[str, Out]]]
    ) -> None:
        futures = {self._key(request): future for request, future in batch}
        try:
            async for group in answers:
                for key, outcome in group:
                    future = futures.pop(key, None)
                    if future is not None and not future.done():
                        future.set_result(outcome)
        except Exception as e:  # the callee died or the call failed: every unanswered request fails
            self._fail(futures.values(), e)
            return
        for future in futures.values():
            if not future.done():
                future.set_result(self._on_missing())

    def _fail(self, futures: Iterable[asyncio.Future[Out]], error: Exception) -> None:
        unanswered = [f for f in futures if not f.done()]
        log.warning("batched call failed, %d requests unanswered: %r", len(unanswered), error)
        for future in unanswered:
            future.set_result(self._on_error(error))
