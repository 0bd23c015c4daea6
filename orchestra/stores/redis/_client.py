"""The one way this package builds a Redis client, and turns a Redis failure into a 503."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from orchestra.errors import ConfigError, ServiceUnavailableError
from orchestra.settings import settings

__all__ = ["redis_client", "unavailable"]

log = logging.getLogger("orchestra.stores")

SOCKET_TIMEOUT_S = 2.0


def redis_client(url: str | None = None) -> aioredis.Redis:
    """A client for ``url`` (default ``ORCHESTRA_REDIS_URL``); connects lazily, on first use."""
    url = url or settings().redis_url
    if not url:
        raise ConfigError(
            "ORCHESTRA_REDIS_URL is not set: `orchestra serve` starts an embedded redis-server and sets it",
            details={"field": "ORCHESTRA_REDIS_URL", "reason": "missing"},
        )
    return aioredis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
    )


@asynccontextmanager
async def unavailable(what: str, timeout_s: float | None) -> AsyncIterator[None]:
    """Bound the Redis calls inside to ``timeout_s`` (the client's own retries included) and turn a
    failure into ``ServiceUnavailableError`` "<what> unavailable" (503, ``Retry-After: 1``)."""
    try:
        async with asyncio.timeout(timeout_s):
            yield
    except (RedisError, OSError, TimeoutError) as e:
        log.warning("%s unavailable: %r", what, e)
        raise ServiceUnavailableError(
            f"{what} unavailable", details={"backend": "redis"}, retry_after=1
        ) from None
