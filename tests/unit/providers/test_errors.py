from __future__ import annotations

import pickle

import pytest

from orchestra import (
    ProviderAuthenticationError,
    ProviderError,
    ProviderRateLimitError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from orchestra.providers._errors import MAX_UPSTREAM_MESSAGE, ErrorTranslator, redact, rule_for

KEY = "sk-test-0123456789abcdef"
errors = ErrorTranslator("openai", api_key=KEY, timeout_s=30.0)


@pytest.mark.parametrize(
    ("status", "cls", "says"),
    [
        (401, ProviderAuthenticationError, "rejected our credentials"),
        (403, ProviderAuthenticationError, "rejected our credentials"),
        (429, ProviderRateLimitError, "rate limit"),
        (408, ProviderTimeoutError, "request timed out"),
        (409, ProviderUnavailableError, "is unavailable"),
        (500, ProviderUnavailableError, "is unavailable"),
        (502, ProviderUnavailableError, "is unavailable"),
        (503, ProviderUnavailableError, "is unavailable"),
        (529, ProviderUnavailableError, "is unavailable"),
        (400, ProviderRequestError, "refused the request"),
        (402, ProviderRequestError, "refused the request"),
        (404, ProviderRequestError, "refused the request"),
        (413, ProviderRequestError, "refused the request"),
        (422, ProviderRequestError, "refused the request"),
    ],
)
def test_every_status_class(status: int, cls: type[ProviderError], says: str) -> None:
    assert rule_for(status).error is cls
    error = errors.from_status(status, "gpt-test", "upstream says no", retry_after=7.0)
    assert type(error) is cls
    assert error.message == f"openai {says} (model 'gpt-test', HTTP {status}): upstream says no"
    assert error.details == {"provider": "openai", "status": status, "model": "gpt-test"}


@pytest.mark.parametrize(("status", "kept"), [(429, 7.0), (503, 7.0), (409, 7.0), (408, None), (401, None)])
def test_retry_after_is_kept_only_for_rate_limit_and_unavailable(status: int, kept: float | None) -> None:
    assert errors.from_status(status, "m", "x", retry_after=7.0).retry_after == kept
    assert errors.from_status(status, "m", "x", retry_after=None).retry_after is None


def test_mid_stream_error_is_labelled() -> None:
    error = ErrorTranslator("anthropic", api_key=KEY, timeout_s=1).from_status(
        529, "claude-test", "Overloaded", retry_after=None, mid_stream=True
    )
    assert isinstance(error, ProviderUnavailableError)
    assert error.message == "anthropic is unavailable (model 'claude-test', mid-stream error 529): Overloaded"
    assert error.details["status"] == 529


def test_transport_failures() -> None:
    assert rule_for("timeout").error is ProviderTimeoutError
    assert rule_for("connection").error is ProviderUnavailableError
    timeout = errors.from_failure("timeout", "m", "ignored")
    assert type(timeout) is ProviderTimeoutError
    assert timeout.message == "openai request timed out after 30s (model 'm')"
    unreachable = errors.from_failure("connection", "m", "Connection refused", base_url="http://x/v1/")
    assert type(unreachable) is ProviderUnavailableError
    assert unreachable.message == "openai is unreachable at http://x/v1/ (model 'm'): Connection refused"
    for error in (timeout, unreachable):
        assert error.details == {"provider": "openai", "status": None, "model": "m"}
        assert error.retry_after is None and error.retryable


def test_other_failures_malformed_and_closed() -> None:
    invalid = errors.other(ProviderUnavailableError, "failed mid-stream", "m", "boom")
    assert (
        type(invalid) is ProviderUnavailableError
        and invalid.message == "openai failed mid-stream (model 'm'): boom"
    )
    assert errors.malformed_stream("m").message == "openai sent a malformed event stream (model 'm')"
    closed = errors.closed("m")
    assert type(closed) is ProviderRequestError and closed.message == "openai provider is closed"
    assert closed.details == errors.details(None, "m") == {"provider": "openai", "status": None, "model": "m"}


def test_the_key_never_leaks() -> None:
    echoed = f"Incorrect API key provided: {KEY}. Check {KEY}."
    assert redact(echoed, KEY) == "Incorrect API key provided: ***. Check ***."
    made = [
        errors.from_status(401, "m", echoed, retry_after=None),
        errors.from_failure("connection", "m", echoed, base_url="http://x"),
        errors.other(ProviderRequestError, "client error", "m", echoed),
    ]
    for error in made:
        assert KEY not in error.message and KEY not in str(error.details) and "***" in error.message
        assert KEY not in str(pickle.loads(pickle.dumps(error)).message)
    assert KEY not in repr(errors)


def test_an_empty_key_redacts_nothing() -> None:
    assert redact("nothing secret", "") == "nothing secret"


def test_upstream_message_is_capped() -> None:
    assert MAX_UPSTREAM_MESSAGE == 500
    assert redact("a" * 500, KEY) == "a" * 500
    assert redact("a" * 501, KEY) == "a" * 500 + "..."
    # Redaction happens before the cut: a key straddling the limit is still hidden.
    straddling = "a" * 490 + KEY + "b" * 100
    assert redact(straddling, KEY) == ("a" * 490 + "***" + "b" * 100)[:500] + "..."
    error = errors.from_status(400, "m", "x" * 2000, retry_after=None)
    assert error.message.endswith(": " + "x" * 500 + "...")
