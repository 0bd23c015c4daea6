from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncGenerator

import pytest

from orchestra import ProviderAuthenticationError, ProviderRateLimitError, ProviderUnavailableError
from orchestra.providers import ChatMessage, CompletionRequest, RetryPolicy, StreamItem, TokenDelta
from orchestra.providers._retry import parse_retry_after, retry_call, retry_stream


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    value = parse_retry_after({"Retry-After": date})
    assert value is not None and 25 < value <= 30
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
    assert parse_retry_after({"Retry-After": "garbage"}) is None


def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4)
    for attempt, cap in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (8, 4.0)]:
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) > 1  # jittered


async def test_retry_call_honours_retry_after_and_limits() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ProviderRateLimitError("slow down", retry_after=2.0)
        return "ok"

    policy = RetryPolicy(max_retries=4, base_delay_s=0.01)
    assert await retry_call(policy, flaky, sleep=sleep) == "ok"
    assert calls == 3 and len(slept) == 2 and all(2.0 <= s <= 2.01 for s in slept)

    async def down() -> str:
        raise ProviderUnavailableError("down")

    slept.clear()
    with pytest.raises(ProviderUnavailableError):
        await retry_call(policy, down, sleep=sleep)
    assert len(slept) == 4

    async def denied() -> str:
        raise ProviderAuthenticationError("bad key")

    slept.clear()
    with pytest.raises(ProviderAuthenticationError):
        await retry_call(policy, denied, sleep=sleep)
    assert slept == []

    async def too_long() -> str:
        raise ProviderRateLimitError("come back tomorrow", retry_after=86400)

    with pytest.raises(ProviderRateLimitError):
        await retry_call(policy, too_long, sleep=sleep)


async def test_stream_is_not_retried_after_text_went_out() -> None:
    request = CompletionRequest(model="m", messages=(ChatMessage(role="user", content="hi"),))
    opened = 0

    async def broken_midway(_: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        nonlocal opened
        opened += 1
        yield TokenDelta(text="partial ")
        raise ProviderUnavailableError("connection reset")

    async def no_sleep(_: float) -> None:
        return None

    got: list[StreamItem] = []
    with pytest.raises(ProviderUnavailableError):
        async for item in retry_stream(
            RetryPolicy(base_delay_s=0.01), broken_midway, request, sleep=no_sleep
        ):
            got.append(item)
    assert opened == 1 and len(got) == 1
