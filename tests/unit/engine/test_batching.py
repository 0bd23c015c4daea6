"""KeyedBatcher: which requests travel together, and every caller gets its own outcome."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator

import pytest

from orchestra.engine._batching import KeyedBatcher


class Callee:
    """Records each call's batch; answers each request after the delay its text asks for."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def send(self, batch: list[str]) -> AsyncIterator[list[tuple[str, str]]]:
        self.calls.append(list(batch))
        if self.gate is not None:
            await self.gate.wait()
        delays = sorted({float(r.split(":")[1]) if ":" in r else 0.0 for r in batch})
        waited = 0.0
        for delay in delays:
            await asyncio.sleep(delay - waited)
            waited = delay
            yield [(r, r.upper()) for r in batch if (float(r.split(":")[1]) if ":" in r else 0.0) == delay]


def batcher(callee: Callee, **kwargs: object) -> KeyedBatcher[str, str]:
    return KeyedBatcher(
        callee.send,
        lambda r: r,
        on_error=lambda e: f"error:{type(e).__name__}",
        on_missing=lambda: "missing",
        **kwargs,  # type: ignore[arg-type]
    )


async def test_requests_of_one_tick_share_one_call() -> None:
    callee = Callee()
    b = batcher(callee)
    results = await asyncio.gather(*(b.submit(r) for r in ("a", "b", "c")))
    assert results == ["A", "B", "C"]
    assert callee.calls == [["a", "b", "c"]]


async def test_fast_request_does_not_wait_for_slow_one_in_the_same_call() -> None:
    callee = Callee()
    b = batcher(callee)
    fast, slow = b.submit("fast"), b.submit("slow:0.3")
    assert await asyncio.wait_for(fast, 0.2) == "FAST"
    assert not slow.done()
    assert await slow == "SLOW:0.3"


async def test_adaptive_goes_at_once_when_idle_and_groups_while_busy() -> None:
    callee = Callee()
    callee.gate = asyncio.Event()
    b = batcher(callee, window_s=5.0, max_inflight=1)
    first = b.submit("a")
    await asyncio.sleep(0.01)
    assert callee.calls == [["a"]]  # idle: sent at once, no window wait
    later = [b.submit(r) for r in ("b", "c", "d")]
    await asyncio.sleep(0.01)
    assert callee.calls == [["a"]]  # busy: they wait for the call to finish (window is 5 s)
    callee.gate.set()
    assert await first == "A"
    assert await asyncio.gather(*later) == ["B", "C", "D"]
    assert callee.calls == [["a"], ["b", "c", "d"]]


async def test_adaptive_waits_at_most_the_window_while_a_call_is_stuck() -> None:
    callee = Callee()
    callee.gate = asyncio.Event()
    b = batcher(callee, window_s=0.05, max_inflight=1)
    b.submit("a")
    await asyncio.sleep(0.01)
    b.submit("b")
    b.submit("c")
    await asyncio.sleep(0.15)
    assert callee.calls == [["a"], ["b", "c"]]  # the window bounded the wait behind the stuck call
    callee.gate.set()


async def test_full_batch_goes_without_waiting() -> None:
    callee = Callee()
    callee.gate = asyncio.Event()
    b = batcher(callee, window_s=5.0, max_batch=2)
    b.submit("a")
    b.submit("b")
    b.submit("c")
    await asyncio.sleep(0.01)
    assert callee.calls == [["a", "b"]]
    callee.gate.set()


async def test_failed_call_and_unanswered_requests_get_values_not_exceptions() -> None:
    async def broken(batch: list[str]) -> AsyncIterator[list[tuple[str, str]]]:
        yield [(batch[0], "ok")]
        raise ConnectionError("callee died")

    async def forgetful(batch: list[str]) -> AsyncIterator[list[tuple[str, str]]]:
        yield [(batch[0], "ok")]

    for send, expected in ((broken, "error:ConnectionError"), (forgetful, "missing")):
        b: KeyedBatcher[str, str] = KeyedBatcher(
            send, lambda r: r, on_error=lambda e: f"error:{type(e).__name__}", on_missing=lambda: "missing"
        )
        assert await asyncio.gather(b.submit("x"), b.submit("y")) == ["ok", expected]


async def test_a_plain_send_issues_its_call_in_the_tick_that_fills_the_batch() -> None:
    issued: list[tuple[list[str], str | None]] = []
    caller: contextvars.ContextVar[str] = contextvars.ContextVar("caller")

    def send(batch: list[str]) -> AsyncIterator[list[tuple[str, str]]]:
        issued.append((list(batch), caller.get(None)))  # "on the wire" before any await

        async def answers() -> AsyncIterator[list[tuple[str, str]]]:
            yield [(r, r.upper()) for r in batch]

        return answers()

    b: KeyedBatcher[str, str] = KeyedBatcher(
        send, lambda r: r, on_error=lambda e: "error", on_missing=lambda: "missing", window_s=5.0, max_batch=2
    )
    caller.set("request-b")  # a framework's per-request state (Ray Serve keeps one per request)
    first, second = b.submit("a"), b.submit("b")
    # issued synchronously by the submit that filled the batch, outside that caller's context
    assert issued == [(["a", "b"], None)]
    assert await asyncio.gather(first, second) == ["A", "B"]


async def test_a_send_that_raises_before_sending_fails_its_requests_as_values() -> None:
    def refuses(batch: list[str]) -> AsyncIterator[list[tuple[str, str]]]:
        raise ConnectionError("no route to the callee")

    b: KeyedBatcher[str, str] = KeyedBatcher(
        refuses, lambda r: r, on_error=lambda e: f"error:{type(e).__name__}", on_missing=lambda: "missing"
    )
    assert await asyncio.gather(b.submit("x"), b.submit("y")) == ["error:ConnectionError"] * 2
    assert await b.submit("z") == "error:ConnectionError"  # and the batcher still works afterwards


def test_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        batcher(Callee())
