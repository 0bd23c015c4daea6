"""``SessionStore`` in Redis: any process can take any session's next turn, and sessions survive restarts.

Layout (``<p>`` = the prefix, ``orchestra:session:``; tenants and session ids never contain ``/``):

- ``<p><tenant>/<session_id>:meta``  hash: ``created_at``, ``last_active``, ``swarm_type``
- ``<p><tenant>/<session_id>:turns`` list of ``SessionTurn`` JSON, oldest first, capped at ``max_turns``
- ``<p>active``                      sorted set: member ``<tenant>/<session_id>``, score ``last_active``

Both keys of a session expire ``ttl_s`` after its last turn (Redis drops an idle session by itself), and
``expire()`` ends idle sessions through the sorted set in one Lua script: a session is returned by
exactly one caller, whichever replica sweeps first (what ``session.ended`` needs). A turn is one
transaction (one round trip).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from orchestra.stores._sessions import Session, SessionTurn
from orchestra.stores.redis._client import unavailable

__all__ = ["RedisSessionStore"]

# KEYS[1] the active set; ARGV: cutoff, prefix, max sessions. Returns [member, meta..., turns...] groups.
_EXPIRE = """
local ended = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(ended) do
  redis.call('ZREM', KEYS[1], member)
  local meta = ARGV[2] .. member .. ':meta'
  local turns = ARGV[2] .. member .. ':turns'
  table.insert(out, member)
  table.insert(out, redis.call('HGETALL', meta))
  table.insert(out, redis.call('LRANGE', turns, 0, -1))
  redis.call('DEL', meta, turns)
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisSessionStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        ttl_s: float = 1800.0,
        *,
        max_turns: int = 200,
        prefix: str = "orchestra:session:",
        timeout_s: float | None = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._ttl = ttl_s
        self._max_turns = max_turns
        self._prefix = prefix
        self._active = prefix + "active"
        self._timeout_s = timeout_s
        self._clock = clock
        self._expire = redis.register_script(_EXPIRE)

    def _keys(self, tenant: str, session_id: str) -> tuple[str, str, str]:
        member = f"{tenant}/{session_id}"
        return member, f"{self._prefix}{member}:meta", f"{self._prefix}{member}:turns"

    @staticmethod
    def _session(tenant: str, session_id: str, meta: Any, turns: list[Any]) -> Session | None:
        fields = {_text(k): _text(v) for k, v in (meta.items() if isinstance(meta, dict) else _pairs(meta))}
        if "created_at" not in fields:
            return None
        return Session(
            session_id=session_id,
            tenant=tenant,
            swarm_type=fields.get("swarm_type") or None,
            created_at=float(fields["created_at"]),
            last_active=float(fields["last_active"]),
            turns=[SessionTurn.model_validate_json(_text(t)) for t in turns],
        )

    async def get(self, tenant: str, session_id: str, *, last: int | None = None) -> Session | None:
        _, meta, turns = self._keys(tenant, session_id)
        async with unavailable("session store", self._timeout_s), self._redis.pipeline(False) as pipe:
            pipe.hgetall(meta)
            if last != 0:
                pipe.lrange(turns, 0 if last is None else -last, -1)
            replies = await pipe.execute()
        found, listed = replies[0], replies[1] if last != 0 else []
        session = self._session(tenant, session_id, found, listed)
        if session is not None and session.last_active <= self._clock() - self._ttl:
            return None  # idle past its TTL: ended, whether or not a sweep has removed it yet
        return session

    async def append(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        member, meta, turns = self._keys(tenant, session_id)
        now = self._clock()
        ttl_ms = int(self._ttl * 1000) + 60_000  # a minute past the TTL, so the sweep sees it first
        async with unavailable("session store", self._timeout_s), self._redis.pipeline(True) as pipe:
            pipe.hsetnx(meta, "created_at", repr(now))
            pipe.hsetnx(meta, "swarm_type", turn.swarm_type)
            pipe.hset(meta, "last_active", repr(now))
            pipe.rpush(turns, turn.model_dump_json())
            pipe.ltrim(turns, -self._max_turns, -1)
            pipe.pexpire(meta, ttl_ms)
            pipe.pexpire(turns, ttl_ms)
            pipe.zadd(self._active, {member: now})
            await pipe.execute()

    async def reset(self, tenant: str, session_id: str) -> Session | None:
        session = await self.get(tenant, session_id)
        if session is None:
            return None
        _, _, turns = self._keys(tenant, session_id)
        async with unavailable("session store", self._timeout_s):
            await self._redis.delete(turns)
        return session.model_copy(update={"turns": []})

    async def end(self, tenant: str, session_id: str) -> Session | None:
        member, meta, turns = self._keys(tenant, session_id)
        async with unavailable("session store", self._timeout_s), self._redis.pipeline(True) as pipe:
            pipe.hgetall(meta)
            pipe.lrange(turns, 0, -1)
            pipe.delete(meta, turns)
            pipe.zrem(self._active, member)
            found, listed, _, removed = await pipe.execute()
        if not removed:
            return None  # never existed, or another caller (a sweep, a DELETE) ended it first
        return self._session(tenant, session_id, found, listed)

    async def expire(self) -> list[Session]:
        cutoff = self._clock() - self._ttl
        async with unavailable("session store", self._timeout_s):
            reply = await self._expire(keys=[self._active], args=[repr(cutoff), self._prefix, 1000])
        ended: list[Session] = []
        for i in range(0, len(reply), 3):
            tenant, _, session_id = _text(reply[i]).partition("/")
            session = self._session(tenant, session_id, reply[i + 1], reply[i + 2])
            if session is not None:
                ended.append(session)
        return ended

    async def count(self) -> int:
        async with unavailable("session store", self._timeout_s):
            return int(await self._redis.zcard(self._active))


def _pairs(flat: list[Any]) -> list[tuple[Any, Any]]:
    """HGETALL as a Lua script returns it: a flat list of field, value, field, value..."""
    return list(zip(flat[::2], flat[1::2], strict=True))
