"""``TranscriptStore`` in Redis: ``orchestra:transcript:<tenant>/<run_id>`` → the JSON, with a TTL."""

from __future__ import annotations

import redis.asyncio as aioredis

from orchestra.stores.redis._client import unavailable

__all__ = ["RedisTranscriptStore"]


class RedisTranscriptStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        ttl_s: float = 3600.0,
        *,
        prefix: str = "orchestra:transcript:",
        timeout_s: float | None = 2.0,
    ) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_s * 1000)
        self._prefix = prefix
        self._timeout_s = timeout_s

    async def put(self, tenant: str, run_id: str, transcript_json: str) -> None:
        async with unavailable("transcript store", self._timeout_s):
            await self._redis.set(f"{self._prefix}{tenant}/{run_id}", transcript_json, px=self._ttl_ms)

    async def get(self, tenant: str, run_id: str) -> str | None:
        async with unavailable("transcript store", self._timeout_s):
            raw = await self._redis.get(f"{self._prefix}{tenant}/{run_id}")
        return None if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
