"""Hostile input over real sockets against the real app: every answer is the spec's error in the
envelope, never a 500, a hang, a redirect or a connection held open for a client that does not talk."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from orchestra.serving._transport import HEADER_TIMEOUT_S, WS_MAX_BYTES

from .conftest import CORS_ORIGIN, ServeInfo


def _envelope_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False and body["data"] is None and body["error"]["code"] == code
    assert r.headers["X-Request-ID"] == body["metadata"]["request_id"]
    return body


async def _open(serve_app: ServeInfo) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(serve_app.base_url)
    return await asyncio.open_connection(url.hostname, url.port)


async def _response_head(reader: asyncio.StreamReader, within: float) -> tuple[int, dict[str, str], bytes]:
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = raw.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    headers = {k.lower(): v for k, v in headers.items()}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), within)
    return int(lines[0].split()[1]), headers, body


async def test_a_declared_oversized_body_is_refused_before_it_is_sent(serve_app: ServeInfo) -> None:
    reader, writer = await _open(serve_app)
    try:
        writer.write(
            b"POST /chat/v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + serve_app.key(94).encode() + b"\r\n"
            b"Content-Length: 10485760\r\n\r\n"
        )
        await writer.drain()
        status, _, body = await _response_head(reader, 10)  # not one body byte sent
        assert status == 413 and json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    finally:
        writer.close()


async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(serve_app: ServeInfo) -> None:
    reader, writer = await _open(serve_app)
    try:
        writer.write(
            b"POST /chat/v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + serve_app.key(94).encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 65536
        for _ in range(5):  # 320 KiB, then the client waits: the answer must not need the end
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        status, _, body = await _response_head(reader, 10)
        assert status == 413 and json.loads(body)["error"]["code"] == "PAYLOAD_TOO_LARGE"
    finally:
        writer.close()


async def test_a_body_that_stops_arriving_is_answered_408_and_closed(serve_app: ServeInfo) -> None:
    reader, writer = await _open(serve_app)
    try:
        writer.write(
            b"POST /chat/v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + serve_app.key(95).encode() + b"\r\n"
            b'Content-Length: 1000\r\n\r\n{"message": "1'
        )
        await writer.drain()
        status, headers, body = await _response_head(reader, 30)  # ORCHESTRA_BODY_IDLE_S=2 in the tests
        assert status == 408 and json.loads(body)["error"]["code"] == "VALIDATION_ERROR"
        assert headers.get("connection") == "close"
        assert await asyncio.wait_for(reader.read(), 10) == b""  # and the connection is gone
    finally:
        writer.close()


async def test_connections_that_send_no_complete_headers_are_closed(serve_app: ServeInfo) -> None:
    async def silent() -> float:
        reader, writer = await _open(serve_app)
        started = time.monotonic()
        try:
            assert await asyncio.wait_for(reader.read(), HEADER_TIMEOUT_S + 20) == b""
            return time.monotonic() - started
        finally:
            writer.close()

    async def trickling() -> float:
        reader, writer = await _open(serve_app)
        started = time.monotonic()
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 100
        try:
            for byte in request:  # one byte a second: never a whole header block
                if reader.at_eof():
                    break
                writer.write(bytes([byte]))
                await writer.drain()
                done = await asyncio.wait_for(reader.read(1), 1.0) if reader.at_eof() else None
                if done == b"":
                    break
                await asyncio.sleep(1.0)
            return time.monotonic() - started
        except (ConnectionError, asyncio.IncompleteReadError):
            return time.monotonic() - started
        finally:
            writer.close()

    waited = await asyncio.gather(silent(), trickling())
    assert all(w < HEADER_TIMEOUT_S + 10 for w in waited), waited


async def test_over_long_headers_are_a_clean_error(serve_app: ServeInfo) -> None:
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=30) as client:
        one_long = await client.get("/health", headers={"X-Long": "a" * 10_000})
        _envelope_error(one_long, 431, "VALIDATION_ERROR")
        assert one_long.json()["error"]["details"]["field"] == "x-long"
        many = await client.get("/health", headers={f"X-H{i}": "a" * 4000 for i in range(30)})
        _envelope_error(many, 431, "VALIDATION_ERROR")  # 120 KB of headers: refused by the transport


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"message": "a", "message": "b"}', "duplicate key"),
        (b'{"message": "a", "user_context": {"n": 1e999999}}', "too large"),
        (b'{"message": "a", "user_context": {"n": NaN}}', "not a JSON number"),
        (b'{"message": "a", "user_context": {"n": ' + b"9" * 5000 + b"}}", "digits"),
        (b'{"message": "a", "user_context": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}", "nested"),
        (b'{"message": "\xff\xfe"}', "not UTF-8"),
        (b'{"message": ', "invalid JSON"),
        (b'{"message": 5}', "string"),
        (b'{"message": "a", "surprise": 1}', "unknown field"),
    ],
)
async def test_bodies_json_would_mangle_are_validation_errors(
    serve_app: ServeInfo, body: bytes, reason: str
) -> None:
    headers = {**serve_app.auth(serve_app.key(96)), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=30) as client:
        r = await client.post("/chat/v2/chat", content=body, headers=headers)
    error = _envelope_error(r, 400, "VALIDATION_ERROR")["error"]
    assert reason.lower() in json.dumps(error).lower(), error


async def test_trailing_slashes_unknown_paths_and_wrong_methods(serve_app: ServeInfo) -> None:
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=30, follow_redirects=False) as client:
        for path in ("/health/", "/chat/v2/chat/", "/nothing/here/", "/nothing"):
            r = await client.get(path, headers={"Host": "evil.example"})
            _envelope_error(r, 404, "NOT_FOUND")
            assert "location" not in r.headers
        r = await client.post("/health")
        _envelope_error(r, 405, "NOT_FOUND")
        assert r.headers["Allow"] == "GET"
        r = await client.get("/chat/v2/chat", headers=serve_app.auth(serve_app.key(97)))
        _envelope_error(r, 405, "NOT_FOUND")
        assert r.headers["Allow"] == "POST"


async def test_cors_lets_an_allowed_origin_in_and_no_other(serve_app: ServeInfo) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-request-id",
    }
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=30) as client:
        ok = await client.options("/chat/v2/chat", headers={**preflight, "Origin": CORS_ORIGIN})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == CORS_ORIGIN
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        other = await client.options("/chat/v2/chat", headers={**preflight, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        r = await client.get(
            "/chat/v2/sessions/none", headers={**serve_app.auth(serve_app.key(98)), "Origin": CORS_ORIGIN}
        )
        assert r.status_code == 404 and r.headers["access-control-allow-origin"] == CORS_ORIGIN
        assert "x-request-id" in r.headers["access-control-expose-headers"].lower()


async def test_websocket_frames_over_the_transport_limit_close_the_connection_unread(
    serve_app: ServeInfo,
) -> None:
    url = f"{serve_app.ws_url}/chat/ws/hostile/ws-big"
    headers = serve_app.auth(serve_app.key(99))
    async with connect(url, additional_headers=headers, max_size=None) as ws:
        json.loads(await ws.recv())  # connected
        # Over the protocol's 64 KiB but within the transport's bound: an error frame, connection kept.
        await ws.send(json.dumps({"type": "chat", "data": {"message": "x" * 100_000}}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert error["data"]["action"] == "error" and error["data"]["error"]["code"] == "PAYLOAD_TOO_LARGE"
        await ws.send(json.dumps({"type": "control", "data": {"action": "ping"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["data"]["action"] == "pong"
        # Over the transport's bound: refused as it arrives, 1009, never buffered whole.
        await ws.send("x" * (WS_MAX_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_client_that_leaves_mid_body_costs_one_log_line(serve_app: ServeInfo) -> None:
    """The traceback check is in test_zz_no_secrets (every log of the session, after every test)."""
    for _ in range(3):
        _, writer = await _open(serve_app)
        writer.write(
            b"POST /chat/v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + serve_app.key(95).encode() + b"\r\n"
            b'Content-Length: 1000\r\n\r\n{"message": "gone'
        )
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=30) as client:
        assert (await client.get("/health")).status_code == 200  # and the service is fine
