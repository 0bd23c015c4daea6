"""A hypothesis fuzzer of WebSocket frames against the real app: every bad frame gets an error frame in
the spec's shape and the connection stays open (a ping after it is answered)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from .conftest import ServeInfo

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _dumps(value: Any) -> str:
    return json.dumps(value)


bad_frames = st.one_of(
    # not JSON at all, or JSON that json.loads takes but the protocol must not
    st.text(max_size=200).filter(lambda t: not _parses(t)),
    st.sampled_from(["NaN", '{"type": "chat", "type": "command", "data": {}}', '{"n": 1e999999}', "[" * 100]),
    # JSON, but not an object
    (_json_scalars | st.lists(_json, max_size=3)).map(_dumps),
    # an object without a client type
    st.dictionaries(st.text(max_size=8), _json, max_size=4)
    .filter(lambda d: d.get("type") not in ("chat", "command", "control"))
    .map(_dumps),
    # a client type with data that is not an object
    st.builds(
        lambda t, d: _dumps({"type": t, "data": d}),
        st.sampled_from(["chat", "command", "control"]),
        _json_scalars | st.lists(_json, max_size=2),
    ),
    # a chat whose message is missing or not a non-empty string
    st.builds(
        lambda m: _dumps({"type": "chat", "data": {"message": m}}),
        st.none() | st.integers() | st.just("") | st.lists(st.text(), max_size=2),
    ),
    # unknown commands and control actions, unknown fields
    st.text(min_size=1, max_size=12)
    .filter(lambda c: c not in ("cancel", "reset", "history", "swarms", "set", "end"))
    .map(lambda c: _dumps({"type": "command", "data": {"command": c, "args": {}}})),
    st.text(min_size=1, max_size=12)
    .filter(lambda a: a not in ("ping", "status"))
    .map(lambda a: _dumps({"type": "control", "data": {"action": a}})),
    st.text(min_size=1, max_size=8)
    .filter(lambda k: k not in ("type", "data", "timestamp"))
    .map(lambda k: _dumps({"type": "control", "data": {"action": "ping"}, k: 1})),
)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def test_every_bad_frame_gets_an_error_frame_and_the_connection_stays(serve_app: ServeInfo) -> None:
    headers = serve_app.auth(serve_app.key(100))
    seen = 0

    @given(frame=bad_frames)
    @settings(
        max_examples=30,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,  # the same frames every run: a CI failure is reproducible here
    )
    def fuzz(frame: str) -> None:
        nonlocal seen
        seen += 1
        asyncio.run(_exchange(serve_app, headers, frame, seen))

    fuzz()


async def _exchange(serve_app: ServeInfo, headers: dict[str, str], frame: str, n: int) -> None:
    # A connection per frame: its own message bucket (capacity 10), so no answer is a rate limit.
    async with connect(f"{serve_app.ws_url}/chat/ws/fuzz/ws-fuzz-{n}", additional_headers=headers) as ws:
        assert json.loads(await ws.recv())["data"]["action"] == "connected"
        await ws.send(frame)
        answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert answer["type"] == "control" and answer["data"]["action"] == "error", (frame, answer)
        error = answer["data"]["error"]
        assert error["code"] in ("VALIDATION_ERROR", "PAYLOAD_TOO_LARGE") and error["message"], (frame, error)
        await ws.send(json.dumps({"type": "control", "data": {"action": "ping"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["data"]["action"] == "pong", frame
