"""ASGI middleware for the Ray Serve HTTP proxy: make ``X-Request-ID`` follow the spec.

Serve's proxy echoes the incoming ``X-Request-ID`` (or a fresh UUID4 it generates) on every response. The
spec wants the client's value only when it is a valid UUID, else a fresh UUID4, so this middleware replaces
an invalid value before Serve's own middleware sees it. It is installed with
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=orchestra.serving._proxy:middlewares`` in the environment of
the Ray nodes (``orchestra serve`` and the test fixtures set it before Ray starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestra.errors import ServiceUnavailableError
from orchestra.serving._contract import error_envelope, error_headers, new_request_id
from orchestra.serving._guard import InputGuard
from orchestra.serving._transport import harden_uvicorn

__all__ = ["PROXY_CALLBACK", "ProxyErrorsInTheEnvelope", "RequestIdNormalizer", "middlewares"]

PROXY_CALLBACK = "orchestra.serving._proxy:middlewares"
_HEADER = b"x-request-id"


class RequestIdNormalizer:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
            values = [v for k, v in headers if k.lower() == _HEADER]
            given = values[0].decode("latin-1") if len(values) == 1 else None
            chosen = new_request_id(given)
            if given != chosen:
                headers = [(k, v) for k, v in headers if k.lower() != _HEADER]
                headers.append((_HEADER, chosen.encode()))
                scope = {**scope, "headers": headers}
        await self._app(scope, receive, send)


class ProxyErrorsInTheEnvelope:
    """A 5xx the proxy makes itself, or an exception it raises (the replica that had the request died,
    none is available yet), would reach clients as plain text; they get the spec's envelope instead:
    503 ``SERVICE_UNAVAILABLE`` with ``Retry-After`` and the request id. Answers of the application
    (JSON, or event streams) pass untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        replaced = started = False

        async def guarded(message: Message) -> None:
            nonlocal replaced, started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] >= 500:
                    headers = {k.lower(): v for k, v in message.get("headers", [])}
                    if not headers.get(b"content-type", b"").startswith(b"application/json"):
                        replaced = True
                        await self._replace(scope, headers, send)
                        return
            if not replaced:
                await send(message)

        try:
            await self._app(scope, receive, guarded)
        except (Exception, asyncio.CancelledError):
            # The proxy itself failed or its request was cancelled under it (the replica holding it
            # died): uvicorn would answer a plain 500. Once an answer has started there is none to give.
            if started:
                raise
            with contextlib.suppress(Exception):  # the client may be gone too
                await self._replace(scope, {}, send)

    @staticmethod
    async def _replace(scope: Scope, headers: dict[bytes, bytes], send: Send) -> None:
        given = {k.lower(): v for k, v in scope.get("headers", [])}.get(_HEADER, b"").decode("latin-1")
        request_id = headers.get(_HEADER, b"").decode("latin-1") or new_request_id(given)
        error = ServiceUnavailableError("the service could not answer this request; retry", retry_after=1)
        body = json.dumps(error_envelope(error, request_id=request_id, version="v2")).encode()
        out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        out += [(k.lower().encode(), v.encode()) for k, v in error_headers(error).items()]
        out.append((_HEADER, request_id.encode()))
        await send({"type": "http.response.start", "status": error.http_status, "headers": out})
        await send({"type": "http.response.body", "body": body})


def middlewares() -> list[Any]:
    """The proxy callback: Serve calls it once per proxy (and per replica serving HTTP itself, with direct
    ingress) and wraps these around its own middleware; the HTTP server of this process is bounded too."""
    harden_uvicorn()
    # The input guard here too: an oversized or stalled body is refused before it crosses to a replica.
    return [
        Middleware(RequestIdNormalizer),
        Middleware(ProxyErrorsInTheEnvelope),
        Middleware(InputGuard, in_proxy=True),
    ]
