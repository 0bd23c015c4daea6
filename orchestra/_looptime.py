"""Timeouts that measure what is awaited, not how busy this process is.

``asyncio.timeout(t)`` fires after ``t`` seconds of wall time; on a loop that is running late (a burst of
requests, a GC pause, a starved CPU) the awaited answer may be sitting unread in a socket when it fires.
``within(t)`` fires after ``t`` seconds *minus the time the loop ran late* meanwhile (sampled every
``LAG_TICK_S``), up to ``MAX_STRETCH`` times ``t``: a timeout then means the other side did not answer.
Used for store calls (``orchestra.stores.redis``) and for a client's request body (``serving._guard``).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["LAG_TICK_S", "MAX_STRETCH", "within"]

LAG_TICK_S = 0.02
# However the loop lags, a wait is abandoned after this many times its bound.
MAX_STRETCH = 10.0


class _LoopLag:
    """The total time (s) one event loop has run late: a tick every ``LAG_TICK_S`` that notes how late it
    came. A busy loop is late all the time, so its lag grows about as fast as the clock does."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._total = 0.0
        self._due = loop.time() + LAG_TICK_S
        loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        self._total = self.total()
        self._due = self._loop.time() + LAG_TICK_S
        self._loop.call_at(self._due, self._tick)

    def total(self) -> float:
        return self._total + max(0.0, self._loop.time() - self._due)  # counts a stall still going on


_lags: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLag] = weakref.WeakKeyDictionary()


class _Deadline:
    """Expires ``timeout`` once ``timeout_s`` passed on the clock *minus the loop's lag* meanwhile."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: asyncio.Timeout, timeout_s: float) -> None:
        lag = _lags.get(loop)
        if lag is None:
            lag = _lags[loop] = _LoopLag(loop)
        self._loop, self._timeout, self._lag, self._timeout_s = loop, timeout, lag, timeout_s
        self._started, self._lag_at_start = loop.time(), lag.total()
        self._handle = loop.call_at(self._started + timeout_s, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        store_time = (now - self._started) - (self._lag.total() - self._lag_at_start)
        if store_time < self._timeout_s and now - self._started < self._timeout_s * MAX_STRETCH:
            self._handle = self._loop.call_at(now + self._timeout_s - store_time, self._check)
        else:
            self._timeout.reschedule(now)  # fires now: cancels the call, raised as TimeoutError on exit

    def cancel(self) -> None:
        self._handle.cancel()


@asynccontextmanager
async def within(timeout_s: float | None) -> AsyncIterator[None]:
    """Like ``asyncio.timeout(timeout_s)`` (``TimeoutError`` on expiry; None: no bound), counting only
    the time the loop was on time."""
    deadline: _Deadline | None = None
    async with asyncio.timeout(None) as timeout:
        if timeout_s is not None:
            deadline = _Deadline(asyncio.get_running_loop(), timeout, timeout_s)
        try:
            yield
        finally:
            if deadline is not None:
                deadline.cancel()  # before the timeout leaves ENTERED: no late reschedule
