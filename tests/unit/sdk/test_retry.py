"""The SDK's retry policy as pure functions: the backoff schedule, Retry-After, what is retried."""

from __future__ import annotations

import email.utils

import pytest
from ai_orchestra import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    RateLimitError,
    RunCancelledError,
    ServiceUnavailableError,
    StreamInterruptedError,
    TimeoutError,
    ValidationError,
)
from ai_orchestra._retry import backoff_delay, is_retryable, parse_retry_after, retry_delay


def test_backoff_doubles_from_half_a_second_up_to_eight() -> None:
    no_jitter = [backoff_delay(n, random=lambda: 0.0) for n in range(8)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert backoff_delay(10_000, random=lambda: 0.0) == 8.0  # no overflow however many retries


@pytest.mark.parametrize("n", range(6))
@pytest.mark.parametrize("r", [0.0, 0.3, 0.999999])
def test_jitter_scales_the_delay_by_75_to_100_percent(n: int, r: float) -> None:
    base = min(0.5 * 2**n, 8.0)
    delay = backoff_delay(n, random=lambda: r)
    assert base * 0.75 < delay <= base
    assert delay == pytest.approx(base * (1 - 0.25 * r))


def test_default_jitter_stays_in_range() -> None:
    delays = {backoff_delay(2) for _ in range(200)}
    assert all(1.5 <= d <= 2.0 for d in delays) and len(delays) > 1


def test_retry_after_in_seconds_ms_or_a_date() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After": "3", "retry-after-ms": "250"}) == 0.25  # the finer one wins
    assert parse_retry_after({"Retry-After-Ms": "nope", "Retry-After": "2"}) == 2.0
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=lambda: 1_000_000.0) == 30.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_the_servers_wait_wins_when_reasonable() -> None:
    assert retry_delay(0, 1.0) == 1.0
    assert retry_delay(3, 60.0) == 60.0
    for unusable in (None, 0.0, -5.0, 61.0):
        assert retry_delay(1, unusable, random=lambda: 0.0) == 1.0  # backoff instead


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (RateLimitError("slow down", retry_after=1.0), True),
        (ServiceUnavailableError("busy"), True),
        (TimeoutError("deadline"), True),
        (APIConnectionError("refused"), True),
        (APITimeoutError("no answer"), True),
        (StreamInterruptedError("dropped"), True),
        (OrchestraError("gateway", status_code=503), True),  # an unknown code with a retried status
        (ValidationError("bad"), False),
        (AuthenticationError("who"), False),
        (NotFoundError("none"), False),
        (PayloadTooLargeError("big"), False),
        (InternalError("bug"), False),
        (RunCancelledError("stopped"), False),
        (OrchestraError("proxy", status_code=502), False),
        (RateLimitError("come back tomorrow", retry_after=3600.0), False),  # longer than we wait
    ],
)
def test_what_is_retried(error: OrchestraError, retried: bool) -> None:
    assert is_retryable(error) is retried
