"""Runs in the store over real Ray Serve and Redis: a WebSocket client that drops mid-stream resumes the
run's stream on a new connection, from the last event it saw."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from websockets.asyncio.client import connect

from .conftest import ServeInfo
from .test_websocket import recv, send, until, url


def _ids(frames: list[dict[str, Any]], rid: str) -> list[int]:
    return [
        f["data"]["event_id"]
        for f in frames
        if f["data"].get("request_id") == rid and "event_id" in f["data"]
    ]


def _terminal(rid: str) -> Any:
    return lambda f: (
        f["data"].get("request_id") == rid and (f["type"] == "chat" or f["data"].get("action") == "error")
    )


async def test_a_client_that_drops_mid_stream_resumes_and_gets_every_event_once(serve_app: ServeInfo) -> None:
    h = serve_app.auth(serve_app.key(52))
    session, rid = f"resume-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    chat = {"message": "long", "swarm_type": "long-debate", "optimization_mode": "lite", "request_id": rid}
    ws = await connect(url(serve_app, "dropper", session), additional_headers=h)
    await recv(ws)
    await send(ws, "chat", chat)
    first: list[dict[str, Any]] = []
    while len([f for f in first if f["type"] == "stream"]) < 20:  # some rounds in, far from the end
        first.append(await recv(ws))
    assert not any(f["type"] == "chat" for f in first)
    ws.transport.abort()  # the network drops: no close handshake
    seen = _ids(first, rid)
    assert seen == list(range(1, len(seen) + 1))

    await asyncio.sleep(0.2)  # the client takes a moment to come back; the run goes on meanwhile
    async with connect(url(serve_app, "dropper-again", session), additional_headers=h) as again:
        await recv(again)
        await send(
            again, "command", {"command": "resume", "args": {"request_id": rid, "last_event_id": seen[-1]}}
        )
        result, _ = await until(again, lambda f: f["type"] == "command")
        assert result["data"]["result"]["request_id"] == rid
        final, resumed = await until(again, _terminal(rid))
    assert final["type"] == "chat", final
    rounds = 20
    assert len(final["data"]["metadata"]["processing_steps"]) == 2 * rounds + 1
    after = _ids(resumed, rid)
    assert after and after[0] == seen[-1] + 1
    total = seen + after
    assert total == list(range(1, total[-1] + 1))  # strictly increasing, each once, no gap
    assert final["data"]["event_id"] == total[-1]

    # The whole log, replayed from the start on a third connection, is exactly what the two saw.
    async with connect(url(serve_app, "auditor", session), additional_headers=h) as audit:
        await recv(audit)
        await send(audit, "command", {"command": "resume", "args": {"request_id": rid, "last_event_id": 0}})
        replay_final, replayed = await until(audit, _terminal(rid))
    assert _ids(replayed, rid) == total
    by_id = {f["data"]["event_id"]: f["data"] for f in first + resumed if "event_id" in f["data"]}
    for frame in replayed:
        if "event_id" in frame["data"] and frame["type"] == "stream":
            assert frame["data"] == by_id[frame["data"]["event_id"]]
    assert replay_final["data"]["response"] == final["data"]["response"]


async def test_resuming_an_unknown_or_another_tenants_run_is_not_found(serve_app: ServeInfo) -> None:
    session, rid = f"mine-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    async with connect(
        url(serve_app, "owner", session), additional_headers=serve_app.auth(serve_app.key(53))
    ) as ws:
        await recv(ws)
        await send(ws, "chat", {"message": "hi", "optimization_mode": "lite", "request_id": rid})
        await until(ws, _terminal(rid))
    for key, run_id in ((serve_app.key(54), rid), (serve_app.key(53), "never-ran")):
        async with connect(url(serve_app, "other", session), additional_headers=serve_app.auth(key)) as ws:
            await recv(ws)
            await send(
                ws, "command", {"command": "resume", "args": {"request_id": run_id, "last_event_id": 0}}
            )
            frame, seen = await until(ws, lambda f: f["data"].get("action") == "error")
            assert frame["data"]["error"]["code"] == "NOT_FOUND" and frame["data"]["request_id"] == run_id
            assert not any(f["type"] in ("stream", "chat") for f in seen)
            assert "redis" not in str(frame).lower()
