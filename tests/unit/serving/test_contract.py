"""The HTTP contract helpers (api.md §2-§5): parsing, version detection, envelope, headers, sizes."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.engine._messages import ChatMetadata, ChatResult, ProcessingStep
from orchestra.errors import (
    AuthenticationError,
    ConfigError,
    InternalError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    ValidationError,
)
from orchestra.serving import _contract as api


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def invalid(raw: bytes, version: api.ApiVersion = "v2") -> ValidationError:
    with pytest.raises(ValidationError) as info:
        api.parse_body(raw, version)
    details = info.value.details
    # Every validation error has the spec §3 details shape.
    assert set(details) == {"field", "reason", "errors"}
    assert details["errors"], "errors lists every problem"
    assert all(set(e) == {"field", "reason"} for e in details["errors"])
    assert info.value.http_status == 400 and info.value.code == "VALIDATION_ERROR"
    return info.value


def fields_of(error: ValidationError) -> list[str]:
    return [e["field"] for e in error.details["errors"]]


def result(**overrides: Any) -> ChatResult:
    step = ProcessingStep(
        agent="coder-1",
        role="coder",
        round=1,
        model="scripted/x",
        prompt_tokens=3,
        completion_tokens=4,
        latency_s=0.1,
    )
    fields: dict[str, Any] = {
        "response": "done",
        "session_id": "s-1",
        "execution_mode": "routed:coding-team",
        "quality_score": 0.5,
        "execution_time": 0.25,
        "metadata": ChatMetadata(
            tokens_used=7,
            model="scripted/x",
            swarm_type="coding-team",
            optimization_mode="lite",
            processing_steps=[step],
        ),
        "run_id": "run-123",
    }
    fields.update(overrides)
    return ChatResult(**fields)


# -- v2 body validation (spec §5) ------------------------------------------------------------------


def test_minimal_v2_body_gets_the_defaults() -> None:
    req = api.parse_body(body(message="hi"), "v2")
    assert isinstance(req, api.V2ChatRequest)
    assert (req.message, req.session_id, req.optimization_mode) == ("hi", None, "balanced")
    assert (req.swarm_type, req.use_memory, req.user_context) == (None, False, None)


def test_full_v2_body_is_kept() -> None:
    raw = body(
        message="m",
        session_id="a.B:c-1_2",
        optimization_mode="quality",
        swarm_type="coding-team",
        use_memory=True,
        user_context={"lang": "py", "n": [1, 2]},
    )
    req = api.parse_body(raw, "v2")
    assert isinstance(req, api.V2ChatRequest)
    assert req.session_id == "a.B:c-1_2" and req.optimization_mode == "quality"
    assert req.swarm_type == "coding-team" and req.use_memory is True
    assert req.user_context == {"lang": "py", "n": [1, 2]}


@pytest.mark.parametrize(
    ("raw", "field", "reason_part"),
    [
        (body(session_id="s"), "message", "required"),
        (body(message=""), "message", "at least 1"),
        (body(message="x" * 32_001), "message", "at most 32000"),
        (body(message=5), "message", "string"),
        (body(message="hi", session_id="has space"), "session_id", "pattern"),
        (body(message="hi", session_id=""), "session_id", "pattern"),
        (body(message="hi", session_id="x" * 129), "session_id", "pattern"),
        (body(message="hi", session_id="ü"), "session_id", "pattern"),
        (
            body(message="hi", optimization_mode="turbo"),
            "optimization_mode",
            "'lite', 'balanced' or 'quality'",
        ),
        (body(message="hi", optimization_mode=None), "optimization_mode", "'lite'"),
        (body(message="hi", use_memory="yes"), "use_memory", "boolean"),
        (body(message="hi", use_memory=1), "use_memory", "boolean"),
        (body(message="hi", user_context=[1]), "user_context", "dictionary"),
        (body(message="hi", user_context={"a": "x" * 16_400}), "user_context", "16384"),
        (body(message="hi", swarm_type=""), "swarm_type", "at least 1"),
        (body(message="hi", extra=1), "extra", "unknown field"),
    ],
)
def test_each_v2_validation_case_names_the_field(raw: bytes, field: str, reason_part: str) -> None:
    error = invalid(raw)
    assert error.details["field"] == field
    assert reason_part.lower() in error.details["reason"].lower()
    assert field in error.message


def test_boundaries_are_inclusive() -> None:
    assert api.parse_body(body(message="x" * 32_000, session_id="s" * 128), "v2")
    # 16 KiB as compact JSON exactly: {"a":"..."} is 8 bytes of framing.
    exact = {"a": "x" * (16 * 1024 - 8)}
    assert len(json.dumps(exact, separators=(",", ":"))) == 16 * 1024
    assert api.parse_body(body(message="hi", user_context=exact), "v2")
    invalid(body(message="hi", user_context={"a": "x" * (16 * 1024 - 7)}))


def test_all_errors_are_listed_first_one_in_field_order() -> None:
    error = invalid(body(message="", session_id="bad id", optimization_mode="x", nope=True))
    assert error.details["field"] == "message"
    assert fields_of(error) == ["message", "session_id", "optimization_mode", "nope"]


def test_null_optional_fields_mean_absent() -> None:
    req = api.parse_body(body(message="hi", session_id=None, swarm_type=None, user_context=None), "v2")
    run = api.to_run_request(req, tenant="t", run_id="r")
    assert run.session_id is None and run.swarm_type is None and run.user_context == {}


@pytest.mark.parametrize(
    ("raw", "reason_part"),
    [
        (b"{not json", "invalid JSON"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"message": NaN}', "NaN"),
        (b"\xff\xfe\x00", "invalid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid JSON"),
    ],
)
def test_invalid_json_is_a_body_error(raw: bytes, reason_part: str) -> None:
    error = invalid(raw)
    assert error.details["field"] == "<body>"
    assert reason_part in error.details["reason"]


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[]", "array"), (b'"hi"', "string"), (b"3", "number"), (b"null", "null")]
)
def test_non_object_json_is_rejected(raw: bytes, kind: str) -> None:
    error = invalid(raw)
    assert error.details["field"] == "<body>"
    assert error.details["reason"] == f"must be a JSON object, got {kind}"


def test_error_text_never_echoes_the_input() -> None:
    secret = "sk-very-secret-value"
    error = invalid(body(message="hi", session_id=f"{secret} !"))
    assert secret not in json.dumps(error.to_dict())


# -- v1 and the v1-on-v2 mistake -------------------------------------------------------------------


def test_v1_body() -> None:
    req = api.parse_body(body(text="hello", sessionId="s1"), "v1")
    assert isinstance(req, api.V1ChatRequest)
    run = api.to_run_request(req, tenant="tenant-a", run_id="run-1")
    assert (run.message, run.session_id, run.tenant, run.run_id) == ("hello", "s1", "tenant-a", "run-1")
    assert (run.optimization_mode, run.swarm_type, run.use_memory, run.user_context) == (
        "balanced",
        None,
        False,
        {},
    )


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (body(), "text"),
        (body(text=""), "text"),
        (body(text="x" * 32_001), "text"),
        (body(text="hi", sessionId="bad id"), "sessionId"),
        (body(text="hi", optimization_mode="lite"), "optimization_mode"),
    ],
)
def test_v1_validation(raw: bytes, field: str) -> None:
    assert invalid(raw, "v1").details["field"] == field


@pytest.mark.parametrize(
    "raw", [body(text="hello"), body(text="hello", sessionId="s1"), body(sessionId="s1")]
)
def test_v1_shaped_body_on_v2_names_the_v2_fields(raw: bytes) -> None:
    error = invalid(raw, "v2")
    assert error.details["field"] == "message"
    reason = error.details["reason"]
    assert "v1" in reason
    for v2_field in api.V2_FIELDS:
        assert v2_field in reason
    assert {"field": "message", "reason": "Field required"} in error.details["errors"]
    by_field = {e["field"]: e["reason"] for e in error.details["errors"]}
    if "text" in by_field:
        assert "message" in by_field["text"]
    if "sessionId" in by_field:
        assert "session_id" in by_field["sessionId"]


def test_v1_field_mixed_into_a_v2_body_gets_a_rename_hint() -> None:
    error = invalid(body(message="hi", sessionId="s"))
    assert error.details["field"] == "sessionId"
    assert "session_id" in error.details["reason"]


def test_v2_shaped_body_on_v1_names_the_v1_fields() -> None:
    error = invalid(body(message="hi"), "v1")
    assert error.details["field"] == "text"
    assert "text" in error.details["reason"] and "sessionId" in error.details["reason"]


# -- version detection (spec §2) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "raw", "expected"),
    [
        ({"API-Version": "v1"}, body(message="hi"), "v1"),  # the header wins over the body
        ({"api-version": "V2"}, body(text="hi"), "v2"),
        ({"Api-Version": " v1 "}, b"garbage", "v1"),
        ({}, body(text="hi"), "v1"),
        ({}, body(sessionId="s"), "v1"),
        ({}, body(message="hi"), "v2"),
        ({}, body(message="hi", sessionId="s"), "v2"),
        ({}, body(other=1), "v2"),
        ({}, b"{broken", "v2"),
        ({}, b"", "v2"),
        ({}, b'["text"]', "v2"),
        ({"X-Other": "v1"}, body(message="hi"), "v2"),
    ],
)
def test_detect_version(headers: dict[str, str], raw: bytes, expected: str) -> None:
    assert api.detect_version(headers, raw) == expected


@pytest.mark.parametrize("value", ["v3", "", "1", "version1", "v1,v2"])
def test_invalid_api_version_header_is_a_validation_error(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.detect_version({"API-Version": value}, body(message="hi"))
    assert info.value.details["field"] == "API-Version"
    assert info.value.details["errors"] == [{"field": "API-Version", "reason": "must be v1 or v2"}]


def test_validate_swarm_type() -> None:
    teams = ["coding-team", "research-team"]
    assert api.validate_swarm_type(None, teams) is None
    assert api.validate_swarm_type("coding-team", teams) == "coding-team"
    with pytest.raises(ValidationError) as info:
        api.validate_swarm_type("dance-team", teams)
    assert info.value.details["field"] == "swarm_type"
    assert "coding-team, research-team" in info.value.details["reason"]


def test_to_run_request_v2_carries_everything() -> None:
    req = api.parse_body(
        body(
            message="m",
            session_id="s",
            optimization_mode="lite",
            swarm_type="t",
            use_memory=True,
            user_context={"k": 1},
        ),
        "v2",
    )
    run = api.to_run_request(req, tenant="ten", run_id="rid")
    assert run.model_dump() == {
        "message": "m",
        "session_id": "s",
        "optimization_mode": "lite",
        "swarm_type": "t",
        "use_memory": True,
        "user_context": {"k": 1},
        "tenant": "ten",
        "run_id": "rid",
    }


def test_to_run_request_with_a_bad_tenant_is_our_bug_not_a_400() -> None:
    with pytest.raises(InternalError):
        api.to_run_request(api.V1ChatRequest(text="x"), tenant="", run_id="r")


# -- response data ---------------------------------------------------------------------------------


def test_v1_and_v2_data() -> None:
    r = result()
    assert api.v1_data(r) == {"response": "done", "sessionId": "s-1"}
    data = api.v2_data(r)
    assert "run_id" not in data
    assert set(data) == {
        "response",
        "session_id",
        "execution_mode",
        "quality_score",
        "execution_time",
        "metadata",
    }
    assert data["metadata"]["tokens_used"] == 7
    assert data["metadata"]["processing_steps"][0] == {
        "agent": "coder-1",
        "role": "coder",
        "round": 1,
        "model": "scripted/x",
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "latency_s": 0.1,
    }
    json.dumps(data)  # JSON-safe


# -- request id (spec §3) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        str(uuid.uuid4()),
        str(uuid.uuid1()),
        "00000000-0000-0000-0000-000000000000",
        str(uuid.uuid4()).upper(),
    ],
)
def test_client_request_id_is_reused_when_it_is_a_uuid(value: str) -> None:
    assert api.new_request_id(value) == value
    assert api.new_request_id(f" {value} ") == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "abc",
        "not-a-uuid-at-all-but-36-characters",
        uuid.uuid4().hex,  # no hyphens
        "{" + str(uuid.uuid4()) + "}",
        "urn:uuid:" + str(uuid.uuid4()),
        str(uuid.uuid4()) + "x",
        str(uuid.uuid4()) + "\n" + str(uuid.uuid4()),
        "g" * 8 + "-0000-0000-0000-" + "0" * 12,
    ],
)
def test_anything_else_gets_a_fresh_uuid4(value: str | None) -> None:
    rid = api.new_request_id(value)
    assert rid != value
    parsed = uuid.UUID(rid)
    assert parsed.version == 4 and str(parsed) == rid


def test_fresh_request_ids_differ() -> None:
    assert len({api.new_request_id(None) for _ in range(100)}) == 100


@given(st.text(max_size=60))
def test_request_id_is_always_a_canonical_uuid(value: str) -> None:
    rid = api.new_request_id(value)
    assert re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", rid)
    assert rid == value.strip() or uuid.UUID(rid).version == 4


# -- envelope (spec §3) ----------------------------------------------------------------------------


def _timestamp(value: str) -> datetime:
    assert value.endswith("Z") or value.endswith("+00:00")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def test_success_envelope_shape() -> None:
    before = datetime.now(UTC)
    env = api.envelope({"x": 1}, request_id="rid", version="v2")
    assert list(env) == ["success", "data", "metadata", "error"]
    assert env["success"] is True and env["data"] == {"x": 1} and env["error"] is None
    assert set(env["metadata"]) == {"request_id", "timestamp", "version"}
    assert env["metadata"]["request_id"] == "rid" and env["metadata"]["version"] == "v2"
    stamp = _timestamp(env["metadata"]["timestamp"])
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
    json.dumps(env)


def test_timestamp_is_utc_whatever_the_input_zone() -> None:
    moment = datetime(2026, 1, 2, 5, 4, 5, 678000, tzinfo=timezone(timedelta(hours=2)))
    assert api.utc_timestamp(moment) == "2026-01-02T03:04:05.678Z"
    env = api.envelope(None, request_id="r", version="v2", now=moment)
    assert env["metadata"]["timestamp"] == "2026-01-02T03:04:05.678Z"


def test_error_envelope_shape() -> None:
    error = ValidationError(
        "invalid request",
        details={"field": "message", "reason": "required", "errors": [{"field": "message"}]},
    )
    env = api.error_envelope(error, request_id="rid", version="v1")
    assert list(env) == ["success", "data", "metadata", "error"]
    assert env["success"] is False and env["data"] is None
    assert env["metadata"]["version"] == "v1" and env["metadata"]["request_id"] == "rid"
    _timestamp(env["metadata"]["timestamp"])
    assert env["error"] == {
        "code": "VALIDATION_ERROR",
        "message": "invalid request",
        "details": error.details,
    }


def test_internal_errors_never_reach_the_client() -> None:
    try:
        raise RuntimeError("db password=hunter2")
    except RuntimeError as e:
        internal = InternalError(f"boom: {e}", details={"trace": "Traceback (most recent call last): ..."})
    for error in (
        internal,
        ConfigError("bad config at /etc/secret.yaml", details={"path": "/etc/secret.yaml"}),
    ):
        env = api.error_envelope(error, request_id="r", version="v2")
        text = json.dumps(env)
        assert env["error"]["code"] == "INTERNAL_ERROR"
        assert env["error"]["details"] == {}
        assert "hunter2" not in text and "Traceback" not in text and "secret" not in text


def test_error_details_are_made_json_safe() -> None:
    error = NotFoundError("no such session", details={"when": datetime(2026, 1, 1, tzinfo=UTC)})
    env = api.error_envelope(error, request_id="r", version="v2")
    assert isinstance(env["error"]["details"]["when"], str)
    json.dumps(env)


# -- error headers ---------------------------------------------------------------------------------


def test_error_headers() -> None:
    assert api.error_headers(AuthenticationError("no")) == {"WWW-Authenticate": "Bearer"}
    assert api.error_headers(RateLimitError("slow", retry_after=2.1)) == {"Retry-After": "3"}
    assert api.error_headers(RateLimitError("slow", retry_after=0.01)) == {"Retry-After": "1"}
    assert api.error_headers(RateLimitError("slow", retry_after=0)) == {"Retry-After": "1"}
    assert api.error_headers(ServiceUnavailableError("down", retry_after=30)) == {"Retry-After": "30"}
    # 429/503 always carry Retry-After (spec §4), even when the error did not say how long.
    assert api.error_headers(ServiceUnavailableError("down")) == {
        "Retry-After": str(api.DEFAULT_RETRY_AFTER_S)
    }
    assert api.error_headers(ValidationError("bad")) == {}
    assert api.error_headers(NotFoundError("nope", retry_after=5)) == {}


def test_v1_deprecation_headers() -> None:
    headers = api.v1_headers()
    assert headers["Deprecation"] == "true"
    assert headers["Link"] == '</chat/v2/chat>; rel="successor-version"'
    sunset = parsedate_to_datetime(headers["Sunset"])
    assert sunset == api.V1_SUNSET and sunset > datetime(2026, 1, 1, tzinfo=UTC)
    assert headers["Sunset"] == "Wed, 30 Jun 2027 00:00:00 GMT"


# -- body size (413) -------------------------------------------------------------------------------


def test_body_size_limit() -> None:
    assert api.MAX_BODY_BYTES == 256 * 1024
    api.check_body_size(str(api.MAX_BODY_BYTES), api.MAX_BODY_BYTES)  # exactly the limit is fine
    api.check_body_size(None, None)
    api.check_body_size(None, 0)
    with pytest.raises(PayloadTooLargeError) as info:
        api.check_body_size(str(api.MAX_BODY_BYTES + 1), None)
    assert info.value.http_status == 413 and info.value.code == "PAYLOAD_TOO_LARGE"
    assert info.value.details["limit_bytes"] == api.MAX_BODY_BYTES
    with pytest.raises(PayloadTooLargeError):
        api.check_body_size(None, api.MAX_BODY_BYTES + 1)
    with pytest.raises(PayloadTooLargeError):
        api.check_body_size("10", api.MAX_BODY_BYTES + 1)  # a lying Content-Length does not help
    with pytest.raises(ValidationError) as bad:
        api.check_body_size("-1", None)
    assert bad.value.details["field"] == "Content-Length"


async def _chunks(sizes: list[int]) -> AsyncIterator[bytes]:
    for size in sizes:
        yield b"x" * size


async def test_read_body_stops_at_the_limit() -> None:
    assert await api.read_body(_chunks([10, 20])) == b"x" * 30
    assert len(await api.read_body(_chunks([api.MAX_BODY_BYTES]))) == api.MAX_BODY_BYTES
    consumed: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            consumed.append(1)
            yield b"x" * 65536

    with pytest.raises(PayloadTooLargeError):
        await api.read_body(endless())
    assert len(consumed) == 5  # stopped at the first chunk past 256 KiB
    with pytest.raises(PayloadTooLargeError):
        await api.read_body(_chunks([1]), str(api.MAX_BODY_BYTES + 1))
