"""OpenAI (and any OpenAI-compatible server: vLLM, Ollama, llama.cpp) through the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import openai
from openai.types.chat import (
    ChatCompletionAssistantMessageParam,
    ChatCompletionMessageParam,
    ChatCompletionSystemMessageParam,
    ChatCompletionUserMessageParam,
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
from orchestra.providers._settings import OpenAISettings

__all__ = ["OpenAIProvider"]

_PROVIDER = "openai"


class OpenAIProvider(RemoteProvider):
    """Chat Completions with our own retries (the SDK's are off so that one policy governs every provider)."""

    provider = _PROVIDER

    def __init__(self, settings: OpenAISettings, *, client: openai.AsyncOpenAI | None = None) -> None:
        super().__init__(
            settings,
            client,
            lambda key: openai.AsyncOpenAI(
                api_key=key,
                base_url=settings.base_url,
                timeout=settings.timeout_s,
                max_retries=0,
                organization=settings.organization,
            ),
        )
        self._client: openai.AsyncOpenAI = self._client

    async def _complete_once(self, request: CompletionRequest) -> Completion:
        self._ensure_open(request)
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=_to_openai_messages(request.messages),
                # max_tokens, not max_completion_tokens: OpenAI-compatible servers (vLLM, Ollama) accept it.
                max_tokens=request.max_tokens,
                temperature=request.temperature,
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc, request.model) from exc
        choice = response.choices[0] if response.choices else None
        usage = response.usage
        return Completion(
            text=(choice.message.content or "") if choice is not None else "",
            model=response.model or request.model,
            provider=_PROVIDER,
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage is not None else 0,
                completion_tokens=usage.completion_tokens if usage is not None else 0,
            ),
            finish_reason=choice.finish_reason if choice is not None else None,
        )

    async def _stream_once(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        self._ensure_open(request)
        try:
            stream = await self._client.chat.completions.create(
                model=request.model,
                messages=_to_openai_messages(request.messages),
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
        except openai.OpenAIError as exc:
            raise self._translate(exc, request.model) from exc

        parts: list[str] = []
        model = request.model
        finish_reason: str | None = None
        usage = Usage()
        # ``async with`` closes the HTTP response on every exit: end, error, GeneratorExit or cancellation.
        async with stream:
            chunks = aiter(stream)
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except openai.OpenAIError as exc:
                    raise self._translate(exc, request.model) from exc
                except json.JSONDecodeError as exc:
                    raise self._errors.malformed_stream(request.model) from exc
                model = chunk.model or model
                if chunk.usage is not None:
                    # The usage chunk (choices == []) comes last; servers that repeat it keep it cumulative.
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                    )
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    if choice.finish_reason is not None:
                        finish_reason = choice.finish_reason
                    if choice.delta.content:
                        parts.append(choice.delta.content)
                        yield TokenDelta(text=choice.delta.content)
        yield Completion(
            text="".join(parts), model=model, provider=_PROVIDER, usage=usage, finish_reason=finish_reason
        )

    def _translate(self, exc: openai.OpenAIError, model: str) -> ProviderError:
        """One SDK exception -> our error tree (see ``_errors``); only which exception is which is here."""
        upstream = _upstream_message(exc)
        # APITimeoutError is an APIConnectionError: it goes first.
        if isinstance(exc, openai.APITimeoutError):
            return self._errors.from_failure("timeout", model)
        if isinstance(exc, openai.APIConnectionError):
            return self._errors.from_failure("connection", model, upstream, base_url=self._client.base_url)
        if isinstance(exc, openai.APIStatusError):
            retry_after = parse_retry_after(exc.response.headers)
            return self._errors.from_status(exc.status_code, model, upstream, retry_after=retry_after)
        if isinstance(exc, openai.APIError):
            # An ``error`` object inside a 200 event stream, or a body that fails validation.
            return self._errors.other(
                ProviderUnavailableError, "failed mid-stream or answered invalidly", model, upstream
            )
        return self._errors.other(ProviderRequestError, "client error", model, upstream)


def _to_openai_messages(messages: tuple[ChatMessage, ...]) -> list[ChatCompletionMessageParam]:
    out: list[ChatCompletionMessageParam] = []
    for message in messages:
        if message.role == "system":
            out.append(ChatCompletionSystemMessageParam(role="system", content=message.content))
        elif message.role == "user":
            out.append(ChatCompletionUserMessageParam(role="user", content=message.content))
        else:
            out.append(ChatCompletionAssistantMessageParam(role="assistant", content=message.content))
    return out


def _upstream_message(exc: openai.OpenAIError) -> str:
    """The server's own explanation when it sent one (``error.message``), else the SDK's text."""
    if isinstance(exc, openai.APIError):
        body = exc.body
        if isinstance(body, dict):
            message = body.get("message")
            if isinstance(message, str) and message:
                return message
        elif isinstance(body, str) and body:
            return body
        return exc.message
    return str(exc) or type(exc).__name__
