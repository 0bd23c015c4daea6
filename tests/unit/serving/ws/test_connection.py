"""The WebSocket connection (orchestra/serving/ws/_connection.py) over a real in-process Engine with the
scripted provider: opening, rate limit, commands, control, going away."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import pytest

import orchestra
import orchestra.engine
from orchestra.serving.ws import CLOSE_NORMAL, WsConnection
from tests.unit.conftest import make_engine
from tests.unit.serving.ws.client import SLOW, Bucket, Socket, assert_pong, chat, command, connect, send

# -- connecting -----------------------------------------------------------------------------------


async def test_open_sends_connected_frame(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await conn.open()
    (frame,) = sock.frames
    assert frame["type"] == "control"
    assert frame["data"] == {"action": "connected", "session_id": "s-1", "client_id": "c-1", "version": "v2"}
    assert frame["timestamp"].endswith("Z") and datetime.fromisoformat(frame["timestamp"]).tzinfo
    await conn.close()


def test_path_ids_are_validated(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    for bad in ("bad id!", "x" * 129, "trailing-newline\n"):
        with pytest.raises(orchestra.ValidationError) as info:
            connect(engine, session_id=bad)
        assert info.value.details["field"] == "session_id"
    with pytest.raises(orchestra.ValidationError) as info:
        WsConnection(engine, send=Socket().send, tenant="t", client_id="", session_id="s")
    assert info.value.details["field"] == "client_id"


# -- rate limit ------------------------------------------------------------------------------------


async def test_rate_limit_drops_messages_then_recovers(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    bucket = Bucket()
    conn, sock = connect(engine, limiter=bucket)
    for _ in range(10):
        await assert_pong(conn, sock)
    await send(conn, "control", {"action": "ping"})
    await chat(conn, "dropped", "too-fast")
    first, second = sock.errors()
    assert first["error"]["code"] == "RATE_LIMIT_ERROR"
    assert 0 < first["error"]["details"]["retry_after"] <= 0.6
    assert second["request_id"] == "too-fast"  # a dropped chat's error can be matched
    assert conn.running is None  # the dropped chat never ran
    assert not conn.should_close
    bucket.now += 0.61
    await send(conn, "control", {"action": "status"})
    status = sock.frames[-1]["data"]
    assert status["action"] == "status" and status["rate_limit"]["remaining"] == 0
    assert len(bucket.keys) == 1
    await conn.close()


async def test_no_limiter_means_no_limit(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    for _ in range(30):
        await assert_pong(conn, sock)
    assert sock.errors() == []
    await conn.close()


# -- commands and control -------------------------------------------------------------------------


async def test_history_reset_and_swarms(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    assert await command(conn, sock, "history") == {"session_id": "s-1", "turns": []}
    await chat(conn, "Write a poem about rain", "p1")
    answer = await sock.wait_terminal("p1")
    history = await command(conn, sock, "history")
    (turn,) = history["turns"]
    assert turn["message"] == "Write a poem about rain" and turn["response"] == answer["data"]["response"]
    assert turn["run_id"] == "p1" and turn["created_at"] > 0
    assert await command(conn, sock, "reset") == {"reset": True, "session_id": "s-1"}
    assert (await command(conn, sock, "history"))["turns"] == []
    swarms = await command(conn, sock, "swarms")
    assert swarms["modes"] == ["lite", "balanced", "quality"]
    teams = {t["swarm_type"]: t for t in swarms["teams"]}
    assert set(teams) == {"coding-team", "research-team", "creative-team", "coding-debate"}
    assert set(teams["coding-team"]["modes"]) == {"lite", "balanced", "quality"}
    await conn.close()


async def test_set_changes_the_connection_defaults(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    result = await command(conn, sock, "set", optimization_mode="lite", swarm_type="research-team")
    assert result == {"optimization_mode": "lite", "swarm_type": "research-team", "use_memory": False}
    await send(conn, "chat", {"message": "Write a poem", "request_id": "r"})
    data = (await sock.wait_terminal("r"))["data"]
    assert data["metadata"]["optimization_mode"] == "lite"
    assert data["metadata"]["swarm_type"] == "research-team" and data["execution_mode"] == "research-team"
    # a chat's own fields win over the defaults
    await send(conn, "chat", {"message": "Write a poem", "request_id": "r2", "optimization_mode": "balanced"})
    assert (await sock.wait_terminal("r2"))["data"]["metadata"]["optimization_mode"] == "balanced"
    cleared = await command(conn, sock, "set", swarm_type=None, use_memory=True)
    assert cleared == {"optimization_mode": "lite", "swarm_type": None, "use_memory": True}
    await send(conn, "command", {"command": "set", "args": {"use_memory": None}})
    assert sock.errors()[-1]["error"]["details"]["field"] == "data.args.use_memory"
    assert conn.defaults == cleared
    await conn.close()


async def test_end_ends_the_session_and_asks_to_close(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "first", "done-1", swarm_type="research-team")
    await sock.wait_terminal("done-1", within=10)
    await chat(conn, "long", "running", swarm_type="coding-debate", optimization_mode="quality")
    await chat(conn, "later", "waiting")
    await sock.wait_for(lambda: sock.of("stream")[-1]["request_id"] == "running")
    assert not conn.should_close
    result = await command(conn, sock, "end")
    assert result == {"ended": True, "session_id": "s-1", "cancelled": ["waiting", "running"]}
    for rid in ("running", "waiting"):
        frame = sock.terminal(rid)
        assert frame is not None and frame["data"]["error"]["code"] == "CANCELLED"
    assert conn.should_close and conn.close_code == CLOSE_NORMAL == 1000
    assert conn.closed_reason == "session ended"
    with pytest.raises(orchestra.NotFoundError):
        await engine.session("alice", "s-1")
    count = len(sock.frames)
    await chat(conn, "after the end", "ignored")
    assert len(sock.frames) == count and conn.running is None
    await conn.close()
    assert engine.running() == []


async def test_ping_and_status(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await assert_pong(conn, sock)
    await chat(conn, "one", "x1")
    await chat(conn, "two", "x2")
    await send(conn, "control", {"action": "status"}, timestamp="2025-01-01T00:00:00Z")
    status = sock.frames[-1]["data"]
    assert status == {
        "action": "status",
        "session_id": "s-1",
        "client_id": "c-1",
        "version": "v2",
        "running": "x1",
        "waiting": ["x2"],
        "max_waiting": 4,
        "defaults": {"optimization_mode": "balanced", "swarm_type": None, "use_memory": False},
    }
    await conn.close()


# -- going away ------------------------------------------------------------------------------------


async def test_close_cancels_everything_and_leaves_no_tasks(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    for i in range(3):
        await chat(conn, "long", f"c{i}", swarm_type="coding-debate", optimization_mode="quality")
    await sock.wait_for(lambda: sock.of("stream"))
    await conn.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert engine.running() == [] and conn.waiting == []
    assert conn.closed_reason == "closed" and not conn.should_close
    assert [f for f in sock.frames if f["type"] == "chat"] == []
    await conn.receive_text(json.dumps({"type": "control", "data": {"action": "ping"}}))
    assert sock.frames[-1]["data"].get("action") != "pong"  # a closed connection answers nothing


async def test_send_failure_stops_the_work(fast_config: orchestra.OrchestraConfig) -> None:
    engine, spy = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "long", "doomed", swarm_type="coding-debate", optimization_mode="quality")
    await chat(conn, "later", "never")
    await sock.wait_for(lambda: sock.of("stream"))
    sock.fail_after = len(sock.frames)  # the socket breaks now
    await sock.wait_for(lambda: conn.running is None and engine.running() == [])
    assert conn.waiting == [] and conn.should_close and conn.closed_reason == "send failed"
    calls = len(spy.requests)
    await asyncio.sleep(0.15)
    assert len(spy.requests) == calls  # nothing more was asked of the model
    await conn.receive_text("still talking")  # ignored, does not raise
    await conn.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_send_failure_while_answering_a_frame(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "long", "doomed", swarm_type="coding-debate", optimization_mode="quality")
    await sock.wait_for(lambda: sock.of("stream"))
    sock.fail_after = 0
    await send(conn, "control", {"action": "ping"})  # the pong cannot be sent: must not raise
    await sock.wait_for(lambda: conn.running is None and engine.running() == [])
    await conn.close()
