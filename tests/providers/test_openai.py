"""OpenAIProvider: what it sends and how it reads answers, over real HTTP through the openai SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from orchestra.errors import ProviderRequestError, ProviderUnavailableError
from orchestra.providers._base import ChatMessage, Completion, CompletionRequest, StreamItem, TokenDelta

from .conftest import API_KEY
from .wire_server import SSE, Reply, WireServer, openai_completion, openai_error, openai_stream

pytestmark = pytest.mark.providers

REQUEST = CompletionRequest(
    model="gpt-test",
    messages=(
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="Name a prime."),
        ChatMessage(role="assistant", content="Two."),
        ChatMessage(role="user", content="Another."),
    ),
    max_tokens=64,
    temperature=0.7,
)


async def _collect(provider: Any, request: CompletionRequest = REQUEST) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


async def test_complete_returns_text_usage_and_model(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(
        Reply(json=openai_completion("Three.", model="gpt-test-2024", prompt_tokens=21, completion_tokens=2))
    )
    provider = make_provider("openai")

    completion = await provider.complete(REQUEST)

    assert completion == Completion(
        text="Three.",
        model="gpt-test-2024",
        provider="openai",
        usage={"prompt_tokens": 21, "completion_tokens": 2},
        finish_reason="stop",
    )
    assert provider.name == "openai"


async def test_complete_sends_messages_max_tokens_temperature(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(Reply(json=openai_completion("ok")))
    await make_provider("openai").complete(REQUEST)

    [seen] = wire.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "Two."},
            {"role": "user", "content": "Another."},
        ],
        "max_tokens": 64,
        "temperature": 0.7,
    }


async def test_complete_without_usage_counts_zero(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    # Some OpenAI-compatible servers leave usage out.
    wire.plan(Reply(json=openai_completion("ok", usage=False)))
    completion = await make_provider("openai").complete(REQUEST)
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (0, 0)


async def test_stream_yields_deltas_then_completion_with_wire_usage(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(Reply(events=openai_stream(["Thr", "ee", "."], model="gpt-test-2024", prompt_tokens=30)))

    items = await _collect(make_provider("openai"))

    assert items[:-1] == [TokenDelta(text="Thr"), TokenDelta(text="ee"), TokenDelta(text=".")]
    final = items[-1]
    assert isinstance(final, Completion)
    assert final.text == "Three."
    assert final.model == "gpt-test-2024"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (30, 3)
    assert final.finish_reason == "stop"


async def test_stream_asks_for_usage(wire: WireServer, make_provider: Callable[..., Any]) -> None:
    wire.plan(Reply(events=openai_stream(["x"])))
    await _collect(make_provider("openai"))

    [seen] = wire.requests
    assert seen.body["stream"] is True
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["max_tokens"] == 64


async def test_stream_without_usage_chunk_counts_zero(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(Reply(events=openai_stream(["a", "b"], usage=False)))
    items = await _collect(make_provider("openai"))
    final = items[-1]
    assert isinstance(final, Completion)
    assert final.text == "ab"
    assert final.usage.total_tokens == 0


async def test_error_event_inside_stream_before_text_is_retried(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    failing = [SSE('{"error": {"message": "The server had an error", "type": "server_error"}}')]
    wire.plan(Reply(events=failing), Reply(events=openai_stream(["fine"])))

    items = await _collect(make_provider("openai"))

    assert items[0] == TokenDelta(text="fine")
    assert isinstance(items[-1], Completion)
    assert items[-1].text == "fine"
    assert len(wire.requests) == 2


async def test_error_event_after_text_is_raised_not_retried(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    events = openai_stream(["partial"], usage=False, done=False)[:2]
    events.append(SSE('{"error": {"message": "The server had an error", "type": "server_error"}}'))
    wire.plan(Reply(events=events))
    received: list[StreamItem] = []

    with pytest.raises(ProviderUnavailableError, match="mid-stream"):
        async for item in make_provider("openai").stream(REQUEST):
            received.append(item)

    assert received == [TokenDelta(text="partial")]
    assert len(wire.requests) == 1


async def test_not_found_model_is_a_request_error_naming_the_model(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(openai_error(404, "The model `gpt-nope` does not exist", type_="invalid_request_error"))
    with pytest.raises(ProviderRequestError) as caught:
        await make_provider("openai").complete(REQUEST)
    assert "gpt-test" in caught.value.message
    assert "404" in caught.value.message
    assert "does not exist" in caught.value.message
    assert caught.value.details == {"provider": "openai", "status": 404, "model": "gpt-test"}


async def test_malformed_stream_is_unavailable(wire: WireServer, make_provider: Callable[..., Any]) -> None:
    events = [*openai_stream(["ok"])[:2], SSE("{not json")]
    wire.plan(Reply(events=events))
    with pytest.raises(ProviderUnavailableError, match="malformed"):
        await _collect(make_provider("openai"))
