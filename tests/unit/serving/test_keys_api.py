"""Key management and budgets through the gateway, without Ray: a Starlette app whose routes call it,
over an in-process Engine, the in-memory key and usage stores and a local bucket."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

import orchestra
from orchestra.serving._auth import ApiKeys
from orchestra.serving._gateway import Gateway
from orchestra.serving._metrics import Metrics
from orchestra.stores import InMemoryKeyStore, LocalTokenBucket
from tests.unit.conftest import make_engine

ADMIN = "admin-bootstrap-key-000001"
CHAT = "chat-bootstrap-key-0000001"


async def _ok() -> None:
    return None


def _app(gateway: Gateway) -> Starlette:
    async def chat(request: Request) -> Response:
        return await gateway.chat(request, "/chat/v2/chat", "v2")

    async def keys(request: Request) -> Response:
        if request.method == "POST":
            return await gateway.keys_create(request, "/keys/v2")
        return await gateway.keys_list(request, "/keys/v2")

    async def me(request: Request) -> Response:
        return await gateway.keys_me(request, "/keys/v2/me")

    async def revoke(request: Request) -> Response:
        return await gateway.keys_revoke(request, "/keys/v2/{key}", request.path_params["key"])

    async def rotate(request: Request) -> Response:
        return await gateway.keys_rotate(request, "/keys/v2/{key}/rotate", request.path_params["key"])

    async def ws(websocket: WebSocket) -> None:
        await gateway.websocket(websocket, websocket.path_params["cid"], websocket.path_params["sid"])

    return Starlette(
        routes=[
            Route("/chat/v2/chat", chat, methods=["POST"]),
            Route("/keys/v2", keys, methods=["GET", "POST"]),
            Route("/keys/v2/me", me, methods=["GET"]),
            Route("/keys/v2/{key}", revoke, methods=["DELETE"]),
            Route("/keys/v2/{key}/rotate", rotate, methods=["POST"]),
            WebSocketRoute("/chat/ws/{cid}/{sid}", ws),
        ]
    )


@pytest.fixture
async def gateway(fast_config: orchestra.OrchestraConfig, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    monkeypatch.setenv("ORCHESTRA_API_KEYS", f"{ADMIN}:admin,{CHAT}:chat")
    engine, _ = make_engine(fast_config)
    return Gateway(
        engine,
        keys=ApiKeys(InMemoryKeyStore()),
        limiter=LocalTokenBucket(capacity=50, refill_per_s=1000 / 60, limit_per_minute=1000),
        metrics=Metrics(),
        teams=list(fast_config.teams),
        probes={"runtime": _ok, "modes": _ok, "store": _ok},
        version="test",
    )


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


LITE = {"message": "Write a haiku", "optimization_mode": "lite", "swarm_type": "creative-team"}


def _create(client: TestClient, **body: Any) -> dict[str, Any]:
    created = client.post("/keys/v2", json=body, headers=_auth(ADMIN))
    assert created.status_code == 201, created.text
    data: dict[str, Any] = created.json()["data"]
    return data


def test_admin_creates_lists_and_revokes_keys(gateway: Gateway) -> None:
    with TestClient(_app(gateway)) as client:
        data = _create(client, name="ci", scopes=["chat", "metrics"], expires_in="30d", rpm=120)
        key = data["key"]
        assert re.fullmatch(r"orch_[A-Za-z0-9_-]{40}", key)
        assert data["status"] == "active" and data["scopes"] == ["chat", "metrics"] and data["rpm"] == 120
        assert data["expires_at"].endswith("Z") and data["tokens_today"] == 0
        assert client.post("/chat/v2/chat", json=LITE, headers=_auth(key)).status_code == 200

        listing = client.get("/keys/v2", headers=_auth(ADMIN))
        assert listing.status_code == 200
        listed = listing.json()["data"]["keys"]
        assert sorted(v["name"] for v in listed) == ["ci", "env", "env"]  # and the two bootstrap keys
        views = {v["name"]: v for v in listed}
        assert views["ci"]["last_used_at"] is not None and views["ci"]["tokens_today"] > 0
        assert key not in listing.text and "hash" not in listing.text  # never the key or its hash

        revoked = client.delete("/keys/v2/ci", headers=_auth(ADMIN))  # by name
        assert revoked.status_code == 200 and revoked.json()["data"]["status"] == "revoked"
        refused = client.post("/chat/v2/chat", json=LITE, headers=_auth(key))
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert client.delete("/keys/v2/nobody", headers=_auth(ADMIN)).status_code == 404


def test_only_admin_keys_manage_keys_but_every_key_sees_itself(gateway: Gateway) -> None:
    with TestClient(_app(gateway)) as client:
        for method, path in [("POST", "/keys/v2"), ("GET", "/keys/v2"), ("DELETE", "/keys/v2/x")]:
            denied = client.request(method, path, json={"name": "x"}, headers=_auth(CHAT))
            assert denied.status_code == 401, (method, path)
            assert denied.json()["error"]["details"]["required_scope"] == "admin"
        assert client.post("/keys/v2/x/rotate", headers=_auth(CHAT)).status_code == 401
        assert client.get("/keys/v2", headers={}).status_code == 401
        me = client.get("/keys/v2/me", headers=_auth(CHAT))
        assert me.status_code == 200, me.text
        assert me.json()["data"]["key"]["scopes"] == ["chat"] and CHAT not in me.text
        assert me.json()["data"]["usage"]["tokens_used"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "x", "scopes": ["root"]}, "scopes.0"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "expires_in": "soon"}, "expires_in"),
        ({"name": "x", "rpm": 0}, "rpm"),
        ({"name": "x", "rpm": "5"}, "rpm"),
        ({"name": "x", "daily_tokens": -1}, "daily_tokens"),
        ({"name": "x", "tenant": "has space"}, "tenant"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
def test_bad_create_bodies_are_400_naming_the_field(
    gateway: Gateway, body: dict[str, Any], field: str
) -> None:
    with TestClient(_app(gateway)) as client:
        bad = client.post("/keys/v2", json=body, headers=_auth(ADMIN))
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["code"] == "VALIDATION_ERROR"
        assert bad.json()["error"]["details"]["field"] == field


def test_rotation_over_http(gateway: Gateway) -> None:
    with TestClient(_app(gateway)) as client:
        old = _create(client, name="svc")
        rotated = client.post(f"/keys/v2/{old['id']}/rotate", json={"grace": "1h"}, headers=_auth(ADMIN))
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["data"]
        assert new["id"] == old["id"] and new["key"] != old["key"] and new["previous_key_valid_until"]
        for key in (old["key"], new["key"]):
            assert client.post("/chat/v2/chat", json=LITE, headers=_auth(key)).status_code == 200
        at_once = client.post("/keys/v2/svc/rotate", json={"grace": "0s"}, headers=_auth(ADMIN))
        newest = at_once.json()["data"]
        assert newest["previous_key_valid_until"] is None
        for key in (old["key"], new["key"]):
            assert client.post("/chat/v2/chat", json=LITE, headers=_auth(key)).status_code == 401
        assert client.post("/chat/v2/chat", json=LITE, headers=_auth(newest["key"])).status_code == 200
        bad = client.post("/keys/v2/svc/rotate", json={"grace": "forever"}, headers=_auth(ADMIN))
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "grace"


def test_a_keys_own_rpm_is_its_limit(gateway: Gateway) -> None:
    with TestClient(_app(gateway)) as client:
        slow = _create(client, name="slow", rpm=2)["key"]
        answers = [client.get("/keys/v2/me", headers=_auth(slow)) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["X-RateLimit-Limit"] == "2"
        assert answers[0].headers["X-RateLimit-Remaining"] == "1"
        assert 29 <= int(answers[2].headers["Retry-After"]) <= 30
        fast = client.get("/keys/v2/me", headers=_auth(CHAT))
        assert fast.headers["X-RateLimit-Limit"] == "1000"


def test_a_daily_budget_refuses_runs_once_used_and_counts_per_key(gateway: Gateway) -> None:
    with TestClient(_app(gateway)) as client:
        data = _create(client, name="budgeted", daily_tokens=1)
        key, key_id = data["key"], data["id"]
        first = client.post("/chat/v2/chat", json=LITE, headers=_auth(key))
        assert first.status_code == 200, first.text  # under budget when it started
        used = first.json()["data"]["metadata"]["tokens_used"]
        assert used > 1
        over = client.post("/chat/v2/chat", json=LITE, headers=_auth(key))
        assert over.status_code == 429, over.text
        error = over.json()["error"]
        assert error["code"] == "RATE_LIMIT_ERROR"
        details = error["details"]
        assert details["budget"] == "daily_tokens" and details["limit"] == 1 and details["used"] == used
        assert details["resets_at"].endswith("T00:00:00Z")
        assert int(over.headers["Retry-After"]) == details["retry_after"] > 0
        me = client.get("/keys/v2/me", headers=_auth(key)).json()["data"]
        assert me["usage"]["tokens_used"] == used and me["usage"]["remaining"] == 0
        assert me["key"]["tokens_today"] == used
        # Reading is not running: the key can still look at its sessions and itself.
        assert client.get("/keys/v2/me", headers=_auth(key)).status_code == 200

        # The WebSocket's chats are counted and refused the same way.
        with client.websocket_connect("/chat/ws/c1/s1", headers=_auth(key)) as ws:
            assert ws.receive_json()["data"]["action"] == "connected"
            ws.send_json({"type": "chat", "data": {"message": "hi", "optimization_mode": "lite"}})
            frame = ws.receive_json()
            assert frame["data"]["action"] == "error"
            assert frame["data"]["error"]["details"]["budget"] == "daily_tokens"

    text = generate_latest(gateway.metrics.registry).decode()
    assert f'api_key_tokens_total{{key_id="{key_id}"}} {float(used)}' in text
    assert key not in text


def test_websocket_chats_count_towards_the_budget(gateway: Gateway) -> None:
    with TestClient(_app(gateway)) as client:
        data = _create(client, name="ws-user", daily_tokens=10**6)
        with client.websocket_connect("/chat/ws/c1/s1", headers=_auth(data["key"])) as ws:
            ws.receive_json()
            ws.send_json({"type": "chat", "data": {"message": "hi", "optimization_mode": "lite"}})
            while (frame := ws.receive_json())["type"] != "chat":
                assert frame["data"].get("action") != "error", frame
            used = frame["data"]["metadata"]["tokens_used"]
        me = client.get("/keys/v2/me", headers=_auth(data["key"])).json()["data"]
        assert used > 0 and me["usage"]["tokens_used"] == used
