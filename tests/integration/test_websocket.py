"""WS /chat/ws/{client_id}/{session_id} over real Ray Serve: the spec §7 protocol end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from .conftest import ServeInfo


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await ws.recv(decode=True))  # type: ignore[no-any-return]


async def send(ws: ClientConnection, type_: str, data: Any) -> None:
    await ws.send(json.dumps({"type": type_, "data": data, "timestamp": "2026-11-25T00:00:00Z"}))


async def until(
    ws: ClientConnection, pred: Any, limit: int = 2000
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    seen = []
    for _ in range(limit):
        frame = await recv(ws)
        seen.append(frame)
        if pred(frame):
            return frame, seen
    raise AssertionError("frame never came")


def url(info: ServeInfo, client: str, session: str) -> str:
    return f"{info.ws_url}/chat/ws/{client}/{session}"


async def test_chat_streams_every_agent_then_answers(serve_app: ServeInfo) -> None:
    async with connect(
        url(serve_app, "c1", "ws-session-1"), additional_headers=serve_app.auth(serve_app.key(10))
    ) as ws:
        hello = await recv(ws)
        assert hello["type"] == "control" and hello["data"]["action"] == "connected"
        assert hello["data"]["session_id"] == "ws-session-1" and hello["data"]["client_id"] == "c1"
        assert hello["timestamp"]
        await send(
            ws,
            "chat",
            {
                "message": "Write merge intervals",
                "swarm_type": "coding-debate",
                "optimization_mode": "lite",
                "request_id": "req-1",
            },
        )
        final, frames = await until(
            ws, lambda f: f["type"] in ("chat",) or f["data"].get("action") == "error"
        )
        assert final["type"] == "chat", final
        data = final["data"]
        assert data["request_id"] == "req-1" and data["session_id"] == "ws-session-1"
        assert {"response", "execution_mode", "quality_score", "execution_time", "metadata"} <= set(data)
        streams = [f["data"] for f in frames if f["type"] == "stream"]
        assert {s["request_id"] for s in streams} == {"req-1"}
        texts: dict[tuple[str, int], str] = {}
        for s in streams:
            if s["event"] == "token":
                texts[(s["agent"], s["round"])] = texts.get((s["agent"], s["round"]), "") + s["token"]
        agents = {(p["agent"], p["round"]) for p in data["metadata"]["processing_steps"]}
        assert set(texts) == agents  # every agent's tokens arrived, attributed to it
        assert texts[("judge", 2)] == data["response"]
        assert {s["event"] for s in streams} == {"turn_start", "token", "turn_end"}


async def test_browser_subprotocol_auth_and_bad_auth(serve_app: ServeInfo) -> None:
    async with connect(
        url(serve_app, "c2", "ws-session-2"), subprotocols=["orchestra.v2", f"bearer.{serve_app.key(11)}"]
    ) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "orchestra.v2"
        assert (await recv(ws))["data"]["action"] == "connected"
    async with connect(
        url(serve_app, "c2", "ws-session-2"), additional_headers={"Authorization": "Bearer wrong"}
    ) as ws:
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


async def test_bad_frames_get_errors_and_the_connection_stays(serve_app: ServeInfo) -> None:
    async with connect(
        url(serve_app, "c3", "ws-session-3"), additional_headers=serve_app.auth(serve_app.key(12))
    ) as ws:
        await recv(ws)
        bad = [
            "not json",
            "[1,2]",
            json.dumps({"type": "dance", "data": {}}),
            json.dumps({"type": "chat", "data": {"message": ""}}),
            json.dumps({"type": "command", "data": {"command": "explode"}}),
            json.dumps({"type": "chat", "data": {"message": "x" * (70 * 1024)}}),
        ]
        for raw in bad:
            await ws.send(raw)
            frame = await recv(ws)
            assert frame["type"] == "control" and frame["data"]["action"] == "error", raw[:40]
            assert frame["data"]["error"]["code"] in ("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE")
        await send(ws, "control", {"action": "ping"})
        assert (await recv(ws))["data"] == {"action": "pong"}


async def test_cancel_mid_run_then_continue_and_reconnect(serve_app: ServeInfo) -> None:
    h = serve_app.auth(serve_app.key(13))
    async with connect(url(serve_app, "c4", "ws-session-4"), additional_headers=h) as ws:
        await recv(ws)
        await send(
            ws,
            "chat",
            {
                "message": "long",
                "swarm_type": "coding-debate",
                "optimization_mode": "quality",
                "request_id": "slow-1",
            },
        )
        await until(ws, lambda f: f["type"] == "stream" and f["data"]["event"] == "token")
        await send(ws, "command", {"command": "cancel", "args": {}})
        ended, frames = await until(
            ws, lambda f: f["data"].get("action") == "error" and f["data"].get("request_id") == "slow-1"
        )
        assert ended["data"]["error"]["code"] == "CANCELLED"
        assert not any(f["type"] == "chat" for f in frames)
        await send(
            ws,
            "chat",
            {
                "message": "short one",
                "swarm_type": "research-team",
                "optimization_mode": "lite",
                "request_id": "fast-1",
            },
        )
        final, _ = await until(ws, lambda f: f["type"] == "chat")
        assert final["data"]["request_id"] == "fast-1"
    # the session outlives the connection: a new connection sees its turns
    async with connect(url(serve_app, "c4-again", "ws-session-4"), additional_headers=h) as ws:
        await recv(ws)
        await send(ws, "command", {"command": "history", "args": {}})
        frame, _ = await until(ws, lambda f: f["type"] == "command")
        turns = frame["data"]["result"]
        turns = turns["turns"] if isinstance(turns, dict) else turns
        assert [t["message"] for t in turns] == ["short one"]


async def test_commands_and_status(serve_app: ServeInfo) -> None:
    async with connect(
        url(serve_app, "c5", "ws-session-5"), additional_headers=serve_app.auth(serve_app.key(14))
    ) as ws:
        await recv(ws)
        await send(ws, "command", {"command": "swarms", "args": {}})
        frame, _ = await until(ws, lambda f: f["type"] == "command")
        assert "coding-debate" in json.dumps(frame["data"]["result"])
        await send(
            ws,
            "command",
            {"command": "set", "args": {"optimization_mode": "lite", "swarm_type": "research-team"}},
        )
        frame, _ = await until(ws, lambda f: f["type"] == "command")
        assert frame["data"]["command"] == "set"
        await send(ws, "chat", {"message": "uses the defaults", "request_id": "d-1"})
        final, _ = await until(ws, lambda f: f["type"] == "chat")
        assert final["data"]["metadata"]["swarm_type"] == "research-team"
        assert final["data"]["metadata"]["optimization_mode"] == "lite"
        await send(ws, "control", {"action": "status"})
        status, _ = await until(ws, lambda f: f["data"].get("action") == "status")
        assert status["data"]["session_id"] == "ws-session-5"
        await send(ws, "command", {"command": "end", "args": {}})
        frame, _ = await until(ws, lambda f: f["type"] == "command")
        assert frame["data"]["command"] == "end"
        with pytest.raises(ConnectionClosed) as info:
            await recv(ws)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1000


async def test_rate_limited_open_closes_4429(serve_app: ServeInfo) -> None:
    """Opening a connection counts as a request of the key: a burst of opens runs out of the bucket."""
    key = serve_app.key(17)

    async def open_one(i: int) -> int:
        async with connect(
            url(serve_app, f"burst-{i}", "ws-burst"), additional_headers=serve_app.auth(key)
        ) as ws:
            try:
                frame = await recv(ws)
                assert frame["data"]["action"] == "connected"
                return 0
            except ConnectionClosed as closed:
                assert closed.rcvd is not None
                return closed.rcvd.code

    codes = await asyncio.gather(*(open_one(i) for i in range(80)))
    assert codes.count(4429) >= 10 and set(codes) <= {0, 4429}
    assert 50 <= codes.count(0) < 80


async def test_message_rate_limit_drops_with_error_frame(serve_app: ServeInfo) -> None:
    async with connect(
        url(serve_app, "c7", "ws-session-7"), additional_headers=serve_app.auth(serve_app.key(18))
    ) as ws:
        await recv(ws)
        for _ in range(14):  # capacity 10 per connection
            await send(ws, "control", {"action": "ping"})
        frames = [await recv(ws) for _ in range(14)]
        pongs = [f for f in frames if f["data"].get("action") == "pong"]
        limited = [f for f in frames if f["data"].get("action") == "error"]
        assert len(pongs) == 10 and len(limited) == 4
        assert limited[0]["data"]["error"]["code"] == "RATE_LIMIT_ERROR"
        await asyncio.sleep(0.7)  # 100/min refills one message in 0.6 s; the connection is still open
        await send(ws, "control", {"action": "ping"})
        assert (await recv(ws))["data"]["action"] == "pong"
