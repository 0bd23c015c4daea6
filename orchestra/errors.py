"""The one exception tree of AI Orchestra.

Every error a caller can see is an :class:`OrchestraError` carrying a spec error ``code`` (api.md §4), the
HTTP status that code maps to, a human ``message`` and JSON-safe ``details``. The serving layer turns any
of them into the envelope without knowing the concrete class.

    OrchestraError
    ├── ValidationError            VALIDATION_ERROR     400
    ├── AuthenticationError        AUTHENTICATION_ERROR 401
    ├── NotFoundError              NOT_FOUND            404
    ├── PayloadTooLargeError       PAYLOAD_TOO_LARGE    413
    ├── RateLimitError             RATE_LIMIT_ERROR     429
    ├── InternalError              INTERNAL_ERROR       500
    ├── ServiceUnavailableError    SERVICE_UNAVAILABLE  503
    ├── DeadlineExceededError      TIMEOUT_ERROR        504
    ├── RunCancelledError          CANCELLED            499 (client closed the run; not an HTTP answer)
    ├── ConfigError                INTERNAL_ERROR       500 (raised at start-up, never mid-request)
    └── ProviderError              (an LLM provider failed; see the subclasses for the mapping)
        ├── ProviderAuthenticationError  SERVICE_UNAVAILABLE 503  upstream rejected *our* credentials
        ├── ProviderRateLimitError       RATE_LIMIT_ERROR    429  upstream throttled us (Retry-After)
        ├── ProviderTimeoutError         TIMEOUT_ERROR       504
        ├── ProviderUnavailableError     SERVICE_UNAVAILABLE 503  connection error, 5xx, overloaded
        └── ProviderRequestError         INTERNAL_ERROR      500  upstream refused our request (bad model...)

An upstream 401 is deliberately *not* mapped to 401: that status tells a client that its own key is bad.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import ValidationError as PydanticValidationError

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "DeadlineExceededError",
    "InternalError",
    "NotFoundError",
    "OrchestraError",
    "PayloadTooLargeError",
    "ProviderAuthenticationError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderRequestError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RunCancelledError",
    "ServiceUnavailableError",
    "ValidationError",
    "error_from_dict",
    "invalid",
    "pydantic_errors",
]


class OrchestraError(Exception):
    """Base of every error raised by AI Orchestra."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        """The spec's ``error`` object (code, message, details); JSON-safe and picklable."""
        return {"code": self.code, "message": self.message, "details": self.details}

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default pickling; errors cross Ray process boundaries.
        return (_rebuild, (type(self), self.message, self.details, self.retry_after))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


def _rebuild(
    cls: type[OrchestraError], message: str, details: dict[str, Any], retry_after: float | None
) -> OrchestraError:
    return cls(message, details=details, retry_after=retry_after)


class ValidationError(OrchestraError):
    """The request is malformed: bad JSON, missing/extra/out-of-range fields, unknown team or mode."""

    code = "VALIDATION_ERROR"
    http_status = 400


class AuthenticationError(OrchestraError):
    code = "AUTHENTICATION_ERROR"
    http_status = 401


class NotFoundError(OrchestraError):
    """Unknown route, or a resource that is not the caller's (indistinguishable on purpose)."""

    code = "NOT_FOUND"
    http_status = 404


class PayloadTooLargeError(OrchestraError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class RateLimitError(OrchestraError):
    code = "RATE_LIMIT_ERROR"
    http_status = 429


class InternalError(OrchestraError):
    code = "INTERNAL_ERROR"
    http_status = 500


class ServiceUnavailableError(OrchestraError):
    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class DeadlineExceededError(OrchestraError):
    """A swarm run exceeded its optimization mode's deadline."""

    code = "TIMEOUT_ERROR"
    http_status = 504


class RunCancelledError(OrchestraError):
    """A run was cancelled by its owner before it finished."""

    code = "CANCELLED"
    http_status = 499


class ConfigError(OrchestraError):
    """Configuration is invalid; raised at start-up with the offending path in ``details``."""

    code = "INTERNAL_ERROR"
    http_status = 500


class ProviderError(OrchestraError):
    """An LLM provider call failed (after retries, where retrying made sense)."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503
    retryable: ClassVar[bool] = False


class ProviderAuthenticationError(ProviderError):
    code = "SERVICE_UNAVAILABLE"
    http_status = 503


class ProviderRateLimitError(ProviderError):
    code = "RATE_LIMIT_ERROR"
    http_status = 429
    retryable = True


class ProviderTimeoutError(ProviderError):
    code = "TIMEOUT_ERROR"
    http_status = 504
    retryable = True


class ProviderUnavailableError(ProviderError):
    code = "SERVICE_UNAVAILABLE"
    http_status = 503
    retryable = True


class ProviderRequestError(ProviderError):
    code = "INTERNAL_ERROR"
    http_status = 500


_BY_CODE: dict[str, type[OrchestraError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        AuthenticationError,
        NotFoundError,
        PayloadTooLargeError,
        RateLimitError,
        InternalError,
        ServiceUnavailableError,
        DeadlineExceededError,
        RunCancelledError,
    )
}


def error_from_dict(error: dict[str, Any]) -> OrchestraError:
    """Rebuild an error from its spec ``error`` object (e.g. one received over the wire)."""
    cls = _BY_CODE.get(str(error.get("code")), InternalError)
    return cls(str(error.get("message", "")), details=dict(error.get("details") or {}))


# -- pydantic validation errors → the spec's ``details`` ---------------------------------------------


def pydantic_errors(
    error: PydanticValidationError,
    *,
    prefix: Sequence[object] = (),
    root: str = "<body>",
    rename: Mapping[str, str] | None = None,
    explain: Mapping[str, Callable[[str], str]] | None = None,
) -> list[dict[str, str]]:
    """``[{field, reason}, ...]`` for every problem pydantic found; ``field`` is the dotted path.

    ``prefix`` is prepended to each path (``data.args`` for a WebSocket command); ``root`` names the
    whole value when the path is empty; ``rename`` maps an internal field name to the one the client
    used; ``explain`` gives the reason for an error type itself (called with the field). Client input is
    never echoed (``include_input=False``), and names are cut to 100 characters.
    """
    errors = []
    for err in error.errors(include_url=False, include_input=False, include_context=False):
        field = ".".join(str(p)[:100] for p in (*prefix, *err["loc"])) or root
        if rename:
            field = rename.get(field, field)
        reason = str(err["msg"]).removeprefix("Value error, ")
        if explain and err["type"] in explain:
            reason = explain[err["type"]](field)
        errors.append({"field": field, "reason": reason})
    return errors


def invalid(
    errors: list[dict[str, str]],
    *,
    what: str = "invalid request",
    cls: type[OrchestraError] = ValidationError,
) -> OrchestraError:
    """The error for a list of ``{field, reason}`` problems: the message names the first, ``details`` is
    ``{field, reason, errors}`` (api.md §4)."""
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return cls(
        f"{what}: {first['field']}: {first['reason']}{more}",
        details={"field": first["field"], "reason": first["reason"], "errors": errors},
    )
