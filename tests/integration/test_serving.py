"""The Serve application over real HTTP: every endpoint, the envelope, headers and every error code."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import httpx
import pytest

from .conftest import ServeInfo

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


@pytest.fixture
async def client(serve_app: ServeInfo) -> Any:
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=60) as c:
        yield c


def check_envelope(body: dict[str, Any], *, success: bool, version: str = "v2") -> None:
    assert set(body) == {"success", "data", "metadata", "error"}
    assert body["success"] is success
    assert set(body["metadata"]) == {"request_id", "timestamp", "version"}
    assert body["metadata"]["version"] == version
    assert ISO_RE.match(body["metadata"]["timestamp"])
    if success:
        assert body["error"] is None
    else:
        assert body["data"] is None and set(body["error"]) == {"code", "message", "details"}
        assert "Traceback" not in str(body)


def check_error(r: httpx.Response, status: int, code: str, version: str = "v2") -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    check_envelope(body, success=False, version=version)
    assert body["error"]["code"] == code
    assert r.headers["X-Request-ID"] == body["metadata"]["request_id"]
    return body


async def test_v2_chat(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    rid = str(uuid.uuid4())
    r = await client.post(
        "/chat/v2/chat",
        json={
            "message": "Write a function that merges intervals",
            "swarm_type": "coding-debate",
            "optimization_mode": "lite",
            "user_context": {"lang": "python"},
        },
        headers={**serve_app.auth(serve_app.key(0)), "X-Request-ID": rid},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    check_envelope(body, success=True)
    assert body["metadata"]["request_id"] == rid == r.headers["X-Request-ID"]
    data = body["data"]
    assert set(data) == {
        "response",
        "session_id",
        "execution_mode",
        "quality_score",
        "execution_time",
        "metadata",
    }
    meta = data["metadata"]
    assert set(meta) == {"tokens_used", "model", "swarm_type", "optimization_mode", "processing_steps"}
    assert meta["tokens_used"] == sum(
        s["prompt_tokens"] + s["completion_tokens"] for s in meta["processing_steps"]
    )
    assert set(meta["processing_steps"][0]) == {
        "agent",
        "role",
        "round",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "latency_s",
    }
    assert 0 <= data["quality_score"] <= 1 and meta["swarm_type"] == "coding-debate"
    assert r.headers["X-RateLimit-Limit"] == "1000"
    assert int(r.headers["X-RateLimit-Remaining"]) < 50
    assert "X-RateLimit-Reset" in r.headers


async def test_session_continues_and_is_private(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    me, other = serve_app.auth(serve_app.key(1)), serve_app.auth(serve_app.other_key)
    first = (
        await client.post(
            "/chat/v2/chat", json={"message": "A poem about rivers", "optimization_mode": "lite"}, headers=me
        )
    ).json()["data"]
    sid = first["session_id"]
    assert first["execution_mode"] == "routed:creative-team"
    second = await client.post(
        "/chat/v2/chat",
        json={"message": "shorter", "session_id": sid, "optimization_mode": "lite"},
        headers=me,
    )
    assert second.json()["data"]["execution_mode"] == "session:creative-team"
    r = await client.get(f"/chat/v2/sessions/{sid}", headers=me)
    assert r.status_code == 200
    assert [t["message"] for t in r.json()["data"]["turns"]] == ["A poem about rivers", "shorter"]
    # another tenant: as if it did not exist, for reading, continuing or ending
    check_error(await client.get(f"/chat/v2/sessions/{sid}", headers=other), 404, "NOT_FOUND")
    check_error(await client.delete(f"/chat/v2/sessions/{sid}", headers=other), 404, "NOT_FOUND")
    theirs = await client.post(
        "/chat/v2/chat", json={"message": "hi", "session_id": sid, "optimization_mode": "lite"}, headers=other
    )
    assert theirs.json()["data"]["execution_mode"].startswith("routed:")  # a fresh session of their own
    mine = (await client.get(f"/chat/v2/sessions/{sid}", headers=me)).json()["data"]
    assert len(mine["turns"]) == 2
    r = await client.delete(f"/chat/v2/sessions/{sid}", headers=me)
    assert r.status_code == 200 and r.json()["data"]["ended"] is True
    check_error(await client.get(f"/chat/v2/sessions/{sid}", headers=me), 404, "NOT_FOUND")


async def test_v1_and_version_detection(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    h = serve_app.auth(serve_app.key(2))
    r = await client.post("/chat/v1/chat", json={"text": "Hello there", "sessionId": "v1-session"}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    check_envelope(body, success=True, version="v1")
    assert set(body["data"]) == {"response", "sessionId"} and body["data"]["sessionId"] == "v1-session"
    assert r.headers["Deprecation"] == "true" and r.headers["Sunset"]
    assert r.headers["Link"] == '</chat/v2/chat>; rel="successor-version"'

    auto_v1 = await client.post("/chat/chat", json={"text": "hi"}, headers=h)
    assert auto_v1.json()["metadata"]["version"] == "v1" and auto_v1.headers["Deprecation"] == "true"
    auto_v2 = await client.post("/chat/chat", json={"message": "hi", "optimization_mode": "lite"}, headers=h)
    assert auto_v2.json()["metadata"]["version"] == "v2" and "Deprecation" not in auto_v2.headers
    forced = await client.post("/chat/chat", json={"text": "hi"}, headers={**h, "API-Version": "v2"})
    check_error(forced, 400, "VALIDATION_ERROR")
    check_error(
        await client.post("/chat/chat", json={"message": "x"}, headers={**h, "API-Version": "v9"}),
        400,
        "VALIDATION_ERROR",
    )


async def test_v1_body_on_v2_names_the_v2_fields(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    r = await client.post(
        "/chat/v2/chat", json={"text": "hi", "sessionId": "s"}, headers=serve_app.auth(serve_app.key(3))
    )
    body = check_error(r, 400, "VALIDATION_ERROR")
    assert "message" in str(body["error"]["details"])


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "x" * 32_001}, "message"),
        ({"message": "hi", "session_id": "not ok!"}, "session_id"),
        ({"message": "hi", "optimization_mode": "turbo"}, "optimization_mode"),
        ({"message": "hi", "swarm_type": "dance-team"}, "swarm_type"),
        ({"message": "hi", "extra": True}, "extra"),
        ({"message": "hi", "user_context": {"x": "y" * 17_000}}, "user_context"),
        ({"message": "hi", "use_memory": "maybe"}, "use_memory"),
        ([1, 2, 3], None),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    client: httpx.AsyncClient, serve_app: ServeInfo, content: Any, field: str | None
) -> None:
    r = await client.post("/chat/v2/chat", json=content, headers=serve_app.auth(serve_app.key(4)))
    body = check_error(r, 400, "VALIDATION_ERROR")
    details = body["error"]["details"]
    if field is not None:
        assert details["field"] == field
    assert details["reason"]


async def test_bad_json_and_oversize(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    h = {**serve_app.auth(serve_app.key(5)), "Content-Type": "application/json"}
    check_error(await client.post("/chat/v2/chat", content=b"{not json", headers=h), 400, "VALIDATION_ERROR")
    big = b'{"message": "' + b"x" * (300 * 1024) + b'"}'
    check_error(await client.post("/chat/v2/chat", content=big, headers=h), 413, "PAYLOAD_TOO_LARGE")


async def test_authentication_errors(client: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-known-key"},
    ):
        r = await client.post("/chat/v2/chat", json={"message": "hi"}, headers=headers)
        check_error(r, 401, "AUTHENTICATION_ERROR")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert "X-RateLimit-Limit" not in r.headers  # unauthenticated: no key to count against
    check_error(await client.get("/chat/v2/sessions/x"), 401, "AUTHENTICATION_ERROR")
    check_error(await client.get("/metrics"), 401, "AUTHENTICATION_ERROR")


async def test_unknown_route_and_method(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    h = serve_app.auth(serve_app.key(6))
    check_error(await client.get("/chat/v3/chat", headers=h), 404, "NOT_FOUND")
    wrong_method = await client.get("/chat/v2/chat", headers=h)
    check_error(wrong_method, 405, "NOT_FOUND")  # the route exists for POST only
    assert wrong_method.headers["Allow"] == "POST"
    check_error(await client.get("/chat/v2/sessions/never-seen", headers=h), 404, "NOT_FOUND")


async def test_rate_limit_burst_then_429(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    h = serve_app.auth(serve_app.burst_key)
    started = time.monotonic()
    responses = await asyncio.gather(*(client.get("/chat/v2/sessions/none", headers=h) for _ in range(70)))
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    limited = [r for r in responses if r.status_code == 429]
    # 50 burst + what refilled meanwhile (one per 60 ms) are admitted; the rest are refused
    assert 50 <= statuses.count(404) <= 50 + elapsed / 0.06 + 1 and len(limited) == 70 - statuses.count(404)
    r = limited[0]
    check_error(r, 429, "RATE_LIMIT_ERROR")
    assert int(r.headers["Retry-After"]) >= 1 and r.headers["X-RateLimit-Remaining"] == "0"


async def test_deadline_is_504(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    r = await client.post(
        "/chat/v2/chat",
        json={"message": "never ends", "swarm_type": "slow-debate", "optimization_mode": "lite"},
        headers=serve_app.auth(serve_app.key(7)),
    )
    check_error(r, 504, "TIMEOUT_ERROR")


async def test_concurrent_chats_of_two_tenants_each_get_their_own_outcome(
    client: httpx.AsyncClient, serve_app: ServeInfo
) -> None:
    # Chats arriving together travel to the mode deployment in one call: outcomes must not cross.
    keys = [serve_app.key(21), serve_app.key(22)]
    jobs = []
    for i in range(10):
        team = "slow-debate" if i % 5 == 4 else "research-team"
        body = {
            "message": f"topic {i}",
            "swarm_type": team,
            "optimization_mode": "lite",
            "session_id": f"b{i}",
        }
        jobs.append(client.post("/chat/v2/chat", json=body, headers=serve_app.auth(keys[i % 2])))
    responses = await asyncio.gather(*jobs)
    for i, r in enumerate(responses):
        if i % 5 == 4:
            check_error(r, 504, "TIMEOUT_ERROR")
            continue
        data = r.json()["data"]
        assert r.status_code == 200 and data["session_id"] == f"b{i}", r.text
        turns = (await client.get(f"/chat/v2/sessions/b{i}", headers=serve_app.auth(keys[i % 2]))).json()
        assert [t["message"] for t in turns["data"]["turns"]] == [f"topic {i}"]
        other = await client.get(f"/chat/v2/sessions/b{i}", headers=serve_app.auth(keys[1 - i % 2]))
        check_error(other, 404, "NOT_FOUND")


async def test_client_that_leaves_cancels_its_run(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    headers = serve_app.auth(serve_app.key(23))
    sid = f"gone-{uuid.uuid4().hex[:8]}"
    body = {"message": "long", "swarm_type": "long-debate", "optimization_mode": "lite", "session_id": sid}
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/chat/v2/chat", json=body, headers=headers, timeout=0.3)
    await asyncio.sleep(3.0)
    check_error(await client.get(f"/chat/v2/sessions/{sid}", headers=headers), 404, "NOT_FOUND")
    # The same run left alone records its turn; the session's turns run one at a time, so had the first
    # run not been cancelled it would have finished (and recorded its turn) before this one.
    done = await client.post("/chat/v2/chat", json=body, headers=headers)
    assert done.status_code == 200
    turns = (await client.get(f"/chat/v2/sessions/{sid}", headers=headers)).json()["data"]["turns"]
    assert [t["message"] for t in turns] == ["long"]


async def test_a_client_leaving_does_not_cancel_the_chats_batched_with_it(
    client: httpx.AsyncClient, serve_app: ServeInfo
) -> None:
    headers = serve_app.auth(serve_app.key(24))

    def body(tag: str) -> dict[str, Any]:
        return {"message": tag, "swarm_type": "long-debate", "optimization_mode": "lite", "session_id": tag}

    # While the first chat is in flight, the next two wait (up to the batch window) and travel together.
    busy = asyncio.ensure_future(client.post("/chat/v2/chat", json=body("busy"), headers=headers))
    await asyncio.sleep(0.2)
    leaver = asyncio.ensure_future(
        client.post("/chat/v2/chat", json=body("leaver"), headers=headers, timeout=0.3)
    )
    await asyncio.sleep(0.01)  # the leaver's request starts the batch, the stayer joins it
    stayer = client.post("/chat/v2/chat", json=body("stayer"), headers=headers)
    left, stayed = await asyncio.gather(leaver, stayer, return_exceptions=True)
    assert isinstance(left, httpx.ReadTimeout)
    assert isinstance(stayed, httpx.Response) and stayed.status_code == 200, stayed
    assert (await busy).status_code == 200


async def test_health_and_readiness_need_no_key(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy" and isinstance(body["uptime"], int)
    assert re.match(r"^\d+\.\d+\.\d+$", body["version"])
    assert body["components"] == {
        "orchestra_manager": "healthy",
        "command_dispatcher": "healthy",
        "memory_system": "healthy",
        "swarm_intelligence": "healthy",
    }
    r = await client.get("/readiness")
    assert r.status_code == 200 and r.json() == {
        "ready": True,
        "checks": {"database": True, "cache": True, "external_services": True},
    }


async def test_openapi_describes_every_rest_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [
        ("/chat/v2/chat", "post"),
        ("/chat/v1/chat", "post"),
        ("/chat/chat", "post"),
        ("/chat/v2/sessions/{session_id}", "get"),
        ("/chat/v2/sessions/{session_id}", "delete"),
        ("/health", "get"),
        ("/readiness", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], (path, method)
    body = paths["/chat/v2/chat"]["post"]["requestBody"]["content"]["application/json"]
    assert "message" in body["schema"]["properties"] and body["example"]["message"]
    assert (await client.get("/docs")).status_code == 200


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


async def test_metrics_totals_agree_across_ingress_replicas(
    client: httpx.AsyncClient, serve_app: ServeInfo
) -> None:
    check_error(
        await client.get("/metrics", headers=serve_app.auth(serve_app.key(8))), 401, "AUTHENTICATION_ERROR"
    )  # a chat-only key lacks the metrics scope
    h = serve_app.auth(serve_app.key(9))
    await asyncio.gather(*(client.get("/chat/v2/sessions/metrics-probe", headers=h) for _ in range(20)))
    await client.post(
        "/chat/v2/chat",
        json={"message": "hi", "swarm_type": "research-team", "optimization_mode": "lite"},
        headers=h,
    )
    await asyncio.sleep(2.5)  # every replica pushes its counts each second
    key = (
        "http_requests_total",
        frozenset({("method", "GET"), ("endpoint", "/chat/v2/sessions/{session_id}"), ("status", "404")}),
    )
    seen = set()
    for _ in range(6):  # fresh connections, so the proxy spreads the scrapes over both replicas
        async with httpx.AsyncClient(base_url=serve_app.base_url) as fresh:
            r = await fresh.get("/metrics", headers=serve_app.auth(serve_app.metrics_key))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        values = parse_metrics(r.text)
        seen.add(values[key])
        assert (
            values[
                (
                    "swarm_runs_total",
                    frozenset(
                        {
                            ("swarm_type", "research-team"),
                            ("optimization_mode", "lite"),
                            ("outcome", "completed"),
                        }
                    ),
                )
            ]
            >= 1
        )
    assert len(seen) == 1 and seen.pop() >= 20
    text = r.text
    for name in [
        "http_requests_total",
        "websocket_connections",
        "http_request_duration_seconds",
        "swarm_runs_total",
        "agent_turns_total",
        "llm_tokens_total",
        "rate_limited_total",
        "webhook_deliveries_total",
    ]:
        assert f"# TYPE {name}" in text


def test_autoscaling_config_of_each_mode_is_applied(serve_app: ServeInfo) -> None:
    from ray.serve.context import _get_global_client

    import serve_app as app_module

    wanted = app_module.deployment_options()
    details = _get_global_client().get_serve_details()
    deployments = details["applications"]["orchestra"]["deployments"]
    for name in ("ModeLite", "ModeBalanced", "ModeQuality"):
        applied = deployments[name]["deployment_config"]["autoscaling_config"]
        for field, value in wanted[name]["autoscaling_config"].items():
            assert applied[field] == value, (name, field)
    ingress_replicas = [r for r in deployments["Ingress"]["replicas"] if r["state"] == "RUNNING"]
    assert len(ingress_replicas) == 2


async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient, serve_app: ServeInfo) -> None:
    r = await client.get(
        "/chat/v2/sessions/none", headers={**serve_app.auth(serve_app.key(15)), "X-Request-ID": "not-a-uuid"}
    )
    body = check_error(r, 404, "NOT_FOUND")
    assert (
        UUID_RE.match(body["metadata"]["request_id"])
        and r.headers["X-Request-ID"] == body["metadata"]["request_id"]
    )
    assert r.headers.get_list("X-Request-ID") == [body["metadata"]["request_id"]]  # exactly one header


async def test_redis_outage_is_503_and_degrades_health(
    client: httpx.AsyncClient, serve_app: ServeInfo, redis_server: str
) -> None:
    import os
    import signal

    import redis as sync_redis

    pid = int(sync_redis.Redis.from_url(redis_server).info("server")["process_id"])
    h = serve_app.auth(serve_app.key(16))
    assert (await client.get("/chat/v2/sessions/x", headers=h)).status_code == 404  # key now cached
    os.kill(pid, signal.SIGSTOP)  # Redis stops answering, as a hung or partitioned server would
    try:
        r = await client.get("/chat/v2/sessions/x", headers=h)
        check_error(r, 503, "SERVICE_UNAVAILABLE")
        assert int(r.headers["Retry-After"]) >= 1
        health = (await client.get("/health")).json()
        assert health["status"] == "degraded" and health["components"]["memory_system"] == "degraded"
        ready = await client.get("/readiness")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        assert ready.json()["checks"]["database"] is False
        # A chat cannot be acknowledged without its turn stored: 503, and no turn appears later.
        chat = await client.post(
            "/chat/v2/chat",
            json={"message": "unstored", "optimization_mode": "lite", "session_id": "outage"},
            headers=h,
        )
        check_error(chat, 503, "SERVICE_UNAVAILABLE")
        assert int(chat.headers["Retry-After"]) >= 1
    finally:
        os.kill(pid, signal.SIGCONT)
    for _ in range(100):  # and it recovers by itself (connections the outage broke are replaced)
        ready = (await client.get("/readiness")).status_code == 200
        if ready and (await client.get("/chat/v2/sessions/x", headers=h)).status_code == 404:
            break
        await asyncio.sleep(0.1)
    # Every replica recovered (one whose first request met the outage used to fail for good).
    codes = {(await client.get("/chat/v2/sessions/x", headers=h)).status_code for _ in range(20)}
    assert codes == {404}, codes
    check_error(await client.get("/chat/v2/sessions/outage", headers=h), 404, "NOT_FOUND")
    again = await client.post(
        "/chat/v2/chat",
        json={"message": "stored", "optimization_mode": "lite", "session_id": "outage"},
        headers=h,
    )
    assert again.status_code == 200
    after = await client.get("/chat/v2/sessions/outage", headers=h)
    assert after.status_code == 200, after.text
    turns = after.json()["data"]["turns"]
    assert [t["message"] for t in turns] == ["stored"]


async def test_use_memory_recalls_the_same_keys_earlier_sessions(
    client: httpx.AsyncClient, serve_app: ServeInfo
) -> None:
    me, other = serve_app.auth(serve_app.key(19)), serve_app.auth(serve_app.key(20))
    body = {"swarm_type": "research-team", "optimization_mode": "lite"}

    async def first_step_prompt(headers: dict[str, str], use_memory: bool) -> int:
        r = await client.post(
            "/chat/v2/chat",
            json={**body, "message": "Which sourdough starter works best?", "use_memory": use_memory},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        return int(r.json()["data"]["metadata"]["processing_steps"][0]["prompt_tokens"])

    baseline = await first_step_prompt(me, use_memory=False)
    stored = await client.post(
        "/chat/v2/chat",
        json={**body, "use_memory": True, "message": "I keep a rye sourdough starter at home"},
        headers=me,
    )
    assert stored.status_code == 200
    # a new session of the same key: the earlier turn is recalled into every agent's context
    assert await first_step_prompt(me, use_memory=True) > baseline
    # another key asking the same recalls nothing of it
    assert await first_step_prompt(other, use_memory=True) == baseline
