"""Resuming a run's stream on another connection (``resume``): every event after the last one seen,
exactly once, then the answer; a dropped connection's run waits for it (``resume_grace_s``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import orchestra
from orchestra.serving.ws import WsConnection
from tests.unit.conftest import make_engine
from tests.unit.serving.ws.client import SLOW, Socket, chat, command, connect, send


def ids_of(sock: Socket, rid: str) -> list[int]:
    return [
        f["data"]["event_id"]
        for f in sock.frames
        if f["data"].get("request_id") == rid and "event_id" in f["data"]
    ]


async def test_a_dropped_client_resumes_on_a_new_connection_and_misses_nothing(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    first, sock1 = connect(engine, resume_grace_s=5.0)
    await chat(first, "long", "r-1", swarm_type="coding-debate", optimization_mode="balanced")
    await sock1.wait_for(lambda: len(sock1.of("stream")) >= 5)
    sock1.fail_after = len(sock1.frames)  # the network drops here
    await sock1.wait_for(lambda: first.should_close)
    await first.close()  # the ingress closes its side: the run goes on for a resume
    assert engine.running() == ["r-1"]
    seen = ids_of(sock1, "r-1")
    assert seen == list(range(1, len(seen) + 1))

    second, sock2 = connect(engine, session_id="s-1")
    await second.open()
    result = await command(second, sock2, "resume", request_id="r-1", last_event_id=seen[-1])
    assert result == {"request_id": "r-1", "last_event_id": seen[-1], "status": "running"}
    final = await sock2.wait_terminal("r-1", within=20)
    assert final["type"] == "chat" and final["data"]["metadata"]["swarm_type"] == "coding-debate"
    resumed = ids_of(sock2, "r-1")
    total = seen + resumed
    assert total == list(range(1, total[-1] + 1))  # every event exactly once, in order, no gap
    assert final["data"]["event_id"] == total[-1]
    assert sock2.frames.index(final) == len(sock2.frames) - 1
    # Joined per (agent, round), the tokens of both connections are each turn's full text.
    frames = [f["data"] for f in sock1.frames + sock2.frames if f["type"] == "stream"]
    texts: dict[tuple[str, int], str] = {}
    for f in frames:
        if f["event"] == "token":
            texts[(f["agent"], f["round"])] = texts.get((f["agent"], f["round"]), "") + f["token"]
    ends = [f for f in frames if f["event"] == "turn_end"]
    assert len(ends) == len(final["data"]["metadata"]["processing_steps"])
    transcript = await engine.transcript("alice", "r-1")
    assert {(e.agent, e.round): e.text for e in transcript.entries} == texts
    await second.close()


async def test_a_dropped_client_that_never_resumes_has_its_run_cancelled_after_the_grace(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, spy = make_engine(fast_config, SLOW)
    conn, sock = connect(engine, resume_grace_s=0.3)
    await chat(conn, "long", "r-2", swarm_type="coding-debate", optimization_mode="quality")
    await sock.wait_for(lambda: sock.of("stream"))
    await conn.close()
    assert engine.running() == ["r-2"]  # not at once: it waits for a resume
    await sock.wait_for(lambda: engine.running() == [], within=5)
    await engine.run_writer.flush()
    record = await engine.run_record("alice", "r-2")
    assert record.status == "cancelled"
    asked = len(spy.requests)
    await asyncio.sleep(0.2)
    assert len(spy.requests) == asked  # nothing more was asked of the model


async def test_without_a_grace_a_dropped_connection_cancels_its_run(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "long", "r-3", swarm_type="coding-debate", optimization_mode="quality")
    await sock.wait_for(lambda: sock.of("stream"))
    await conn.close()
    assert engine.running() == []


async def test_resuming_a_finished_run_replays_it_from_any_id(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config, SLOW)
    conn, sock = connect(engine)
    await chat(conn, "short", "r-4", swarm_type="coding-team")
    first = await sock.wait_terminal("r-4")
    everything = ids_of(sock, "r-4")
    for after in (0, everything[len(everything) // 2]):
        again, sock2 = connect(engine)
        result = await command(again, sock2, "resume", request_id="r-4", last_event_id=after)
        assert result["status"] == "completed"
        final = await sock2.wait_terminal("r-4")
        assert ids_of(sock2, "r-4") == [i for i in everything if i > after]
        assert final["data"]["response"] == first["data"]["response"]
        await again.close()
    await conn.close()


@pytest.mark.parametrize(
    ("tenant", "session", "rid"),
    [("alice", "s-1", "no-such-run"), ("bob", "s-1", "r-5"), ("alice", "another-session", "r-5")],
)
async def test_an_unknown_run_or_someone_elses_is_not_found(
    fast_config: orchestra.OrchestraConfig, tenant: str, session: str, rid: str
) -> None:
    engine, _ = make_engine(fast_config)
    owner, owner_sock = connect(engine)
    await chat(owner, "hi", "r-5", swarm_type="coding-team")
    await owner_sock.wait_terminal("r-5")
    sock = Socket()
    conn = WsConnection(engine, send=sock.send, tenant=tenant, client_id="c", session_id=session)
    await send(conn, "command", {"command": "resume", "args": {"request_id": rid, "last_event_id": 0}})
    (error,) = sock.errors()
    assert error["error"]["code"] == "NOT_FOUND" and error["request_id"] == rid
    assert not sock.of("stream") and not sock.of("chat")


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"last_event_id": 1}, "data.args.request_id"),
        ({"request_id": "r", "last_event_id": -1}, "data.args.last_event_id"),
        ({"request_id": "r", "last_event_id": "3"}, "data.args.last_event_id"),
        ({"request_id": "r", "last_event_id": True}, "data.args.last_event_id"),
        ({"request_id": "r", "since": 3}, "data.args.since"),
    ],
)
async def test_bad_resume_args_are_validation_errors(
    fast_config: orchestra.OrchestraConfig, args: dict[str, Any], field: str
) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await send(conn, "command", {"command": "resume", "args": args})
    (error,) = sock.errors()
    assert error["error"]["code"] == "VALIDATION_ERROR" and error["error"]["details"]["field"] == field
