"""Fixtures: one wire server per session, and providers pointed at it through the real SDKs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from orchestra.providers._anthropic import AnthropicProvider
from orchestra.providers._base import LLMProvider
from orchestra.providers._openai import OpenAIProvider
from orchestra.providers._retry import RetryPolicy
from orchestra.providers._settings import AnthropicSettings, OpenAISettings

from .wire_server import (
    Reply,
    WireServer,
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_error,
    openai_stream,
)

API_KEY = "sk-test-0123456789abcdef-SECRET"
FAST_RETRY = RetryPolicy(max_retries=2, base_delay_s=0.01, max_delay_s=0.05)


@dataclass(frozen=True)
class Flavour:
    """What differs between providers, so resilience tests run unchanged against both wire formats."""

    name: str
    env: str
    build: Callable[..., LLMProvider]
    ok: Callable[[str], Reply]
    streamed: Callable[[Sequence[str]], Reply]
    error: Callable[..., Reply]


def _build_openai(url: str, **settings: Any) -> LLMProvider:
    return OpenAIProvider(OpenAISettings(base_url=f"{url}/v1", **settings))


def _build_anthropic(url: str, **settings: Any) -> LLMProvider:
    return AnthropicProvider(AnthropicSettings(base_url=url, **settings))


FLAVOURS = {
    "openai": Flavour(
        name="openai",
        env="OPENAI_API_KEY",
        build=_build_openai,
        ok=lambda text: Reply(json=openai_completion(text)),
        streamed=lambda pieces: Reply(events=openai_stream(pieces)),
        error=openai_error,
    ),
    "anthropic": Flavour(
        name="anthropic",
        env="ANTHROPIC_API_KEY",
        build=_build_anthropic,
        ok=lambda text: Reply(json=anthropic_message(text)),
        streamed=lambda pieces: Reply(events=anthropic_stream(pieces)),
        error=anthropic_error,
    ),
}


@pytest.fixture(scope="session")
def wire_server() -> Iterator[WireServer]:
    server = WireServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def wire(wire_server: WireServer) -> Iterator[WireServer]:
    wire_server.reset()
    yield wire_server
    wire_server.reset()


@pytest.fixture(params=sorted(FLAVOURS))
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return FLAVOURS[request.param]


@pytest.fixture
async def make_provider(wire: WireServer) -> AsyncIterator[Callable[..., Any]]:
    """``make_provider(flavour_or_name, **settings)``: a provider on the wire server, closed at teardown."""
    made: list[LLMProvider] = []

    def make(which: Flavour | str, **settings: Any) -> Any:
        chosen = FLAVOURS[which] if isinstance(which, str) else which
        settings.setdefault("api_key", SecretStr(API_KEY))
        settings.setdefault("timeout_s", 5.0)
        settings.setdefault("retry", FAST_RETRY)
        provider = chosen.build(wire.url, **settings)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.aclose()
