"""``MemoryStore`` in Redis: one capped list per tenant, shared by every process."""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis

from orchestra.stores._memory import MemoryItem, pick

__all__ = ["RedisMemoryStore"]


class RedisMemoryStore:
    """Memory in Redis: one capped list per tenant (``<prefix><tenant>``), shared by every shard."""

    def __init__(
        self, redis: aioredis.Redis, *, prefix: str = "orchestra:memory:", max_items: int = 500
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max = max_items

    async def remember(self, tenant: str, session_id: str, message: str, response: str) -> None:
        item = MemoryItem(session_id=session_id, message=message, response=response, created_at=time.time())
        key = self._prefix + tenant
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, item.model_dump_json())
            pipe.ltrim(key, -self._max, -1)
            await pipe.execute()

    async def recall(
        self, tenant: str, query: str, *, exclude_session: str | None = None, k: int = 3
    ) -> list[MemoryItem]:
        raw = await self._redis.lrange(self._prefix + tenant, 0, -1)
        items = []
        for entry in raw:
            try:
                items.append(MemoryItem.model_validate(json.loads(entry)))
            except ValueError:
                continue  # a corrupt entry is skipped, never fatal to the chat
        return pick(items, query, exclude_session, k)
