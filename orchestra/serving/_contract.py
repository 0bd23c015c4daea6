"""The HTTP contract of api.md §2 to §5, free of Ray and of any web framework.

The Serve ingress calls these helpers so that parsing, version detection, the envelope, error headers and
deprecation headers are defined (and tested) in one place:

- ``check_body_size`` / ``read_body`` → 413 ``PAYLOAD_TOO_LARGE`` for bodies over ``MAX_BODY_BYTES``.
- ``load_object`` → the body as a JSON object (also for the OpenAI-compatible routes).
- ``detect_version`` → ``"v1"``/``"v2"`` for the unversioned ``POST /chat/chat``.
- ``parse_body`` → a validated ``V1ChatRequest`` / ``V2ChatRequest``; every problem is a ``ValidationError``
  whose details are ``{"field", "reason", "errors": [{"field", "reason"}, ...]}``.
- ``to_run_request`` → the engine's ``RunRequest``; ``v1_data`` / ``v2_data`` → the response ``data``.
- ``envelope`` / ``error_envelope`` / ``error_headers`` / ``v1_headers`` → what goes on the wire.

Request ids (``new_request_id``): the client's ``X-Request-ID`` is reused verbatim when it is a UUID in the
canonical 8-4-4-4-12 hexadecimal form (any version, any letter case, surrounding whitespace ignored);
anything else (absent, braces, ``urn:uuid:``, no hyphens, too long...) gets a fresh ``uuid4``.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import AsyncIterable, Collection, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal

from pydantic import Field, StrictBool
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import FrozenModel, Mode
from orchestra.engine._messages import (
    MAX_MESSAGE_CHARS,
    ChatResult,
    RunRequest,
    SessionId,
    UserContext,
)
from orchestra.errors import (
    InternalError,
    OrchestraError,
    PayloadTooLargeError,
    RateLimitError,
    ValidationError,
    invalid,
    pydantic_errors,
)
from orchestra.serving import _json as strict_json
from orchestra.stores import RateLimitDecision

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "MAX_BODY_BYTES",
    "V1_SUNSET",
    "V2_FIELDS",
    "ApiVersion",
    "V1ChatRequest",
    "V2ChatRequest",
    "check_body_size",
    "detect_version",
    "envelope",
    "error_envelope",
    "error_headers",
    "load_object",
    "new_request_id",
    "parse_body",
    "rate_limit_error",
    "rate_limit_headers",
    "read_body",
    "to_run_request",
    "too_large",
    "utc_timestamp",
    "v1_data",
    "v1_headers",
    "v2_data",
    "validate_swarm_type",
]

ApiVersion = Literal["v1", "v2"]

MAX_BODY_BYTES = 256 * 1024
"""Largest accepted request body (api.md §4: *over* 256 KiB → 413, so exactly 256 KiB is accepted)."""

V1_SUNSET = datetime(2027, 6, 30, tzinfo=UTC)
"""The date after which v1 may be removed; sent in every v1 response's ``Sunset`` header (RFC 8594)."""

DEFAULT_RETRY_AFTER_S = 1
"""``Retry-After`` for a 429/503 whose error did not say how long to wait (spec §4 requires the header)."""

V2_FIELDS = ("message", "session_id", "optimization_mode", "swarm_type", "use_memory", "user_context")
V1_FIELDS = ("text", "sessionId")
# The same field under its other version's name, to turn "extra field" into "you meant ...".
_RENAMES: dict[ApiVersion, dict[str, str]] = {
    "v2": {"text": "message", "sessionId": "session_id"},
    "v1": {"message": "text", "session_id": "sessionId"},
}
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


# -- request models --------------------------------------------------------------------------------


class V2ChatRequest(FrozenModel):
    """The ``POST /chat/v2/chat`` body (api.md §5). ``null`` for an optional field means "absent"."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    session_id: SessionId | None = None
    optimization_mode: Mode = "balanced"
    # Membership in the configured teams is checked by the engine (or validate_swarm_type): the model does
    # not know the configuration.
    swarm_type: str | None = Field(default=None, min_length=1, max_length=128)
    # Strict: "yes" or 1 are not booleans in a JSON API.
    use_memory: StrictBool = False
    user_context: UserContext | None = None  # the same check as RunRequest's


class V1ChatRequest(FrozenModel):
    """The deprecated ``POST /chat/v1/chat`` body (api.md §2)."""

    text: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    sessionId: SessionId | None = None  # the v1 wire name


# -- body size -------------------------------------------------------------------------------------


def too_large(size: int | None) -> PayloadTooLargeError:
    """413 ``PAYLOAD_TOO_LARGE`` naming the limit (and the size, when known)."""
    details: dict[str, Any] = {"limit_bytes": MAX_BODY_BYTES}
    if size is not None:
        details["size_bytes"] = size
    return PayloadTooLargeError(f"request body is over {MAX_BODY_BYTES} bytes", details=details)


def check_body_size(content_length_header: str | None, raw_len: int | None = None) -> None:
    """Raise ``PayloadTooLargeError`` when the declared or actual body size is over ``MAX_BODY_BYTES``.

    Call it with the ``Content-Length`` header before reading the body (to refuse early) and/or with the
    length of what was read. An unparseable ``Content-Length`` is a ``ValidationError``.
    """
    if content_length_header is not None and content_length_header.strip():
        text = content_length_header.strip()
        if not text.isdigit():
            raise ValidationError(
                "invalid Content-Length header",
                details={
                    "field": "Content-Length",
                    "reason": "must be a non-negative integer",
                    "errors": [{"field": "Content-Length", "reason": "must be a non-negative integer"}],
                },
            )
        declared = int(text)
        if declared > MAX_BODY_BYTES:
            raise too_large(declared)
    if raw_len is not None and raw_len > MAX_BODY_BYTES:
        raise too_large(raw_len)


async def read_body(chunks: AsyncIterable[bytes], content_length_header: str | None = None) -> bytes:
    """Read a streamed body (e.g. Starlette's ``request.stream()``), stopping as soon as it is too large.

    Chunked uploads have no ``Content-Length``; this never buffers more than ``MAX_BODY_BYTES`` plus one
    chunk.
    """
    check_body_size(content_length_header)
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large(None)
        parts.append(chunk)
    return b"".join(parts)


# -- parsing ---------------------------------------------------------------------------------------


def _validation(
    message: str, field: str, reason: str, errors: list[dict[str, str]] | None = None
) -> ValidationError:
    return ValidationError(
        message,
        details={"field": field, "reason": reason, "errors": errors or [{"field": field, "reason": reason}]},
    )


def _load_json(raw: bytes) -> Any:
    try:
        return strict_json.loads(raw)
    except strict_json.InvalidJson as e:
        raise _validation("invalid JSON body", "<body>", f"invalid JSON: {e.reason}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _errors_from_pydantic(e: PydanticValidationError, version: ApiVersion) -> list[dict[str, str]]:
    renames = _RENAMES[version]
    other = "v1" if version == "v2" else "v2"

    def unknown(field: str) -> str:
        if field in renames:
            return f"unknown field; this is the {other} name, {version} calls it {renames[field]}"
        return "unknown field"

    return pydantic_errors(e, explain={"extra_forbidden": unknown})


def load_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object; empty, invalid JSON or another JSON type is a ``ValidationError`` on
    ``<body>`` (the input is never echoed)."""
    data = _load_json(raw)
    if not isinstance(data, dict):
        raise _validation(
            "the request body must be a JSON object",
            "<body>",
            f"must be a JSON object, got {_json_type(data)}",
        )
    return data


def parse_body(raw: bytes, version: ApiVersion) -> V1ChatRequest | V2ChatRequest:
    """Parse and validate a chat body for ``version``; every problem is a ``ValidationError`` (400)."""
    data = load_object(raw)
    model: type[V1ChatRequest] | type[V2ChatRequest] = V2ChatRequest if version == "v2" else V1ChatRequest
    try:
        return model.model_validate(data)
    except PydanticValidationError as e:
        errors = _errors_from_pydantic(e, version)
    if version == "v2" and "message" not in data and any(k in data for k in V1_FIELDS):
        # The common migration mistake gets a precise answer naming the v2 fields.
        reason = (
            "this is the v1 shape (text, sessionId); v2 takes message, session_id, optimization_mode, "
            "swarm_type, use_memory, user_context (or send the v1 body to /chat/v1/chat)"
        )
        raise ValidationError(
            f"invalid request: {reason}", details={"field": "message", "reason": reason, "errors": errors}
        )
    if version == "v1" and "text" not in data and "message" in data:
        reason = "this is the v2 shape (message, ...); v1 takes text, sessionId (or use /chat/v2/chat)"
        raise ValidationError(
            f"invalid request: {reason}", details={"field": "text", "reason": reason, "errors": errors}
        )
    raise invalid(errors)


def detect_version(headers: Mapping[str, str], raw: bytes) -> ApiVersion:
    """The version of an unversioned ``POST /chat/chat`` (api.md §2).

    ``API-Version: v1|v2`` (case-insensitive name and value) wins; any other value is a ``ValidationError``
    on field ``API-Version``. Otherwise the body decides: a ``message`` key → v2, else ``text`` or
    ``sessionId`` → v1, else (including unparseable bodies) v2, so that the v2 validation error explains
    what is wrong. A body with both ``message`` and a v1 key is treated as v2 (the current version) and
    then rejected for its extra field.
    """
    value = next((v for k, v in headers.items() if k.lower() == "api-version"), None)
    if value is not None:
        version = value.strip().lower()
        if version in ("v1", "v2"):
            return "v1" if version == "v1" else "v2"
        raise _validation("invalid API-Version header", "API-Version", "must be v1 or v2")
    try:
        data = strict_json.loads(raw)
    except strict_json.InvalidJson:
        return "v2"
    if isinstance(data, dict) and "message" not in data and any(k in data for k in V1_FIELDS):
        return "v1"
    return "v2"


def validate_swarm_type(value: str | None, teams: Collection[str]) -> str | None:
    """Reject a ``swarm_type`` that is not one of the configured teams (``None`` = let the router choose)."""
    if value is None or value in teams:
        return value
    reason = f"unknown swarm_type; must be one of: {', '.join(sorted(teams))}"
    raise _validation(f"unknown swarm_type {value[:64]!r}", "swarm_type", reason)


def to_run_request(req: V1ChatRequest | V2ChatRequest, *, tenant: str, run_id: str) -> RunRequest:
    """The engine request for a validated body; v1 gets every v2 default."""
    fields: dict[str, Any]
    if isinstance(req, V1ChatRequest):
        fields = {"message": req.text, "session_id": req.sessionId}
    else:
        fields = {
            "message": req.message,
            "session_id": req.session_id,
            "optimization_mode": req.optimization_mode,
            "swarm_type": req.swarm_type,
            "use_memory": req.use_memory,
            "user_context": req.user_context or {},
        }
    try:
        return RunRequest(**fields, tenant=tenant, run_id=run_id)
    except PydanticValidationError as e:
        # Only tenant/run_id can fail here (the body was validated): our bug, so a 500, not a 400.
        raise invalid(pydantic_errors(e), what="cannot build the run request", cls=InternalError) from None


# -- responses -------------------------------------------------------------------------------------


def v1_data(result: ChatResult) -> dict[str, Any]:
    """The v1 ``data``: the answer and the session id, nothing else."""
    return {"response": result.response, "sessionId": result.session_id}


def v2_data(result: ChatResult) -> dict[str, Any]:
    """The v2 ``data`` (api.md §5); ``run_id`` is excluded by the model."""
    return result.model_dump(mode="json")


def new_request_id(client_value: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a canonical-form UUID (any version), else a fresh uuid4."""
    if client_value is not None:
        candidate = client_value.strip()
        if _UUID_RE.match(candidate):
            return candidate
    return str(uuid.uuid4())


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with millisecond precision and a ``Z`` suffix, e.g. ``2026-01-02T03:04:05.678Z``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _metadata(request_id: str, version: ApiVersion, now: datetime | None) -> dict[str, Any]:
    return {"request_id": request_id, "timestamp": utc_timestamp(now), "version": version}


def envelope(
    data: Any, *, request_id: str, version: ApiVersion, now: datetime | None = None
) -> dict[str, Any]:
    """A success response (api.md §3)."""
    return {"success": True, "data": data, "metadata": _metadata(request_id, version, now), "error": None}


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    # Details come from our own code but must never make the error response itself fail to serialise.
    safe: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return safe


def error_envelope(
    error: OrchestraError, *, request_id: str, version: ApiVersion, now: datetime | None = None
) -> dict[str, Any]:
    """An error response (api.md §3): ``success`` false, ``data`` null, ``error`` {code, message, details}.

    ``INTERNAL_ERROR`` (500) is unexpected by definition, so its message and details are replaced by a
    generic text: the ingress logs the original with the request id, the client never sees internals.
    """
    if error.code == "INTERNAL_ERROR":
        body: dict[str, Any] = {
            "code": "INTERNAL_ERROR",
            "message": "internal error; it was logged with this request_id",
            "details": {},
        }
    else:
        body = {"code": error.code, "message": error.message, "details": _json_safe(error.details)}
    return {"success": False, "data": None, "metadata": _metadata(request_id, version, now), "error": body}


def error_headers(error: OrchestraError) -> dict[str, str]:
    """Headers an error response must carry: ``WWW-Authenticate`` on 401, ``Retry-After`` on 429/503.

    ``Retry-After`` is whole seconds, rounded up, at least 1; ``DEFAULT_RETRY_AFTER_S`` when the error does
    not carry ``retry_after``.
    """
    headers: dict[str, str] = {}
    if error.code == "AUTHENTICATION_ERROR":
        headers["WWW-Authenticate"] = "Bearer"
    if error.http_status in (429, 503):
        wait = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_AFTER_S
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return headers


def v1_headers() -> dict[str, str]:
    """Deprecation headers on every v1 response (api.md §2; ``Sunset`` is an RFC 8594 HTTP-date)."""
    return {
        "Deprecation": "true",
        "Sunset": format_datetime(V1_SUNSET, usegmt=True),
        "Link": '</chat/v2/chat>; rel="successor-version"',
    }


# -- rate limits (api.md §6) ----------------------------------------------------------------------


def rate_limit_headers(decision: RateLimitDecision) -> dict[str, str]:
    """``X-RateLimit-*`` for every authenticated response, plus ``Retry-After`` on a refusal (429)."""
    headers = {
        "X-RateLimit-Limit": str(decision.limit),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset_s)),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s or 0)))
    return headers


def rate_limit_error(decision: RateLimitDecision, message: str | None = None) -> RateLimitError:
    """The 429 for a refusal (HTTP request or WebSocket message); ``error_headers`` turns its
    ``retry_after`` into ``Retry-After``. ``details.retry_after`` is seconds, rounded up to the ms."""
    wait = math.ceil(float(decision.retry_after_s or 0.0) * 1000) / 1000  # retrying earlier fails
    text = message or (
        f"rate limit exceeded: {decision.limit} requests per minute; retry in {max(1, math.ceil(wait))} s"
    )
    return RateLimitError(
        text,
        details={"limit": decision.limit, "remaining": decision.remaining, "retry_after": wait},
        retry_after=wait,
    )
