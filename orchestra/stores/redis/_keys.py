"""``KeyStore`` in Redis, shared by every replica and the ``orchestra keys`` CLI:

- ``<prefix>:records`` hash: key id → record JSON;
- ``<prefix>:index`` hash: key hash → key id (the current hash, and a rotated key's previous one during
  its grace period);
- ``<prefix>:last_used`` hash: key id → ISO time it was last noted used.

A lookup by hash is one round trip (a read-only Lua script follows the index). The records of the
earlier layout (``orchestra:apikeys:*``, unkeyed sha256) are not read: bootstrap keys register again.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import ValidationError as PydanticValidationError

from orchestra.stores._keys import ApiKeyRecord
from orchestra.stores.redis._client import unavailable

__all__ = ["RedisKeyStore"]

log = logging.getLogger("orchestra.stores")

# KEYS[1] index, KEYS[2] records; ARGV[1] the hash.
_GET_SCRIPT = """
local key_id = redis.call('HGET', KEYS[1], ARGV[1])
if not key_id then return false end
return redis.call('HGET', KEYS[2], key_id)
"""


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
        self, redis: aioredis.Redis, *, prefix: str = "orchestra:keys", timeout_s: float | None = 1.0
    ) -> None:
        """``timeout_s`` bounds each operation (the client's own retries included) before a 503."""
        self._redis = redis
        self._records = f"{prefix}:records"
        self._index = f"{prefix}:index"
        self._used = f"{prefix}:last_used"
        self._timeout_s = timeout_s
        self._get = redis.register_script(_GET_SCRIPT)

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._get(keys=[self._index, self._records], args=[key_hash])
        return None if raw is None else _decode(raw)

    async def by_id(self, key_id: str) -> ApiKeyRecord | None:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._redis.hget(self._records, key_id)
        return None if raw is None else _decode(raw)

    async def put(self, record: ApiKeyRecord, *, unindex: Collection[str] = ()) -> None:
        async with (
            unavailable("API key store", self._timeout_s),
            self._redis.pipeline(transaction=True) as pipe,
        ):
            stale = [h for h in unindex if h not in record.hashes()]
            if stale:
                pipe.hdel(self._index, *stale)
            pipe.hset(self._records, record.key_id, record.model_dump_json())
            pipe.hset(self._index, mapping=dict.fromkeys(record.hashes(), record.key_id))
            await pipe.execute()

    async def all(self) -> builtins.list[ApiKeyRecord]:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._redis.hvals(self._records)
        return [r for r in map(_decode, raw) if r is not None]

    async def touch(self, key_id: str, at: datetime) -> None:
        async with unavailable("API key store", self._timeout_s):
            await self._redis.hset(self._used, key_id, at.isoformat())

    async def last_used(self) -> dict[str, datetime]:
        async with unavailable("API key store", self._timeout_s):
            raw = await self._redis.hgetall(self._used)
        found: dict[str, datetime] = {}
        for key_id, when in raw.items():
            try:
                found[_text(key_id)] = datetime.fromisoformat(_text(when))
            except ValueError:
                continue
        return found
