"""`orchestra serve`'s default request path, HAProxy + direct ingress, end to end on its own Ray.

One server (``--host 127.0.0.1``) for the whole check, because a Ray start costs most of a minute on 2
cores: the port is HAProxy's; REST auth, ``X-Request-ID``, the WebSocket protocol with both ways to
authenticate pass through it; nothing of the server that speaks HTTP listens beyond loopback; Ctrl-C
drains a run in flight. ``--proxy serve`` is covered by test_cli (the Serve proxy path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from orchestra.cli._embedded import free_port
from orchestra.serving._transport import HEADER_TIMEOUT_S

from .test_cli import _serve, _stop, _wait_ready

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
# Serve's range for the ingress replicas' own HTTP servers (RAY_SERVE_DIRECT_INGRESS_MIN/MAX_HTTP_PORT)
DIRECT_INGRESS_PORTS = range(30000, 31000)


def _tree(root: int) -> dict[int, str]:
    """pid -> command name for ``root`` and every process under it (/proc)."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        names[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[pid] = int(stat[stat.rindex(")") + 2 :].split()[1])
    out = {}
    for pid in names:
        p, hops = pid, 0
        while p not in (root, 0, 1) and p in parents and hops < 10:
            p, hops = parents[p], hops + 1
        if p == root:
            out[pid] = names[pid]
    return out


def _listeners(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP listening socket of ``pids`` (``ss -ltnpH``)."""
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    out = []
    for line in lines.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        for pid in map(int, re.findall(r"pid=(\d+)", line)):
            if pid in pids:
                out.append((address.strip("[]"), int(port), pid))
    return out


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address == "::1"


def _non_loopback_ip() -> str | None:
    """An address of this machine other than loopback (to knock on listeners from outside)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            ip: str = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


async def _ws_checks(url: str, key: str) -> None:
    ws_url = url.replace("http://", "ws://") + f"/chat/ws/hap-client/hap-{uuid.uuid4().hex[:8]}"
    # Authorization header, then a chat whose tokens stream back
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        assert json.loads(await ws.recv())["data"]["action"] == "connected"
        frame = {"message": "Write a haiku", "optimization_mode": "lite", "request_id": "hap-1"}
        await ws.send(json.dumps({"type": "chat", "data": frame}))
        kinds = set()
        while True:
            got = json.loads(await asyncio.wait_for(ws.recv(), 60))
            kinds.add((got["type"], got["data"].get("event")))
            if got["type"] == "chat":
                assert got["data"]["request_id"] == "hap-1" and got["data"]["response"]
                break
            assert not (got["type"] == "control" and got["data"].get("action") == "error"), got
        assert ("stream", "token") in kinds
    # the browser's way: the key in the subprotocol list, orchestra.v2 selected
    async with connect(ws_url, subprotocols=["orchestra.v2", f"bearer.{key}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "orchestra.v2"
        assert json.loads(await ws.recv())["data"]["action"] == "connected"
    async with connect(ws_url, additional_headers={"Authorization": "Bearer wrong"}) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


def test_haproxy_request_path_auth_ws_request_id_loopback_and_drain(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve(tmp_path, port, {"ORCHESTRA_SCRIPTED_LATENCY_S": "0.05"})
    try:
        output = _wait_ready(proc)
        assert url in output, output[-2000:]
        key = (tmp_path / ".orchestra" / "dev-key").read_text().strip()
        tree = _tree(proc.pid)
        listeners = _listeners(set(tree))
        # the port is HAProxy's: this really is the HAProxy request path
        assert {tree[pid] for a, p, pid in listeners if p == port} == {"haproxy"}, listeners

        auth = {"Authorization": f"Bearer {key}"}
        body = {"message": "Write a haiku", "optimization_mode": "lite"}
        given = str(uuid.uuid4())
        r = httpx.post(f"{url}/chat/v2/chat", json=body, headers={**auth, "X-Request-ID": given}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == given and r.json()["metadata"]["request_id"] == given
        r = httpx.post(f"{url}/chat/v2/chat", json=body, headers={**auth, "X-Request-ID": "nope"}, timeout=60)
        assert r.status_code == 200 and UUID4.match(r.headers["x-request-id"]), r.headers
        r = httpx.post(
            f"{url}/chat/v2/chat", json=body, headers={"Authorization": "Bearer wrong"}, timeout=60
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "AUTHENTICATION_ERROR", r.text
        assert (
            UUID4.match(r.headers["x-request-id"])
            and r.json()["metadata"]["request_id"] == r.headers["x-request-id"]
        )
        asyncio.run(_ws_checks(url, key))
        # A client that never completes its headers is dropped by HAProxy (timeout http-request), not
        # held for its hour-long client timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 15) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            started = time.monotonic()
            with contextlib.suppress(ConnectionError):
                while slow.recv(4096):  # HAProxy may answer 408 before it closes
                    pass
            assert time.monotonic() - started < HEADER_TIMEOUT_S + 10

        # Loopback: nothing that speaks HTTP about this server (HAProxy with its stats/metrics, the
        # replicas' own HTTP servers, Ray's metrics exporter, redis-server) listens beyond loopback.
        # Ray's own gRPC ports do (GCS, raylet, every worker: Ray binds them on all interfaces; its
        # token auth guards them).
        tree = _tree(proc.pid)  # again: the chats started agent actors
        outside = [(a, p, tree[pid]) for a, p, pid in _listeners(set(tree)) if not _is_loopback(a)]
        assert not [o for o in outside if o[2] in ("haproxy", "redis-server")], outside
        assert not [o for o in outside if o[1] == port or o[1] in DIRECT_INGRESS_PORTS], outside
        ip = _non_loopback_ip()
        if ip is not None:
            for _, p, name in outside:  # knocked on from outside, none tells anything about this server
                for path in ("/health", "/stats", "/metrics"):
                    try:
                        answer = httpx.get(f"http://{ip}:{p}{path}", timeout=2)
                    except httpx.HTTPError:
                        break
                    text = answer.text.lower()
                    leaks = [w for w in ("orchestra", "ingress", "haproxy", "redis") if w in text]
                    assert not leaks, (name, p, path, leaks, answer.text[:300])

        # Ctrl-C with a run in flight: it is drained through HAProxy before the server exits.
        long = {"message": "Debate", "swarm_type": "coding-debate", "optimization_mode": "quality"}
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(httpx.post, f"{url}/chat/v2/chat", json=long, headers=auth, timeout=120)
            time.sleep(1.0)
            assert not running.done()
            proc.send_signal(signal.SIGINT)
            drained = running.result()
        assert drained.status_code == 200, drained.text
        assert len(drained.json()["data"]["metadata"]["processing_steps"]) > 4
    finally:
        _stop(proc, port)
