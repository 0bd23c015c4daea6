"""ASGI middleware for the Ray Serve HTTP proxy: make ``X-Request-ID`` follow the spec.

Serve's proxy echoes the incoming ``X-Request-ID`` (or a fresh UUID4 it generates) on every response. The
spec wants the client's value only when it is a valid UUID, else a fresh UUID4, so this middleware replaces
an invalid value before Serve's own middleware sees it. It is installed with
``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=orchestra.serving._proxy:middlewares`` in the environment of
the Ray nodes (``orchestra serve`` and the test fixtures set it before Ray starts).
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestra.serving._contract import new_request_id

__all__ = ["PROXY_CALLBACK", "RequestIdNormalizer", "middlewares"]

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


def middlewares() -> list[Any]:
    """The proxy callback: Serve calls it once per proxy and wraps these around its own middleware."""
    return [Middleware(RequestIdNormalizer)]
