"""Failures are ordinary: processes killed with SIGKILL mid-run, on the real Ray and Serve of the session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ServeInfo

pytestmark = pytest.mark.slow


def _agent(handle: Any, team: str, instance: str) -> dict[str, Any]:
    return next(
        a for a in handle.actors() if a["kind"] == "agent" and a["team"] == team and a["agent"] == instance
    )


async def test_an_agent_actor_killed_mid_run_restarts_and_the_run_completes(orchestra_handle: Any) -> None:
    orchestra_handle.warm_up(["long-debate"])
    before = _agent(orchestra_handle, "long-debate", "coder-1")
    run = asyncio.ensure_future(
        orchestra_handle.achat("a long debate", swarm_type="long-debate", optimization_mode="lite")
    )
    await asyncio.sleep(0.3)  # some rounds in: coder-1 has a turn in flight most of the time
    assert not run.done()
    os.kill(before["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(run, 60)
    rounds = orchestra_handle.config.teams["long-debate"].modes["lite"].rounds
    steps = result.metadata.processing_steps
    assert len(steps) == 2 * rounds + 1  # every round of both coders, then the judge: nothing lost
    assert {s.agent for s in steps} == {"coder-1", "coder-2", "judge"}
    after = _agent(orchestra_handle, "long-debate", "coder-1")
    assert after["pid"] != before["pid"]  # the same named actor, restarted in a new process
    later = await orchestra_handle.achat("and another", swarm_type="long-debate", optimization_mode="lite")
    assert len(later.metadata.processing_steps) == 2 * rounds + 1


async def test_a_mode_replica_killed_mid_run_resumes_the_run_on_another_from_its_checkpoints(
    serve_app: ServeInfo, redis_server: str
) -> None:
    import redis.asyncio as aioredis
    from ray import serve

    mode = serve.get_deployment_handle("ModeLite", app_name="orchestra")
    pid = (await mode.probe.remote())["pid"]
    headers = serve_app.auth(serve_app.key(27))
    kept = f"kept-{uuid.uuid4().hex[:8]}"
    rid = str(uuid.uuid4())  # the X-Request-ID (a UUID4, or the proxy replaces it) is the run id
    store = aioredis.Redis.from_url(redis_server, decode_responses=True)
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=60) as client:
        first = await client.post(
            "/chat/v2/chat",
            json={"message": "Write a poem", "optimization_mode": "lite", "session_id": kept},
            headers=headers,
        )
        assert first.status_code == 200
        body = {"message": "long", "swarm_type": "long-debate", "optimization_mode": "lite"}
        running = asyncio.ensure_future(
            client.post("/chat/v2/chat", json=body, headers={**headers, "X-Request-ID": rid})
        )
        (key,) = [k async for k in _wait_keys(store, f"orchestra:run:*/{rid}")]
        # Polling the store: a checkpoint has no event to wait on here.
        while await store.llen(f"{key}:steps") < 6:  # noqa: ASYNC110  # some steps done, checkpointed
            await asyncio.sleep(0.02)
        before = await store.hgetall(key)
        os.kill(pid, signal.SIGKILL)
        answer = await running
        # Resumed on the replica Serve started instead, from its checkpoints: it completes, whole.
        assert answer.status_code == 200, answer.text
        rounds = 20
        steps = answer.json()["data"]["metadata"]["processing_steps"]
        assert len(steps) == 2 * rounds + 1 and {s["agent"] for s in steps} == {"coder-1", "coder-2", "judge"}
        after = await store.hgetall(key)
        assert after["status"] == "completed" and int(after["resumes"]) >= 1
        assert after["coordinator"] != before["coordinator"] and after["created_at"] == before["created_at"]
        assert await store.llen(f"{key}:steps") == 2 * rounds + 1  # no step checkpointed twice
        # New chats succeed, and the sessions are intact (the resumed turn stored once).
        again = await client.post(
            "/chat/v2/chat", json={"message": "again", "optimization_mode": "lite"}, headers=headers
        )
        assert again.status_code == 200, again.text
        session = await client.get(f"/chat/v2/sessions/{kept}", headers=headers)
        assert [t["message"] for t in session.json()["data"]["turns"]] == ["Write a poem"]
    await store.aclose()
    assert (await mode.probe.remote())["pid"] != pid


async def test_a_mode_replica_killed_mid_stream_resumes_and_the_websocket_stream_goes_on(
    serve_app: ServeInfo,
) -> None:
    from ray import serve
    from websockets.asyncio.client import connect

    from .test_websocket import recv, send, url

    mode = serve.get_deployment_handle("ModeLite", app_name="orchestra")
    pid = (await mode.probe.remote())["pid"]
    rid = f"ws-resumed-{uuid.uuid4().hex[:8]}"
    chat = {"message": "long", "swarm_type": "long-debate", "optimization_mode": "lite", "request_id": rid}
    frames: list[dict[str, Any]] = []
    headers = serve_app.auth(serve_app.key(55))
    async with connect(url(serve_app, "c-fault", f"ws-fault-{rid}"), additional_headers=headers) as ws:
        await recv(ws)
        await send(ws, "chat", chat)
        while len(frames) < 30:
            frames.append(await recv(ws))
        os.kill(pid, signal.SIGKILL)
        while not (frames[-1]["type"] == "chat" or frames[-1]["data"].get("action") == "error"):
            frames.append(await asyncio.wait_for(recv(ws), 40))
    final = frames[-1]
    assert final["type"] == "chat", final  # resumed on the replica Serve started instead: it completed
    assert len(final["data"]["metadata"]["processing_steps"]) == 2 * 20 + 1
    ids = [f["data"]["event_id"] for f in frames if "event_id" in f["data"]]
    assert ids == sorted(set(ids))  # strictly increasing: no event twice, whichever replica sent it
    assert (await mode.probe.remote())["pid"] != pid


async def _wait_keys(store: Any, pattern: str) -> Any:
    """The keys matching ``pattern`` once there are any (a run's record appears within milliseconds)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [k async for k in store.scan_iter(match=pattern) if not k.endswith((":steps", ":events"))]
        if found:
            for k in found:
                yield k
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no key {pattern}")


async def test_redis_killed_and_restarted_under_load_loses_no_acknowledged_turn(
    serve_app: ServeInfo, redis_process: Any
) -> None:
    """Chats keep coming while redis-server is SIGKILLed and started again on its append-only file."""
    acknowledged: dict[str, list[str]] = {}
    refused: list[httpx.Response] = []
    phase = {"outage": False, "during": 0, "after": 0}
    stop, recovered = asyncio.Event(), asyncio.Event()

    async def worker(client: httpx.AsyncClient, i: int) -> None:
        session = f"redis-restart-{i}-{uuid.uuid4().hex[:6]}"
        acknowledged[session] = []
        headers = serve_app.auth(serve_app.key(102 + i))
        n = 0
        while not stop.is_set():
            n += 1
            message = f"turn {n} of worker {i}"
            r = await client.post(
                "/chat/v2/chat",
                json={"message": message, "optimization_mode": "lite", "session_id": session},
                headers=headers,
            )
            if r.status_code == 200:
                acknowledged[session].append(message)
                phase["after"] += not phase["outage"] and phase["during"] > 0
                if phase["after"] >= 12:
                    recovered.set()
            else:
                refused.append(r)
                phase["during"] += phase["outage"]
                await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=60) as client:
        workers = [asyncio.ensure_future(worker(client, i)) for i in range(6)]
        await asyncio.sleep(2.0)
        phase["outage"] = True
        redis_process.kill()
        await asyncio.sleep(2.0)
        redis_process.start()
        phase["outage"] = False
        # Load goes on until every worker has had chats acknowledged after the restart.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recovered.wait(), timeout=60)
        stop.set()
        await asyncio.gather(*workers)
        assert phase["during"] > 0, "no chat met the outage: the test did not test anything"
        assert phase["after"] >= 12, "the service did not recover after Redis came back"
        for r in refused:  # refused in the envelope, with Retry-After: never a 500
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE" and int(r.headers["Retry-After"]) >= 1
        for i, (session, messages) in enumerate(acknowledged.items()):
            got = await client.get(
                f"/chat/v2/sessions/{session}", headers=serve_app.auth(serve_app.key(102 + i))
            )
            assert got.status_code == 200, got.text
            stored = [t["message"] for t in got.json()["data"]["turns"]]
            # every acknowledged turn is stored, in order (a refused one may be stored too: not acknowledged)
            assert [m for m in stored if m in messages] == messages, (session, stored, messages)
