"""The Redis client factory and the bound on store calls, against a real redis-server."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from orchestra.errors import ServiceUnavailableError
from orchestra.stores.redis._client import redis_client, unavailable

from ...redis_fixture import RedisProcess


@pytest_asyncio.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    """A redis-server of this test alone, which it may kill and start again."""
    with tempfile.TemporaryDirectory(prefix="orchestra-redis-client-") as directory:
        server = RedisProcess(directory)
        try:
            yield server
        finally:
            server.stop()


async def test_a_burst_on_a_busy_loop_is_not_a_store_outage(redis_server: str) -> None:
    """600 calls at once, each with a little CPU work around it (as a request has): the loop is busy for
    well over the bound, Redis answers each call in microseconds, so none of them is "unavailable"."""
    client = redis_client(redis_server)

    async def request() -> bytes | None:
        time.sleep(0.002)  # noqa: ASYNC251 - the CPU a request spends on the loop (parsing, auth)
        async with unavailable("test store", 1.0):  # the bound of key and rate-limit calls
            value = await client.get("burst")
        time.sleep(0.002)  # noqa: ASYNC251
        return value

    try:
        await client.set("burst", "1")
        results = await asyncio.gather(*(request() for _ in range(600)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        await client.aclose()


async def test_a_store_that_does_not_answer_is_unavailable_within_its_bound() -> None:
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, never answers
    port = silent.sockets[0].getsockname()[1]
    client = redis_client(f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailableError) as err:
            async with unavailable("test store", 0.3):
                await client.get("anything")
        assert err.value.code == "SERVICE_UNAVAILABLE" and err.value.retry_after == 1
        assert "redis" not in str(err.value.to_dict()).lower()  # no internal names in the envelope
        assert time.monotonic() - started < 1.5
    finally:
        await client.aclose()
        silent.close()


async def test_a_refused_connection_is_unavailable_at_once() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    client = redis_client(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(ServiceUnavailableError):
            async with unavailable("test store", None):  # unbounded: only the error can end it
                await client.get("anything")
    finally:
        await client.aclose()


async def test_a_restarted_server_costs_no_request_after_it_is_back(own_redis: RedisProcess) -> None:
    client = redis_client(own_redis.url)
    try:
        # Fill the pool with connections that will all be dead once the server is killed.
        await asyncio.gather(*(client.incr("n") for _ in range(20)))
        own_redis.kill()
        with pytest.raises(ServiceUnavailableError):
            async with unavailable("test store", 1.0):
                await client.incr("n")
        own_redis.start()
        results = await asyncio.gather(*(client.incr("n") for _ in range(20)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert int(await client.get("n") or 0) == 40
    finally:
        await client.aclose()
