"""``<data dir>/server.json``: how a running ``orchestra serve`` is found by ``orchestra.connect()`` and
the ``orchestra`` CLI started from the same directory (its Ray cluster, namespace and store).

Written when the server is ready, removed when it stops; a file left by a killed server is ignored
because its pid is gone. It holds addresses only, never a key or a password: ``redis_url`` is the
embedded Redis's loopback URL, or empty when the server uses the operator's ``ORCHESTRA_REDIS_URL``
(which may carry a password; a joining process then uses its own setting).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

__all__ = ["ServerInfo", "read_server_file", "remove_server_file", "write_server_file"]

FILE_NAME = "server.json"


class ServerInfo(TypedDict):
    pid: int
    url: str
    ray_address: str
    namespace: str
    redis_url: str
    # Ray's RAY_AUTH_MODE of the server ("token" for a new local cluster in Ray 2.5x+): a joining driver
    # must use the same, or the cluster refuses it. The token itself stays in ~/.ray/auth_token.
    ray_auth_mode: str


def _path(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, but not ours to join
        return False
    return True


def write_server_file(data_dir: Path, info: ServerInfo) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = _path(data_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(_path(data_dir))  # atomic: a reader never sees half a file


def read_server_file(data_dir: Path) -> ServerInfo | None:
    """The running server of ``data_dir``, or None (no file, unreadable, or its process is gone)."""
    try:
        raw = json.loads(_path(data_dir).read_text())
        info = ServerInfo(
            pid=int(raw["pid"]),
            url=str(raw["url"]),
            ray_address=str(raw["ray_address"]),
            namespace=str(raw["namespace"]),
            redis_url=str(raw["redis_url"]),
            ray_auth_mode=str(raw.get("ray_auth_mode", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if _alive(info["pid"]) else None


def remove_server_file(data_dir: Path, pid: int | None = None) -> None:
    """Remove the file (only if it is ``pid``'s, when given: another server may have replaced it)."""
    path = _path(data_dir)
    if pid is not None:
        try:
            if int(json.loads(path.read_text())["pid"]) != pid:
                return
        except (OSError, ValueError, KeyError, TypeError):
            return
    path.unlink(missing_ok=True)
