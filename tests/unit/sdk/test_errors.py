"""Errors from HTTP answers and WebSocket frames map to one class per API code."""

from __future__ import annotations

import builtins

import ai_orchestra
import httpx
import pytest
from ai_orchestra import (
    AuthenticationError,
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    RateLimitError,
    RunCancelledError,
    ServiceUnavailableError,
    TimeoutError,
    ValidationError,
)
from ai_orchestra._base import error_from_response
from ai_orchestra._errors import make_error
from ai_orchestra._streaming import error_from_frame

RID = "0b5e7c1e-7d43-4c3a-9b1e-2f6c2a4d9e10"
CODES: list[tuple[str, int, type[OrchestraError]]] = [
    ("VALIDATION_ERROR", 400, ValidationError),
    ("AUTHENTICATION_ERROR", 401, AuthenticationError),
    ("NOT_FOUND", 404, NotFoundError),
    ("PAYLOAD_TOO_LARGE", 413, PayloadTooLargeError),
    ("RATE_LIMIT_ERROR", 429, RateLimitError),
    ("INTERNAL_ERROR", 500, InternalError),
    ("SERVICE_UNAVAILABLE", 503, ServiceUnavailableError),
    ("TIMEOUT_ERROR", 504, TimeoutError),
]


def envelope_error(code: str, status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "success": False,
        "data": None,
        "metadata": {"request_id": RID, "timestamp": "2026-11-25T00:00:00.000Z", "version": "v2"},
        "error": {"code": code, "message": f"{code} happened", "details": {"field": "message"}},
    }
    return httpx.Response(status, json=body, headers={"X-Request-ID": RID, **(headers or {})})


@pytest.mark.parametrize(("code", "status", "cls"), CODES)
def test_every_http_error_code_has_its_class(code: str, status: int, cls: type[OrchestraError]) -> None:
    error = error_from_response(envelope_error(code, status))
    assert type(error) is cls and isinstance(error, OrchestraError)
    assert (error.code, error.status_code, error.request_id) == (code, status, RID)
    assert error.message == f"{code} happened" and error.details == {"field": "message"}
    assert RID in str(error) and code in str(error)


@pytest.mark.parametrize(("code", "status", "cls"), CODES)
def test_websocket_error_frames_map_to_the_same_classes(
    code: str, status: int, cls: type[OrchestraError]
) -> None:
    frame = {
        "action": "error",
        "request_id": "req-1",
        "error": {"code": code, "message": "no", "details": {"retry_after": 0.25}},
    }
    error = error_from_frame(frame)
    assert type(error) is cls and error.code == code and error.request_id == "req-1"
    assert error.status_code == status  # the status the code stands for, though no HTTP answer came
    assert error.retry_after == 0.25 and error.details == {"retry_after": 0.25}


def test_cancelled_frames_and_frames_without_request_id() -> None:
    error = error_from_frame({"action": "error", "error": {"code": "CANCELLED", "message": "stopped"}})
    assert type(error) is RunCancelledError and error.request_id is None and error.status_code is None
    assert error.details == {}


def test_retry_after_comes_from_the_header_first_then_the_details() -> None:
    limited = envelope_error("RATE_LIMIT_ERROR", 429, {"Retry-After": "2"})
    assert error_from_response(limited).retry_after == 2.0
    body = {"error": {"code": "RATE_LIMIT_ERROR", "message": "m", "details": {"retry_after": 0.061}}}
    assert error_from_response(httpx.Response(429, json=body)).retry_after == 0.061


def test_answers_that_are_not_the_envelope_map_by_status() -> None:
    proxy = error_from_response(httpx.Response(503, text="<html>busy</html>", headers={"Retry-After": "4"}))
    assert type(proxy) is ServiceUnavailableError and proxy.retry_after == 4.0 and proxy.status_code == 503
    gateway = error_from_response(httpx.Response(502, text="bad gateway"))
    assert type(gateway) is OrchestraError and gateway.code == "HTTP_ERROR" and gateway.status_code == 502


def test_unknown_codes_are_kept() -> None:
    newer = make_error("QUOTA_EXCEEDED", "no more", status_code=429)
    assert type(newer) is RateLimitError and newer.code == "QUOTA_EXCEEDED"
    odd = make_error("SOMETHING_NEW", "hm", status_code=418)
    assert type(odd) is OrchestraError and odd.code == "SOMETHING_NEW"


def test_every_error_class_is_exported_under_the_base() -> None:
    classes = [getattr(ai_orchestra, name) for name in ai_orchestra.__all__ if name.endswith("Error")]
    assert all(issubclass(cls, ai_orchestra.OrchestraError) for cls in classes)
    assert issubclass(ai_orchestra.APITimeoutError, ai_orchestra.APIConnectionError)
    assert issubclass(ai_orchestra.StreamInterruptedError, ai_orchestra.APIConnectionError)
    assert not issubclass(ai_orchestra.TimeoutError, builtins.TimeoutError)  # the API's, not the built-in
