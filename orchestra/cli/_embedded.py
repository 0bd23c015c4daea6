"""An embedded redis-server for the development server: no external service to set up."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from orchestra.errors import ConfigError

__all__ = ["EmbeddedRedis", "dev_key", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedRedis:
    """A private redis-server on a free loopback port, stopped on ``stop()``.

    With ``data_dir`` its data is kept there in an append-only file (fsync every second), so a restart
    finds every session, key and memory again; without one it keeps nothing (tests, benchmarks).
    """

    def __init__(self, data_dir: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server is not installed: `./dev serve` installs it (apt-get), "
                "or set ORCHESTRA_REDIS_URL to an existing Redis",
                details={"field": "ORCHESTRA_REDIS_URL", "reason": "no redis-server"},
            )
        self.port = free_port()
        self._tmp = None if data_dir else tempfile.TemporaryDirectory(prefix="orchestra-redis-")
        directory = Path(self._tmp.name) if self._tmp else data_dir
        assert directory is not None
        directory.mkdir(parents=True, exist_ok=True)
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"] if data_dir else ["--appendonly", "no"]
        )
        options = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)]
        self._proc = subprocess.Popen(
            [binary, *options, *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError("the embedded redis-server did not start", details={"field": "redis-server"})

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._tmp is not None:
            self._tmp.cleanup()


def dev_key(directory: Path | None = None) -> str:
    """The development API key: read from ``<directory>/dev-key`` (default ``.orchestra/``), created (mode
    0600) on first use."""
    folder = directory or Path.cwd() / ".orchestra"
    path = folder / "dev-key"
    if path.is_file():
        key = path.read_text().strip()
        if key:
            return key
    folder.mkdir(parents=True, exist_ok=True)
    key = "orch_dev_" + secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return key
