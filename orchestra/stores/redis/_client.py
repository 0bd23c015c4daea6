"""The one way this package builds a Redis client, and turns a Redis failure into a 503.

Two things keep a busy process from blaming Redis for its own trouble:

- A burst of calls queues for one of ``MAX_CONNECTIONS`` pooled connections instead of failing when
  they are all busy (the default pool raises ``MaxConnectionsError``).
- A pooled connection whose server restarted is dead without knowing it; its first command fails with
  ``ConnectionError`` before the server saw it. The client retries connection errors (a few times, tens
  of milliseconds apart) on a fresh connection, so a restart costs no request beyond the outage itself.
- The bound on a call (``unavailable``) measures the store, not the event loop
  (``orchestra._looptime.within``): time the loop spent running late does not count, so a timeout means
  Redis did not answer, not that this process was busy. Overload of the process itself is shed before
  any store call (the serving layer's admission limit), not by whichever call's timer fires first.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from orchestra._looptime import within
from orchestra.errors import ConfigError, ServiceUnavailableError
from orchestra.settings import settings

__all__ = ["redis_client", "unavailable"]

log = logging.getLogger("orchestra.stores")

SOCKET_TIMEOUT_S = 2.0
# Connections per process; more concurrent calls queue for one instead of failing.
MAX_CONNECTIONS = 64
# A connection refused or reset is retried this many times, 20-250 ms apart (about 0.5 s in all).
CONNECTION_RETRIES = 3


def redis_client(url: str | None = None) -> aioredis.Redis:
    """A client for ``url`` (default ``ORCHESTRA_REDIS_URL``); connects lazily, on first use."""
    url = url or settings().redis_url
    if not url:
        raise ConfigError(
            "ORCHESTRA_REDIS_URL is not set: `orchestra serve` starts an embedded redis-server and sets it",
            details={"field": "ORCHESTRA_REDIS_URL", "reason": "missing"},
        )
    # A burst waits for a pooled connection (Redis answers in microseconds, the queue drains fast) rather
    # than failing once MAX_CONNECTIONS are busy, as the default pool does. Only connection errors are
    # retried: a timed-out command may have run, and must not run twice.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=None,  # the wait is bounded by the caller's `unavailable`
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry_on_error=[RedisConnectionError],
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), CONNECTION_RETRIES),
    )
    return aioredis.Redis.from_pool(pool)


@asynccontextmanager
async def unavailable(what: str, timeout_s: float | None) -> AsyncIterator[None]:
    """Bound the Redis calls inside to ``timeout_s`` of the store's time (see the module docstring; the
    client's retries included) and turn a failure into ``ServiceUnavailableError`` "<what> unavailable"
    (503, ``Retry-After: 1``)."""
    try:
        async with within(timeout_s):
            yield
    except (RedisError, OSError, TimeoutError) as e:
        log.warning("%s unavailable: %r", what, e)
        raise ServiceUnavailableError(f"{what} unavailable", retry_after=1) from None
