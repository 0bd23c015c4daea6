"""One way to turn a producer's event queue into batches, shared by the engine and the agent actors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

__all__ = ["close_queue_when_done", "events", "queue_batches"]

T = TypeVar("T")


def close_queue_when_done(task: asyncio.Future[Any], queue: asyncio.Queue[Any]) -> None:
    """Put the end-of-stream sentinel once ``task`` ends: after every event it queued, as puts are
    synchronous and the done callback runs later."""
    task.add_done_callback(lambda _: queue.put_nowait(None))


async def queue_batches(queue: asyncio.Queue[Any]) -> AsyncIterator[list[Any]]:
    """Everything queued so far, batch by batch, until the ``None`` sentinel (items keep their type;
    the queue is ``Queue[X | None]`` and the batches are ``list[X]``).

    Batches keep the per-item cost low when events cross a process boundary. Awaiting ``queue.get()``
    directly (no helper task) means a consumer that stops early leaves nothing pending.
    """
    while True:
        batch = [await queue.get()]
        while not queue.empty():
            batch.append(queue.get_nowait())
        done = batch[-1] is None  # the sentinel is always the last item ever queued
        items = [item for item in batch if item is not None]
        if items:
            yield items
        if done:
            return


async def events(batches: AsyncIterator[list[T]]) -> AsyncIterator[T]:
    """Batches of a ``ChatService.stream`` one event at a time; closing this closes the stream."""
    try:
        async for batch in batches:
            for event in batch:
                yield event
    finally:
        aclose = getattr(batches, "aclose", None)
        if aclose is not None:
            await aclose()
