"""One table from what went wrong upstream to our error tree, shared by every SDK-backed provider.

Like httpx's mapping of its transport's exceptions, the decision lives here once: an upstream HTTP status,
or a transport failure (``"timeout"``, ``"connection"``), picks the :class:`Rule` (error class, what the
message says, whether the server's Retry-After is carried). The adapters only say which SDK exception is
which cause, read its status, Retry-After and upstream message, and hand them to :class:`ErrorTranslator`,
which words the message (provider, model, status, upstream text) and never lets the API key through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from orchestra.errors import (
    ProviderAuthenticationError,
    ProviderError,
    ProviderRateLimitError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)

__all__ = ["MAX_UPSTREAM_MESSAGE", "ErrorTranslator", "Failure", "Rule", "redact", "rule_for"]

MAX_UPSTREAM_MESSAGE = 500

Failure = Literal["timeout", "connection"]
"""A request that got no HTTP answer: it timed out, or the server could not be reached."""


@dataclass(frozen=True)
class Rule:
    """What one cause becomes: the error class, what the message says, and whether Retry-After is kept."""

    error: type[ProviderError]
    says: str
    keeps_retry_after: bool = False


_AUTHENTICATION = Rule(ProviderAuthenticationError, "rejected our credentials")
_RATE_LIMIT = Rule(ProviderRateLimitError, "rate limit", keeps_retry_after=True)
_TIMEOUT = Rule(ProviderTimeoutError, "request timed out")
_UNAVAILABLE = Rule(ProviderUnavailableError, "is unavailable", keeps_retry_after=True)
_UNREACHABLE = Rule(ProviderUnavailableError, "is unreachable")
_REFUSED = Rule(ProviderRequestError, "refused the request")

_RULES: dict[int | Failure, Rule] = {
    401: _AUTHENTICATION,
    403: _AUTHENTICATION,
    408: _TIMEOUT,
    # A transient lock conflict upstream (the SDKs retry it too).
    409: _UNAVAILABLE,
    429: _RATE_LIMIT,
    "timeout": _TIMEOUT,
    "connection": _UNREACHABLE,
}


def rule_for(cause: int | Failure) -> Rule:
    """The rule for an upstream HTTP status or a transport failure; any 5xx (529 overloaded too) is
    unavailable, any other status a refused request."""
    if (rule := _RULES.get(cause)) is not None:
        return rule
    return _UNAVAILABLE if isinstance(cause, int) and cause >= 500 else _REFUSED


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret`` (upstreams sometimes echo the key back in a 401), cut to
    :data:`MAX_UPSTREAM_MESSAGE` characters."""
    if secret:
        text = text.replace(secret, "***")
    if len(text) > MAX_UPSTREAM_MESSAGE:
        text = text[:MAX_UPSTREAM_MESSAGE] + "..."
    return text


@dataclass(frozen=True)
class ErrorTranslator:
    """Builds one provider's errors. Messages name provider, model and status; never the key."""

    provider: str
    api_key: str = field(repr=False)
    timeout_s: float

    def details(self, status: int | None, model: str) -> dict[str, Any]:
        return {"provider": self.provider, "status": status, "model": model}

    def from_status(
        self,
        status: int,
        model: str,
        upstream: str,
        *,
        retry_after: float | None,
        mid_stream: bool = False,
    ) -> ProviderError:
        """An HTTP error answer, or (``mid_stream``) an error event in a 200 stream that stands for ``status``
        (the adapter maps its type to one)."""
        rule = rule_for(status)
        label = "mid-stream error" if mid_stream else "HTTP"
        return rule.error(
            f"{self.provider} {rule.says} ({_where(model)}, {label} {status}): {self._redact(upstream)}",
            details=self.details(status, model),
            retry_after=retry_after if rule.keeps_retry_after else None,
        )

    def from_failure(
        self, failure: Failure, model: str, upstream: str = "", *, base_url: object = None
    ) -> ProviderError:
        """A request that got no answer: it timed out after our timeout (``upstream`` is not shown), or
        ``base_url`` could not be reached."""
        rule = rule_for(failure)
        if failure == "timeout":
            message = f"{self.provider} {rule.says} after {self.timeout_s:g}s ({_where(model)})"
        else:
            message = f"{self.provider} {rule.says} at {base_url} ({_where(model)}): {self._redact(upstream)}"
        return rule.error(message, details=self.details(None, model))

    def other(
        self, error: type[ProviderError], says: str, model: str, upstream: str | None = None
    ) -> ProviderError:
        """Anything without a status: ``"<provider> <says> (model ...)[: <upstream>]"``."""
        text = "" if upstream is None else f": {self._redact(upstream)}"
        return error(f"{self.provider} {says} ({_where(model)}){text}", details=self.details(None, model))

    def malformed_stream(self, model: str) -> ProviderError:
        return self.other(ProviderUnavailableError, "sent a malformed event stream", model)

    def closed(self, model: str) -> ProviderError:
        return ProviderRequestError(f"{self.provider} provider is closed", details=self.details(None, model))

    def _redact(self, text: str) -> str:
        return redact(text, self.api_key)


def _where(model: str) -> str:
    return f"model {model!r}"
