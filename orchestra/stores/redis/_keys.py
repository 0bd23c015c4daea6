"""``KeyStore`` in Redis: two hashes, ``<prefix>:by_hash`` (key hash → record JSON) and ``<prefix>:by_id``
(key id → key hash), shared by every replica."""

from __future__ import annotations

import builtins
import logging
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError as PydanticValidationError

from orchestra.stores._keys import ApiKeyRecord
from orchestra.stores.redis._client import unavailable

__all__ = ["RedisKeyStore"]

log = logging.getLogger("orchestra.stores")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: Any) -> ApiKeyRecord | None:
    try:
        return ApiKeyRecord.model_validate_json(_text(raw))
    except (PydanticValidationError, UnicodeDecodeError):
        log.error("ignoring a corrupt API key record")  # never authenticates; listing skips it
        return None


class RedisKeyStore:
    def __init__(
        self, redis: aioredis.Redis, *, prefix: str = "orchestra:apikeys", timeout_s: float | None = 1.0
    ) -> None:
        """``timeout_s`` bounds each operation (the client's own retries included) before a 503."""
        self._redis = redis
        self._by_hash = f"{prefix}:by_hash"
        self._by_id = f"{prefix}:by_id"
        self._timeout_s = timeout_s

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._redis.hget(self._by_hash, key_hash)
        return None if raw is None else _decode(raw)

    async def hash_for_id(self, key_id: str) -> str | None:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._redis.hget(self._by_id, key_id)
        return None if raw is None else _text(raw)

    async def put(self, record: ApiKeyRecord) -> None:
        async with (
            unavailable("API key store", self._timeout_s),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            pipe.hset(self._by_hash, record.key_hash, record.model_dump_json())
            pipe.hset(self._by_id, record.key_id, record.key_hash)
            await pipe.execute()

    async def all(self) -> builtins.list[ApiKeyRecord]:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._redis.hvals(self._by_hash)
        return [r for r in map(_decode, raw) if r is not None]
