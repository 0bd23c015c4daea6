"""The gateway without Ray: a plain Starlette app whose routes call it, over an in-process Engine, the
in-memory key store and a local bucket. What the Serve ingress does, minus the deployments."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

import orchestra
from orchestra.serving._auth import ApiKeys
from orchestra.serving._gateway import Gateway
from orchestra.serving._metrics import Metrics
from orchestra.stores import InMemoryKeyStore, LocalTokenBucket
from tests.unit.conftest import make_engine


async def _ok() -> None:
    return None


async def _down() -> None:
    raise ConnectionError("no answer")


def _app(gateway: Gateway) -> Starlette:
    async def chat(request: Request) -> Response:
        return await gateway.chat(request, "/chat/v2/chat", "v2")

    async def chat_v1(request: Request) -> Response:
        return await gateway.chat(request, "/chat/v1/chat", "v1")

    async def session(request: Request) -> Response:
        sid = request.path_params["sid"]
        if request.method == "DELETE":
            return await gateway.end_session(request, "/chat/v2/sessions/{session_id}", sid)
        return await gateway.get_session(request, "/chat/v2/sessions/{session_id}", sid)

    async def health(request: Request) -> Response:
        return await gateway.health()

    async def ws(websocket: WebSocket) -> None:
        await gateway.websocket(websocket, websocket.path_params["cid"], websocket.path_params["sid"])

    return Starlette(
        routes=[
            Route("/chat/v2/chat", chat, methods=["POST"]),
            Route("/chat/v1/chat", chat_v1, methods=["POST"]),
            Route("/chat/v2/sessions/{sid}", session, methods=["GET", "DELETE"]),
            Route("/health", health),
            WebSocketRoute("/chat/ws/{cid}/{sid}", ws),
        ]
    )


@pytest.fixture
async def gateway(fast_config: orchestra.OrchestraConfig) -> tuple[Gateway, str, str]:
    engine, _ = make_engine(fast_config)
    keys = ApiKeys(InMemoryKeyStore())
    alice, _ = await keys.create(tenant="alice")
    bob, _ = await keys.create(tenant="bob")
    gw = Gateway(
        engine,
        keys=keys,
        limiter=LocalTokenBucket(capacity=5, refill_per_s=0.001, limit_per_minute=1),
        metrics=Metrics(),
        teams=list(fast_config.teams),
        probes={"runtime": _ok, "modes": _ok, "store": _down},
        version="test",
    )
    return gw, alice, bob


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_chat_sessions_and_tenants(gateway: tuple[Gateway, str, str]) -> None:
    gw, alice, bob = gateway
    with TestClient(_app(gw)) as client:
        body: dict[str, Any] = {"message": "Write a haiku", "optimization_mode": "lite", "session_id": "s1"}
        answer = client.post("/chat/v2/chat", json=body, headers=_auth(alice))
        assert answer.status_code == 200, answer.text
        envelope = answer.json()
        assert envelope["success"] and envelope["data"]["session_id"] == "s1"
        assert answer.headers["X-RateLimit-Limit"] == "1" and answer.headers["X-RateLimit-Remaining"] == "4"
        assert client.get("/chat/v2/sessions/s1", headers=_auth(alice)).json()["data"]["turns"]
        theirs = client.get("/chat/v2/sessions/s1", headers=_auth(bob))
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "NOT_FOUND"
        v1 = client.post("/chat/v1/chat", json={"text": "hi"}, headers=_auth(bob))
        assert (
            v1.status_code == 200 and v1.headers["Deprecation"] == "true" and "sessionId" in v1.json()["data"]
        )
        ended = client.delete("/chat/v2/sessions/s1", headers=_auth(alice))
        assert ended.json()["data"] == {"session_id": "s1", "ended": True, "turns": 1}


def test_errors_are_in_the_envelope_with_their_headers(gateway: tuple[Gateway, str, str]) -> None:
    gw, alice, _ = gateway
    with TestClient(_app(gw)) as client:
        missing = client.post("/chat/v2/chat", json={"message": "x"})
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        bad = client.post("/chat/v2/chat", json={"message": "x", "swarm_type": "nope"}, headers=_auth(alice))
        assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "swarm_type"
        for _ in range(4):
            client.post("/chat/v2/chat", content=b"{", headers=_auth(alice))
        limited = client.post("/chat/v2/chat", json={"message": "x"}, headers=_auth(alice))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"]["code"] == "RATE_LIMIT_ERROR"
        assert limited.json()["error"]["details"]["retry_after"] > 0


def test_health_reflects_the_probes(gateway: tuple[Gateway, str, str]) -> None:
    gw, _, _ = gateway
    with TestClient(_app(gw)) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["components"]["memory_system"] == "degraded"


def test_websocket_through_the_gateway(gateway: tuple[Gateway, str, str]) -> None:
    gw, alice, _ = gateway
    with TestClient(_app(gw)) as client:
        with client.websocket_connect(
            "/chat/ws/c1/s2", subprotocols=["orchestra.v2", f"bearer.{alice}"]
        ) as ws:
            assert ws.receive_json()["data"]["action"] == "connected"
            ws.send_json({"type": "chat", "data": {"message": "Write a poem", "request_id": "r1"}})
            while (frame := ws.receive_json())["type"] != "chat":
                assert frame["type"] == "stream"
            assert frame["data"]["request_id"] == "r1" and frame["data"]["response"]
        with client.websocket_connect("/chat/ws/c1/s2") as ws, pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4401
