"""A real ``redis-server`` for the test session (no fakes): ``redis_server`` (its URL), ``redis_process``
(the server itself, which a fault test may kill and start again) and ``redis_client``.

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

__all__ = ["RedisProcess", "redis_client", "redis_process", "redis_server", "start_redis_server"]


def _binary() -> str | None:
    found = shutil.which("redis-server")
    return found or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)


def start_redis_server(
    directory: str, attempts: int = 3, port: int | None = None, persistent: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` on loopback (``port``, else a free one); wait until it answers PING.

    ``persistent`` keeps an append-only file in ``directory``, so a server killed and started again on the
    same directory still has every write it answered (Redis writes the file before it replies; the kernel
    keeps it across a killed process, so the tests skip fsync, which only a machine crash needs).
    """
    binary = _binary()
    if binary is None:
        raise RuntimeError("redis-server is not installed (./dev test installs it with apt-get)")
    log_path = os.path.join(directory, "redis.log")
    last_error = ""
    for _ in range(attempts):  # the free port can be taken between probing and binding; try another
        chosen = port if port is not None else free_port()
        aof = ["--appendonly", "yes", "--appendfsync", "no"] if persistent else ["--appendonly", "no"]
        proc = subprocess.Popen(
            [binary, "--port", str(chosen), "--bind", "127.0.0.1", "--save", "", *aof,
             "--dir", directory, "--loglevel", "warning", "--logfile", log_path],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{chosen}/0"
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


class RedisProcess:
    """The session's redis-server: its URL stays the same when it is killed and started again."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.proc, self.url = start_redis_server(directory, persistent=True)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def kill(self) -> None:
        """SIGKILL, as a crashed server: what it answered is in the append-only file, nothing else."""
        self.proc.kill()
        self.proc.wait(timeout=5)

    def start(self) -> None:
        """Start it again on the same port and directory (it replays the append-only file)."""
        self.proc, _ = start_redis_server(self.directory, attempts=1, port=self.port, persistent=True)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    """The redis-server started for this test session (persistent, so it can be killed and restarted)."""
    if _binary() is None:
        pytest.fail("redis-server is not installed (./dev test installs it with apt-get)")
    with tempfile.TemporaryDirectory(prefix="orchestra-redis-") as directory:
        server = RedisProcess(directory)
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_process: RedisProcess) -> str:
    """URL (``redis://127.0.0.1:PORT/0``) of the redis-server of this test session."""
    return redis_process.url


@pytest_asyncio.fixture
async def redis_client(redis_server: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on an empty database (FLUSHDB before the test)."""
    client = aioredis.Redis.from_url(redis_server)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
