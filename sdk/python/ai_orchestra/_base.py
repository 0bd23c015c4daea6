"""``BaseClient``: everything ``Client`` and ``AsyncClient`` share, free of I/O.

Like httpx's ``BaseClient`` under its ``Client`` and ``AsyncClient``, the base holds the configuration and
builds requests; it also parses answers and decides retries. Each API call is a *plan*: a generator that
yields what to do next — an ``httpx.Request`` to send, or a ``float`` of seconds to sleep — and receives
the outcome (the ``httpx.Response``, or the ``httpx.TransportError`` that came instead). It returns the
typed result or raises the SDK's exception. ``Client`` drives plans with blocking I/O, ``AsyncClient``
with ``await``; neither knows the API.

Streaming (``stream_chat``, ``stream_events``) is asynchronous for both clients and lives here too: it
returns async iterators over a WebSocket pool (``_streaming``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
import pydantic

from ._errors import APIConnectionError, APIResponseError, APITimeoutError, OrchestraError, make_error
from ._models import (
    ChatOptions,
    ChatResponse,
    ChatV1Response,
    EndedSession,
    Health,
    Readiness,
    Session,
    StreamEvent,
    StreamOptions,
    TokenEvent,
)
from ._retry import is_retryable, parse_retry_after, retry_delay
from ._streaming import ChatStream, StreamPool, WsSettings
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "BaseClient",
    "ClientConfig",
    "Done",
    "Plan",
    "Step",
    "advance",
    "error_from_response",
]

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

DEFAULT_BASE_URL = "http://localhost:8000"
"""Where the clients look when neither ``base_url`` nor ``$ORCHESTRA_BASE_URL`` is given."""
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
"""Ten minutes to answer (a ``quality`` run may take its full 300 s deadline), five to connect."""
DEFAULT_MAX_RETRIES = 2
"""Retries after the first attempt of a call (so at most three attempts)."""
USER_AGENT = f"ai-orchestra-python/{__version__}"

Step: TypeAlias = httpx.Request | float
"""What a plan asks for: send this request, or sleep this many seconds."""
Outcome: TypeAlias = httpx.Response | httpx.TransportError | None
"""What the driver sends back: the response, the transport error instead, or ``None`` after a sleep."""
Plan: TypeAlias = Generator[Step, Outcome, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """A finished plan's result."""

    value: T


def advance(plan: Plan[T], outcome: Outcome) -> Step | Done[T]:
    """Send ``outcome`` into ``plan`` (``None`` to start it): its next step, or ``Done`` with its result."""
    try:
        return plan.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)


# -- reading answers -----------------------------------------------------------------------------------


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise APIResponseError(
            f"HTTP {response.status_code} with a body that is not JSON: {response.text[:200]!r}",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from None


def _request_id(response: httpx.Response, body: Any) -> str | None:
    metadata = body.get("metadata") if isinstance(body, dict) else None
    found = metadata.get("request_id") if isinstance(metadata, dict) else None
    return found if isinstance(found, str) else response.headers.get("x-request-id")


def error_from_response(response: httpx.Response) -> OrchestraError:
    """The exception for an error answer: the envelope's ``error`` when there is one, else by status.

    ``retry_after`` comes from ``retry-after-ms`` / ``Retry-After``, else from ``details.retry_after``.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    retry_after = parse_retry_after(response.headers)
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
        wait = details.get("retry_after") if details else None
        if retry_after is None and isinstance(wait, int | float) and not isinstance(wait, bool):
            retry_after = float(wait)
        return make_error(
            error["code"],
            str(error.get("message") or ""),
            details=details,
            status_code=response.status_code,
            request_id=_request_id(response, body),
            retry_after=retry_after,
        )
    return make_error(
        None,
        f"HTTP {response.status_code} {response.reason_phrase}: {response.text[:200]}",
        status_code=response.status_code,
        request_id=response.headers.get("x-request-id"),
        retry_after=retry_after,
    )


def _connection_error(error: httpx.TransportError, request: httpx.Request) -> OrchestraError:
    sent = request.headers.get("x-request-id")
    cls = APITimeoutError if isinstance(error, httpx.TimeoutException) else APIConnectionError
    what = "timed out" if cls is APITimeoutError else "failed"
    failure = cls(f"{request.method} {request.url} {what}: {error!r}", request_id=sent)
    failure.__cause__ = error
    return failure


def _validated(model: type[M], payload: Any, response: httpx.Response) -> M:
    try:
        return model.model_validate(payload)
    except pydantic.ValidationError as e:
        raise APIResponseError(
            f"the server's answer is not a {model.__name__}: {e}",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
        ) from None


def _enveloped(model: type[M], **extra: Callable[[httpx.Response], Any]) -> Callable[[httpx.Response], M]:
    """A parser for an envelope whose ``data`` (plus ``request_id`` and ``extra`` fields) is ``model``."""

    def parse(response: httpx.Response) -> M:
        body = _json(response)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(body, dict) or body.get("success") is not True or not isinstance(data, dict):
            raise APIResponseError(
                f"HTTP {response.status_code} without the API's envelope: {str(body)[:200]}",
                status_code=response.status_code,
                request_id=response.headers.get("x-request-id"),
            )
        fields = {name: get(response) for name, get in extra.items()}
        return _validated(model, {**data, "request_id": _request_id(response, body), **fields}, response)

    return parse


def _bare(model: type[M]) -> Callable[[httpx.Response], M]:
    """A parser for an answer that is ``model`` itself (the probes have no envelope)."""
    return lambda response: _validated(model, _json(response), response)


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Mapping) else v for k, v in options.items() if v is not None}


# -- the shared client ---------------------------------------------------------------------------------


class ClientConfig(TypedDict, total=False):
    """The settings of ``Client`` and ``AsyncClient`` (all optional, all keyword).

    - ``api_key``: sent as ``Authorization: Bearer``; default ``$ORCHESTRA_API_KEY`` (none: no header).
    - ``base_url``: default ``$ORCHESTRA_BASE_URL``, then ``http://localhost:8000``.
    - ``timeout``: seconds, an ``httpx.Timeout``, or ``None`` for none; default ``DEFAULT_TIMEOUT`` (600 s,
      5 s to connect). Its ``read`` part is also the longest wait for the next frame of a stream.
    - ``max_retries``: retries of a 429/503/504, connection error or timeout; default 2.
    - ``client_id``: the WebSocket ``client_id``; default ``python-sdk-<random>``.
    """

    api_key: str | None
    base_url: str | None
    timeout: float | httpx.Timeout | None
    max_retries: int
    client_id: str | None


class BaseClient:
    """Configuration, request building, answer parsing, the retry policy and streaming of both clients.

    Not used directly: see ``Client`` and ``AsyncClient``; the arguments are ``ClientConfig``'s.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        client_id: str | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.api_key: str | None = api_key if api_key is not None else os.environ.get("ORCHESTRA_API_KEY")
        """The API key sent as ``Authorization: Bearer``; ``None`` sends none (the probes need none)."""
        url = base_url or os.environ.get("ORCHESTRA_BASE_URL") or DEFAULT_BASE_URL
        self.base_url: str = url.rstrip("/")
        """Where the API is; paths such as ``/chat/v2/chat`` are appended to it."""
        self.timeout: httpx.Timeout = (
            timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        )
        """Per-request timeouts; ``read`` is also the longest wait for the next frame of a stream."""
        self.max_retries: int = max_retries
        """Retries after the first attempt (429/503/504, connection errors, timeouts)."""
        self.client_id: str = client_id or f"python-sdk-{uuid.uuid4().hex[:12]}"
        """The WebSocket ``client_id`` of this client's connections."""
        scheme, sep, rest = self.base_url.partition("://")
        ws_scheme = {"https": "wss", "http": "ws"}.get(scheme.lower(), scheme)
        self._streams = StreamPool(
            WsSettings(
                base_url=f"{ws_scheme}{sep}{rest}",
                headers=self._headers,
                client_id=self.client_id,
                max_retries=max_retries,
                open_timeout=self.timeout.connect,
                idle_timeout=self.timeout.read,
                user_agent=USER_AGENT,
            )
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, max_retries={self.max_retries})"

    # -- streaming (asynchronous for both clients) ----------------------------------------------------

    def stream_chat(self, message: str, **options: Unpack[StreamOptions]) -> ChatStream[str]:
        """Stream a chat over the WebSocket: ``async for token in client.stream_chat(message=...)``.

        Yields every agent's tokens as they are produced (agents of one round work in parallel, so their
        tokens interleave; ``stream_events`` tells them apart). The returned stream's ``result`` is the
        ``ChatResponse`` once it ends; ``await stream.cancel()`` or closing it cancels the run.
        """
        return ChatStream(self._streams, message, options, _token_of)

    def stream_events(self, message: str, **options: Unpack[StreamOptions]) -> ChatStream[StreamEvent]:
        """Stream a chat's events: ``TurnStartEvent``/``TokenEvent``/``TurnEndEvent`` (each with ``agent``,
        ``role``, ``round``) as the agents work, then one ``CompletedEvent`` with the answer."""
        return ChatStream(self._streams, message, options, _event_of)

    async def close_streams(self) -> None:
        """Close this client's WebSocket connections cleanly (await it in the loop that used them)."""
        await self._streams.aclose()

    # -- plans of the REST calls ---------------------------------------------------------------------

    def _chat_plan(self, message: str, options: ChatOptions) -> Plan[ChatResponse]:
        body = {"message": message, **_given(options)}
        return self._plan("POST", "/chat/v2/chat", _enveloped(ChatResponse), body=body)

    def _chat_v1_plan(self, text: str, session_id: str | None) -> Plan[ChatV1Response]:
        body = _given({"text": text, "sessionId": session_id})
        parse = _enveloped(ChatV1Response, sunset=lambda r: r.headers.get("sunset"))
        return self._plan("POST", "/chat/v1/chat", parse, body=body)

    def _get_session_plan(self, session_id: str) -> Plan[Session]:
        return self._plan("GET", f"/chat/v2/sessions/{quote(session_id, safe='')}", _enveloped(Session))

    def _end_session_plan(self, session_id: str) -> Plan[EndedSession]:
        return self._plan(
            "DELETE", f"/chat/v2/sessions/{quote(session_id, safe='')}", _enveloped(EndedSession)
        )

    def _health_plan(self) -> Plan[Health]:
        # 503 carries the health too (status "unhealthy"): it is an answer, not an error.
        return self._plan("GET", "/health", _bare(Health), accept=frozenset({503}))

    def _readiness_plan(self) -> Plan[Readiness]:
        return self._plan("GET", "/readiness", _bare(Readiness), accept=frozenset({503}))

    # -- requests and the retry loop -----------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _build_request(self, method: str, path: str, body: Mapping[str, Any] | None) -> httpx.Request:
        """One attempt's request, with a fresh ``X-Request-ID`` (the server runs and logs it by that id)."""
        headers = {**self._headers(), "X-Request-ID": str(uuid.uuid4())}
        return httpx.Request(
            method,
            self.base_url + path,
            headers=headers,
            json=dict(body) if body is not None else None,
            extensions={"timeout": self.timeout.as_dict()},
        )

    def _plan(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], T],
        *,
        body: Mapping[str, Any] | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> Plan[T]:
        """Send, read, and retry per the policy (``_retry``); ``accept``: error statuses ``parse`` reads."""
        retries = 0
        while True:
            request = self._build_request(method, path, body)
            outcome = yield request
            if isinstance(outcome, httpx.Response):
                if outcome.is_success or outcome.status_code in accept:
                    try:
                        return parse(outcome)
                    except APIResponseError:
                        if outcome.is_success:
                            raise
                error = error_from_response(outcome)
            elif isinstance(outcome, httpx.TransportError):
                error = _connection_error(outcome, request)
            else:
                raise RuntimeError("a plan was sent no outcome for its request")
            if retries >= self.max_retries or not is_retryable(error):
                raise error
            yield retry_delay(retries, error.retry_after)
            retries += 1


def _token_of(event: StreamEvent) -> str | None:
    return event.token if isinstance(event, TokenEvent) else None


def _event_of(event: StreamEvent) -> StreamEvent:
    return event
