"""Streaming chats over the WebSocket (spec §7), shared by ``Client`` and ``AsyncClient``.

- ``Connection``: one socket to ``/chat/ws/{client_id}/{session_id}`` with one reader task routing frames:
  ``stream``/``chat`` frames and errors carrying a ``request_id`` to that chat's queue, ``command`` results,
  ``pong``/``status`` and errors without a ``request_id`` to the oldest waiting command (the server answers
  the frames of one connection in order).
- ``StreamPool``: the client's connections, one per session, reused by later chats of the session. A
  connection found dropped is replaced (with backoff, honouring the retry policy) on the next call.
- ``ChatStream``: one streamed chat, an async iterator of tokens or events. It resends its chat frame when
  nothing of the run has arrived yet (the connection dropped first, or the frame was refused with
  ``RATE_LIMIT_ERROR``/``SERVICE_UNAVAILABLE``); once the run has streamed anything, a lost connection
  raises ``StreamInterruptedError``: this SDK does not resume a stream by itself (the server can: the
  WebSocket ``resume`` command, docs/websocket.md; it keeps a dropped connection's run going for a grace
  period, then cancels it). Closing or cancelling the stream sends the WebSocket ``cancel`` command.

Connections belong to the event loop that opened them; the pool drops them when used from another loop
(``Client.stream_chat`` under several ``asyncio.run`` calls).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import pydantic
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.protocol import State
from websockets.typing import Subprotocol

from ._errors import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    OrchestraError,
    RateLimitError,
    RunCancelledError,
    StreamInterruptedError,
    ValidationError,
    make_error,
)
from ._models import (
    ChatResponse,
    CompletedEvent,
    StreamEvent,
    StreamOptions,
    TokenEvent,
    TurnEndEvent,
    TurnStartEvent,
)
from ._retry import is_retryable, parse_retry_after, retry_delay

__all__ = ["ChatStream", "Connection", "StreamPool", "WsSettings", "error_from_frame"]

T = TypeVar("T")

SUBPROTOCOL = Subprotocol("orchestra.v2")
MAX_FRAME_BYTES = 32 * 1024 * 1024
CANCEL_WAIT_S = 10.0
"""How long closing a stream waits for the server to confirm the cancel."""

_CLOSE_ERRORS: dict[int, tuple[type[OrchestraError], str]] = {
    4401: (AuthenticationError, "the WebSocket was refused: authentication failed"),
    4429: (RateLimitError, "the WebSocket was refused: the key is rate-limited"),
    1008: (ValidationError, "the WebSocket was refused: invalid client_id or session_id"),
}
_EVENTS: dict[str, type[TurnStartEvent] | type[TokenEvent] | type[TurnEndEvent]] = {
    "turn_start": TurnStartEvent,
    "token": TokenEvent,
    "turn_end": TurnEndEvent,
}


@dataclass(frozen=True)
class WsSettings:
    """What the pool needs from its client."""

    base_url: str  # ws:// or wss://, with the base URL's path prefix, no trailing slash
    headers: Callable[[], Mapping[str, str]]  # read at each connect: the client's key may change
    client_id: str
    max_retries: int
    open_timeout: float | None
    idle_timeout: float | None  # the longest wait for the next frame of a running chat
    user_agent: str
    max_connections: int = 8


def error_from_frame(data: Mapping[str, Any]) -> OrchestraError:
    """The exception for a WebSocket error frame's ``data`` (``{"action": "error", "error": {...}}``)."""
    error = data.get("error")
    body: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    details = body.get("details")
    details = details if isinstance(details, Mapping) else {}
    wait = details.get("retry_after")
    request_id = data.get("request_id")
    return make_error(
        str(body.get("code") or "") or None,
        str(body.get("message") or "the server reported an error"),
        details=details,
        request_id=request_id if isinstance(request_id, str) else None,
        retry_after=float(wait) if isinstance(wait, int | float) and not isinstance(wait, bool) else None,
    )


def _close_error(code: int | None, reason: str) -> OrchestraError:
    cls, message = _CLOSE_ERRORS.get(code or 0, (APIConnectionError, "the WebSocket closed"))
    return cls(f"{message} (close code {code}{': ' + reason if reason else ''})")


@dataclass(frozen=True)
class _Lost:
    """Put in every chat queue when the connection is gone."""

    error: OrchestraError


class Connection:
    """One WebSocket to one session; ``ws`` is the underlying ``websockets`` connection."""

    def __init__(self, ws: ClientConnection, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self._loop = asyncio.get_running_loop()
        self._chats: dict[str, asyncio.Queue[dict[str, Any] | _Lost]] = {}
        self._waiters: deque[asyncio.Future[dict[str, Any]]] = deque()
        self._lost: _Lost | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._reader = asyncio.create_task(self._read(), name=f"ai-orchestra-ws-{session_id}")

    @classmethod
    async def open(cls, settings: WsSettings, session_id: str) -> Connection:
        """Connect and wait for the server's ``connected`` frame; errors are the SDK's exceptions."""
        url = f"{settings.base_url}/chat/ws/{quote(settings.client_id, safe='')}/{quote(session_id, safe='')}"
        try:
            ws = await connect(
                url,
                additional_headers=dict(settings.headers()),
                subprotocols=[SUBPROTOCOL],
                open_timeout=settings.open_timeout,
                max_size=MAX_FRAME_BYTES,
                user_agent_header=settings.user_agent,
            )
        except InvalidStatus as e:
            status = e.response.status_code
            headers = {k.lower(): v for k, v in e.response.headers.raw_items()}
            raise make_error(
                None,
                f"the WebSocket upgrade was answered with HTTP {status}",
                status_code=status,
                request_id=headers.get("x-request-id"),
                retry_after=parse_retry_after(headers),
            ) from e
        except TimeoutError as e:
            raise APITimeoutError(f"no WebSocket connection to {url} within {settings.open_timeout} s") from e
        except (OSError, InvalidHandshake, InvalidURI) as e:
            raise APIConnectionError(f"cannot open the WebSocket {url}: {e}") from e
        try:
            async with asyncio.timeout(settings.open_timeout):
                hello = json.loads(await ws.recv())
        except ConnectionClosed as e:
            received = e.rcvd
            raise _close_error(
                received.code if received else None, received.reason if received else ""
            ) from e
        except TimeoutError as e:
            await ws.close()
            raise APITimeoutError(f"the WebSocket {url} sent no 'connected' frame in time") from e
        except ValueError as e:
            await ws.close()
            raise APIResponseError("the WebSocket's first frame is not JSON") from e
        data = hello.get("data") if isinstance(hello, dict) else None
        if not (isinstance(data, dict) and data.get("action") == "connected"):
            await ws.close()
            raise APIResponseError(f"the WebSocket's first frame is not 'connected': {str(hello)[:200]}")
        return cls(ws, session_id)

    # -- state ---------------------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Open, as far as anyone can tell without sending."""
        return self._lost is None and self.ws.state is State.OPEN and not self._loop.is_closed()

    @property
    def busy(self) -> bool:
        """A chat or a command is in flight on it."""
        return bool(self._chats) or bool(self._waiters)

    # -- chats ---------------------------------------------------------------------------------------

    def register(self, request_id: str) -> asyncio.Queue[dict[str, Any] | _Lost]:
        """The queue of every frame of chat ``request_id`` (and ``_Lost`` when the socket goes)."""
        queue: asyncio.Queue[dict[str, Any] | _Lost] = asyncio.Queue()
        self._chats[request_id] = queue
        if self._lost is not None:
            queue.put_nowait(self._lost)
        return queue

    def unregister(self, request_id: str) -> None:
        """Stop routing frames of ``request_id``."""
        self._chats.pop(request_id, None)

    async def send(self, kind: str, data: Mapping[str, Any]) -> None:
        """Send one frame; ``APIConnectionError`` when the socket is gone."""
        if self._lost is not None:
            raise self._lost.error
        try:
            await self.ws.send(json.dumps({"type": kind, "data": dict(data)}))
        except ConnectionClosed as e:
            self._mark_lost(_close_error(e.rcvd.code if e.rcvd else None, "lost while sending"))
            raise APIConnectionError("the WebSocket was closed") from e

    async def command(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send a ``command`` frame and return its ``result`` (its error frame raises)."""
        data = await self._request("command", {"command": name, "args": dict(args or {})})
        return data.get("result")

    async def control(self, action: str) -> dict[str, Any]:
        """Send a ``control`` frame (``ping``, ``status``) and return the server's answer."""
        return await self._request("control", {"action": action})

    async def _request(self, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._waiters.append(future)
        try:
            await self.send(kind, data)
        except BaseException:
            with suppress(ValueError):
                self._waiters.remove(future)
            raise
        return await future

    def cancel_soon(self, request_id: str) -> None:
        """Send ``cancel`` for ``request_id`` in the background (safe from ``__del__`` and any thread)."""
        self.unregister(request_id)
        if self.usable:
            with suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._spawn_cancel, request_id)

    def _spawn_cancel(self, request_id: str) -> None:
        task = self._loop.create_task(self._quiet_cancel(request_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quiet_cancel(self, request_id: str) -> None:
        with suppress(OrchestraError):
            await self.command("cancel", {"request_id": request_id})

    # -- closing -------------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the socket (normal closure) and wait for the reader to finish."""
        with suppress(Exception):
            await self.ws.close()
        with suppress(BaseException):
            await self._reader

    def abort(self) -> None:
        """Drop the socket at once, from any loop or none (used when its loop is gone)."""
        self._mark_lost(APIConnectionError("the WebSocket was closed by the client"))
        transport = self.ws.transport
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        with suppress(Exception):
            if self._loop.is_closed():  # the transport cannot run its loop's callbacks: end the TCP stream
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            elif running is self._loop or not self._loop.is_running():
                transport.abort()
            else:
                self._loop.call_soon_threadsafe(transport.abort)

    # -- the reader ----------------------------------------------------------------------------------

    async def _read(self) -> None:
        error: OrchestraError | None = None
        try:
            async for raw in self.ws:
                self._dispatch(raw)
        except ConnectionClosed:
            pass
        except Exception as e:  # a broken frame or transport: the connection is no use any more
            error = APIConnectionError(f"the WebSocket failed: {e!r}")
        finally:
            if error is None:
                error = _close_error(self.ws.close_code, self.ws.close_reason or "")
            self._mark_lost(error)

    def _mark_lost(self, error: OrchestraError) -> None:
        if self._lost is not None:
            return
        self._lost = _Lost(error)
        # From abort() this may run outside the connection's loop, even after it closed: then nobody waits.
        with suppress(RuntimeError):
            for queue in self._chats.values():
                queue.put_nowait(self._lost)
            while self._waiters:
                future = self._waiters.popleft()
                if not future.done():
                    future.set_exception(error)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            return  # not the protocol; nothing can be routed
        data = frame.get("data") if isinstance(frame, dict) else None
        if not isinstance(data, dict):
            return
        kind, request_id = frame.get("type"), data.get("request_id")
        queue = self._chats.get(request_id) if isinstance(request_id, str) else None
        if kind in ("stream", "chat") or (kind == "control" and data.get("action") == "error" and request_id):
            if queue is not None:
                queue.put_nowait(frame)
        elif kind == "command" or (kind == "control" and data.get("action") in ("pong", "status", "error")):
            self._answer(data)

    def _answer(self, data: dict[str, Any]) -> None:
        if not self._waiters:
            return
        future = self._waiters.popleft()
        if future.done():  # its caller stopped waiting; the answer was still its
            return
        if data.get("action") == "error":
            future.set_exception(error_from_frame(data))
        else:
            future.set_result(data)


class StreamPool:
    """The client's WebSocket connections: at most one per session, the least recently used closed first
    beyond ``max_connections`` (never one with a chat in flight)."""

    def __init__(self, settings: WsSettings) -> None:
        self.settings = settings
        self._connections: OrderedDict[str, Connection] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def connection_of(self, session_id: str) -> Connection | None:
        """The pooled connection of ``session_id``, if any (open or not)."""
        return self._connections.get(session_id)

    async def connection(self, session_id: str) -> Connection:
        """An open connection for ``session_id``: the pooled one, or a new one (retried with backoff)."""
        self._bind_loop()
        lock = self._locks.setdefault(session_id, asyncio.Lock())
        async with lock:
            current = self._connections.get(session_id)
            if current is not None and current.usable:
                self._connections.move_to_end(session_id)
                return current
            if current is not None:
                self.forget(current)
            connection = await self._open(session_id)
            self._connections[session_id] = connection
            self._evict()
            return connection

    async def _open(self, session_id: str) -> Connection:
        retries = 0
        while True:
            try:
                return await Connection.open(self.settings, session_id)
            except OrchestraError as error:
                if retries >= self.settings.max_retries or not is_retryable(error):
                    raise
                await asyncio.sleep(retry_delay(retries, error.retry_after))
                retries += 1

    def forget(self, connection: Connection) -> None:
        """Drop a connection found dead (or no longer wanted) from the pool and abort its socket."""
        if self._connections.get(connection.session_id) is connection:
            del self._connections[connection.session_id]
        connection.abort()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.abort_all()
            self._locks.clear()
            self._closing.clear()  # tasks of a loop that is gone
            self._loop = loop

    def _evict(self) -> None:
        idle = [c for c in self._connections.values() if not c.busy]
        for connection in idle[: max(0, len(self._connections) - self.settings.max_connections)]:
            del self._connections[connection.session_id]
            task = asyncio.get_running_loop().create_task(connection.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def abort_all(self) -> None:
        """Drop every connection at once (callable without a running loop)."""
        for connection in self._connections.values():
            connection.abort()
        self._connections.clear()

    async def aclose(self) -> None:
        """Close every connection cleanly (from the loop that opened them)."""
        if self._loop is not asyncio.get_running_loop():
            self.abort_all()
            return
        connections = list(self._connections.values())
        self._connections.clear()
        await asyncio.gather(*(c.aclose() for c in connections), *self._closing, return_exceptions=True)


class ChatStream(Generic[T]):
    """One streamed chat: an async iterator (of tokens for ``stream_chat``, of ``StreamEvent`` for
    ``stream_events``) and an async context manager.

    Nothing is sent until the first ``__anext__``. ``result`` is the ``ChatResponse`` once the run
    completed. ``cancel()`` stops the run; ``aclose()``, leaving ``async with``, or dropping the stream
    unfinished (``break`` out of ``async for``) sends the WebSocket ``cancel`` command too. Errors are the
    SDK's exceptions: the API's error frames map to the same classes as HTTP errors.
    """

    def __init__(
        self,
        pool: StreamPool,
        message: str,
        options: StreamOptions,
        project: Callable[[StreamEvent], T | None],
    ) -> None:
        self.request_id: str = options.get("request_id") or str(uuid.uuid4())
        """The id that tags every frame of this run (also the run's id on the server)."""
        self.session_id: str = options.get("session_id") or f"sdk-{uuid.uuid4().hex}"
        """The session the chat belongs to (made by the SDK when none was given)."""
        self.result: ChatResponse | None = None
        """The answer, once the run completed."""
        self._pool = pool
        self._project = project
        data: dict[str, Any] = {"message": message, "request_id": self.request_id}
        for name, wire in (
            ("optimization_mode", "optimization_mode"),
            ("swarm_type", "swarm_type"),
            ("use_memory", "use_memory"),
            ("user_context", "context"),
        ):
            value = options.get(name)
            if value is not None:
                data[wire] = dict(value) if isinstance(value, Mapping) else value
        self._data = data
        self._connection: Connection | None = None
        self._queue: asyncio.Queue[dict[str, Any] | _Lost] | None = None
        self._received = False  # a frame of the run arrived: it can no longer be resent
        self._finished = False
        self._cancelling = False
        self._attempts = 0

    # -- iteration -----------------------------------------------------------------------------------

    def __aiter__(self) -> ChatStream[T]:
        return self

    async def __anext__(self) -> T:
        while True:
            event = await self._next_event()
            if event is None:
                raise StopAsyncIteration
            item = self._project(event)
            if item is not None:
                return item

    async def __aenter__(self) -> ChatStream[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def final_response(self) -> ChatResponse:
        """Consume the rest of the stream and return the answer (``RunCancelledError`` if cancelled)."""
        while await self._next_event() is not None:
            pass
        if self.result is None:
            raise RunCancelledError(f"the run {self.request_id} was cancelled", request_id=self.request_id)
        return self.result

    @property
    def finished(self) -> bool:
        """The run completed, failed or was cancelled (or the stream was closed)."""
        return self._finished

    # -- stopping ------------------------------------------------------------------------------------

    async def cancel(self) -> bool:
        """Cancel the run with the WebSocket ``cancel`` command; iteration then ends without error.

        True when the server confirms it cancelled the run; False when there was nothing to cancel (not
        started, already finished, or the connection is gone, in which case the server stopped it).
        """
        connection = self._connection
        if self._finished or connection is None:
            self._finish()
            return False
        self._cancelling = True
        try:
            result = await connection.command("cancel", {"request_id": self.request_id})
        except APIConnectionError:
            self._finish()
            return False
        except BaseException:
            self._cancelling = False
            raise
        cancelled = isinstance(result, dict) and self.request_id in (result.get("cancelled") or [])
        if cancelled:
            self._finish()
        else:  # it finished first: its answer is on its way to the iterator
            self._cancelling = False
        return cancelled

    async def aclose(self) -> None:
        """Stop the stream: an unfinished run is cancelled (waiting up to ``CANCEL_WAIT_S`` for it)."""
        if not self._finished and self._connection is not None:
            with suppress(OrchestraError, TimeoutError):
                async with asyncio.timeout(CANCEL_WAIT_S):
                    await self.cancel()
        self._finish()

    def __del__(self) -> None:
        # Dropped unfinished (``break`` out of ``async for``): cancel the run rather than let it hold the
        # session's connection.
        if not getattr(self, "_finished", True) and getattr(self, "_connection", None) is not None:
            self._abandon()

    def _abandon(self) -> None:
        if self._connection is not None and not self._finished:
            self._connection.cancel_soon(self.request_id)
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        if self._connection is not None:
            self._connection.unregister(self.request_id)

    # -- the run -------------------------------------------------------------------------------------

    async def _next_event(self) -> StreamEvent | None:
        try:
            while not self._finished:
                if self._queue is None:
                    await self._start()
                    continue  # it may have been cancelled meanwhile
                event = await self._handle(await self._get())
                if event is not None:
                    return event
            return None
        except BaseException:  # an error, or the consuming task was cancelled: stop the run if it goes on
            self._abandon()
            raise

    async def _start(self) -> None:
        while True:
            connection = await self._pool.connection(self.session_id)
            queue = connection.register(self.request_id)
            try:
                await connection.send("chat", self._data)
            except APIConnectionError:
                connection.unregister(self.request_id)
                self._pool.forget(connection)
                await self._backoff(
                    APIConnectionError(
                        "the WebSocket dropped before the chat was sent", request_id=self.request_id
                    )
                )
                continue
            self._connection, self._queue = connection, queue
            if self._finished:  # cancel() or aclose() came while it was being sent
                connection.cancel_soon(self.request_id)
            return

    async def _get(self) -> dict[str, Any] | _Lost:
        assert self._queue is not None
        idle = self._pool.settings.idle_timeout
        try:
            async with asyncio.timeout(idle):
                return await self._queue.get()
        except TimeoutError:
            raise APITimeoutError(
                f"no frame of run {self.request_id} for {idle} s", request_id=self.request_id
            ) from None

    async def _backoff(self, error: OrchestraError) -> None:
        """Wait before sending the chat again, or raise ``error`` when the retries are used up."""
        if self._attempts >= self._pool.settings.max_retries:
            raise error
        await asyncio.sleep(retry_delay(self._attempts, error.retry_after))
        self._attempts += 1

    def _resend(self, connection: Connection | None) -> None:
        if connection is not None:
            connection.unregister(self.request_id)
        self._connection, self._queue = None, None

    async def _handle(self, item: dict[str, Any] | _Lost) -> StreamEvent | None:
        """The event for one queued item; ``None`` to keep reading (or after arranging a resend)."""
        connection = self._connection
        if isinstance(item, _Lost):
            if self._received:
                self._finish()
                raise StreamInterruptedError(
                    f"the WebSocket dropped while run {self.request_id} was streaming; the server does not "
                    "resume streams and stopped the run: send the chat again",
                    request_id=self.request_id,
                ) from item.error
            self._resend(connection)
            if connection is not None:
                self._pool.forget(connection)
            dropped = APIConnectionError(
                f"the WebSocket dropped before run {self.request_id} started: {item.error.message}",
                request_id=self.request_id,
            )
            dropped.__cause__ = item.error
            await self._backoff(dropped)
            return None
        kind, data = item.get("type"), item.get("data") or {}
        if kind == "stream":
            self._received = True
            return self._stream_event(data)
        if kind == "chat":
            self.result = _validated(ChatResponse, data)
            self._finish()
            return CompletedEvent(request_id=self.request_id, result=self.result)
        error = error_from_frame(data)
        if error.code == RunCancelledError.default_code and self._cancelling:
            self._finish()
            return None
        if not self._received and is_retryable(error):
            self._resend(connection)
            await self._backoff(error)
            return None
        self._finish()
        raise error

    def _stream_event(self, data: dict[str, Any]) -> StreamEvent | None:
        model = _EVENTS.get(str(data.get("event")))
        return None if model is None else _validated(model, data)


_M = TypeVar("_M", bound=pydantic.BaseModel)


def _validated(model: type[_M], data: Any) -> _M:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise APIResponseError(f"the server sent a {model.__name__} the SDK cannot read: {e}") from None
