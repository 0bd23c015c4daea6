"""What every SDK-backed provider shares: our retry policy around one attempt, the error translator, and
closing. A subclass builds its SDK client and implements one attempt (``_complete_once`` /
``_stream_once``) and the mapping of its SDK's exceptions."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any, ClassVar

from orchestra.providers._base import Completion, CompletionRequest, StreamItem
from orchestra.providers._errors import ErrorTranslator
from orchestra.providers._retry import retry_call, retry_stream
from orchestra.providers._settings import AnthropicSettings, OpenAISettings

__all__ = ["RemoteProvider"]


class RemoteProvider:
    """Our own retries (the SDK's are off so that one policy governs every provider)."""

    provider: ClassVar[str]

    def __init__(
        self, settings: OpenAISettings | AnthropicSettings, client: Any, make_client: Callable[[str], Any]
    ) -> None:
        """``client``: an SDK client to use as is (tests); else ``make_client(api_key)`` builds one, with
        the SDK's own retries off (``max_retries=0``)."""
        self._settings = settings
        # Resolved even with an injected client: a missing key must fail at start-up, not on the first call.
        api_key = settings.resolved_api_key(self.provider)
        self._errors = ErrorTranslator(self.provider, api_key=api_key, timeout_s=settings.timeout_s)
        self._client = client or make_client(api_key)
        self._closed = False

    def _ensure_open(self, request: CompletionRequest) -> None:
        if self._closed:
            raise self._errors.closed(request.model)

    @property
    def name(self) -> str:
        return self.provider

    async def complete(self, request: CompletionRequest) -> Completion:
        return await retry_call(self._settings.retry, lambda: self._complete_once(request))

    def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        return retry_stream(self._settings.retry, self._stream_once, request)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._client.close()

    async def _complete_once(self, request: CompletionRequest) -> Completion:
        raise NotImplementedError

    def _stream_once(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        raise NotImplementedError
