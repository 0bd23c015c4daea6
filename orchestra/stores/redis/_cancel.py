"""Cancellation across processes: whoever receives a cancel (an ingress replica whose client left, a
WebSocket ``cancel``) publishes it; every coordinator listens and cancels the run if it runs it.

Channel ``orchestra:cancel``, message ``<tenant>/<run_id>`` (tenants never contain ``/``), so a run can
only be cancelled by its own tenant.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestra.stores.redis._client import unavailable

__all__ = ["CANCEL_CHANNEL", "listen_cancels", "publish_cancel"]

log = logging.getLogger("orchestra.stores")

CANCEL_CHANNEL = "orchestra:cancel"


async def publish_cancel(redis: aioredis.Redis, tenant: str, run_id: str, timeout_s: float = 1.0) -> int:
    """Ask every coordinator to cancel ``run_id`` of ``tenant``; returns how many listen."""
    async with unavailable("cancellation channel", timeout_s):
        return int(await redis.publish(CANCEL_CHANNEL, f"{tenant}/{run_id}"))


async def listen_cancels(
    redis: aioredis.Redis, cancel: Callable[[str, str], Awaitable[bool]], *, retry_s: float = 1.0
) -> None:
    """Call ``cancel(tenant, run_id)`` for every published cancel, until cancelled; a lost connection to
    the store is retried every ``retry_s`` (a cancel published meanwhile is lost: the run ends at its
    deadline)."""
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(CANCEL_CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    data = message["data"]
                    tenant, _, run_id = (data.decode() if isinstance(data, bytes) else str(data)).partition(
                        "/"
                    )
                    if tenant and run_id:
                        await cancel(tenant, run_id)
        except (RedisError, OSError) as e:
            log.warning("cancel listener lost the store (%r); retrying in %s s", e, retry_s)
            await asyncio.sleep(retry_s)
