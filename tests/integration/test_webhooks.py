"""Webhooks end to end: real Serve over HTTP/WS, the real dispatcher actor, real local receivers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from orchestra.webhooks import verify
from tests.unit.webhooks.receiver import Receiver, Reply

from .conftest import ServeInfo
from .test_websocket import recv, send, until, url

SECRET = "integration-secret-0123456789"


async def _subscribe(
    client: httpx.AsyncClient, info: ServeInfo, key: str, target: str, events: list[str]
) -> str:
    r = await client.post(
        "/webhooks/v2", json={"url": target, "events": events, "secret": SECRET}, headers=info.auth(key)
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def _events(rx: Receiver) -> list[dict[str, Any]]:
    for r in rx.received:
        verify(SECRET, r.headers, r.body)  # every delivery is signed
    return [json.loads(r.body) for r in rx.received]


async def _until(rx: Receiver, pred: Any, timeout_s: float = 30.0) -> None:
    """Until the receiver got an event matching ``pred`` (bounded: a lost event fails the test)."""
    async with asyncio.timeout(timeout_s):
        while not any(pred(e) for e in _events(rx)):  # noqa: ASYNC110 (deliveries come from another process)
            await asyncio.sleep(0.05)


async def test_chats_and_session_ends_are_delivered_signed_once_each(serve_app: ServeInfo) -> None:
    key, other = serve_app.key(62), serve_app.key(63)
    async with (
        Receiver(Reply(200)) as rx,
        httpx.AsyncClient(base_url=serve_app.base_url, timeout=60) as client,
    ):
        wid = await _subscribe(client, serve_app, key, rx.url(), ["chat.completed", "session.ended"])
        # REST chat, then DELETE
        chat = await client.post(
            "/chat/v2/chat",
            json={"message": "Write a haiku", "optimization_mode": "lite", "session_id": "wh-rest"},
            headers=serve_app.auth(key),
        )
        assert chat.status_code == 200
        rid = chat.headers["X-Request-ID"]
        await _until(rx, lambda e: e["type"] == "chat.completed" and e["data"]["request_id"] == rid)
        [completed] = [e for e in _events(rx) if e["type"] == "chat.completed"]
        assert completed["data"] == {**chat.json()["data"], "request_id": rid}
        assert (
            await client.delete("/chat/v2/sessions/wh-rest", headers=serve_app.auth(other))
        ).status_code == 404
        assert (
            await client.delete("/chat/v2/sessions/wh-rest", headers=serve_app.auth(key))
        ).status_code == 200
        await _until(rx, lambda e: e["type"] == "session.ended" and e["data"]["session_id"] == "wh-rest")
        # a WebSocket chat, then its `end` command
        async with connect(url(serve_app, "wh", "wh-ws"), additional_headers=serve_app.auth(key)) as ws:
            await recv(ws)
            await send(ws, "chat", {"message": "hello", "optimization_mode": "lite", "request_id": "wh-ws-1"})
            await until(ws, lambda f: f["type"] == "chat")
            await send(ws, "command", {"command": "end", "args": {}})
            await until(ws, lambda f: f["type"] == "command")
        await _until(rx, lambda e: e["type"] == "session.ended" and e["data"]["session_id"] == "wh-ws")
        await _until(rx, lambda e: e["type"] == "chat.completed" and e["data"]["request_id"] == "wh-ws-1")
        # another tenant's subscription endpoints are 404; the attempts are listed for the owner
        assert (await client.get(f"/webhooks/v2/{wid}", headers=serve_app.auth(other))).status_code == 404
        history = await client.get(f"/webhooks/v2/{wid}/deliveries", headers=serve_app.auth(key))
        outcomes = {a["outcome"] for a in history.json()["data"]["deliveries"]}
        assert outcomes == {"delivered"}
        series = 'webhook_deliveries_total{event="chat.completed",outcome="delivered"}'
        for _ in range(50):  # the dispatcher pushes its counts every second
            metrics = await client.get("/metrics", headers=serve_app.auth(serve_app.metrics_key))
            if series in metrics.text:
                break
            await asyncio.sleep(0.2)
        for text in (
            history.text,
            metrics.text,
            (await client.get("/webhooks/v2", headers=serve_app.auth(key))).text,
        ):
            assert SECRET not in text
    ended = [e["data"]["session_id"] for e in _events(rx) if e["type"] == "session.ended"]
    assert sorted(ended) == ["wh-rest", "wh-ws"]  # exactly once each
    assert series in metrics.text
    spec = (await httpx.AsyncClient(base_url=serve_app.base_url).get("/openapi.json")).json()
    assert {"/webhooks/v2", "/webhooks/v2/{webhook_id}", "/webhooks/v2/{webhook_id}/deliveries"} <= set(
        spec["paths"]
    )


@pytest.mark.slow
async def test_a_killed_dispatcher_actor_loses_no_pending_delivery(serve_app: ServeInfo) -> None:
    import ray

    key = serve_app.key(64)
    # the first attempt hangs past the timeout (2 s here): the dispatcher is killed while it waits
    async with (
        Receiver(Reply(200, delay_s=10), Reply(200)) as rx,
        httpx.AsyncClient(base_url=serve_app.base_url, timeout=60) as client,
    ):
        wid = await _subscribe(client, serve_app, key, rx.url(), ["chat.completed"])
        queued = await client.post(f"/webhooks/v2/{wid}/test", headers=serve_app.auth(key))
        assert queued.status_code == 202
        did = queued.json()["data"]["delivery_id"]
        await rx.wait_for(1, timeout_s=30)
        actor = ray.get_actor("orchestra-webhooks", namespace="orchestra-serve")
        os.kill(await actor.pid.remote(), signal.SIGKILL)
        await rx.wait_for(2, timeout_s=60)  # Ray restarted it, and it claimed the delivery again
        assert [r.headers["X-Orchestra-Delivery"] for r in rx.received] == [did, did]
        assert _events(rx)[0]["type"] == "webhook.test"
