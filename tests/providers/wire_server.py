"""A local HTTP server speaking the OpenAI and Anthropic wire formats, scriptable per test.

Each test queues :class:`Reply` objects (status, headers, JSON body or SSE events, delays); every request
takes the next one. The server records what it received and notices when a client hangs up mid-response,
so tests can check both what the SDK sent and that cancelling a stream really closed the connection.

It runs uvicorn in its own thread and event loop, so the SDK talks real HTTP over a real socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "SSE",
    "Reply",
    "Seen",
    "WireServer",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "openai_completion",
    "openai_error",
    "openai_stream",
]


@dataclass(frozen=True)
class SSE:
    """One server-sent event: ``event: <event>`` (when set) then ``data: <data>``."""

    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        return f"{head}data: {self.data}\n\n".encode()


@dataclass(frozen=True)
class Reply:
    """One planned answer. ``events`` makes it an SSE stream; otherwise ``json`` is the body."""

    status: int = 200
    json: Any = None
    events: Sequence[SSE] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Seconds before the status line is sent (to trigger client timeouts)."""
    event_delay_s: float = 0.0
    """Seconds before each event after the first (a slow stream)."""
    stall_after: int | None = None
    """Stop sending after this many events and hold the connection open (a stream that hangs)."""


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class WireServer:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._seen: list[Seen] = []
        self._disconnects = 0
        self._completed = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        routes = [
            Route("/v1/chat/completions", self._handle, methods=["POST"]),
            Route("/v1/messages", self._handle, methods=["POST"]),
        ]
        self._app = Starlette(routes=routes)

    # -- lifecycle (called from the test thread) --------------------------------------------------------

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="wire-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("wire server did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- scripting and inspection ----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._replies.clear()
            self._seen.clear()
            self._disconnects = 0
            self._completed = 0

    def plan(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    @property
    def unused(self) -> int:
        with self._lock:
            return len(self._replies)

    @property
    def disconnects(self) -> int:
        """Responses the client hung up on before they were complete."""
        with self._lock:
            return self._disconnects

    @property
    def completed(self) -> int:
        """Responses sent to the end."""
        with self._lock:
            return self._completed

    async def wait_for_disconnect(self, timeout_s: float) -> bool:
        return await self.wait_until(lambda: self.disconnects > 0, timeout_s)

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``condition`` (the server lives in another thread) until it holds or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- server side (runs in the server thread) --------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        with self._lock:
            self._seen.append(
                Seen(
                    method=request.method,
                    path=request.url.path,
                    headers={k.lower(): v for k, v in request.headers.items()},
                    body=body,
                )
            )
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            reply = Reply(status=418, json={"error": {"type": "test_error", "message": "no planned reply"}})
        return _ScriptedResponse(reply, self)

    def _note(self, *, disconnected: bool) -> None:
        with self._lock:
            if disconnected:
                self._disconnects += 1
            else:
                self._completed += 1


class _ScriptedResponse(Response):
    """Plays a :class:`Reply` while watching ``receive`` for the client hanging up."""

    def __init__(self, reply: Reply, server: WireServer) -> None:
        super().__init__()
        self._reply = reply
        self._wire = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = self._reply
        gone = asyncio.Event()

        async def watch() -> None:
            # The request body is already read, so the next message is http.disconnect when the client leaves.
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())
        try:
            if await _wait(gone, reply.delay_s):
                self._wire._note(disconnected=True)
                return
            if reply.events is None:
                await self._send_json(reply, send)
            elif not await self._send_events(reply, send, gone):
                self._wire._note(disconnected=True)
                return
            self._wire._note(disconnected=False)
        finally:
            watcher.cancel()

    async def _send_json(self, reply: Reply, send: Send) -> None:
        payload = json.dumps(reply.json if reply.json is not None else {}).encode()
        headers = {"content-type": "application/json", **reply.headers}
        await send({"type": "http.response.start", "status": reply.status, "headers": _raw(headers)})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def _send_events(self, reply: Reply, send: Send, gone: asyncio.Event) -> bool:
        """Stream the events; False when the client hung up first."""
        headers = {"content-type": "text/event-stream", "cache-control": "no-cache", **reply.headers}
        await send({"type": "http.response.start", "status": reply.status, "headers": _raw(headers)})
        assert reply.events is not None
        for index, event in enumerate(reply.events):
            if reply.stall_after is not None and index >= reply.stall_after:
                await gone.wait()
                return False
            if index and await _wait(gone, reply.event_delay_s):
                return False
            if gone.is_set():
                return False
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return True


async def _wait(gone: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` unless the client hangs up first; True when it did."""
    if seconds > 0 and not gone.is_set():
        waiter = asyncio.ensure_future(gone.wait())
        await asyncio.wait({waiter}, timeout=seconds)
        waiter.cancel()
    return gone.is_set()


def _raw(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]


# -- OpenAI wire format ----------------------------------------------------------------------------------


def openai_completion(
    text: str,
    *,
    model: str = "gpt-test-0001",
    prompt_tokens: int = 11,
    completion_tokens: int = 7,
    finish_reason: str = "stop",
    usage: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
    }
    if usage:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return body


def _openai_chunk(model: str, delta: dict[str, Any], finish_reason: str | None) -> SSE:
    chunk = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    return SSE(json.dumps(chunk))


def openai_stream(
    pieces: Sequence[str],
    *,
    model: str = "gpt-test-0001",
    prompt_tokens: int = 11,
    completion_tokens: int | None = None,
    usage: bool = True,
    done: bool = True,
) -> list[SSE]:
    """The Chat Completions stream as OpenAI sends it with ``stream_options.include_usage``."""
    events = [_openai_chunk(model, {"role": "assistant", "content": "", "refusal": None}, None)]
    events += [_openai_chunk(model, {"content": piece}, None) for piece in pieces]
    events.append(_openai_chunk(model, {}, "stop"))
    if usage:
        completion = len(pieces) if completion_tokens is None else completion_tokens
        events.append(
            SSE(
                json.dumps(
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion.chunk",
                        "created": 1_700_000_000,
                        "model": model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion,
                            "total_tokens": prompt_tokens + completion,
                        },
                    }
                )
            )
        )
    if done:
        events.append(SSE("[DONE]"))
    return events


def openai_error(status: int, message: str, *, type_: str = "invalid_request_error", **reply: Any) -> Reply:
    body = {"error": {"message": message, "type": type_, "param": None, "code": None}}
    return Reply(status=status, json=body, **reply)


# -- Anthropic wire format -------------------------------------------------------------------------------


def anthropic_message(
    text: str,
    *,
    model: str = "claude-test-1",
    input_tokens: int = 13,
    output_tokens: int = 5,
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def _anthropic_event(kind: str, payload: dict[str, Any]) -> SSE:
    return SSE(json.dumps({"type": kind, **payload}), event=kind)


def anthropic_stream(
    pieces: Sequence[str],
    *,
    model: str = "claude-test-1",
    input_tokens: int = 13,
    output_tokens: int | None = None,
    stop_reason: str = "end_turn",
    stop: bool = True,
) -> list[SSE]:
    """The Messages stream: message_start, one text block of deltas, message_delta, message_stop."""
    events = [
        _anthropic_event(
            "message_start",
            {
                "message": {
                    "id": "msg_test",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    # message_start carries the input tokens and a placeholder output count.
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1},
                }
            },
        ),
        _anthropic_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        _anthropic_event("ping", {}),
    ]
    events += [
        _anthropic_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        for piece in pieces
    ]
    events += [
        _anthropic_event("content_block_stop", {"index": 0}),
        _anthropic_event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(pieces) if output_tokens is None else output_tokens},
            },
        ),
    ]
    if stop:
        events.append(_anthropic_event("message_stop", {}))
    return events


def anthropic_error(
    status: int, message: str, *, type_: str = "invalid_request_error", **reply: Any
) -> Reply:
    body = {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_test"}
    return Reply(status=status, json=body, **reply)
