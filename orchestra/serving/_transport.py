"""Bounds the HTTP server under every ingress (Serve's proxy, or a replica's own server with direct
ingress: both are uvicorn) sets too loosely for a public endpoint.

uvicorn waits forever for a request's headers (a client sending one byte a second, or nothing at all,
holds its connection and a slot indefinitely), buffers a header block of any size, and buffers WebSocket
messages of up to 16 MiB whole. ``harden_uvicorn()`` (called by the middleware hook Serve runs in each
process that serves HTTP: the proxy, or a replica with direct ingress):

- closes a connection that has not completed its request headers within ``HEADER_TIMEOUT_S`` of
  opening or of the previous response;
- answers a header block over ``MAX_HEADER_BLOCK_BYTES`` with 431 in the envelope and closes (the input
  guard bounds single headers);
- caps a WebSocket message at ``WS_MAX_BYTES`` in the transport: a bigger one closes the connection with
  1009 as it arrives; up to that size the WebSocket protocol answers an error frame for anything over
  64 KiB and keeps the connection (api.md §7).

Body timeouts are the input guard's (``_guard``). uvicorn exposes none of these as an option Serve passes
on, so its protocol classes are wrapped here: one place, idempotent, checked by tests that open real
sockets against a real server.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

__all__ = ["HEADER_TIMEOUT_S", "MAX_HEADER_BLOCK_BYTES", "WS_MAX_BYTES", "harden_uvicorn"]

HEADER_TIMEOUT_S = 10.0
# A request's whole header block; uvicorn's httptools parser has no bound of its own.
MAX_HEADER_BLOCK_BYTES = 64 * 1024
WS_MAX_BYTES = 1024 * 1024
_MARK = "_orchestra_hardened"


def _close_if_no_request(protocol: Any) -> None:
    transport: asyncio.Transport | None = getattr(protocol, "transport", None)
    if transport is None or transport.is_closing() or transport.get_protocol() is not protocol:
        return  # closed already, or upgraded to a WebSocket (another protocol owns the transport now)
    cycle = getattr(protocol, "cycle", None)
    if cycle is None or cycle.response_complete:  # no request whose headers arrived is being served
        transport.close()


def _in_request(protocol: Any) -> bool:
    cycle = getattr(protocol, "cycle", None)
    return cycle is not None and not cycle.response_complete


def _refuse_header_block(protocol: Any) -> None:
    from orchestra.errors import ValidationError
    from orchestra.serving._contract import error_envelope, new_request_id

    reason = f"the request headers are over {MAX_HEADER_BLOCK_BYTES} bytes"
    field = {"field": "<headers>", "reason": reason}
    error = ValidationError("request headers too large", details={**field, "errors": [field]})
    request_id = new_request_id(None)
    body = json.dumps(error_envelope(error, request_id=request_id, version="v2")).encode()
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-request-id: {request_id}\r\nconnection: close\r\n\r\n"
    )
    protocol.transport.write(head.encode() + body)
    protocol.transport.close()


def _arm(protocol: Any) -> None:
    protocol._orchestra_header_bytes = 0
    timer: asyncio.TimerHandle | None = getattr(protocol, "_orchestra_header_timer", None)
    if timer is not None:
        timer.cancel()
    loop = asyncio.get_running_loop()
    protocol._orchestra_header_timer = loop.call_later(HEADER_TIMEOUT_S, _close_if_no_request, protocol)


def _wrap_protocol(cls: type[Any]) -> None:
    if getattr(cls, _MARK, False):
        return
    made, complete, lost = cls.connection_made, cls.on_response_complete, cls.connection_lost
    received = cls.data_received

    def data_received(self: Any, data: bytes) -> None:
        if _in_request(self) or self.transport.is_closing():
            received(self, data)
            return
        self._orchestra_header_bytes = getattr(self, "_orchestra_header_bytes", 0) + len(data)
        received(self, data)
        # Still no complete header block after this much: refuse it instead of buffering more.
        if (
            self._orchestra_header_bytes > MAX_HEADER_BLOCK_BYTES
            and not _in_request(self)
            and not self.transport.is_closing()
            and self.transport.get_protocol() is self
        ):
            _refuse_header_block(self)

    def connection_made(self: Any, transport: Any) -> None:
        made(self, transport)
        _arm(self)

    def on_response_complete(self: Any) -> None:
        complete(self)
        _arm(self)  # the next request's headers get the same time

    def connection_lost(self: Any, exc: Exception | None) -> None:
        timer: asyncio.TimerHandle | None = getattr(self, "_orchestra_header_timer", None)
        if timer is not None:
            timer.cancel()
        lost(self, exc)

    cls.connection_made = connection_made
    cls.data_received = data_received
    cls.on_response_complete = on_response_complete
    cls.connection_lost = connection_lost
    setattr(cls, _MARK, True)


def harden_uvicorn() -> None:
    """Apply the bounds of the module docstring to uvicorn in this process (idempotent)."""
    import uvicorn.config
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    for cls in (H11Protocol, HttpToolsProtocol):
        _wrap_protocol(cls)
    config = uvicorn.config.Config
    if not getattr(config, _MARK, False):
        init = config.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("ws_max_size", WS_MAX_BYTES)
            init(self, *args, **kwargs)

        config.__init__ = __init__  # type: ignore[method-assign]
        setattr(config, _MARK, True)
