"""``server.json``: how ``orchestra.connect()`` finds the ``orchestra serve`` of its data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from orchestra.cli._server_file import ServerInfo, read_server_file, remove_server_file, write_server_file


def _info(pid: int) -> ServerInfo:
    return {
        "pid": pid,
        "url": "http://127.0.0.1:8000",
        "ray_address": "127.0.0.1:6379",
        "namespace": "orchestra",
        "redis_url": "redis://127.0.0.1:7000/0",
        "ray_auth_mode": "token",
    }


def test_a_live_servers_file_is_read_back(tmp_path: Path) -> None:
    write_server_file(tmp_path / "data", _info(os.getpid()))
    assert read_server_file(tmp_path / "data") == _info(os.getpid())


def test_a_file_left_by_a_dead_server_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_server_file(tmp_path, _info(dead.pid))
    assert read_server_file(tmp_path) is None


def test_missing_or_damaged_files_are_no_server(tmp_path: Path) -> None:
    assert read_server_file(tmp_path) is None
    (tmp_path / "server.json").write_text('{"pid": "x"')
    assert read_server_file(tmp_path) is None


def test_a_server_removes_only_its_own_file(tmp_path: Path) -> None:
    write_server_file(tmp_path, _info(os.getpid()))
    remove_server_file(tmp_path, pid=os.getpid() + 1)  # another server's stop: not ours to remove
    assert read_server_file(tmp_path) is not None
    remove_server_file(tmp_path, pid=os.getpid())
    assert not (tmp_path / "server.json").exists()
