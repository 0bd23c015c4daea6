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

import asyncio
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestra.errors import ConfigError, RateLimitError, ServiceUnavailableError

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
    "RedisTokenBucket",
    "limits_from_env",
    "rate_limit_error",
    "rate_limit_headers",
]

DEFAULT_CAPACITY = 50
DEFAULT_LIMIT_PER_MINUTE = 1000
DEFAULT_REFILL_PER_S = DEFAULT_LIMIT_PER_MINUTE / 60
WS_CAPACITY = 10
WS_LIMIT_PER_MINUTE = 100
WS_REFILL_PER_S = WS_LIMIT_PER_MINUTE / 60

_US = 1_000_000


def limits_from_env(environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The per-key HTTP limit as ``(requests per minute, burst)``.

    ``ORCHESTRA_RATE_LIMIT_PER_MINUTE`` / ``ORCHESTRA_RATE_LIMIT_BURST`` override the spec's 1000 / 50
    (operators with other contracts, and benchmarks that must not be throttled). A bad value is a
    ``ConfigError`` at replica start-up, never a silently different limit.
    """
    env = os.environ if environ is None else environ
    values = []
    for name, default in (
        ("ORCHESTRA_RATE_LIMIT_PER_MINUTE", DEFAULT_LIMIT_PER_MINUTE),
        ("ORCHESTRA_RATE_LIMIT_BURST", DEFAULT_CAPACITY),
    ):
        raw = env.get(name, "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer", details={"field": name}) from None
        if value < 1:
            raise ConfigError(f"{name}={raw!r} must be at least 1", details={"field": name})
        values.append(value)
    per_minute, burst = values
    if per_minute > 60 * _US:  # the GCRA interval is whole microseconds
        raise ConfigError(
            "ORCHESTRA_RATE_LIMIT_PER_MINUTE is too high (at most 60000000)",
            details={"field": "ORCHESTRA_RATE_LIMIT_PER_MINUTE"},
        )
    return per_minute, burst


@dataclass(frozen=True)
class RateLimitDecision:
    """The outcome of one ``acquire``; see the module docstring for the meaning of each field."""

    allowed: bool
    limit: int
    remaining: int
    reset_s: float
    retry_after_s: float | None


class RateLimiter(Protocol):
    """A token bucket per key: ``LocalTokenBucket`` (one process) or ``RedisTokenBucket`` (shared)."""

    capacity: int
    limit: int

    async def acquire(self, key: str, cost: int = 1) -> RateLimitDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them (the decision says whether it did).

        Raises ``ServiceUnavailableError`` when a shared bucket cannot be reached.
        """
        ...


def _interval_us(refill_per_s: float) -> int:
    if not refill_per_s > 0:
        raise ValueError("refill_per_s must be positive")
    interval = round(_US / refill_per_s)
    if interval < 1:
        raise ValueError("refill_per_s is too high (more than one token per microsecond)")
    return interval


def _check(capacity: int, cost: int) -> None:
    if not 1 <= cost <= capacity:
        raise ValueError(f"cost must be between 1 and the capacity ({capacity})")


def _step(tat: int | None, now: int, interval: int, capacity: int, cost: int) -> tuple[bool, int]:
    """One GCRA step: (admitted, tat to keep). Mirrors the Lua script line for line."""
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    if new_tat - capacity * interval > now:
        return False, base
    return True, new_tat


def _decision(
    allowed: bool, tat: int, now: int, *, interval: int, capacity: int, cost: int, limit: int
) -> RateLimitDecision:
    backlog = max(0, tat - now)  # µs until full
    remaining = max(0, (capacity * interval - backlog) // interval)
    retry_after = None if allowed else max(0, backlog - (capacity - cost) * interval) / _US
    return RateLimitDecision(
        allowed=allowed, limit=limit, remaining=remaining, reset_s=backlog / _US, retry_after_s=retry_after
    )


# KEYS[1] bucket; ARGV: interval µs, capacity, cost, now µs override ('' = Redis TIME; tests only).
# Numbers leave the script as strings: Redis would truncate Lua numbers, and %d keeps all 16 digits.
_SCRIPT = """
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[4] ~= '' then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + cost * interval
if new_tat - capacity * interval > now then
  return {0, string.format('%d', tat), string.format('%d', now)}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.floor((new_tat - now) / 1000) + 1000)
return {1, string.format('%d', new_tat), string.format('%d', now)}
"""


class RedisTokenBucket:
    """The per-key bucket shared through Redis; ``acquire`` is one atomic script call."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        capacity: int = DEFAULT_CAPACITY,
        refill_per_s: float = DEFAULT_REFILL_PER_S,
        limit_per_minute: int = DEFAULT_LIMIT_PER_MINUTE,
        prefix: str = "orchestra:rl:",
        timeout_s: float | None = 1.0,
        now_us: Callable[[], int] | None = None,
    ) -> None:
        """``now_us`` replaces Redis ``TIME`` (integer microseconds); for tests only, never in production."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._redis = redis
        self.capacity = capacity
        self.limit = limit_per_minute
        self._interval = _interval_us(refill_per_s)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._now_us = now_us
        self._script = redis.register_script(_SCRIPT)

    async def acquire(self, key: str, cost: int = 1) -> RateLimitDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them; 503 error if Redis is down."""
        _check(self.capacity, cost)
        override = "" if self._now_us is None else str(self._now_us())
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await self._script(
                    keys=[self._prefix + key], args=[self._interval, self.capacity, cost, override]
                )
        except (RedisError, OSError, TimeoutError) as e:
            raise ServiceUnavailableError(
                "rate limiter unavailable", details={"backend": "redis"}, retry_after=1
            ) from e
        allowed, tat, now = (int(v) for v in reply)
        return _decision(
            allowed == 1,
            tat,
            now,
            interval=self._interval,
            capacity=self.capacity,
            cost=cost,
            limit=self.limit,
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
        self._interval = _interval_us(refill_per_s)
        self._clock = clock
        self._max_keys = max_keys
        self._tat: dict[str, int] = {}

    def acquire_now(self, key: str = "", cost: int = 1) -> RateLimitDecision:
        _check(self.capacity, cost)
        now = round(self._clock() * _US)
        allowed, tat = _step(self._tat.get(key), now, self._interval, self.capacity, cost)
        self._tat[key] = tat
        if len(self._tat) > self._max_keys:
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        return _decision(
            allowed, tat, now, interval=self._interval, capacity=self.capacity, cost=cost, limit=self.limit
        )

    async def acquire(self, key: str = "", cost: int = 1) -> RateLimitDecision:
        return self.acquire_now(key, cost)


def rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    """``X-RateLimit-*`` for every authenticated response, plus ``Retry-After`` on a refusal (429)."""
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s or 0)))
    return headers


def rate_limit_error(decision: RateLimitDecision) -> RateLimitError:
    """The 429 for a refusal; ``_api.error_headers`` turns its ``retry_after`` into ``Retry-After``."""
    wait = decision.retry_after_s or 0.0
    return RateLimitError(
        f"rate limit exceeded: {decision.limit} requests per minute; retry in {max(1, math.ceil(wait))} s",
        details={"limit": decision.limit, "remaining": decision.remaining, "retry_after_s": wait},
        retry_after=wait,
    )
