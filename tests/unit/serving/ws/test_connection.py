"""The WebSocket protocol engine (spec §7) over a real in-process Engine with the scripted provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchestra
import orchestra.engine
from orchestra.providers import ScriptedSettings
from orchestra.serving.ws import (
    CLOSE_NORMAL,
    WsConnection,
    handshake_credentials,
)
from orchestra.stores import WS_CAPACITY, WS_REFILL_PER_S, LocalTokenBucket, RateLimitDecision
from tests.unit.conftest import make_engine

Frame = dict[str, Any]
SLOW = ScriptedSettings(latency_s=0.05, tokens_per_s=300)


class Socket:
    """The client side: records what the server sent; can be told to break."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.senders: list[asyncio.Task[Any] | None] = []
        self.fail_after: int | None = None

    async def send(self, frame: Frame) -> None:
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise ConnectionError("socket is gone")
        # What a real socket would do: serialise as UTF-8 JSON text.
        json.dumps(frame, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.frames.append(frame)
        self.senders.append(asyncio.current_task())

    def errors(self, request_id: str | None = None) -> list[Frame]:
        return [
            f["data"]
            for f in self.frames
            if f["type"] == "control"
            and f["data"]["action"] == "error"
            and (request_id is None or f["data"].get("request_id") == request_id)
        ]

    def of(self, kind: str) -> list[Frame]:
        return [f["data"] for f in self.frames if f["type"] == kind]

    def terminal(self, request_id: str) -> Frame | None:
        for f in self.frames:
            d = f["data"]
            if d.get("request_id") == request_id and (
                f["type"] == "chat" or (f["type"] == "control" and d.get("action") == "error")
            ):
                return f
        return None

    async def wait_for(self, check: Callable[[], Any], within: float = 5.0) -> Any:
        async with asyncio.timeout(within):
            # Polling: some conditions are engine state, which has no event to wait on.
            while not (value := check()):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        return value

    async def wait_terminal(self, request_id: str, within: float = 5.0) -> Frame:
        frame: Frame = await self.wait_for(lambda: self.terminal(request_id), within)
        return frame


def connect(
    engine: orchestra.engine.Engine, session_id: str = "s-1", **kwargs: Any
) -> tuple[WsConnection, Socket]:
    sock = Socket()
    conn = WsConnection(
        engine,
        send=sock.send,
        tenant="alice",
        client_id="c-1",
        session_id=session_id,
        **kwargs,
    )
    return conn, sock


async def send(conn: WsConnection, kind: str, data: Any, **extra: Any) -> None:
    await conn.receive_text(json.dumps({"type": kind, "data": data, **extra}))


async def chat(conn: WsConnection, message: str, rid: str, **fields: Any) -> None:
    await send(conn, "chat", {"message": message, "request_id": rid, "optimization_mode": "lite", **fields})


async def command(conn: WsConnection, sock: Socket, name: str, **args: Any) -> Any:
    before = len(sock.of("command"))
    await send(conn, "command", {"command": name, "args": args})
    commands = sock.of("command")
    assert len(commands) == before + 1, sock.errors()
    assert commands[-1]["command"] == name
    return commands[-1]["result"]


async def assert_pong(conn: WsConnection, sock: Socket) -> None:
    await send(conn, "control", {"action": "ping"})
    assert sock.frames[-1]["data"] == {"action": "pong"}


# -- connecting and chatting ------------------------------------------------------------------------


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


async def test_chat_streams_every_agent_and_ends_with_the_v2_answer(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config, ScriptedSettings(latency_s=0.0, tokens_per_s=3000))
    conn, sock = connect(engine)
    await chat(conn, "Debate two caching designs", "r-1", swarm_type="coding-debate", context={"lang": "py"})
    final = await sock.wait_terminal("r-1")
    assert final["type"] == "chat", final
    data = final["data"]
    assert set(data) == {
        "response",
        "session_id",
        "execution_mode",
        "quality_score",
        "execution_time",
        "metadata",
        "request_id",
    }
    assert data["request_id"] == "r-1" and data["session_id"] == "s-1"
    assert data["metadata"]["swarm_type"] == "coding-debate"
    assert sock.frames[-1] is final  # nothing of this chat after its answer

    streams = sock.of("stream")
    assert {s["request_id"] for s in streams} == {"r-1"}
    texts: dict[tuple[str, int], str] = {}
    open_turns: set[tuple[str, int]] = set()
    ended: list[dict[str, Any]] = []
    for s in streams:
        key = (s["agent"], s["round"])
        assert isinstance(s["role"], str) and s["role"]
        if s["event"] == "turn_start":
            assert "token" not in s and key not in open_turns
            open_turns.add(key)
        elif s["event"] == "token":
            assert key in open_turns
            texts[key] = texts.get(key, "") + s["token"]
        else:
            assert s["event"] == "turn_end" and "token" not in s
            open_turns.remove(key)
            ended.append(s["step"])
    assert not open_turns

    # the same turns the answer reports (parallel turns may end in any order)
    def by_turn(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(steps, key=lambda s: (s["round"], s["agent"]))

    assert by_turn(ended) == by_turn(data["metadata"]["processing_steps"])
    transcript = await engine.transcript("alice", "r-1")
    assert {(e.agent, e.round): e.text for e in transcript.entries} == texts
    assert all(f["timestamp"].endswith("Z") for f in sock.frames)
    assert conn.running is None
    await conn.close()


async def test_chats_run_in_order_one_at_a_time(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, ScriptedSettings(latency_s=0.01, tokens_per_s=0))
    conn, sock = connect(engine)
    await chat(conn, "Write a poem about the sea", "first")
    await chat(conn, "Now make it shorter", "second")
    assert conn.running == "first" and conn.waiting == ["second"]
    second = await sock.wait_terminal("second")
    first = sock.terminal("first")
    assert first is not None and first["type"] == "chat" and second["type"] == "chat"
    first_end = sock.frames.index(first)
    second_frames = [i for i, f in enumerate(sock.frames) if f["data"].get("request_id") == "second"]
    assert min(second_frames) > first_end  # the second started only after the first answered
    assert second["data"]["execution_mode"] == "session:creative-team"  # it saw the first turn
    await conn.close()


async def test_only_four_chats_may_wait(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    for i in range(6):
        await chat(conn, f"question {i}", f"q{i}")
    assert conn.running == "q0" and conn.waiting == ["q1", "q2", "q3", "q4"]
    (refused,) = sock.errors()
    assert refused["request_id"] == "q5"
    assert refused["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert refused["error"]["details"]["max_waiting"] == 4
    await conn.close()
    assert conn.waiting == [] and engine.running() == []


async def test_duplicate_request_id_is_refused(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "one", "dup")
    await chat(conn, "two", "dup")
    (error,) = sock.errors()
    assert error["request_id"] == "dup" and error["error"]["code"] == "VALIDATION_ERROR"
    assert error["error"]["details"]["field"] == "data.request_id"
    await conn.close()


async def test_a_failed_run_ends_with_an_error_frame(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await chat(conn, "hi", "bad-team", swarm_type="dance-team")
    await chat(conn, "hi", "good")
    failed = await sock.wait_terminal("bad-team")
    assert failed["data"]["error"]["code"] == "VALIDATION_ERROR"
    assert failed["data"]["error"]["details"]["field"] == "swarm_type"
    assert (await sock.wait_terminal("good"))["type"] == "chat"
    await conn.close()


async def test_backend_crash_is_an_internal_error_frame(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)

    class Broken(orchestra.engine.Engine):
        async def stream(self, request: orchestra.RunRequest) -> Any:
            raise RuntimeError("secret internal detail")
            yield  # pragma: no cover

    broken = Broken(engine.config, engine.runtime, engine.provider)
    sock = Socket()
    conn = WsConnection(broken, send=sock.send, tenant="t", client_id="c", session_id="s")
    await chat(conn, "hi", "r")
    frame = await sock.wait_terminal("r")
    assert frame["data"]["error"]["code"] == "INTERNAL_ERROR"
    assert "secret" not in json.dumps(frame)
    await conn.close()


# -- bad frames ------------------------------------------------------------------------------------

BAD_FRAMES: list[tuple[str, str, str]] = [
    ("not json", "VALIDATION_ERROR", "<frame>"),
    ("[1, 2]", "VALIDATION_ERROR", "<frame>"),
    ('"chat"', "VALIDATION_ERROR", "<frame>"),
    ("null", "VALIDATION_ERROR", "<frame>"),
    ("[" * 100_000, "PAYLOAD_TOO_LARGE", "<frame>"),
    ("[" * 60_000, "VALIDATION_ERROR", "<frame>"),
    (json.dumps({"data": {}}), "VALIDATION_ERROR", "type"),
    (json.dumps({"type": "shout", "data": {}}), "VALIDATION_ERROR", "type"),
    (json.dumps({"type": "stream", "data": {}}), "VALIDATION_ERROR", "type"),
    (json.dumps({"type": "control"}), "VALIDATION_ERROR", "data"),
    (json.dumps({"type": "control", "data": [1]}), "VALIDATION_ERROR", "data"),
    (json.dumps({"type": "control", "data": {"action": "ping"}, "extra": 1}), "VALIDATION_ERROR", "extra"),
    (json.dumps({"type": "control", "data": {"action": "ping"}, "timestamp": "yesterday"}), "", "timestamp"),
    (json.dumps({"type": "control", "data": {"action": "dance"}}), "VALIDATION_ERROR", "data.action"),
    (json.dumps({"type": "chat", "data": {}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": ""}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": 5}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": "x" * 32_001}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": "hi", "mood": 1}}), "VALIDATION_ERROR", "data.mood"),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "optimization_mode": "turbo"}}),
        "VALIDATION_ERROR",
        "data.optimization_mode",
    ),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "use_memory": "true"}}),
        "VALIDATION_ERROR",
        "data.use_memory",
    ),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "request_id": "has space"}}),
        "VALIDATION_ERROR",
        "data.request_id",
    ),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "context": {"blob": "x" * 17_000}}}),
        "VALIDATION_ERROR",
        "data.context",
    ),
    ('{"type": "chat", "data": {"message": "\\ud800"}}', "VALIDATION_ERROR", "<frame>"),
    (json.dumps({"type": "command", "data": {"command": "dance"}}), "VALIDATION_ERROR", "data.command"),
    (
        json.dumps({"type": "command", "data": {"command": "history", "args": {"x": 1}}}),
        "VALIDATION_ERROR",
        "data.args.x",
    ),
    (
        json.dumps({"type": "command", "data": {"command": "set", "args": {"optimization_mode": "max"}}}),
        "VALIDATION_ERROR",
        "data.args.optimization_mode",
    ),
    (
        json.dumps({"type": "command", "data": {"command": "set", "args": {"swarm_type": "dance-team"}}}),
        "VALIDATION_ERROR",
        "data.args.swarm_type",
    ),
    (
        json.dumps({"type": "command", "data": {"command": "cancel", "args": {"all": "yes"}}}),
        "VALIDATION_ERROR",
        "data.args.all",
    ),
]


@pytest.mark.parametrize(("raw", "code", "field"), BAD_FRAMES, ids=range(len(BAD_FRAMES)))
async def test_bad_frames_get_one_error_frame_and_the_connection_stays_usable(
    fast_config: orchestra.OrchestraConfig, raw: str, code: str, field: str
) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await conn.receive_text(raw)
    assert len(sock.frames) == 1
    (error,) = sock.errors()
    assert error["error"]["code"] == (code or "VALIDATION_ERROR")
    assert error["error"]["details"]["field"] == field
    assert error["error"]["message"]
    assert not conn.should_close
    await assert_pong(conn, sock)
    await conn.close()


async def test_chat_errors_carry_the_request_id(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await send(conn, "chat", {"message": "", "request_id": "empty-1"})
    (error,) = sock.errors()
    assert error["request_id"] == "empty-1"
    await conn.close()


async def test_binary_frames_get_an_error_frame(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await conn.receive_bytes(b'{"type": "control", "data": {"action": "ping"}}')
    await conn.receive_bytes(b"x" * 70_000)
    codes = [e["error"]["code"] for e in sock.errors()]
    assert codes == ["VALIDATION_ERROR", "PAYLOAD_TOO_LARGE"]
    await assert_pong(conn, sock)
    await conn.close()


# -- rate limit ------------------------------------------------------------------------------------


class Bucket(LocalTokenBucket):
    """The real per-connection bucket (capacity 10, 100/min) on a clock the test moves."""

    def __init__(self, capacity: int = WS_CAPACITY) -> None:
        self.now = 0.0
        self.keys: set[str] = set()
        super().__init__(capacity=capacity, refill_per_s=WS_REFILL_PER_S, clock=lambda: self.now)

    async def acquire(self, key: str = "", cost: int = 1) -> RateLimitDecision:
        self.keys.add(key)
        return await super().acquire(key, cost)


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


# -- commands --------------------------------------------------------------------------------------


async def test_cancel_mid_run_ends_the_chat_and_the_next_one_runs(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, spy = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "long", "slow", swarm_type="coding-debate", optimization_mode="quality")
    await chat(conn, "Write a poem", "next")
    await sock.wait_for(lambda: any(s["event"] == "token" for s in sock.of("stream")))
    result = await command(conn, sock, "cancel")
    assert result == {"cancelled": ["slow"]}
    cancelled = sock.terminal("slow")
    assert cancelled is not None and cancelled["data"]["error"]["code"] == "CANCELLED"
    assert sock.frames.index(cancelled) < len(sock.frames) - 1  # reported before the command result
    calls = len(spy.requests)
    assert (await engine.transcript("alice", "slow")).outcome == "cancelled"
    assert (await sock.wait_terminal("next"))["type"] == "chat"
    assert all(r.messages[-1].content != "long" for r in spy.requests[calls:])
    await conn.close()


async def test_cancel_right_after_submitting(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "long", "early")
    assert await command(conn, sock, "cancel", request_id="early") == {"cancelled": ["early"]}
    frame = sock.terminal("early")
    assert frame is not None and frame["data"]["error"]["code"] == "CANCELLED"
    assert engine.running() == [] and conn.running is None
    await assert_pong(conn, sock)
    await conn.close()


async def test_cancel_a_waiting_chat_or_all(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    for rid in ("a", "b", "c", "d"):
        await chat(conn, "question", rid)
    assert await command(conn, sock, "cancel", request_id="c") == {"cancelled": ["c"]}
    assert conn.running == "a" and conn.waiting == ["b", "d"]
    frame = sock.terminal("c")
    assert frame is not None and frame["data"]["error"]["code"] == "CANCELLED"
    assert await command(conn, sock, "cancel", request_id="nope") == {"cancelled": []}
    assert await command(conn, sock, "cancel", all=True) == {"cancelled": ["b", "d", "a"]}
    assert conn.running is None and conn.waiting == []
    for rid in ("a", "b", "c", "d"):  # every accepted chat got exactly one terminal frame
        ends = [e for e in sock.errors(rid)] + [c for c in sock.of("chat") if c["request_id"] == rid]
        assert len(ends) == 1 and ends[0]["error"]["code"] == "CANCELLED"
    assert await command(conn, sock, "cancel") == {"cancelled": []}
    await conn.close()


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


def test_handshake_credentials() -> None:
    assert handshake_credentials("Bearer k1", []) == ("k1", None)
    assert handshake_credentials("Basic abc", ["orchestra.v2"]) == (None, "orchestra.v2")
    assert handshake_credentials(None, ["orchestra.v2", "bearer.k2"]) == ("k2", "orchestra.v2")
    assert handshake_credentials("Bearer k1", ["orchestra.v2", "bearer.k2"]) == ("k1", "orchestra.v2")
    assert handshake_credentials(None, ["bearer."]) == (None, None)


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


# -- any text at all -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_KEYS = "message request_id optimization_mode swarm_type use_memory context command args action all x"
_keys = st.sampled_from(_KEYS.split())
_values = _json | st.sampled_from(["ping", "status", "cancel", "history", "swarms", "set", "lite", "dance"])
_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "command", "control", "stream", "other"]) | _json},
    optional={
        "data": st.dictionaries(_keys, _values, max_size=4) | _json,
        "timestamp": st.sampled_from(["2025-01-01T00:00:00Z", "soon"]) | _json,
        "extra": _json,
    },
).map(json.dumps)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.text(max_size=200) | _frames)
def test_any_text_frame_never_raises(fast_config: orchestra.OrchestraConfig, raw: str) -> None:
    async def scenario() -> None:
        engine, _ = make_engine(fast_config)
        conn, sock = connect(engine)
        await conn.receive_text(raw)
        me = asyncio.current_task()
        mine = [f for f, t in zip(sock.frames, sock.senders, strict=True) if t is me]
        errors = [f for f in mine if f["type"] == "control" and f["data"]["action"] == "error"]
        assert len(errors) <= 1
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not (isinstance(parsed, dict) and parsed.get("type") in ("chat", "command", "control")):
            assert len(errors) == 1 and len(mine) == 1
        if not conn.should_close:
            await assert_pong(conn, sock)
        await conn.close()
        assert asyncio.all_tasks() == {me}

    asyncio.run(scenario())


# -- the published contract ------------------------------------------------------------------------


async def test_server_frames_match_docs_asyncapi(fast_config: orchestra.OrchestraConfig) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    yaml = pytest.importorskip("yaml")
    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())

    def schema_of(frame: Frame) -> str:
        if frame["type"] == "control":
            return {"connected": "ConnectedFrame", "pong": "PongFrame", "status": "StatusFrame"}.get(
                frame["data"]["action"], "ErrorFrame"
            )
        return {"stream": "StreamFrame", "chat": "ChatAnswerFrame", "command": "CommandResultFrame"}[
            frame["type"]
        ]

    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine, limiter=Bucket(capacity=100))
    await conn.open()
    await chat(conn, "Write a poem", "p1", context={"a": 1})
    await sock.wait_terminal("p1")
    await send(conn, "control", {"action": "status"})
    await assert_pong(conn, sock)
    await conn.receive_text("not json")
    for name, args in [("history", {}), ("swarms", {}), ("set", {"use_memory": True}), ("reset", {})]:
        await command(conn, sock, name, **args)
    await command(conn, sock, "cancel")
    await command(conn, sock, "end")
    for frame in sock.frames:
        validator = jsonschema.Draft7Validator({**doc, "$ref": f"#/components/schemas/{schema_of(frame)}"})
        errors = [e.message for e in validator.iter_errors(frame)]
        assert not errors, (frame, errors)
    # and the client frames this test sent are what the document says clients send
    sent = [
        ("ChatRequestFrame", {"type": "chat", "data": {"message": "hi", "request_id": "p1"}}),
        ("CommandRequestFrame", {"type": "command", "data": {"command": "cancel", "args": {}}}),
        (
            "CommandRequestFrame",
            {"type": "command", "data": {"command": "set", "args": {"swarm_type": None}}},
        ),
        (
            "ControlRequestFrame",
            {"type": "control", "data": {"action": "ping"}, "timestamp": "2025-01-01T00:00Z"},
        ),
    ]
    for name, frame in sent:
        jsonschema.validate(frame, {**doc, "$ref": f"#/components/schemas/{name}"})
    await conn.close()
