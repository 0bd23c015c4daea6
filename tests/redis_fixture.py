"""A real ``redis-server`` for the test session (no fakes): ``redis_server`` (its URL) and ``redis_client``.

Registered as a plugin by the top-level conftest (``pytest_plugins = ["tests.redis_fixture"]``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis

from orchestra.cli._embedded import free_port

__all__ = ["redis_client", "redis_server", "start_redis_server"]


def _binary() -> str | None:
    found = shutil.which("redis-server")
    return found or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


def start_redis_server(directory: str, attempts: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` on a free loopback port, without persistence; wait until it answers PING."""
    binary = _binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (./dev test installs it with apt-get)")
    log_path = os.path.join(directory, "redis.log")
    last_error = ""
    for _ in range(attempts):  # the free port can be taken between probing and binding; try another
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory, "--loglevel", "warning", "--logfile", log_path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    # Check the pid too: another server may own the port we probed as free.
                    if client.ping() and client.info("server")["process_id"] == proc.pid:
                        return proc, url
                    break
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        if os.path.exists(log_path):
            with open(log_path, errors="replace") as f:
                last_error = f.read()[-2000:]
    raise RuntimeError(f"redis-server did not start: {last_error}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL (``redis://127.0.0.1:PORT/0``) of a redis-server started for this test session."""
    if _binary() is None:
        pytest.fail("redis-server is not installed (./dev test installs it with apt-get)")
    with tempfile.TemporaryDirectory(prefix="orchestra-redis-") as directory:
        proc, url = start_redis_server(directory)
        try:
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest_asyncio.fixture
async def redis_client(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on an empty database (FLUSHDB before the test)."""
    client = aioredis.Redis.from_url(redis_server)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
