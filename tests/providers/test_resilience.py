"""Retries, error mapping, timeouts and cancellation, for both providers over the real SDKs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestra.errors import (
    ConfigError,
    ProviderAuthenticationError,
    ProviderError,
    ProviderRateLimitError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
)
from orchestra.providers._anthropic import AnthropicProvider
from orchestra.providers._base import ChatMessage, Completion, CompletionRequest, LLMProvider, TokenDelta
from orchestra.providers._openai import OpenAIProvider
from orchestra.providers._retry import RetryPolicy
from orchestra.providers._settings import AnthropicSettings, OpenAISettings

from .conftest import API_KEY, Flavour
from .wire_server import Reply, WireServer

pytestmark = pytest.mark.providers

REQUEST = CompletionRequest(
    model="model-under-test",
    messages=(ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi.")),
    max_tokens=32,
)
# Long enough that a test which wrongly waits for it fails on time, short enough to end the session quickly.
SLOW_S = 3.0


def test_both_providers_satisfy_the_protocol(make_provider: Callable[..., Any], flavour: Flavour) -> None:
    assert isinstance(make_provider(flavour), LLMProvider)


async def test_rate_limit_with_retry_after_is_honoured_then_succeeds(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    wire.plan(
        flavour.error(429, "slow down", type_="rate_limit_error", headers={"Retry-After": "0.2"}),
        flavour.ok("hi"),
    )

    started = time.monotonic()
    completion = await make_provider(flavour).complete(REQUEST)
    elapsed = time.monotonic() - started

    assert completion.text == "hi"
    assert len(wire.requests) == 2
    assert elapsed >= 0.18, "Retry-After was not honoured"
    assert elapsed < 2.0


async def test_server_error_is_retried(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    wire.plan(flavour.error(500, "boom", type_="api_error"), flavour.ok("recovered"))
    completion = await make_provider(flavour).complete(REQUEST)
    assert completion.text == "recovered"
    assert len(wire.requests) == 2


async def test_authentication_failure_is_not_retried_and_hides_the_key(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    # Upstreams may echo the key back; it must not reach our message or details.
    wire.plan(flavour.error(401, f"Incorrect API key provided: {API_KEY}", type_="authentication_error"))

    with pytest.raises(ProviderAuthenticationError) as caught:
        await make_provider(flavour).complete(REQUEST)

    error = caught.value
    assert len(wire.requests) == 1
    assert API_KEY not in error.message
    assert API_KEY not in str(error.details)
    assert error.details == {"provider": flavour.name, "status": 401, "model": "model-under-test"}
    assert flavour.name in error.message and "401" in error.message and "model-under-test" in error.message


async def test_permission_denied_is_an_authentication_error(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    wire.plan(flavour.error(403, "forbidden", type_="permission_error"))
    with pytest.raises(ProviderAuthenticationError):
        await make_provider(flavour).complete(REQUEST)
    assert len(wire.requests) == 1


async def test_bad_request_is_not_retried(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    wire.plan(flavour.error(400, "max_tokens: too large", type_="invalid_request_error"))
    with pytest.raises(ProviderRequestError, match="max_tokens: too large") as caught:
        await make_provider(flavour).complete(REQUEST)
    assert caught.value.details["status"] == 400
    assert len(wire.requests) == 1


async def test_exhausted_retries_raise_unavailable(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    policy = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.02)
    wire.plan(*[flavour.error(503, "down", type_="api_error") for _ in range(3)])

    with pytest.raises(ProviderUnavailableError) as caught:
        await make_provider(flavour, retry=policy).complete(REQUEST)

    assert caught.value.details["status"] == 503
    assert len(wire.requests) == policy.max_retries + 1


async def test_retry_after_beyond_the_policy_cap_is_raised_at_once(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    policy = RetryPolicy(max_retries=3, base_delay_s=0.01, max_retry_after_s=1.0)
    wire.plan(flavour.error(429, "quota", type_="rate_limit_error", headers={"Retry-After": "120"}))

    with pytest.raises(ProviderRateLimitError) as caught:
        await make_provider(flavour, retry=policy).complete(REQUEST)

    assert caught.value.retry_after == pytest.approx(120)
    assert len(wire.requests) == 1


async def test_slow_server_times_out(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    policy = RetryPolicy(max_retries=1, base_delay_s=0.01)
    wire.plan(Reply(json={}, delay_s=SLOW_S), Reply(json={}, delay_s=SLOW_S))

    started = time.monotonic()
    with pytest.raises(ProviderTimeoutError, match="timed out"):
        await make_provider(flavour, timeout_s=0.3, retry=policy).complete(REQUEST)

    assert time.monotonic() - started < SLOW_S
    assert len(wire.requests) == 2  # a timeout is retryable


async def test_stream_rate_limited_before_any_token_is_retried(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    wire.plan(
        flavour.error(429, "slow down", type_="rate_limit_error", headers={"Retry-After": "0.05"}),
        flavour.streamed(["a", "b"]),
    )

    items = [item async for item in make_provider(flavour).stream(REQUEST)]

    assert items[:-1] == [TokenDelta(text="a"), TokenDelta(text="b")]
    assert isinstance(items[-1], Completion) and items[-1].text == "ab"
    assert len(wire.requests) == 2
    assert all(seen.body["stream"] is True for seen in wire.requests)


async def test_stream_that_stalls_after_a_token_times_out_without_retry(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    stalled = flavour.streamed(["first", "never"])
    # OpenAI's first two events are the role chunk and "first"; Anthropic's first delta is its fourth event.
    keep = 2 if flavour.name == "openai" else 4
    wire.plan(Reply(events=stalled.events, stall_after=keep))
    received: list[Any] = []

    with pytest.raises(ProviderTimeoutError):
        async for item in make_provider(flavour, timeout_s=0.3).stream(REQUEST):
            received.append(item)

    assert received == [TokenDelta(text="first")]
    assert len(wire.requests) == 1  # text went out: a retry would repeat it


async def test_cancelling_a_stream_consumer_closes_the_request(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    slow = flavour.streamed([f"t{i} " for i in range(50)])
    wire.plan(Reply(events=slow.events, event_delay_s=0.1))
    provider = make_provider(flavour)
    first_token = asyncio.Event()
    received: list[Any] = []

    async def consume() -> None:
        async for item in provider.stream(REQUEST):
            received.append(item)
            first_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first_token.wait(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert await wire.wait_for_disconnect(2.0), "the server never saw the client hang up"
    assert wire.completed == 0
    assert 0 < len(received) < 50


async def test_closing_a_stream_early_closes_the_request(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    slow = flavour.streamed([f"t{i} " for i in range(50)])
    wire.plan(Reply(events=slow.events, event_delay_s=0.1))

    async with contextlib.aclosing(make_provider(flavour).stream(REQUEST)) as items:
        async for item in items:
            assert isinstance(item, TokenDelta)
            break

    assert await wire.wait_for_disconnect(2.0), "the server never saw the client hang up"
    assert wire.completed == 0


async def test_cancelling_complete_closes_the_request(
    wire: WireServer, make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    wire.plan(Reply(json={}, delay_s=SLOW_S))
    task = asyncio.create_task(make_provider(flavour).complete(REQUEST))
    assert await wire.wait_until(lambda: bool(wire.requests), 5.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert await wire.wait_for_disconnect(2.0)


async def test_unreachable_server_is_unavailable(make_provider: Callable[..., Any], flavour: Flavour) -> None:
    # Nothing listens on port 9 (discard) on loopback in the test environment.
    settings: dict[str, Any] = {"api_key": API_KEY, "retry": RetryPolicy(max_retries=0, base_delay_s=0.01)}
    if flavour.name == "openai":
        provider: LLMProvider = OpenAIProvider(OpenAISettings(base_url="http://127.0.0.1:9/v1", **settings))
    else:
        provider = AnthropicProvider(AnthropicSettings(base_url="http://127.0.0.1:9", **settings))
    try:
        with pytest.raises(ProviderUnavailableError, match="unreachable") as caught:
            await provider.complete(REQUEST)
        assert caught.value.details["status"] is None
    finally:
        await provider.aclose()


async def test_aclose_is_idempotent_and_later_calls_fail_cleanly(
    make_provider: Callable[..., Any], flavour: Flavour
) -> None:
    provider = make_provider(flavour)
    await provider.aclose()
    await provider.aclose()
    with pytest.raises(ProviderError, match="closed"):
        await provider.complete(REQUEST)


@pytest.mark.parametrize(
    ("build", "env"),
    [
        (lambda: OpenAIProvider(OpenAISettings()), "OPENAI_API_KEY"),
        (lambda: AnthropicProvider(AnthropicSettings()), "ANTHROPIC_API_KEY"),
        (lambda: OpenAIProvider(OpenAISettings(api_key_env="MY_VLLM_KEY")), "MY_VLLM_KEY"),
    ],
)
def test_missing_api_key_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch, build: Callable[[], LLMProvider], env: str
) -> None:
    monkeypatch.delenv(env, raising=False)
    with pytest.raises(ConfigError, match=env):
        build()


def test_api_key_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    provider = OpenAIProvider(OpenAISettings())
    assert provider.name == "openai"
