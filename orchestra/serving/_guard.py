"""ASGI middleware that meets hostile input before any route reads it.

Installed in front of the ingress app (and, in Serve's default mode, in the HTTP proxy too, so an
oversized body never crosses to a replica):

- a body over ``MAX_BODY_BYTES``: 413 ``PAYLOAD_TOO_LARGE`` as soon as ``Content-Length`` says so, or as
  soon as a chunked body passes the limit; the rest is never read;
- a body that stops arriving (a client that declared 1000 bytes and sent 13): 408 after
  ``ORCHESTRA_BODY_IDLE_S`` (10 s) without a byte, and the connection is closed;
- one header over ``MAX_HEADER_BYTES``: 431 (the transport refuses whole header blocks over 16 KiB by
  itself, in plain text, before any application code runs).

Every answer is the spec's error envelope with the request id, and the route never runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra._looptime import within
from orchestra.errors import OrchestraError, PayloadTooLargeError, ValidationError
from orchestra.serving._contract import (
    MAX_BODY_BYTES,
    error_envelope,
    error_headers,
    new_request_id,
    too_large,
)
from orchestra.serving._openai import error_body as openai_error_body
from orchestra.settings import settings

__all__ = ["MAX_HEADER_BYTES", "Cors", "InputGuard", "cors_options", "send_error"]

log = logging.getLogger("orchestra.serving")

MAX_HEADER_BYTES = 8 * 1024
_REQUEST_ID = b"x-request-id"


class _BodyTimeout(ValidationError):
    http_status = 408


class _HeaderTooLarge(ValidationError):
    http_status = 431


def _field_error(cls: type[ValidationError], message: str, field: str, reason: str) -> ValidationError:
    return cls(
        message, details={"field": field, "reason": reason, "errors": [{"field": field, "reason": reason}]}
    )


async def send_error(
    scope: Scope, send: Send, error: OrchestraError, *, close: bool = False, request_id_header: bool = True
) -> None:
    """Answer ``error`` in the envelope (the request id the client sent when valid, else a fresh one).

    ``request_id_header`` False where Serve's proxy adds ``X-Request-ID`` to the answer itself."""
    given = {k.lower(): v for k, v in scope.get("headers", [])}.get(_REQUEST_ID, b"").decode("latin-1")
    request_id = new_request_id(given)
    if str(scope.get("path", "")).startswith("/v1/"):  # the OpenAI-compatible surface: its error shape
        body = json.dumps(openai_error_body(error)).encode()
    else:
        body = json.dumps(error_envelope(error, request_id=request_id, version="v2")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error_headers(error).items()]
    if request_id_header:
        headers.append((_REQUEST_ID, request_id.encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header_problem(scope: Scope) -> OrchestraError | None:
    declared: int | None = None
    for name, value in scope.get("headers", []):
        if len(name) + len(value) > MAX_HEADER_BYTES:
            field = name.decode("latin-1")[:64]
            return _field_error(
                _HeaderTooLarge,
                "a request header is too large",
                field,
                f"longer than {MAX_HEADER_BYTES} bytes",
            )
        if name.lower() == b"content-length":
            text = value.strip()
            if not text.isdigit() or (declared is not None and int(text) != declared):
                return _field_error(
                    ValidationError, "invalid Content-Length header", "Content-Length", "must be one integer"
                )
            declared = int(text)
    if declared is not None and declared > MAX_BODY_BYTES:
        return too_large(declared)
    return None


class InputGuard:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, body_idle_s: float | None = None, in_proxy: bool = False) -> None:
        """``in_proxy``: installed by Serve's middleware hook where the client's connection is read (the
        HTTP proxy, or a replica serving HTTP itself with direct ingress), outside Serve's own request-id
        handling; only there is a stalled body timed."""
        self._app = app
        self._in_proxy = in_proxy
        self._body_idle_s = body_idle_s if body_idle_s is not None else settings().body_idle_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        problem = _header_problem(scope)
        if problem is not None:
            await send_error(
                scope,
                send,
                problem,
                close=isinstance(problem, PayloadTooLargeError),
                request_id_header=self._in_proxy,
            )
            return
        received = 0
        body_done = False
        answered = False  # by this guard: the app's own answer is then dropped
        started = False  # by the app

        async def guarded_receive() -> Message:
            nonlocal received, body_done, answered
            if answered:
                return {"type": "http.disconnect"}
            if body_done or not self._in_proxy:
                # After the body only a disconnect can come, whenever it comes. Behind Serve's proxy the
                # app's receive() is a call to the proxy, whose pace is not the client's: only the guard
                # on the client's own connection (the proxy's, or a direct-ingress replica's) times it.
                return await receive()
            try:
                async with within(self._body_idle_s):
                    message = await receive()
            except TimeoutError:
                error: OrchestraError = _field_error(
                    _BodyTimeout,
                    "the request body did not arrive in time",
                    "<body>",
                    f"no data for {self._body_idle_s:g} s",
                )
            else:
                if message["type"] != "http.request":
                    return message
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received <= MAX_BODY_BYTES:
                    return message
                error = too_large(None)
            if not started:
                answered = True
                await send_error(scope, send, error, close=True, request_id_header=self._in_proxy)
            return {"type": "http.disconnect"}  # the route stops reading; nothing more is taken in

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self._app(scope, guarded_receive, guarded_send)


# What a browser may send and read across origins (api.md: auth, versions, request ids, rate limits).
_CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "X-Request-ID", "API-Version"]
_CORS_EXPOSED_HEADERS = [
    "X-Request-ID",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "Deprecation",
    "Sunset",
    "Link",
]


def cors_options(origins: str | None = None) -> dict[str, Any] | None:
    """Starlette ``CORSMiddleware`` options for ``ORCHESTRA_CORS_ORIGINS`` (None: no origin allowed, no
    middleware). Credentials are never allowed: the API key travels in a header, not a cookie."""
    text = settings().cors_origins if origins is None else origins
    allowed = [o.strip().rstrip("/") for o in text.split(",") if o.strip()]
    if not allowed:
        return None
    return {
        "allow_origins": allowed,
        "allow_methods": ["GET", "POST", "DELETE", "OPTIONS"],
        "allow_headers": _CORS_REQUEST_HEADERS,
        "expose_headers": _CORS_EXPOSED_HEADERS,
        "allow_credentials": False,
        "max_age": 600,
    }


class Cors:
    """Starlette's ``CORSMiddleware`` with the origins of ``ORCHESTRA_CORS_ORIGINS``, read where the app
    runs (the replica), when its middleware stack is built; a pass-through when none are allowed."""

    def __init__(self, app: ASGIApp, origins: str | None = None) -> None:
        options = cors_options(origins)
        self._app: ASGIApp = app if options is None else CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)
