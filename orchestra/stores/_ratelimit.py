"""Rate limits (api.md §6): a token bucket per API key shared by every replica, and a local one per
WebSocket connection.

The bucket (capacity ``C`` tokens, refilled continuously at ``r`` tokens/s, one token per request) is
stored in its exact equivalent GCRA form: one integer, the *theoretical arrival time* ``tat`` in
microseconds, the instant at which the bucket will be full again. With ``I = 1/r`` (the emission
interval, 60 000 µs for 1000/min) the bucket holds ``C - max(0, tat - now) / I`` tokens, and a request of
cost ``k`` is admitted iff ``max(tat, now) + k·I - C·I <= now``. Integer microseconds make the arithmetic
exact, so over any interval of length ``t`` at most ``C + t·r`` requests are admitted (1050 in a
saturated 60 s window for the spec's 50 + 1000/min).

``RedisTokenBucket`` runs that step in one Lua script (atomic: every replica and node shares it exactly),
reading the clock with Redis ``TIME`` so replicas with skewed clocks still agree, and gives the key a
``PX`` expiry at the moment the bucket is full again (an expired key *is* a full bucket, so idle keys
vanish). The script is sent with EVALSHA and loaded on ``NOSCRIPT`` (after a Redis restart or failover).
When Redis cannot be reached or does not answer within ``timeout_s``, ``acquire`` raises
``ServiceUnavailableError``: the ingress answers 503 (fail closed, the shared limit cannot be enforced).

Decision fields and headers:
- ``limit``: requests per minute (``X-RateLimit-Limit``, 1000);
- ``remaining``: whole tokens left after this request (``X-RateLimit-Remaining``);
- ``reset_s``: seconds until the bucket is full again (``X-RateLimit-Reset``, integer, rounded up; 0 means
  full now) - a delta in seconds, not an epoch time;
- ``retry_after_s``: for a refusal, seconds until ``cost`` tokens are available (``Retry-After``, integer,
  rounded up, at least 1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_LIMIT_PER_MINUTE",
    "DEFAULT_REFILL_PER_S",
    "WS_CAPACITY",
    "WS_LIMIT_PER_MINUTE",
    "WS_REFILL_PER_S",
    "LocalTokenBucket",
    "RateLimitDecision",
    "RateLimiter",
    "check_cost",
    "decision",
    "interval_us",
    "shape",
]

DEFAULT_CAPACITY = 50
DEFAULT_LIMIT_PER_MINUTE = 1000
DEFAULT_REFILL_PER_S = DEFAULT_LIMIT_PER_MINUTE / 60
WS_CAPACITY = 10
WS_LIMIT_PER_MINUTE = 100
WS_REFILL_PER_S = WS_LIMIT_PER_MINUTE / 60

_US = 1_000_000


@dataclass(frozen=True)
class RateLimitDecision:
    """The outcome of one ``acquire``; see the module docstring for the meaning of each field."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float | None


@runtime_checkable
class RateLimiter(Protocol):
    """A token bucket per key: ``LocalTokenBucket`` (one process) or ``RedisTokenBucket`` (shared)."""

    capacity: int
    limit: int

    async def acquire(
        self, key: str, cost: int = 1, *, limit_per_minute: int | None = None
    ) -> RateLimitDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them (the decision says whether it did).

        ``limit_per_minute``: this key's own rate (an API key's ``rpm``) instead of the limiter's; its
        bucket then holds ``min(capacity, limit_per_minute)`` (see ``shape``).
        Raises ``ServiceUnavailableError`` when a shared bucket cannot be reached.
        """
        ...


def shape(capacity: int, interval: int, limit: int, limit_per_minute: int | None) -> tuple[int, int, int]:
    """(capacity, interval µs, limit) of a bucket: the limiter's own, or a key's own rate. A key slower than
    the default burst gets a bucket of one minute's requests, so it never admits more than
    ``2 * limit_per_minute`` in a minute."""
    if limit_per_minute is None:
        return capacity, interval, limit
    if limit_per_minute < 1:
        raise ValueError("limit_per_minute must be at least 1")
    return min(capacity, limit_per_minute), interval_us(limit_per_minute / 60), limit_per_minute


def interval_us(refill_per_s: float) -> int:
    if not refill_per_s > 0:
        raise ValueError("refill_per_s must be positive")
    interval = round(_US / refill_per_s)
    if interval < 1:
        raise ValueError("refill_per_s is too high (more than one token per microsecond)")
    return interval


def check_cost(capacity: int, cost: int) -> None:
    if not 1 <= cost <= capacity:
        raise ValueError(f"cost must be between 1 and the capacity ({capacity})")


def _step(tat: int | None, now: int, interval: int, capacity: int, cost: int) -> tuple[bool, int]:
    """One GCRA step: (admitted, tat to keep). Mirrors the Lua script line for line."""
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    if new_tat - capacity * interval > now:
        return False, base
    return True, new_tat


def decision(
    allowed: bool, tat: int, now: int, *, interval: int, capacity: int, cost: int, limit: int
) -> RateLimitDecision:
    backlog = max(0, tat - now)  # µs until full
    remaining = max(0, (capacity * interval - backlog) // interval)
    retry_after = None if allowed else max(0, backlog - (capacity - cost) * interval) / _US
    return RateLimitDecision(
        allowed=allowed, limit=limit, remaining=remaining, reset_s=backlog / _US, retry_after_s=retry_after
    )


class LocalTokenBucket:
    """The same bucket in process memory: per WebSocket connection (capacity 10, 100/min) and for tests.

    ``clock`` returns seconds (default ``time.monotonic``). Keys whose bucket is full are forgotten
    once more than ``max_keys`` are held.
    """

    def __init__(
        self,
        capacity: int,
        refill_per_s: float,
        *,
        limit_per_minute: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.limit = limit_per_minute if limit_per_minute is not None else round(refill_per_s * 60)
        self._interval = interval_us(refill_per_s)
        self._clock = clock
        self._max_keys = max_keys
        self._tat: dict[str, int] = {}

    def acquire_now(
        self, key: str = "", cost: int = 1, *, limit_per_minute: int | None = None
    ) -> RateLimitDecision:
        capacity, interval, limit = shape(self.capacity, self._interval, self.limit, limit_per_minute)
        check_cost(capacity, cost)
        now = round(self._clock() * _US)
        allowed, tat = _step(self._tat.get(key), now, interval, capacity, cost)
        self._tat[key] = tat
        if len(self._tat) > self._max_keys:
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        return decision(allowed, tat, now, interval=interval, capacity=capacity, cost=cost, limit=limit)

    async def acquire(
        self, key: str = "", cost: int = 1, *, limit_per_minute: int | None = None
    ) -> RateLimitDecision:
        return self.acquire_now(key, cost, limit_per_minute=limit_per_minute)
