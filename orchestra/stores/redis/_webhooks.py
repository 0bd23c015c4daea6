"""``WebhookStore`` in Redis: subscriptions, the durable delivery queue and recent attempts.

Layout (``<p>`` = the prefix, ``orchestra:webhook:``):

- ``<p>sub:<id>``          hash: ``tenant``, ``url``, ``events`` (comma-separated), ``secret``,
                           ``created_at``, ``disabled`` (the reason; empty while active)
- ``<p>tenant:<tenant>``   set of the tenant's subscription ids
- ``<p>queue``             sorted set: delivery id, score = when it is due (or when its lease ends)
- ``<p>dlv:<delivery id>`` hash: ``sub``, ``tenant``, ``type``, ``body``, ``attempts``
- ``<p>attempts:<id>``     list of ``DeliveryAttempt`` JSON, newest first, capped

Enqueueing is one script (the fan-out over the tenant's subscriptions happens in Redis: one round trip
per event, a no-op for a tenant without subscriptions); claiming is one script that leases due
deliveries by moving their score to the lease's end, so any number of dispatchers share the queue and a
dead one's deliveries come due again by themselves.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr

from orchestra.stores._webhooks import ATTEMPTS_KEPT, Delivery, DeliveryAttempt, Subscription
from orchestra.stores.redis._client import unavailable

__all__ = ["RedisWebhookStore"]

# KEYS[1] the tenant's set, KEYS[2] the queue; ARGV: prefix, tenant, type, event hex, body, due, only.
_ENQUEUE = """
local ids = {}
local subs
if ARGV[7] ~= '' then subs = {ARGV[7]} else subs = redis.call('SMEMBERS', KEYS[1]) end
for _, sid in ipairs(subs) do
  local f = redis.call('HMGET', ARGV[1] .. 'sub:' .. sid, 'tenant', 'events', 'disabled')
  local wanted = ARGV[7] ~= '' or (f[2] and string.find(',' .. f[2] .. ',', ',' .. ARGV[3] .. ',', 1, true))
  if f[1] == ARGV[2] and (not f[3] or f[3] == '') and wanted then
    local did = 'dlv_' .. ARGV[4] .. string.sub(sid, 4)
    redis.call('HSET', ARGV[1] .. 'dlv:' .. did, 'sub', sid, 'tenant', ARGV[2], 'type', ARGV[3],
      'body', ARGV[5], 'attempts', 0)
    redis.call('ZADD', KEYS[2], ARGV[6], did)
    table.insert(ids, did)
  end
end
return ids
"""

# KEYS[1] the queue; ARGV: prefix, now, lease end, limit. Returns one list per claimed delivery.
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, did in ipairs(due) do
  local dkey = ARGV[1] .. 'dlv:' .. did
  local d = redis.call('HMGET', dkey, 'sub', 'tenant', 'type', 'body')
  local s = {false, false, false, false}
  if d[1] then s = redis.call('HMGET', ARGV[1] .. 'sub:' .. d[1], 'tenant', 'url', 'secret', 'disabled') end
  if not d[1] or not s[2] or s[1] ~= d[2] or (s[4] and s[4] ~= '') then
    redis.call('ZREM', KEYS[1], did)
    redis.call('DEL', dkey)
  else
    redis.call('ZADD', KEYS[1], ARGV[3], did)
    local n = redis.call('HINCRBY', dkey, 'attempts', 1)
    table.insert(out, {did, d[1], d[2], d[3], d[4], s[2], s[3], n})
  end
end
return out
"""

# KEYS: the subscription's hash, the tenant's set, its attempts; ARGV: tenant, id. 1 when removed.
_REMOVE = """
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""

# KEYS[1] the subscription's hash; ARGV[1] the reason. Only an existing one (HSET would recreate it).
_DISABLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'disabled', ARGV[1]) end
return 0
"""

# KEYS: the queue, the delivery's hash, the subscription's hash, its attempts;
# ARGV: delivery id, retry time ('' = done), the attempt's JSON, attempts kept.
_SETTLE = """
if ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
else
  redis.call('ZADD', KEYS[1], 'XX', ARGV[2], ARGV[1])  -- XX: never revive a delivery that was dropped
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('LPUSH', KEYS[4], ARGV[3])
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
end
return 0
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisWebhookStore:
    def __init__(
        self, redis: aioredis.Redis, *, prefix: str = "orchestra:webhook:", timeout_s: float | None = 2.0
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._queue = prefix + "queue"
        self._timeout_s = timeout_s
        self._enqueue = redis.register_script(_ENQUEUE)
        self._claim = redis.register_script(_CLAIM)
        self._remove = redis.register_script(_REMOVE)
        self._disable = redis.register_script(_DISABLE)
        self._settle = redis.register_script(_SETTLE)

    def _sub(self, subscription_id: str) -> str:
        return f"{self._prefix}sub:{subscription_id}"

    def _tenant(self, tenant: str) -> str:
        return f"{self._prefix}tenant:{tenant}"

    def _attempts(self, subscription_id: str) -> str:
        return f"{self._prefix}attempts:{subscription_id}"

    @staticmethod
    def _subscription(subscription_id: str, raw: dict[Any, Any]) -> Subscription | None:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "tenant" not in fields:
            return None
        return Subscription(
            id=subscription_id,
            tenant=fields["tenant"],
            url=fields["url"],
            events=tuple(e for e in fields["events"].split(",") if e),
            secret=SecretStr(fields["secret"]),
            created_at=float(fields["created_at"]),
            disabled_reason=fields.get("disabled") or None,
        )

    async def add_subscription(self, subscription: Subscription) -> None:
        mapping: dict[Any, Any] = {
            "tenant": subscription.tenant,
            "url": subscription.url,
            "events": ",".join(subscription.events),
            "secret": subscription.secret.get_secret_value(),
            "created_at": repr(subscription.created_at),
            "disabled": subscription.disabled_reason or "",
        }
        async with unavailable("webhook store", self._timeout_s), self._redis.pipeline(True) as pipe:
            pipe.hset(self._sub(subscription.id), mapping=mapping)
            pipe.sadd(self._tenant(subscription.tenant), subscription.id)
            await pipe.execute()

    async def subscriptions(self, tenant: str) -> list[Subscription]:
        async with unavailable("webhook store", self._timeout_s):
            ids = sorted(_text(i) for i in await self._redis.smembers(self._tenant(tenant)))
            async with self._redis.pipeline(False) as pipe:
                for i in ids:
                    pipe.hgetall(self._sub(i))
                raws = await pipe.execute()
        found = [self._subscription(i, raw) for i, raw in zip(ids, raws, strict=True)]
        mine = [s for s in found if s is not None and s.tenant == tenant]
        return sorted(mine, key=lambda s: (s.created_at, s.id))

    async def subscription(self, tenant: str, subscription_id: str) -> Subscription | None:
        async with unavailable("webhook store", self._timeout_s):
            raw = await self._redis.hgetall(self._sub(subscription_id))
        found = self._subscription(subscription_id, raw)
        return found if found is not None and found.tenant == tenant else None

    async def remove_subscription(self, tenant: str, subscription_id: str) -> bool:
        keys = [self._sub(subscription_id), self._tenant(tenant), self._attempts(subscription_id)]
        async with unavailable("webhook store", self._timeout_s):
            return bool(await self._remove(keys=keys, args=[tenant, subscription_id]))

    async def disable_subscription(self, subscription_id: str, reason: str) -> None:
        async with unavailable("webhook store", self._timeout_s):
            await self._disable(keys=[self._sub(subscription_id)], args=[reason])

    async def enqueue(
        self, tenant: str, event_type: str, event_id: str, body: str, *, due: float, only: str | None = None
    ) -> list[str]:
        args = [
            self._prefix,
            tenant,
            event_type,
            event_id.removeprefix("evt_")[:16],
            body,
            repr(due),
            only or "",
        ]
        async with unavailable("webhook store", self._timeout_s):
            ids = await self._enqueue(keys=[self._tenant(tenant), self._queue], args=args)
        return [_text(i) for i in ids]

    async def claim(self, now: float, lease_until: float, limit: int) -> list[Delivery]:
        async with unavailable("webhook store", self._timeout_s):
            rows = await self._claim(
                keys=[self._queue], args=[self._prefix, repr(now), repr(lease_until), limit]
            )
        return [
            Delivery(
                id=_text(did),
                subscription_id=_text(sub),
                tenant=_text(tenant),
                event_type=_text(kind),
                body=_text(body),
                url=_text(url),
                secret=SecretStr(_text(secret)),
                attempt=int(n),
            )
            for did, sub, tenant, kind, body, url, secret, n in rows
        ]

    async def settle(self, delivery: Delivery, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        keys = [
            self._queue,
            f"{self._prefix}dlv:{delivery.id}",
            self._sub(delivery.subscription_id),
            self._attempts(delivery.subscription_id),
        ]
        args = [
            delivery.id,
            "" if retry_at is None else repr(retry_at),
            attempt.model_dump_json(),
            str(ATTEMPTS_KEPT),
        ]
        async with unavailable("webhook store", self._timeout_s):
            await self._settle(keys=keys, args=args)

    async def attempts(self, subscription_id: str, limit: int = ATTEMPTS_KEPT) -> list[DeliveryAttempt]:
        async with unavailable("webhook store", self._timeout_s):
            raw = await self._redis.lrange(self._attempts(subscription_id), 0, limit - 1)
        return [DeliveryAttempt.model_validate_json(_text(r)) for r in raw]

    async def pending(self) -> int:
        async with unavailable("webhook store", self._timeout_s):
            return int(await self._redis.zcard(self._queue))
