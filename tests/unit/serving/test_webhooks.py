"""The webhook routes through the gateway (no Ray), and the events a chat and a session end queue."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

import orchestra
from orchestra.serving._auth import ApiKeys
from orchestra.serving._gateway import Gateway
from orchestra.serving._metrics import Metrics
from orchestra.stores import InMemoryKeyStore, InMemorySessionStore, InMemoryWebhookStore, LocalTokenBucket
from orchestra.webhooks import EventPublisher, sweep_sessions
from tests.unit.conftest import make_engine

SECRET = "a-secret-of-twenty-chars"
HOOK = {
    "url": "https://hooks.example.com/in",
    "events": ["chat.completed", "session.ended"],
    "secret": SECRET,
}


def _app(gw: Gateway) -> Starlette:
    async def webhooks(request: Request) -> Response:
        if request.method == "POST":
            return await gw.create_webhook(request, "/webhooks/v2")
        return await gw.list_webhooks(request, "/webhooks/v2")

    async def webhook(request: Request) -> Response:
        wid = request.path_params["wid"]
        if request.method == "DELETE":
            return await gw.delete_webhook(request, "/webhooks/v2/{webhook_id}", wid)
        return await gw.get_webhook(request, "/webhooks/v2/{webhook_id}", wid)

    async def deliveries(request: Request) -> Response:
        return await gw.webhook_deliveries(request, "/x", request.path_params["wid"])

    async def test_event(request: Request) -> Response:
        return await gw.test_webhook(request, "/x", request.path_params["wid"])

    async def chat(request: Request) -> Response:
        return await gw.chat(request, "/chat/v2/chat", "v2")

    async def session(request: Request) -> Response:
        return await gw.end_session(request, "/chat/v2/sessions/{session_id}", request.path_params["sid"])

    return Starlette(
        routes=[
            Route("/webhooks/v2", webhooks, methods=["GET", "POST"]),
            Route("/webhooks/v2/{wid}", webhook, methods=["GET", "DELETE"]),
            Route("/webhooks/v2/{wid}/deliveries", deliveries),
            Route("/webhooks/v2/{wid}/test", test_event, methods=["POST"]),
            Route("/chat/v2/chat", chat, methods=["POST"]),
            Route("/chat/v2/sessions/{sid}", session, methods=["DELETE"]),
        ]
    )


@pytest.fixture
async def setup(fast_config: orchestra.OrchestraConfig) -> tuple[Gateway, InMemoryWebhookStore, str, str]:
    store = InMemoryWebhookStore()
    engine, _ = make_engine(fast_config)
    engine.events = EventPublisher(store)
    keys = ApiKeys(InMemoryKeyStore())
    alice, _ = await keys.create(tenant="alice")
    bob, _ = await keys.create(tenant="bob")
    gw = Gateway(
        engine,
        keys=keys,
        limiter=LocalTokenBucket(capacity=1000, refill_per_s=100),
        metrics=Metrics(),
        teams=list(fast_config.teams),
        probes={},
        version="test",
        webhooks=store,
    )
    return gw, store, alice, bob


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_subscriptions_are_the_callers_and_never_show_the_secret(setup: Any) -> None:
    gw, _, alice, bob = setup
    with TestClient(_app(gw)) as client:
        created = client.post("/webhooks/v2", json=HOOK, headers=_auth(alice))
        assert created.status_code == 201, created.text
        sub = created.json()["data"]
        assert set(sub) == {"id", "url", "events", "created_at", "active", "disabled_reason"}
        assert sub["events"] == ["chat.completed", "session.ended"] and sub["active"] is True
        wid = sub["id"]
        assert client.get(f"/webhooks/v2/{wid}", headers=_auth(alice)).json()["data"] == sub
        assert [
            w["id"] for w in client.get("/webhooks/v2", headers=_auth(alice)).json()["data"]["webhooks"]
        ] == [wid]
        for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/deliveries"), ("POST", "/test")]:
            theirs = client.request(method, f"/webhooks/v2/{wid}{path}", headers=_auth(bob))
            assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "NOT_FOUND"
        assert client.get("/webhooks/v2", headers=_auth(bob)).json()["data"] == {"webhooks": []}
        queued = client.post(f"/webhooks/v2/{wid}/test", headers=_auth(alice))
        assert queued.status_code == 202 and queued.json()["data"]["delivery_id"].startswith("dlv_")
        history = client.get(f"/webhooks/v2/{wid}/deliveries", headers=_auth(alice))
        assert history.status_code == 200 and history.json()["data"] == {"id": wid, "deliveries": []}
        everything = [created, queued, history, client.get("/webhooks/v2", headers=_auth(alice))]
        assert not any(SECRET in r.text for r in everything)
        assert client.delete(f"/webhooks/v2/{wid}", headers=_auth(alice)).json()["data"] == {
            "id": wid,
            "deleted": True,
        }
        assert client.get(f"/webhooks/v2/{wid}", headers=_auth(alice)).status_code == 404
        assert client.get("/webhooks/v2").status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**HOOK, "url": "http://hooks.example.com/in"}, "url"),
        ({**HOOK, "url": "https://127.0.0.1/in"}, "url"),
        ({**HOOK, "events": ["chat.started"]}, "events.0"),
        ({**HOOK, "events": []}, "events"),
        ({**HOOK, "events": ["chat.completed", "chat.completed"]}, "events"),
        ({**HOOK, "secret": "short"}, "secret"),
        ({**HOOK, "extra": 1}, "extra"),
        ({"url": HOOK["url"], "events": HOOK["events"]}, "secret"),
    ],
)
def test_invalid_subscriptions_get_validation_errors(setup: Any, body: dict[str, Any], field: str) -> None:
    gw, _, alice, _ = setup
    with TestClient(_app(gw)) as client:
        answer = client.post("/webhooks/v2", json=body, headers=_auth(alice))
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field
        assert "short" not in answer.text or field != "secret"  # the input is never echoed
        bad = client.post("/webhooks/v2", content=b"{", headers=_auth(alice))
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "<body>"


async def _queued(store: InMemoryWebhookStore) -> list[dict[str, Any]]:
    return [json.loads(d.body) for d in await store.claim(now=1e12, lease_until=2e12, limit=100)]


async def test_a_chat_queues_chat_completed_and_a_delete_session_ended_once(setup: Any) -> None:
    gw, store, alice, bob = setup
    with TestClient(_app(gw)) as client:
        client.post("/webhooks/v2", json=HOOK, headers=_auth(alice))
        client.post("/webhooks/v2", json={**HOOK, "events": ["session.ended"]}, headers=_auth(bob))
        body = {"message": "Write a haiku", "optimization_mode": "lite", "session_id": "s1"}
        rid = str(uuid.uuid4())
        answer = client.post("/chat/v2/chat", json=body, headers={**_auth(alice), "X-Request-ID": rid})
        assert answer.status_code == 200
        [event] = await _queued(store)
        assert event["type"] == "chat.completed" and event["id"].startswith("evt_")
        data = answer.json()["data"]
        assert event["data"] == {**data, "request_id": rid}
        assert client.delete("/chat/v2/sessions/s1", headers=_auth(alice)).status_code == 200
        assert client.delete("/chat/v2/sessions/s1", headers=_auth(alice)).status_code == 404
        [ended] = await _queued(store)  # once; bob's subscription hears nothing of alice's session
        assert ended["type"] == "session.ended"
        assert {k: ended["data"][k] for k in ("session_id", "reason", "turns")} == {
            "session_id": "s1", "reason": "ended", "turns": 1,
        }  # fmt: skip


async def test_an_idle_session_ends_once_with_session_ended(setup: Any) -> None:
    _, store, _, _ = setup
    from orchestra.stores import SessionTurn, Subscription

    await store.add_subscription(
        Subscription(id="wh_1", tenant="t", url="https://x.example", events=("session.ended",),
                     secret=SECRET, created_at=0)  # type: ignore[arg-type]
    )  # fmt: skip
    now = [0.0]
    sessions = InMemorySessionStore(ttl_s=10, clock=lambda: now[0])
    turn = SessionTurn(
        run_id="r", message="m", response="r", swarm_type="x", optimization_mode="lite", created_at=0
    )
    await sessions.append("t", "idle", turn)
    now[0] = 11
    assert await sessions.get("t", "idle") is None  # a read drops it...
    events = EventPublisher(store)
    assert [s.session_id for s in await sweep_sessions(sessions, events)] == ["idle"]  # ...the sweep ends it
    assert await sweep_sessions(sessions, events) == []
    [ended] = await _queued(store)
    assert ended["data"]["reason"] == "expired" and ended["data"]["session_id"] == "idle"
