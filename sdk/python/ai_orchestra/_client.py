"""``Client`` (blocking) and ``AsyncClient`` (``await``): the I/O around the shared ``BaseClient``.

Each REST method runs one plan of the base (build, send, parse, retry) through the client's driver;
streaming is the base's, asynchronous in both.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import TypeVar, Unpack

import httpx

from ._base import BaseClient, ClientConfig, Done, Outcome, Plan, Step, advance
from ._models import ChatOptions, ChatResponse, ChatV1Response, EndedSession, Health, Readiness, Session

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")


class Client(BaseClient):
    """The blocking client of the AI Orchestra API.

    ``Client(api_key=..., base_url=..., timeout=..., max_retries=...)``: the key defaults to
    ``$ORCHESTRA_API_KEY``, the URL to ``$ORCHESTRA_BASE_URL``, then ``http://localhost:8000``; ``timeout``
    (seconds or an ``httpx.Timeout``; ``None`` for none) applies to every request; ``max_retries`` (default
    2) is how many times a 429/503/504, a connection error or a timeout is retried. ``http_client`` lets you
    bring your own ``httpx.Client`` (proxies, event hooks); it is then yours to close.

    ``stream_chat`` and ``stream_events`` return async iterators, here as on ``AsyncClient``: use them from
    async code. Use the client as a context manager, or call ``close()``.
    """

    def __init__(self, *, http_client: httpx.Client | None = None, **config: Unpack[ClientConfig]) -> None:
        super().__init__(**config)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=self.timeout)

    def chat(self, message: str, **options: Unpack[ChatOptions]) -> ChatResponse:
        """``POST /chat/v2/chat``: run a swarm on ``message`` and return its answer (see ``ChatOptions``)."""
        return self._run(self._chat_plan(message, options))

    def chat_v1(self, text: str, *, session_id: str | None = None) -> ChatV1Response:
        """``POST /chat/v1/chat``, the deprecated v1 API: ``text`` in, ``response`` and ``session_id`` out."""
        return self._run(self._chat_v1_plan(text, session_id))

    def get_session(self, session_id: str) -> Session:
        """``GET /chat/v2/sessions/{id}``: this key's session with its turns (``NotFoundError`` otherwise)."""
        return self._run(self._get_session_plan(session_id))

    def end_session(self, session_id: str) -> EndedSession:
        """``DELETE /chat/v2/sessions/{id}``: end this key's session."""
        return self._run(self._end_session_plan(session_id))

    def health(self) -> Health:
        """``GET /health`` (no key needed); an unhealthy server's answer is returned, not raised."""
        return self._run(self._health_plan())

    def readiness(self) -> Readiness:
        """``GET /readiness`` (no key needed); ``ready`` is False when the server is not ready."""
        return self._run(self._readiness_plan())

    def close(self) -> None:
        """Close the HTTP connections (unless ``http_client`` was given) and drop any WebSocket."""
        self._streams.abort_all()
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _run(self, plan: Plan[T]) -> T:
        step = advance(plan, None)
        while not isinstance(step, Done):
            step = advance(plan, self._perform(step))
        return step.value

    def _perform(self, step: Step) -> Outcome:
        if isinstance(step, float):
            time.sleep(step)
            return None
        try:
            return self._http.send(step)
        except httpx.TransportError as error:
            return error


class AsyncClient(BaseClient):
    """The asynchronous client of the AI Orchestra API: ``Client``'s methods as coroutines.

    Same arguments as ``Client`` (``http_client`` an ``httpx.AsyncClient``). Use it as an async context
    manager, or ``await client.aclose()``, which also closes its WebSocket connections cleanly.
    """

    def __init__(
        self, *, http_client: httpx.AsyncClient | None = None, **config: Unpack[ClientConfig]
    ) -> None:
        super().__init__(**config)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self.timeout)

    async def chat(self, message: str, **options: Unpack[ChatOptions]) -> ChatResponse:
        """``POST /chat/v2/chat``: run a swarm on ``message``; await its answer (see ``ChatOptions``)."""
        return await self._run(self._chat_plan(message, options))

    async def chat_v1(self, text: str, *, session_id: str | None = None) -> ChatV1Response:
        """``POST /chat/v1/chat``, the deprecated v1 API."""
        return await self._run(self._chat_v1_plan(text, session_id))

    async def get_session(self, session_id: str) -> Session:
        """``GET /chat/v2/sessions/{id}``: this key's session with its turns."""
        return await self._run(self._get_session_plan(session_id))

    async def end_session(self, session_id: str) -> EndedSession:
        """``DELETE /chat/v2/sessions/{id}``: end this key's session."""
        return await self._run(self._end_session_plan(session_id))

    async def health(self) -> Health:
        """``GET /health`` (no key needed)."""
        return await self._run(self._health_plan())

    async def readiness(self) -> Readiness:
        """``GET /readiness`` (no key needed)."""
        return await self._run(self._readiness_plan())

    async def aclose(self) -> None:
        """Close the WebSocket connections and the HTTP connections (unless ``http_client`` was given)."""
        await self.close_streams()
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _run(self, plan: Plan[T]) -> T:
        step = advance(plan, None)
        while not isinstance(step, Done):
            step = advance(plan, await self._perform(step))
        return step.value

    async def _perform(self, step: Step) -> Outcome:
        if isinstance(step, float):
            await asyncio.sleep(step)
            return None
        try:
            return await self._http.send(step)
        except httpx.TransportError as error:
            return error
