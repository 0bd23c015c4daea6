"""Chats on one connection (orchestra/serving/ws/_chats.py) over a real in-process Engine with the
scripted provider: streaming, the queue, failures, cancelling."""

from __future__ import annotations

import json
from typing import Any

import pytest

import orchestra
import orchestra.engine
from orchestra.providers import ScriptedSettings
from orchestra.serving.ws import ChatState, WsConnection
from orchestra.serving.ws._chats import Chat
from tests.unit.conftest import make_engine
from tests.unit.serving.ws.client import SLOW, Socket, assert_pong, chat, command, connect

# -- chatting -------------------------------------------------------------------------------------


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
        "event_id",
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
    # The answer goes out before the chat has released its stream: idle right after, not at once.
    await sock.wait_for(lambda: conn.running is None)
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


# -- cancelling -----------------------------------------------------------------------------------


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


# -- a chat's states -------------------------------------------------------------------------------


def test_a_chat_moves_only_forward() -> None:
    chat = Chat(orchestra.RunRequest(message="hi", session_id="s", run_id="r"))
    assert chat.state is ChatState.WAITING and not chat.finished
    with pytest.raises(RuntimeError):
        chat.move(ChatState.RUNNING)  # only through SCHEDULED
    chat.move(ChatState.SCHEDULED)
    chat.move(ChatState.RUNNING)
    assert not chat.finished
    chat.move(ChatState.COMPLETED)
    assert chat.finished
    for state in ChatState:  # an ended chat stays ended
        with pytest.raises(RuntimeError):
            chat.move(state)
    dropped = Chat(orchestra.RunRequest(message="hi", session_id="s", run_id="w"))
    dropped.move(ChatState.CANCELLED)  # cancelled while waiting
    assert dropped.finished
