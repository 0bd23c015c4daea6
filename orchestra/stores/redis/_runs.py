"""``RunStore`` in Redis: a run survives its coordinator, and any ingress can replay its events.

Layout (``<p>`` = the prefix, ``orchestra:run:``; tenants and run ids never contain ``/``):

- ``<p><tenant>/<run_id>``         hash: the record's fields (``status``, ``coordinator``, …)
- ``<p><tenant>/<run_id>:steps``   list: checkpoints, one ``TurnResult`` JSON per completed step
- ``<p><tenant>/<run_id>:events``  stream: one entry per flushed batch, entry id ``0-<its last event
  id>``, fields ``<event id>`` → ``RunEvent`` JSON in order; ``XADD MAXLEN ~ max_events`` keeps about
  that many entries (batches), the newest

Every key of a run expires ``ttl_s`` after its last write to it. A batch of writes (every run a process
recorded in the last few milliseconds) is one pipeline: one round trip. Reading "after id X" is ``XRANGE``
from ``(0-X``, waiting is ``XREAD BLOCK`` on the same id (a blocking read gets its own connection from
the pool, so it never holds up the writes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from orchestra.stores._runs import RunRecord, RunWrite, record_of
from orchestra.stores.redis._client import SOCKET_TIMEOUT_S, unavailable

__all__ = ["RedisRunStore"]

_MAX_BLOCK_S = SOCKET_TIMEOUT_S / 2  # a blocking read must answer within the client's socket timeout


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisRunStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        ttl_s: float = 3600.0,
        *,
        max_events: int = 10_000,
        prefix: str = "orchestra:run:",
        timeout_s: float | None = 2.0,
    ) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_s * 1000)
        self._max_events = max_events
        self._prefix = prefix
        self._timeout_s = timeout_s

    def _keys(self, tenant: str, run_id: str) -> tuple[str, str, str]:
        base = f"{self._prefix}{tenant}/{run_id}"
        return base, f"{base}:steps", f"{base}:events"

    async def write(self, writes: Sequence[RunWrite]) -> None:
        if not writes:
            return
        async with unavailable("run store", self._timeout_s), self._redis.pipeline(False) as pipe:
            for w in writes:
                record, steps, events = self._keys(w.tenant, w.run_id)
                fields = dict(w.fields)
                if w.events:
                    fields["last_event_id"] = str(w.events[-1][0])
                if fields:
                    pipe.hset(record, mapping=fields)  # type: ignore[arg-type]
                    pipe.pexpire(record, self._ttl_ms)
                if w.checkpoints:
                    pipe.rpush(steps, *w.checkpoints)
                    pipe.pexpire(steps, self._ttl_ms)
                if w.events:
                    # One entry per batch (fewer entries, one command); its id is its last event's.
                    entry = {str(i): data for i, data in w.events}
                    pipe.xadd(
                        events,
                        entry,  # type: ignore[arg-type]
                        id=f"0-{w.events[-1][0]}",
                        maxlen=self._max_events,
                        approximate=True,
                    )
                    pipe.pexpire(events, self._ttl_ms)
            await pipe.execute()

    async def get(self, tenant: str, run_id: str) -> RunRecord | None:
        record, steps, _ = self._keys(tenant, run_id)
        async with unavailable("run store", self._timeout_s), self._redis.pipeline(False) as pipe:
            pipe.hgetall(record)
            pipe.lrange(steps, 0, -1)
            found, listed = await pipe.execute()
        fields = {_text(k): _text(v) for k, v in found.items()}
        return record_of(tenant, run_id, fields, [_text(s) for s in listed])

    async def events(
        self, tenant: str, run_id: str, after: int = 0, *, wait_s: float = 0.0
    ) -> list[tuple[int, str]]:
        _, _, events = self._keys(tenant, run_id)
        async with unavailable("run store", self._timeout_s):
            entries: list[Any] = list(await self._redis.xrange(events, min=f"(0-{after}", max="+") or [])
        if not entries and wait_s > 0:
            block_ms = max(1, int(min(wait_s, _MAX_BLOCK_S) * 1000))
            timeout = None if self._timeout_s is None else self._timeout_s + block_ms / 1000
            async with unavailable("run store", timeout):
                reply: Any = await self._redis.xread({events: f"0-{after}"}, block=block_ms)
            entries = [e for _, stream_entries in reply for e in stream_entries] if reply else []
        out: list[tuple[int, str]] = []
        for _, entry in entries:
            for k, v in (entry or {}).items():
                event_id = int(_text(k))
                if event_id > after:  # the first entry may start before ``after``
                    out.append((event_id, _text(v)))
        return out
