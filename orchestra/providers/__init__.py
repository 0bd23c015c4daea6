"""LLM providers behind one contract (``LLMProvider``).

The SDK-backed providers are imported on first use: the SDKs take about a second to import, and every
agent actor process would pay it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra.providers._base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    LLMProvider,
    StreamItem,
    TokenDelta,
    Usage,
)
from orchestra.providers._factory import make_provider
from orchestra.providers._recording import RecordingProvider, ReplayProvider
from orchestra.providers._retry import RetryPolicy
from orchestra.providers._scripted import ScriptedProvider
from orchestra.providers._settings import AnthropicSettings, OpenAISettings, ScriptedSettings

__all__ = [
    "AnthropicProvider",
    "AnthropicSettings",
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "LLMProvider",
    "OpenAIProvider",
    "OpenAISettings",
    "RecordingProvider",
    "ReplayProvider",
    "RetryPolicy",
    "ScriptedProvider",
    "ScriptedSettings",
    "StreamItem",
    "TokenDelta",
    "Usage",
    "make_provider",
]

if TYPE_CHECKING:
    from orchestra.providers._anthropic import AnthropicProvider
    from orchestra.providers._openai import OpenAIProvider


def __getattr__(name: str) -> Any:
    if name == "OpenAIProvider":
        from orchestra.providers._openai import OpenAIProvider

        return OpenAIProvider
    if name == "AnthropicProvider":
        from orchestra.providers._anthropic import AnthropicProvider

        return AnthropicProvider
    raise AttributeError(name)
