"""Anthropic's Messages API through the official ``anthropic`` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import anthropic
import httpx2
from anthropic.types import (
    AssistantMessageParam,
    MessageParam,
    UserMessageParam,
)
from anthropic.types import (
    Usage as AnthropicUsage,
)

from orchestra.errors import ProviderError, ProviderRequestError, ProviderUnavailableError
from orchestra.providers._base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    StreamItem,
    TokenDelta,
    Usage,
)
from orchestra.providers._remote import RemoteProvider
from orchestra.providers._retry import parse_retry_after
from orchestra.providers._settings import AnthropicSettings

__all__ = ["AnthropicProvider"]

_PROVIDER = "anthropic"
# The API wants a conversation that opens with a user turn and has no empty turns.
_OPENING_TURN = "Begin."
_CONTINUE_TURN = "Continue."
# Status a mid-stream ``event: error`` stands for; the HTTP status of that response is already 200.
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicProvider(RemoteProvider):
    """Messages API with our own retries (the SDK's are off so that one policy governs every provider).

    ``CompletionRequest.temperature`` is not sent: the SDK (2.x) no longer has sampling parameters and the
    API version it speaks (``anthropic-version: 2026-10-21``) answers 400 to any of them.
    """

    provider = _PROVIDER

    def __init__(
        self, settings: AnthropicSettings, *, client: anthropic.AsyncAnthropic | None = None
    ) -> None:
        super().__init__(
            settings,
            client,
            lambda key: anthropic.AsyncAnthropic(
                api_key=key,
                base_url=settings.base_url,
                timeout=settings.timeout_s,
                max_retries=0,
            ),
        )
        self._client: anthropic.AsyncAnthropic = self._client

    async def _complete_once(self, request: CompletionRequest) -> Completion:
        self._ensure_open(request)
        try:
            response = await self._client.messages.create(
                model=request.model,
                messages=_to_anthropic_messages(request.messages),
                max_tokens=request.max_tokens,
                system=request.system or anthropic.omit,
            )
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise self._translate(exc, request.model) from exc
        text = "".join(block.text for block in response.content if block.type == "text")
        return Completion(
            text=text,
            model=response.model or request.model,
            provider=_PROVIDER,
            usage=Usage(
                prompt_tokens=_input_tokens(response.usage),
                completion_tokens=response.usage.output_tokens,
            ),
            finish_reason=response.stop_reason,
        )

    async def _stream_once(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        self._ensure_open(request)
        try:
            stream = await self._client.messages.create(
                model=request.model,
                messages=_to_anthropic_messages(request.messages),
                max_tokens=request.max_tokens,
                stream=True,
                system=request.system or anthropic.omit,
            )
        except (anthropic.AnthropicError, httpx2.TransportError) as exc:
            raise self._translate(exc, request.model) from exc

        parts: list[str] = []
        model = request.model
        stop_reason: str | None = None
        prompt_tokens = completion_tokens = 0
        finished = False
        # ``async with`` closes the HTTP response on every exit: end, error, GeneratorExit or cancellation.
        async with stream:
            events = aiter(stream)
            while True:
                try:
                    event = await anext(events)
                # The SDK's event stream lets transport errors through unwrapped, unlike its requests.
                except StopAsyncIteration:
                    break
                except (anthropic.AnthropicError, httpx2.TransportError) as exc:
                    raise self._translate(exc, request.model) from exc
                except json.JSONDecodeError as exc:
                    raise self._errors.malformed_stream(request.model) from exc
                if event.type == "message_start":
                    model = event.message.model or model
                    prompt_tokens = _input_tokens(event.message.usage)
                    completion_tokens = event.message.usage.output_tokens
                elif event.type == "content_block_delta":
                    if event.delta.type == "text_delta" and event.delta.text:
                        parts.append(event.delta.text)
                        yield TokenDelta(text=event.delta.text)
                elif event.type == "message_delta":
                    # message_delta usage is cumulative; input_tokens appears there only when it changed.
                    completion_tokens = event.usage.output_tokens
                    if event.usage.input_tokens is not None:
                        prompt_tokens = (
                            event.usage.input_tokens
                            + (event.usage.cache_creation_input_tokens or 0)
                            + (event.usage.cache_read_input_tokens or 0)
                        )
                    stop_reason = event.delta.stop_reason or stop_reason
                elif event.type == "message_stop":
                    finished = True
        if not finished:
            # The connection closed cleanly but early: the answer is truncated, so it is not an answer.
            raise self._errors.other(
                ProviderUnavailableError, "stream ended before message_stop", request.model
            )
        yield Completion(
            text="".join(parts),
            model=model,
            provider=_PROVIDER,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            finish_reason=stop_reason,
        )

    def _translate(self, exc: anthropic.AnthropicError | httpx2.TransportError, model: str) -> ProviderError:
        """One SDK exception -> our error tree (see ``_errors``); only which exception is which is here."""
        upstream = _upstream_message(exc)
        # APITimeoutError is an APIConnectionError, and TimeoutException a TransportError: timeouts go first.
        if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
            return self._errors.from_failure("timeout", model)
        if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
            return self._errors.from_failure("connection", model, upstream, base_url=self._client.base_url)
        if isinstance(exc, anthropic.APIStatusError):
            mid_stream = exc.status_code < 400
            status = _STATUS_BY_ERROR_TYPE.get(exc.type or "", 500) if mid_stream else exc.status_code
            retry_after = parse_retry_after(exc.response.headers)
            return self._errors.from_status(
                status, model, upstream, retry_after=retry_after, mid_stream=mid_stream
            )
        return self._errors.other(ProviderRequestError, "client error", model, upstream)


def _to_anthropic_messages(messages: tuple[ChatMessage, ...]) -> list[MessageParam]:
    """Turns without the system prompt (sent apart), without empty turns, opening with a user turn."""
    turns = [m for m in messages if m.role != "system" and m.content.strip()]
    out: list[MessageParam] = []
    if not turns:
        out.append(UserMessageParam(role="user", content=_OPENING_TURN))
    elif turns[0].role == "assistant":
        out.append(UserMessageParam(role="user", content=_CONTINUE_TURN))
    for turn in turns:
        # Consecutive same-role turns are fine: the API merges them into one turn.
        if turn.role == "user":
            out.append(UserMessageParam(role="user", content=turn.content))
        else:
            out.append(AssistantMessageParam(role="assistant", content=turn.content))
    return out


def _input_tokens(usage: AnthropicUsage) -> int:
    # Cached prompt tokens are counted apart from input_tokens; the prompt is their sum.
    return (
        usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
    )


def _upstream_message(exc: anthropic.AnthropicError | httpx2.TransportError) -> str:
    """The server's own explanation when it sent one (``error.message``), else the SDK's text."""
    if isinstance(exc, anthropic.APIStatusError) and exc.api_message:
        return exc.api_message
    if isinstance(exc, anthropic.APIError):
        return exc.message
    return str(exc) or type(exc).__name__
