"""AnthropicProvider: what it sends and how it reads answers, over real HTTP through the anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from orchestra.errors import ProviderRateLimitError, ProviderRequestError, ProviderUnavailableError
from orchestra.providers._base import ChatMessage, Completion, CompletionRequest, StreamItem, TokenDelta

from .conftest import API_KEY
from .wire_server import SSE, Reply, WireServer, anthropic_error, anthropic_message, anthropic_stream

pytestmark = pytest.mark.providers

REQUEST = CompletionRequest(
    model="claude-test",
    messages=(
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="Name a prime."),
        ChatMessage(role="assistant", content="Two."),
        ChatMessage(role="system", content="Answer in English."),
        ChatMessage(role="user", content="Another."),
    ),
    max_tokens=64,
    temperature=0.7,
)


def _request(*messages: tuple[str, str]) -> CompletionRequest:
    return CompletionRequest(
        model="claude-test", messages=tuple(ChatMessage(role=r, content=c) for r, c in messages)
    )


async def _collect(provider: Any, request: CompletionRequest = REQUEST) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


def _overloaded_event() -> SSE:
    payload = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    return SSE(json.dumps(payload), event="error")


async def test_complete_returns_text_usage_and_model(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(
        Reply(json=anthropic_message("Three.", model="claude-test-2025", input_tokens=40, output_tokens=3))
    )
    provider = make_provider("anthropic")

    completion = await provider.complete(REQUEST)

    assert completion == Completion(
        text="Three.",
        model="claude-test-2025",
        provider="anthropic",
        usage={"prompt_tokens": 40, "completion_tokens": 3},
        finish_reason="end_turn",
    )
    assert provider.name == "anthropic"


async def test_complete_sends_system_apart_from_the_turns(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(Reply(json=anthropic_message("ok")))
    await make_provider("anthropic").complete(REQUEST)

    [seen] = wire.requests
    assert seen.path == "/v1/messages"
    assert API_KEY in (seen.headers.get("x-api-key", "") + seen.headers.get("authorization", ""))
    assert "anthropic-version" in seen.headers
    assert seen.body == {
        "model": "claude-test",
        "system": "You are terse.\n\nAnswer in English.",
        "messages": [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "Two."},
            {"role": "user", "content": "Another."},
        ],
        "max_tokens": 64,
    }


async def test_no_system_prompt_omits_the_field(wire: WireServer, make_provider: Callable[..., Any]) -> None:
    wire.plan(Reply(json=anthropic_message("ok")))
    await make_provider("anthropic").complete(_request(("user", "hi")))
    assert "system" not in wire.requests[0].body


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        # Only a system prompt: the API needs at least one user turn.
        ((("system", "Be brief."),), [{"role": "user", "content": "Begin."}]),
        # An opening assistant turn gets a user turn before it.
        (
            (("assistant", "Earlier answer."), ("user", "Go on.")),
            [
                {"role": "user", "content": "Continue."},
                {"role": "assistant", "content": "Earlier answer."},
                {"role": "user", "content": "Go on."},
            ],
        ),
        # Empty turns are refused by the API; they carry nothing, so they are left out.
        ((("user", "  "), ("user", "Real question.")), [{"role": "user", "content": "Real question."}]),
    ],
)
async def test_turns_are_made_acceptable_to_the_messages_api(
    wire: WireServer,
    make_provider: Callable[..., Any],
    messages: tuple[tuple[str, str], ...],
    expected: list[dict[str, str]],
) -> None:
    wire.plan(Reply(json=anthropic_message("ok")))
    await make_provider("anthropic").complete(_request(*messages))
    assert wire.requests[0].body["messages"] == expected


async def test_stream_yields_deltas_then_completion_with_wire_usage(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(
        Reply(
            events=anthropic_stream(
                ["Thr", "ee", "."],
                model="claude-test-2025",
                input_tokens=40,
                output_tokens=9,
                stop_reason="max_tokens",
            )
        )
    )

    items = await _collect(make_provider("anthropic"))

    assert items[:-1] == [TokenDelta(text="Thr"), TokenDelta(text="ee"), TokenDelta(text=".")]
    final = items[-1]
    assert isinstance(final, Completion)
    assert final.text == "Three."
    assert final.model == "claude-test-2025"
    # Input tokens come from message_start; output tokens from message_delta, not message_start's placeholder.
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (40, 9)
    assert final.finish_reason == "max_tokens"

    [seen] = wire.requests
    assert seen.body["stream"] is True
    assert seen.body["system"] == "You are terse.\n\nAnswer in English."
    assert seen.body["max_tokens"] == 64


async def test_overloaded_event_before_text_is_retried(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    start = anthropic_stream([])[:1]
    wire.plan(Reply(events=[*start, _overloaded_event()]), Reply(events=anthropic_stream(["fine"])))

    items = await _collect(make_provider("anthropic"))

    assert items[0] == TokenDelta(text="fine")
    assert isinstance(items[-1], Completion)
    assert items[-1].text == "fine"
    assert len(wire.requests) == 2


async def test_overloaded_event_after_text_is_raised_not_retried(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    head = anthropic_stream(["partial"])[:4]  # message_start, block start, ping, one delta
    wire.plan(Reply(events=[*head, _overloaded_event()]))
    received: list[StreamItem] = []

    with pytest.raises(ProviderUnavailableError) as caught:
        async for item in make_provider("anthropic").stream(REQUEST):
            received.append(item)

    assert received == [TokenDelta(text="partial")]
    assert caught.value.details["status"] == 529
    assert "Overloaded" in caught.value.message
    assert len(wire.requests) == 1


async def test_rate_limit_event_mid_stream_maps_to_rate_limit(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    payload = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    head = anthropic_stream(["partial"])[:4]
    wire.plan(Reply(events=[*head, SSE(json.dumps(payload), event="error")]))
    with pytest.raises(ProviderRateLimitError):
        await _collect(make_provider("anthropic"))


async def test_stream_cut_before_message_stop_is_not_an_answer(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(Reply(events=anthropic_stream(["half"], stop=False)))
    received: list[StreamItem] = []

    with pytest.raises(ProviderUnavailableError, match="message_stop"):
        async for item in make_provider("anthropic").stream(REQUEST):
            received.append(item)

    assert received == [TokenDelta(text="half")]


async def test_overloaded_529_is_unavailable_and_retried(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(
        anthropic_error(529, "Overloaded", type_="overloaded_error"), Reply(json=anthropic_message("ok"))
    )
    completion = await make_provider("anthropic").complete(REQUEST)
    assert completion.text == "ok"
    assert len(wire.requests) == 2


async def test_not_found_model_is_a_request_error_naming_the_model(
    wire: WireServer, make_provider: Callable[..., Any]
) -> None:
    wire.plan(anthropic_error(404, "model: claude-nope", type_="not_found_error"))
    with pytest.raises(ProviderRequestError) as caught:
        await make_provider("anthropic").complete(REQUEST)
    assert "claude-test" in caught.value.message
    assert "404" in caught.value.message
    assert "model: claude-nope" in caught.value.message
    assert caught.value.details == {"provider": "anthropic", "status": 404, "model": "claude-test"}
    assert len(wire.requests) == 1
