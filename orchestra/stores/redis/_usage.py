"""``UsageStore`` in Redis: one integer per key and UTC day, ``<prefix><key_id>:<YYYY-MM-DD>``, added to
with ``INCRBY`` (atomic across replicas and nodes) and expiring ``USAGE_KEEP_DAYS`` after the day began."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import redis.asyncio as aioredis

from orchestra.stores._usage import USAGE_KEEP_DAYS
from orchestra.stores.redis._client import unavailable

__all__ = ["RedisUsageStore"]


class RedisUsageStore:
    def __init__(
        self, redis: aioredis.Redis, *, prefix: str = "orchestra:usage:", timeout_s: float | None = 1.0
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout_s = timeout_s

    def _key(self, key_id: str, day: date) -> str:
        return f"{self._prefix}{key_id}:{day.isoformat()}"

    async def add(self, key_id: str, day: date, tokens: int) -> int:
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        expires = datetime.combine(day, time(), UTC) + timedelta(days=USAGE_KEEP_DAYS)
        async with (
            unavailable("usage store", self._timeout_s),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            pipe.incrby(self._key(key_id, day), tokens)
            pipe.expireat(self._key(key_id, day), int(expires.timestamp()))
            total, _ = await pipe.execute()
        return int(total)

    async def used(self, key_id: str, day: date) -> int:
        async with unavailable("usage store", self._timeout_s):
            raw = await self._redis.get(self._key(key_id, day))
        return 0 if raw is None else int(raw)

    async def used_many(self, key_ids: Sequence[str], day: date) -> list[int]:
        if not key_ids:
            return []
        async with unavailable("usage store", self._timeout_s):
            raw = await self._redis.mget([self._key(k, day) for k in key_ids])
        return [0 if v is None else int(v) for v in raw]
