"""``RateLimiter`` in Redis: the GCRA step of ``orchestra.stores._ratelimit`` in one atomic Lua script,
so a limit is exact across every replica and node (the script reads Redis ``TIME``: skewed replica clocks
still agree). The key expires when its bucket is full again, so idle keys vanish.

A refusal is remembered in the replica until the moment the bucket has the tokens again: until then the
answer can only be "no" (other replicas only take tokens), so a key hammering an empty bucket gets its
429s without a store round trip, and cannot crowd the store out for other keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from orchestra.stores._ratelimit import (
    DEFAULT_CAPACITY,
    DEFAULT_LIMIT_PER_MINUTE,
    DEFAULT_REFILL_PER_S,
    RateLimitDecision,
    check_cost,
    decision,
    interval_us,
    shape,
)
from orchestra.stores.redis._client import unavailable

__all__ = ["RedisTokenBucket"]

# KEYS[1] bucket; ARGV: interval µs, capacity, cost, now µs override ('' = Redis TIME; tests only).
# Numbers leave the script as strings: Redis would truncate Lua numbers, and %d keeps all 16 digits.
# Refusals remembered per replica (the keys over their limit right now).
MAX_REMEMBERED = 10_000

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
        self._interval = interval_us(refill_per_s)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._now_us = now_us
        self._script = redis.register_script(_SCRIPT)
        # bucket key -> (monotonic s until which `cost` tokens cannot be there, that cost, the refusal)
        self._refused: dict[str, tuple[float, int, RateLimitDecision]] = {}

    def _known_refusal(self, key: str, cost: int) -> RateLimitDecision | None:
        known = self._refused.get(key)
        if known is None:
            return None
        until, refused_cost, refusal = known
        wait = until - time.monotonic()
        if wait <= 0 or cost < refused_cost:
            if wait <= 0:
                del self._refused[key]
            return None
        elapsed = (refusal.retry_after_s or 0.0) - wait
        return RateLimitDecision(
            allowed=False,
            limit=refusal.limit,
            remaining=0,
            reset_s=max(0.0, refusal.reset_s - elapsed),
            retry_after_s=wait,
        )

    def _remember(self, key: str, cost: int, refusal: RateLimitDecision) -> None:
        now = time.monotonic()
        if len(self._refused) >= MAX_REMEMBERED:
            self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
            if len(self._refused) >= MAX_REMEMBERED:
                return  # many keys over their limit at once: they pay their round trip
        self._refused[key] = (now + (refusal.retry_after_s or 0.0), cost, refusal)

    async def acquire(
        self, key: str, cost: int = 1, *, limit_per_minute: int | None = None
    ) -> RateLimitDecision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them (at the key's own
        ``limit_per_minute`` when given: the script takes the interval per call); 503 if Redis is down."""
        capacity, interval, limit = shape(self.capacity, self._interval, self.limit, limit_per_minute)
        check_cost(capacity, cost)
        if self._now_us is None and (known := self._known_refusal(key, cost)) is not None:
            await asyncio.sleep(0)  # still a suspension point: a caller looping on refusals yields
            return known
        override = "" if self._now_us is None else str(self._now_us())
        async with unavailable("rate limiter", self._timeout_s):
            reply = await self._script(keys=[self._prefix + key], args=[interval, capacity, cost, override])
        allowed, tat, now = (int(v) for v in reply)
        result = decision(
            allowed == 1, tat, now, interval=interval, capacity=capacity, cost=cost, limit=limit
        )
        if not result.allowed and self._now_us is None:
            self._remember(key, cost, result)
        return result
