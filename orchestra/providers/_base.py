"""The one contract every LLM provider implements."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "Completion",
    "CompletionRequest",
    "LLMProvider",
    "StreamItem",
    "TokenDelta",
    "Usage",
]


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class CompletionRequest(BaseModel):
    """What an agent asks of a model.

    ``metadata`` is for offline providers (role, round); real ones ignore it.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int = Field(default=1024, ge=1)
    temperature: float = Field(default=0.2, ge=0.0, le=2.0)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def system(self) -> str:
        """All system messages joined (Anthropic takes the system prompt apart from the turns)."""
        return "\n\n".join(m.content for m in self.messages if m.role == "system")


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(BaseModel):
    """A finished model answer: text, usage, and the model that actually answered."""

    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    provider: str
    usage: Usage
    finish_reason: str | None = None


class TokenDelta(BaseModel):
    """A piece of streamed text (one token, or a few coalesced)."""

    model_config = ConfigDict(frozen=True)

    text: str


StreamItem = TokenDelta | Completion
"""A stream yields ``TokenDelta`` items and ends with exactly one ``Completion`` (text + usage)."""


@runtime_checkable
class LLMProvider(Protocol):
    """Async completion and async token streaming.

    Implementations are cancellation-safe: cancelling the awaiting task closes the upstream request and
    leaves nothing running. Failures raise :class:`orchestra.ProviderError` subclasses.
    """

    @property
    def name(self) -> str:
        """Short provider label (``scripted``, ``openai``, ``anthropic``, ``replay``)."""
        ...

    async def complete(self, request: CompletionRequest) -> Completion: ...

    # ``temperature`` is a hint: providers whose API has no sampling settings (current Anthropic) ignore it.

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        """Yield ``TokenDelta`` as text arrives, then one final ``Completion`` with the usage."""
        ...

    async def aclose(self) -> None:
        """Release connections. Safe to call twice."""
        ...
