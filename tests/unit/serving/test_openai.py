"""The OpenAI-compatible API without Ray: the translation (orchestra.serving._openai) over a real in-process
Engine, and the gateway's /v1 routes through a plain Starlette app (as tests/unit/serving/test_gateway.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncGenerator, Collection
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import orchestra
from orchestra.engine import MAX_USER_CONTEXT_BYTES, Engine, RunRequest
from orchestra.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    RateLimitError,
    RunCancelledError,
    ServiceUnavailableError,
    ValidationError,
)
from orchestra.providers import ScriptedSettings
from orchestra.serving import _openai as oa
from orchestra.serving._auth import ApiKeys
from orchestra.serving._gateway import Gateway
from orchestra.serving._metrics import Metrics
from orchestra.stores import InMemoryKeyStore, LocalTokenBucket
from tests.conftest import fast_raw_config
from tests.unit.conftest import make_engine

TEAMS = ("coding-debate", "coding-team", "creative-team", "research-team")


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _call(body: dict[str, Any], **kw: Any) -> oa.CompletionCall:
    return oa.parse_completion_request(_raw(body), teams=TEAMS, tenant="t1", run_id="run-1", **kw)


def _chat(*messages: dict[str, Any], model: str = "orchestra/coding-debate", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": list(messages), **extra}


def _user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def _error(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(OrchestraError) as caught:
        _call(body)
    error = caught.value
    return error.http_status, oa.error_body(error)["error"]


# -- models ------------------------------------------------------------------------------------------


def test_model_names_pick_the_team_and_the_mode() -> None:
    assert oa.parse_model("orchestra/coding-debate", TEAMS) == oa.ModelRef("coding-debate", None)
    assert oa.parse_model("orchestra/coding-debate:quality", TEAMS) == oa.ModelRef("coding-debate", "quality")
    assert oa.parse_model("orchestra/auto", TEAMS) == oa.ModelRef(None, None)
    assert oa.parse_model("orchestra/auto:lite", TEAMS) == oa.ModelRef(None, "lite")
    for unknown in ("gpt-4o", "coding-debate", "orchestra/nope", "orchestra/coding-debate:fast",
                    "orchestra/coding-debate:", "orchestra/auto:lite:x", "orchestra/"):  # fmt: skip
        with pytest.raises(oa.ModelNotFoundError) as caught:
            oa.parse_model(unknown, TEAMS)
        body = oa.error_body(caught.value)["error"]
        assert caught.value.http_status == 404
        assert body["code"] == "model_not_found" and body["param"] == "model" and unknown in body["message"]


async def test_the_models_list_has_every_team_and_mode_and_auto(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config)
    listing = oa.models_list(await engine.teams(), created=1700000000)
    assert listing["object"] == "list"
    ids = [m["id"] for m in listing["data"]]
    expected = {
        f"orchestra/{name}{suffix}"
        for name in ("auto", *fast_config.teams)
        for suffix in ("", ":lite", ":balanced", ":quality")
    }
    assert set(ids) == expected and len(ids) == len(expected) and ids[0] == "orchestra/auto"
    for model in listing["data"]:
        assert model["object"] == "model" and model["created"] == 1700000000 and model["owned_by"]
        assert all(oa.parse_model(model["id"], fast_config.teams) for _ in [0])  # every listed id is valid
    debate = next(m for m in listing["data"] if m["id"] == "orchestra/coding-debate:quality")["orchestra"]
    assert debate["swarm_type"] == "coding-debate" and debate["optimization_mode"] == "quality"
    assert debate["pattern"] == "debate" and debate["rounds"] == 3 and debate["deadline_s"] > 0
    auto = listing["data"][0]["orchestra"]
    assert (
        auto["swarm_type"] is None and auto["optimization_mode"] is None and "router" in auto["description"]
    )


# -- the request -------------------------------------------------------------------------------------


def test_messages_become_the_runs_message_and_context() -> None:
    call = _call(
        _chat(
            {"role": "system", "content": "Answer in Python."},
            _user("What is a heap?"),
            {"role": "assistant", "content": "A tree-shaped priority queue.", "name": "bot"},
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            _user([{"type": "text", "text": "Now write one"}, {"type": "text", "text": "with tests."}]),
            user="end-user-7",
        )
    )
    run = call.run
    assert run.message == "Now write one\nwith tests."
    assert run.user_context == {
        "instructions": "Answer in Python.\n\nBe brief.",
        "user": "end-user-7",
        "conversation": [
            {"role": "user", "content": "What is a heap?"},
            {"role": "assistant", "content": "A tree-shaped priority queue.", "name": "bot"},
        ],
    }
    assert (run.tenant, run.run_id, run.swarm_type, run.optimization_mode) == (
        "t1",
        "run-1",
        "coding-debate",
        "balanced",
    )
    assert run.session_id is None and run.use_memory is False
    assert call.id == "chatcmpl-run-1" and call.model == "orchestra/coding-debate"
    assert call.stream is False and call.include_usage is False


def test_a_single_user_message_has_no_context() -> None:
    run = _call(_chat(_user("hi"))).run
    assert run.message == "hi" and run.user_context == {}


def test_long_conversations_keep_their_latest_turns_and_say_how_many_were_left_out() -> None:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 1000}
        for i in range(40)
    ]
    run = _call(_chat({"role": "system", "content": "S" * 2000}, *turns, _user("the task"))).run
    context = run.user_context
    size = len(json.dumps(context, separators=(",", ":")).encode())
    assert size <= MAX_USER_CONTEXT_BYTES
    kept = context["conversation"]
    assert context["conversation_omitted"] == 40 - len(kept) > 0
    assert kept[-1]["content"].startswith("turn 39 ") and kept == turns[40 - len(kept) :]
    assert context["instructions"] == "S" * 2000 and run.message == "the task"


def test_what_cannot_be_the_task_is_a_clear_400() -> None:
    status, error = _error(_chat(_user("hi"), {"role": "assistant", "content": "hello"}))
    assert status == 400 and error["param"] == "messages.1.role" and "last message" in error["message"]
    assert error["type"] == "invalid_request_error"
    status, error = _error(_chat(_user("x" * 32_001)))
    assert status == 400 and error["param"] == "messages.0.content"
    status, error = _error(_chat(_user("   ")))
    assert status == 400 and error["param"] == "messages.0.content"
    status, error = _error(_chat({"role": "system", "content": "S" * MAX_USER_CONTEXT_BYTES}, _user("x")))
    assert status == 400 and error["param"] == "messages" and "context limit" in error["message"]
    status, error = _error(_chat(_user([{"type": "image_url", "image_url": {"url": "https://x/y.png"}}])))
    assert status == 400 and error["code"] == "unsupported_value"
    assert error["param"] == "messages.0.content.0.type"
    status, error = _error(_chat(_user([{"type": "text", "text": 3}])))
    assert status == 400 and error["param"] == "messages.0.content.0.text"
    status, error = _error(_chat(_user(5)))
    assert status == 400 and error["param"] == "messages.0.content"
    assert "valid string or a valid list" in error["message"]  # one field, not pydantic's union members
    status, error = _error(_chat())
    assert status == 400 and error["param"] == "messages"


@pytest.mark.parametrize(
    ("extra", "model", "mode"),
    [
        ({}, "orchestra/coding-debate", "balanced"),
        ({}, "orchestra/coding-debate:lite", "lite"),
        ({"metadata": {"optimization_mode": "quality"}}, "orchestra/coding-debate", "quality"),
        ({"metadata": {"optimization_mode": "lite"}}, "orchestra/coding-debate:lite", "lite"),
        ({"reasoning_effort": "low"}, "orchestra/coding-debate", "lite"),
        ({"reasoning_effort": "medium"}, "orchestra/coding-debate", "balanced"),
        ({"reasoning_effort": "high"}, "orchestra/coding-debate", "quality"),
        ({"reasoning_effort": "high"}, "orchestra/coding-debate:lite", "lite"),  # the name wins
    ],
)
def test_the_mode_comes_from_the_name_then_metadata_then_reasoning_effort(
    extra: dict[str, Any], model: str, mode: str
) -> None:
    assert _call(_chat(_user("x"), model=model, **extra)).run.optimization_mode == mode


def test_metadata_carries_the_session_and_memory() -> None:
    meta = {"session_id": "sess-1", "use_memory": "true", "trace": "anything"}
    run = _call(_chat(_user("x"), model="orchestra/auto", metadata=meta)).run
    assert run.session_id == "sess-1" and run.use_memory is True and run.swarm_type is None
    for metadata, param in [
        ({"optimization_mode": "quality"}, "metadata.optimization_mode"),  # conflicts with ':lite'
        ({"optimization_mode": "fast"}, "metadata.optimization_mode"),
        ({"session_id": "no spaces allowed"}, "metadata.session_id"),
        ({"use_memory": "yes"}, "metadata.use_memory"),
        ({"k": 1}, "metadata.k"),
        ({"k" * 65: "v"}, f"metadata.{'k' * 65}.[key]"),  # the key is too long
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
    ]:
        status, error = _error(_chat(_user("x"), model="orchestra/auto:lite", metadata=metadata))
        assert status == 400 and error["param"] == param, (metadata, error)


def test_parameters_that_do_not_apply_are_checked_and_ignored() -> None:
    ignored = {
        "temperature": 0.2,
        "top_p": 1,
        "frequency_penalty": -1.5,
        "presence_penalty": 2,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "logit_bias": {"50256": -100},
        "max_tokens": 100,
        "max_completion_tokens": 100,
        "parallel_tool_calls": True,
        "prediction": {"type": "content", "content": "x"},
        "prompt_cache_key": "k",
        "safety_identifier": "u",
        "service_tier": "auto",
        "store": False,
        "verbosity": "low",
    }
    assert set(ignored) == set(oa.IGNORED)
    # and what a swarm gives anyway is accepted
    anyway = {
        "n": 1,
        "logprobs": False,
        "top_logprobs": 0,
        "response_format": {"type": "text"},
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "none",
        "functions": [],
        "function_call": "auto",
        "modalities": ["text"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    call = _call(_chat(_user("x"), **ignored, **anyway))
    assert call.run.message == "x" and call.stream and call.include_usage
    assert call.run.user_context == {}  # nothing of the ignored parameters reaches the agents
    out_of_range = [
        ("temperature", 2.5),
        ("temperature", "hot"),
        ("top_p", -0.1),
        ("max_tokens", 0),
        ("stop", ["a"] * 5),
        ("logit_bias", {"1": 101}),
        ("service_tier", "fastest"),
    ]
    for name, bad in out_of_range:
        status, error = _error(_chat(_user("x"), **{name: bad}))
        assert status == 400 and error["param"].split(".")[0] == name, (name, error)
        assert error["code"] == "invalid_value" and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_value"),
        ({"logprobs": True}, "logprobs", "unsupported_value"),
        ({"top_logprobs": 3}, "top_logprobs", "unsupported_value"),
        ({"response_format": {"type": "json_object"}}, "response_format.type", "unsupported_value"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported_parameter"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"tool_choice": "required"}, "tool_choice", "unsupported_value"),
        ({"modalities": ["text", "audio"]}, "modalities", "unsupported_value"),
        ({"audio": {"voice": "alloy", "format": "mp3"}}, "audio", "unsupported_parameter"),
        ({"web_search_options": {}}, "web_search_options", "unsupported_parameter"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({"stream": "true"}, "stream", "invalid_value"),
        ({"frobnicate": 1}, "frobnicate", "invalid_value"),
    ],
)
def test_what_a_swarm_cannot_do_is_rejected_as_openai_would(
    extra: dict[str, Any], param: str, code: str
) -> None:
    status, error = _error(_chat(_user("x"), **extra))
    assert (status, error["param"], error["code"], error["type"]) == (
        400,
        param,
        code,
        "invalid_request_error",
    )


def test_bodies_that_are_not_a_json_object_are_a_400() -> None:
    for raw in (b"", b"{", b"[1]", b'"x"'):
        with pytest.raises(ValidationError) as caught:
            oa.parse_completion_request(raw, teams=TEAMS, tenant="t", run_id="r")
        assert oa.error_body(caught.value)["error"]["param"] is None  # the body as a whole


# -- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (ValidationError("bad", details={"field": "model"}), 400, "invalid_request_error", "invalid_value"),
        (AuthenticationError("unknown or revoked API key"), 401, "invalid_request_error", "invalid_api_key"),
        (NotFoundError("no such thing"), 404, "invalid_request_error", "not_found"),
        (PayloadTooLargeError("too big"), 413, "invalid_request_error", "payload_too_large"),
        (RateLimitError("slow down", retry_after=2), 429, "requests", "rate_limit_exceeded"),
        (ServiceUnavailableError("down"), 503, "server_error", "service_unavailable"),
        (DeadlineExceededError("late"), 504, "server_error", "timeout"),
        (RunCancelledError("cancelled"), 503, "server_error", "cancelled"),
    ],
)
def test_errors_in_openais_shape(error: OrchestraError, status: int, kind: str, code: str) -> None:
    body = oa.error_body(error)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"]) == (kind, code)
    assert body["error"]["message"] == error.message
    assert (error.http_status if error.http_status != 499 else 503) == status


def test_an_internal_error_tells_nothing() -> None:
    body = oa.error_body(InternalError("KeyError: 'secret-path' in /srv/x.py", details={"field": "x"}))
    assert body["error"]["code"] == "internal_error" and body["error"]["type"] == "server_error"
    assert "secret" not in json.dumps(body) and body["error"]["param"] is None


# -- answers and streams, from a real in-process engine ----------------------------------------------


async def test_a_completion_is_the_swarms_answer(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    call = _call(_chat(_user("Write a function that merges intervals"), model="orchestra/coding-debate:lite"))
    result = await engine.run(call.run)
    body = oa.completion(result, call)
    assert body["object"] == "chat.completion" and body["id"] == "chatcmpl-run-1"
    assert body["model"] == "orchestra/coding-debate:lite" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": result.response, "refusal": None}
    assert choice["finish_reason"] == "stop" and choice["index"] == 0
    steps = result.metadata.processing_steps
    assert body["usage"] == {
        "prompt_tokens": sum(s.prompt_tokens for s in steps),
        "completion_tokens": sum(s.completion_tokens for s in steps),
        "total_tokens": result.metadata.tokens_used,
    }
    info = body["orchestra"]
    assert info["request_id"] == "run-1" and info["session_id"] == result.session_id
    assert info["execution_mode"] == "coding-debate" and info["quality_score"] == result.quality_score
    assert info["metadata"]["optimization_mode"] == "lite"
    assert len(info["metadata"]["processing_steps"]) == len(steps) and "response" not in info


def _events(raw: bytes) -> list[Any]:
    """The SSE ``data`` payloads: JSON objects, and the string ``[DONE]``."""
    out: list[Any] = []
    for block in raw.decode().split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        data = block.removeprefix("data: ")
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


async def _collect(stream: oa.CompletionStream) -> list[Any]:
    return _events(b"".join([part async for part in stream.body()]))


@pytest.mark.parametrize("include_usage", [True, False])
async def test_a_stream_is_openais_chunks_with_the_agents_namespaced(
    fast_config: orchestra.OrchestraConfig, include_usage: bool
) -> None:
    engine, _ = make_engine(fast_config)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    call = _call(
        _chat(_user("Write a haiku about rain"), model="orchestra/creative-team:lite", stream=True, **extra)
    )
    stream = await oa.open_stream(call, engine.stream(call.run))
    events = await _collect(stream)
    assert stream.finished and events[-1] == "[DONE]"
    chunks = events[:-1]
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"] == "chatcmpl-run-1"
        assert chunk["model"] == "orchestra/creative-team:lite"
        assert ("usage" in chunk) is include_usage
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    agents = [c["orchestra"] for c in chunks if "orchestra" in c and c["orchestra"]["event"] != "completed"]
    assert {a["event"] for a in agents} == {"turn_start", "token", "turn_end"}
    # an agent's chunk has an empty delta: standard clients see nothing of it
    assert all(c["choices"][0]["delta"] == {} for c in chunks if "orchestra" in c)
    assert {a["role"] for a in agents} >= {"ideator", "critic", "writer"}
    assert all(a["step"]["agent"] == a["agent"] for a in agents if a["event"] == "turn_end")
    answer = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    last = next(c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop")
    assert last["orchestra"]["event"] == "completed" and last["choices"][0]["delta"] == {}
    transcript = await engine.transcript("t1", "run-1")
    steps = last["orchestra"]["metadata"]["processing_steps"]
    assert len(steps) == len(transcript.entries)
    session = await engine.session("t1", last["orchestra"]["session_id"])
    assert answer == session.turns[-1].response  # the chunks reassemble the answer
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == sum(
            s["prompt_tokens"] + s["completion_tokens"] for s in steps
        )
        assert all(c["usage"] is None for c in chunks[:-1])
    else:
        assert chunks[-1] is last


async def test_a_run_failing_before_any_event_is_an_http_error(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config)
    run = RunRequest(message="x", swarm_type="not-a-team", tenant="t1", run_id="run-1")
    call = oa.CompletionCall(run, "orchestra/not-a-team", True, False, 0)
    with pytest.raises(ValidationError):
        await oa.open_stream(call, engine.stream(run))


def _slow_engine(raw_config: dict[str, Any], deadline_s: float) -> Engine:
    raw = copy.deepcopy(fast_raw_config(raw_config))
    raw["teams"]["long-debate"] = {
        **copy.deepcopy(raw["teams"]["coding-debate"]),
        "modes": {
            m: {"agents": {"coder": 2}, "rounds": 20, "deadline_s": deadline_s} for m in orchestra.MODES
        },
    }
    engine, _ = make_engine(orchestra.load_config(raw), ScriptedSettings(latency_s=0.01, tokens_per_s=2000))
    return engine


async def test_a_failure_midway_is_an_error_event_without_done(raw_config: dict[str, Any]) -> None:
    engine = _slow_engine(raw_config, deadline_s=0.2)
    run = RunRequest(message="Write code", swarm_type="long-debate", tenant="t1", run_id="run-1")
    stream = await oa.open_stream(
        oa.CompletionCall(run, "orchestra/long-debate", True, False, 0), engine.stream(run)
    )
    events = await _collect(stream)
    assert stream.finished and "[DONE]" not in events
    assert any("orchestra" in e for e in events[:-1])  # agents had streamed before the deadline
    assert events[-1] == {
        "error": {
            "message": events[-1]["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": "timeout",
        }
    }


# -- the gateway's /v1 routes --------------------------------------------------------------------------


def _app(gateway: Gateway) -> Starlette:
    async def models(request: Request) -> Response:
        return await gateway.openai_models(request, "/v1/models")

    async def completions(request: Request) -> Response:
        return await gateway.openai_chat(request, "/v1/chat/completions")

    return Starlette(
        routes=[
            Route("/v1/models", models),
            Route("/v1/chat/completions", completions, methods=["POST"]),
        ]
    )


async def _ok() -> None:
    return None


async def _gateway(engine: Engine, teams: Collection[str], capacity: int = 50) -> tuple[Gateway, str]:
    keys = ApiKeys(InMemoryKeyStore())
    key, _ = await keys.create(tenant="alice")
    gw = Gateway(
        engine,
        keys=keys,
        limiter=LocalTokenBucket(capacity=capacity, refill_per_s=0.001, limit_per_minute=1),
        metrics=Metrics(),
        teams=list(teams),
        probes={"runtime": _ok, "modes": _ok, "store": _ok},
        version="test",
    )
    return gw, key


def _sample(gw: Gateway, method: str, endpoint: str, status: str) -> float | None:
    labels = {"method": method, "endpoint": endpoint, "status": status}
    return gw.metrics.registry.get_sample_value("http_requests_total", labels)


async def test_the_routes_authorize_limit_answer_and_count(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    gw, key = await _gateway(engine, fast_config.teams, capacity=6)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(_app(gw)) as client:
        listing = client.get("/v1/models", headers=auth)
        assert listing.status_code == 200 and listing.json()["data"][0]["id"] == "orchestra/auto"
        assert listing.headers["X-RateLimit-Remaining"] == "5"
        answer = client.post(
            "/v1/chat/completions",
            json=_chat(_user("Write a poem"), model="orchestra/auto:lite"),
            headers=auth,
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
        assert answer.json()["orchestra"]["execution_mode"] == "routed:creative-team"
        streamed = client.post(
            "/v1/chat/completions",
            json=_chat(_user("Write a poem"), model="orchestra/auto:lite", stream=True),
            headers=auth,
        )
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith(
            "text/event-stream"
        )
        assert _events(streamed.content)[-1] == "[DONE]" and "X-RateLimit-Limit" in streamed.headers
        missing = client.post("/v1/chat/completions", json=_chat(_user("x")))
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer not-a-key"})
        assert wrong.status_code == 401 and "not-a-key" not in wrong.text  # no secret echoed
        unknown = client.post("/v1/chat/completions", json=_chat(_user("x"), model="gpt-4o"), headers=auth)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        bad = client.post("/v1/chat/completions", content=b"{", headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        big = client.post("/v1/chat/completions", json=_chat(_user("x" * 300_000)), headers=auth)
        assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
        limited = client.get("/v1/models", headers=auth)
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert limited.json()["error"] | {"message": ""} == {
            "message": "",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    assert _sample(gw, "GET", "/v1/models", "200") == 1 and _sample(gw, "GET", "/v1/models", "429") == 1
    assert _sample(gw, "POST", "/v1/chat/completions", "200") == 2
    for status in ("401", "404", "400", "413"):
        assert _sample(gw, "POST", "/v1/chat/completions", status) == 1, status


def _request(body: dict[str, Any], key: str) -> Request:
    raw = json.dumps(body).encode()
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # the client has gone
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    headers = [(b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(raw)).encode())]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": headers,
        "query_string": b"",
    }
    return Request(scope, receive)


async def test_a_client_leaving_a_stream_cancels_its_run(raw_config: dict[str, Any]) -> None:
    engine = _slow_engine(raw_config, deadline_s=30)
    gw, key = await _gateway(engine, engine.config.teams)
    body = _chat(_user("Write code"), model="orchestra/long-debate:lite", stream=True)
    response = await gw.openai_chat(_request(body, key), "/v1/chat/completions")
    assert isinstance(response, StreamingResponse) and response.status_code == 200
    parts = response.body_iterator
    assert isinstance(parts, AsyncGenerator)
    first = [await anext(parts) for _ in range(3)]
    assert b'"role":"assistant"' in first[0] and len(engine.running("alice")) == 1
    await parts.aclose()
    assert engine.running() == []
    transcript = await engine.transcript("alice", json.loads(first[0][6:])["id"].removeprefix("chatcmpl-"))
    assert transcript.outcome == "cancelled"
    assert _sample(gw, "POST", "/v1/chat/completions", "200") == 1  # counted when the stream ended
