"""The clients' plans (build, read, retry) driven step by step with real ``httpx`` requests and responses,
no server: what is sent, what is retried after how long, what is returned or raised."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from ai_orchestra import (
    DEFAULT_BASE_URL,
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AsyncClient,
    ChatOptions,
    ChatResponse,
    Client,
    Health,
    InternalError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    TimeoutError,
    ValidationError,
)
from ai_orchestra._base import Done, Plan, Step, advance

RID = "7d0c2c2e-3c1a-4b5e-8f7a-1a2b3c4d5e6f"
DATA: dict[str, Any] = {
    "response": "done",
    "session_id": "s-1",
    "execution_mode": "coding-team",
    "quality_score": 0.8,
    "execution_time": 0.5,
    "metadata": {
        "tokens_used": 3,
        "model": "scripted/fast",
        "swarm_type": "coding-team",
        "optimization_mode": "lite",
        "processing_steps": [
            {
                "agent": "coder",
                "role": "coder",
                "round": 1,
                "model": "scripted/fast",
                "prompt_tokens": 1,
                "completion_tokens": 2,
                "latency_s": 0.1,
            }
        ],
    },
}


def ok(data: Any) -> httpx.Response:
    meta = {"request_id": RID, "timestamp": "2026-11-25T00:00:00.000Z", "version": "v2"}
    return httpx.Response(200, json={"success": True, "data": data, "metadata": meta, "error": None})


def failed(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    error = {"code": code, "message": code}
    body = {"success": False, "data": None, "metadata": {"request_id": RID}, "error": error}
    return httpx.Response(status, json=body, headers=headers)


class Driver:
    """Answers a plan's requests from a script of outcomes and records every step."""

    def __init__(self, plan: Plan[Any]) -> None:
        self.plan = plan
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def run(self, *outcomes: httpx.Response | httpx.TransportError) -> Any:
        script = list(outcomes)
        step: Step | Done[Any] = advance(self.plan, None)
        while not isinstance(step, Done):
            if isinstance(step, float):
                self.sleeps.append(step)
                step = advance(self.plan, None)
            else:
                self.requests.append(step)
                step = advance(self.plan, script.pop(0))
        assert not script, "the plan stopped before using every outcome"
        return step.value


@pytest.fixture
def client() -> Client:
    return Client(api_key="k-1", base_url="http://api.test:9/", max_retries=2)


def test_chat_sends_the_v2_body_and_returns_the_typed_answer(client: Client) -> None:
    options: ChatOptions = {"optimization_mode": "lite", "swarm_type": None, "user_context": {"a": 1}}
    driver = Driver(client._chat_plan("hello", {**options, "use_memory": False}))
    answer = driver.run(ok(DATA))
    assert isinstance(answer, ChatResponse) and answer.request_id == RID
    assert answer.metadata.processing_steps[0].completion_tokens == 2
    (request,) = driver.requests
    assert (request.method, str(request.url)) == ("POST", "http://api.test:9/chat/v2/chat")
    assert json.loads(request.content) == {
        "message": "hello",
        "optimization_mode": "lite",
        "user_context": {"a": 1},
        "use_memory": False,
    }  # options given as None are not sent
    assert request.headers["authorization"] == "Bearer k-1"
    assert uuid.UUID(request.headers["x-request-id"]).version == 4
    assert request.headers["user-agent"].startswith("ai-orchestra-python/")
    assert request.extensions["timeout"]["read"] == 600.0 and request.extensions["timeout"]["connect"] == 5.0


def test_a_429_waits_its_retry_after_then_retries_with_a_new_request_id(client: Client) -> None:
    driver = Driver(client._chat_plan("hello", {}))
    answer = driver.run(failed(429, "RATE_LIMIT_ERROR", {"Retry-After": "2"}), ok(DATA))
    assert answer.response == "done"
    assert driver.sleeps == [2.0]
    first, second = driver.requests
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert first.content == second.content


def test_503_and_504_back_off_exponentially_until_max_retries(client: Client) -> None:
    driver = Driver(client._chat_plan("hello", {}))
    with pytest.raises(ServiceUnavailableError) as raised:
        unavailable = failed(503, "SERVICE_UNAVAILABLE")
        driver.run(unavailable, failed(504, "TIMEOUT_ERROR"), unavailable)
    assert raised.value.request_id == RID and raised.value.status_code == 503
    assert len(driver.requests) == 3 and len(driver.sleeps) == 2
    assert 0.375 <= driver.sleeps[0] <= 0.5 and 0.75 <= driver.sleeps[1] <= 1.0

    timed_out = Driver(Client(api_key="k", max_retries=0)._chat_plan("hello", {}))
    with pytest.raises(TimeoutError):
        timed_out.run(failed(504, "TIMEOUT_ERROR"))
    assert timed_out.sleeps == []


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "VALIDATION_ERROR", ValidationError),
        (404, "NOT_FOUND", NotFoundError),
        (500, "INTERNAL_ERROR", InternalError),
    ],
)
def test_other_errors_are_raised_at_once(
    client: Client, status: int, code: str, cls: type[Exception]
) -> None:
    driver = Driver(client._get_session_plan("s/1"))
    with pytest.raises(cls):
        driver.run(failed(status, code))
    assert driver.sleeps == [] and str(driver.requests[0].url).endswith("/chat/v2/sessions/s%2F1")


def test_a_wait_longer_than_a_minute_is_not_waited(client: Client) -> None:
    driver = Driver(client._chat_plan("hello", {}))
    with pytest.raises(RateLimitError) as raised:
        driver.run(failed(429, "RATE_LIMIT_ERROR", {"Retry-After": "3600"}))
    assert raised.value.retry_after == 3600.0 and driver.sleeps == []


def test_connection_errors_and_timeouts_are_retried_then_raised(client: Client) -> None:
    refused = httpx.ConnectError("refused")
    driver = Driver(client._chat_plan("hello", {}))
    assert driver.run(refused, httpx.ReadTimeout("slow"), ok(DATA)).request_id == RID
    assert len(driver.sleeps) == 2

    failing = Driver(client._health_plan())
    with pytest.raises(APITimeoutError) as raised:
        failing.run(refused, refused, httpx.ConnectTimeout("no route"))
    assert isinstance(raised.value, APIConnectionError)
    assert raised.value.request_id == failing.requests[-1].headers["x-request-id"]  # the id that was sent
    assert isinstance(raised.value.__cause__, httpx.ConnectTimeout)


def test_an_unhealthy_answer_is_returned_not_raised(client: Client) -> None:
    body = {
        "status": "unhealthy",
        "version": "0.1.0",
        "uptime": 3,
        "components": {
            "orchestra_manager": "unhealthy",
            "command_dispatcher": "healthy",
            "memory_system": "healthy",
            "swarm_intelligence": "degraded",
        },
    }
    health = Driver(client._health_plan()).run(httpx.Response(503, json=body))
    assert isinstance(health, Health) and health.status == "unhealthy"
    assert health.components.swarm_intelligence == "degraded"
    # A 503 that is not a health answer (a proxy's) is an error, and retried.
    driver = Driver(client._health_plan())
    assert driver.run(httpx.Response(503, text="busy"), httpx.Response(200, json=body)).uptime == 3
    assert len(driver.sleeps) == 1


def test_answers_the_sdk_cannot_read(client: Client) -> None:
    with pytest.raises(APIResponseError):
        Driver(client._chat_plan("hello", {})).run(httpx.Response(200, text="<html>"))
    with pytest.raises(APIResponseError) as raised:
        Driver(client._chat_plan("hello", {})).run(ok({"response": "no metadata"}))
    assert raised.value.status_code == 200


def test_v1_reads_session_id_and_sunset(client: Client) -> None:
    response = ok({"response": "hi", "sessionId": "s-9"})
    response.headers["Sunset"] = "Wed, 30 Jun 2027 00:00:00 GMT"
    driver = Driver(client._chat_v1_plan("hello", None))
    answer = driver.run(response)
    assert (answer.response, answer.session_id) == ("hi", "s-9")
    assert answer.sunset == "Wed, 30 Jun 2027 00:00:00 GMT"
    assert json.loads(driver.requests[0].content) == {"text": "hello"}


def test_settings_fall_back_to_the_environment_then_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORCHESTRA_API_KEY", raising=False)
    monkeypatch.delenv("ORCHESTRA_BASE_URL", raising=False)
    bare = Client()
    assert bare.api_key is None and bare.base_url == DEFAULT_BASE_URL == "http://localhost:8000"
    first = advance(bare._health_plan(), None)
    assert bare.max_retries == 2 and isinstance(first, httpx.Request)
    assert "authorization" not in first.headers
    monkeypatch.setenv("ORCHESTRA_API_KEY", "from-env")
    monkeypatch.setenv("ORCHESTRA_BASE_URL", "https://orchestra.example/api/")
    env = AsyncClient()
    assert (env.api_key, env.base_url) == ("from-env", "https://orchestra.example/api")
    assert env._streams.settings.base_url == "wss://orchestra.example/api"
    explicit = Client(api_key="mine", base_url="http://h:1", timeout=3.0, max_retries=0)
    assert (explicit.api_key, explicit.base_url, explicit.max_retries) == ("mine", "http://h:1", 0)
    assert explicit.timeout == httpx.Timeout(3.0) and explicit._streams.settings.base_url == "ws://h:1"
    with pytest.raises(ValueError):
        Client(max_retries=-1)
