"""The exceptions of the SDK: one class per error code of the API, one base for all.

    OrchestraError                      every error the SDK raises
    ├── ValidationError                 VALIDATION_ERROR       400
    ├── AuthenticationError             AUTHENTICATION_ERROR   401
    ├── NotFoundError                   NOT_FOUND              404
    ├── PayloadTooLargeError            PAYLOAD_TOO_LARGE      413
    ├── RateLimitError                  RATE_LIMIT_ERROR       429
    ├── InternalError                   INTERNAL_ERROR         500
    ├── ServiceUnavailableError         SERVICE_UNAVAILABLE    503
    ├── TimeoutError                    TIMEOUT_ERROR          504 (the swarm run exceeded its deadline)
    ├── RunCancelledError               CANCELLED              (WebSocket only: the run was cancelled)
    ├── APIResponseError                INVALID_RESPONSE       (an answer the SDK cannot read)
    └── APIConnectionError              CONNECTION_ERROR       (no answer: refused, reset, DNS...)
        ├── APITimeoutError             CONNECTION_TIMEOUT     (no answer in time)
        └── StreamInterruptedError      STREAM_INTERRUPTED     (the WebSocket dropped mid-stream)

Every instance carries ``code``, ``message``, ``details`` (the API's error details), ``status_code`` (the
HTTP status, ``None`` when there was none) and ``request_id`` (the id the server logged the request under,
or the one the SDK sent when no answer came). ``TimeoutError`` here is the API's ``TIMEOUT_ERROR`` and is
not the built-in of the same name: catch it as ``ai_orchestra.TimeoutError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = [
    "ERROR_CLASSES",
    "APIConnectionError",
    "APIResponseError",
    "APITimeoutError",
    "AuthenticationError",
    "InternalError",
    "NotFoundError",
    "OrchestraError",
    "PayloadTooLargeError",
    "RateLimitError",
    "RunCancelledError",
    "ServiceUnavailableError",
    "StreamInterruptedError",
    "TimeoutError",
    "ValidationError",
    "make_error",
]


class OrchestraError(Exception):
    """Base of every error the SDK raises.

    Attributes: ``code`` (the API's error code), ``message``, ``details`` (a dict, empty when the server
    sent none), ``status_code`` (HTTP status or ``None``), ``request_id`` (or ``None``) and
    ``retry_after`` (seconds the server asked to wait, when it said).
    """

    default_code: ClassVar[str] = "ORCHESTRA_ERROR"
    default_status: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: str = code or self.default_code
        self.details: dict[str, Any] = dict(details or {})
        self.status_code: int | None = status_code if status_code is not None else self.default_status
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        suffix = f" (request_id {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{suffix}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, code={self.code!r}, status_code={self.status_code!r}, "
            f"request_id={self.request_id!r})"
        )


class ValidationError(OrchestraError):
    """400 ``VALIDATION_ERROR``: the request was malformed; ``details`` names the first bad ``field``."""

    default_code = "VALIDATION_ERROR"
    default_status = 400


class AuthenticationError(OrchestraError):
    """401 ``AUTHENTICATION_ERROR``: the API key is missing, unknown or revoked."""

    default_code = "AUTHENTICATION_ERROR"
    default_status = 401


class NotFoundError(OrchestraError):
    """404 ``NOT_FOUND``: no such route, or a session that is not this key's."""

    default_code = "NOT_FOUND"
    default_status = 404


class PayloadTooLargeError(OrchestraError):
    """413 ``PAYLOAD_TOO_LARGE``: the body (or WebSocket frame) is over the server's limit."""

    default_code = "PAYLOAD_TOO_LARGE"
    default_status = 413


class RateLimitError(OrchestraError):
    """429 ``RATE_LIMIT_ERROR``: the key's (or connection's) rate limit; ``retry_after`` says how long."""

    default_code = "RATE_LIMIT_ERROR"
    default_status = 429


class InternalError(OrchestraError):
    """500 ``INTERNAL_ERROR``: the server failed unexpectedly (it logged the ``request_id``)."""

    default_code = "INTERNAL_ERROR"
    default_status = 500


class ServiceUnavailableError(OrchestraError):
    """503 ``SERVICE_UNAVAILABLE``: overloaded, or a provider or backend is down; retried by default."""

    default_code = "SERVICE_UNAVAILABLE"
    default_status = 503


class TimeoutError(OrchestraError):  # shadows the built-in on purpose: the name the spec gives it
    """504 ``TIMEOUT_ERROR``: the swarm run exceeded its optimization mode's deadline."""

    default_code = "TIMEOUT_ERROR"
    default_status = 504


class RunCancelledError(OrchestraError):
    """``CANCELLED``: a streamed run was cancelled by a command the stream did not send itself."""

    default_code = "CANCELLED"


class APIResponseError(OrchestraError):
    """``INVALID_RESPONSE``: the server answered something that is not the API's envelope or model."""

    default_code = "INVALID_RESPONSE"


class APIConnectionError(OrchestraError):
    """``CONNECTION_ERROR``: no answer came (connection refused or reset, DNS, TLS...); retried by default."""

    default_code = "CONNECTION_ERROR"


class APITimeoutError(APIConnectionError):
    """``CONNECTION_TIMEOUT``: no answer came within the client's ``timeout``; retried by default."""

    default_code = "CONNECTION_TIMEOUT"


class StreamInterruptedError(APIConnectionError):
    """``STREAM_INTERRUPTED``: the WebSocket dropped while a chat was streaming.

    The server does not resume streams: the run stopped with the connection, and sending the chat again
    starts it over. A connection that drops *between* chats is reconnected on the next call instead.
    """

    default_code = "STREAM_INTERRUPTED"


ERROR_CLASSES: dict[str, type[OrchestraError]] = {
    cls.default_code: cls
    for cls in (
        ValidationError,
        AuthenticationError,
        NotFoundError,
        PayloadTooLargeError,
        RateLimitError,
        InternalError,
        ServiceUnavailableError,
        TimeoutError,
        RunCancelledError,
    )
}
"""The API's error codes (spec §4, and ``CANCELLED`` of the WebSocket) → their classes."""

_STATUS_CLASSES: dict[int, type[OrchestraError]] = {
    cls.default_status: cls for cls in ERROR_CLASSES.values() if cls.default_status is not None
}


def make_error(
    code: str | None,
    message: str,
    *,
    details: Mapping[str, Any] | None = None,
    status_code: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> OrchestraError:
    """The exception for an error the API reported: its class by ``code``, else by ``status_code``.

    An unknown code keeps its value on a plain ``OrchestraError`` (or the status's class), so a newer
    server's codes still reach the caller; an error with neither a code nor a known status (a proxy's 502,
    say) is an ``OrchestraError`` with code ``HTTP_ERROR``.
    """
    cls = ERROR_CLASSES.get(code or "")
    if cls is None:
        cls = _STATUS_CLASSES.get(status_code or 0, OrchestraError)
        if cls is OrchestraError and not code:
            code = "HTTP_ERROR"
    return cls(
        message,
        code=code or None,
        details=details,
        status_code=status_code,
        request_id=request_id,
        retry_after=retry_after,
    )
