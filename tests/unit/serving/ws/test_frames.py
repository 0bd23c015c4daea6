"""Frames (orchestra/serving/ws/_frames.py): bad client frames, the handshake, any text at all, and the
server frames against docs/asyncapi.yaml."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchestra
import orchestra.engine
from orchestra.serving.ws import handshake_credentials
from tests.unit.conftest import make_engine
from tests.unit.serving.ws.client import Bucket, Frame, assert_pong, chat, command, connect, send

# -- bad frames ------------------------------------------------------------------------------------

BAD_FRAMES: list[tuple[str, str, str]] = [
    ("not json", "VALIDATION_ERROR", "<frame>"),
    ("[1, 2]", "VALIDATION_ERROR", "<frame>"),
    ('"chat"', "VALIDATION_ERROR", "<frame>"),
    ("null", "VALIDATION_ERROR", "<frame>"),
    ("[" * 100_000, "PAYLOAD_TOO_LARGE", "<frame>"),
    ("[" * 60_000, "VALIDATION_ERROR", "<frame>"),
    (json.dumps({"data": {}}), "VALIDATION_ERROR", "type"),
    (json.dumps({"type": "shout", "data": {}}), "VALIDATION_ERROR", "type"),
    (json.dumps({"type": "stream", "data": {}}), "VALIDATION_ERROR", "type"),
    (json.dumps({"type": "control"}), "VALIDATION_ERROR", "data"),
    (json.dumps({"type": "control", "data": [1]}), "VALIDATION_ERROR", "data"),
    (json.dumps({"type": "control", "data": {"action": "ping"}, "extra": 1}), "VALIDATION_ERROR", "extra"),
    (json.dumps({"type": "control", "data": {"action": "ping"}, "timestamp": "yesterday"}), "", "timestamp"),
    (json.dumps({"type": "control", "data": {"action": "dance"}}), "VALIDATION_ERROR", "data.action"),
    (json.dumps({"type": "chat", "data": {}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": ""}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": 5}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": "x" * 32_001}}), "VALIDATION_ERROR", "data.message"),
    (json.dumps({"type": "chat", "data": {"message": "hi", "mood": 1}}), "VALIDATION_ERROR", "data.mood"),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "optimization_mode": "turbo"}}),
        "VALIDATION_ERROR",
        "data.optimization_mode",
    ),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "use_memory": "true"}}),
        "VALIDATION_ERROR",
        "data.use_memory",
    ),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "request_id": "has space"}}),
        "VALIDATION_ERROR",
        "data.request_id",
    ),
    (
        json.dumps({"type": "chat", "data": {"message": "hi", "context": {"blob": "x" * 17_000}}}),
        "VALIDATION_ERROR",
        "data.context",
    ),
    ('{"type": "chat", "data": {"message": "\\ud800"}}', "VALIDATION_ERROR", "<frame>"),
    (json.dumps({"type": "command", "data": {"command": "dance"}}), "VALIDATION_ERROR", "data.command"),
    (
        json.dumps({"type": "command", "data": {"command": "history", "args": {"x": 1}}}),
        "VALIDATION_ERROR",
        "data.args.x",
    ),
    (
        json.dumps({"type": "command", "data": {"command": "set", "args": {"optimization_mode": "max"}}}),
        "VALIDATION_ERROR",
        "data.args.optimization_mode",
    ),
    (
        json.dumps({"type": "command", "data": {"command": "set", "args": {"swarm_type": "dance-team"}}}),
        "VALIDATION_ERROR",
        "data.args.swarm_type",
    ),
    (
        json.dumps({"type": "command", "data": {"command": "cancel", "args": {"all": "yes"}}}),
        "VALIDATION_ERROR",
        "data.args.all",
    ),
]


@pytest.mark.parametrize(("raw", "code", "field"), BAD_FRAMES, ids=range(len(BAD_FRAMES)))
async def test_bad_frames_get_one_error_frame_and_the_connection_stays_usable(
    fast_config: orchestra.OrchestraConfig, raw: str, code: str, field: str
) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await conn.receive_text(raw)
    assert len(sock.frames) == 1
    (error,) = sock.errors()
    assert error["error"]["code"] == (code or "VALIDATION_ERROR")
    assert error["error"]["details"]["field"] == field
    assert error["error"]["message"]
    assert not conn.should_close
    await assert_pong(conn, sock)
    await conn.close()


async def test_chat_errors_carry_the_request_id(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await send(conn, "chat", {"message": "", "request_id": "empty-1"})
    (error,) = sock.errors()
    assert error["request_id"] == "empty-1"
    await conn.close()


async def test_binary_frames_get_an_error_frame(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine)
    await conn.receive_bytes(b'{"type": "control", "data": {"action": "ping"}}')
    await conn.receive_bytes(b"x" * 70_000)
    codes = [e["error"]["code"] for e in sock.errors()]
    assert codes == ["VALIDATION_ERROR", "PAYLOAD_TOO_LARGE"]
    await assert_pong(conn, sock)
    await conn.close()


def test_handshake_credentials() -> None:
    assert handshake_credentials("Bearer k1", []) == ("k1", None)
    assert handshake_credentials("Basic abc", ["orchestra.v2"]) == (None, "orchestra.v2")
    assert handshake_credentials(None, ["orchestra.v2", "bearer.k2"]) == ("k2", "orchestra.v2")
    assert handshake_credentials("Bearer k1", ["orchestra.v2", "bearer.k2"]) == ("k1", "orchestra.v2")
    assert handshake_credentials(None, ["bearer."]) == (None, None)


# -- any text at all -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_KEYS = "message request_id optimization_mode swarm_type use_memory context command args action all x"
_keys = st.sampled_from(_KEYS.split())
_values = _json | st.sampled_from(["ping", "status", "cancel", "history", "swarms", "set", "lite", "dance"])
_frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["chat", "command", "control", "stream", "other"]) | _json},
    optional={
        "data": st.dictionaries(_keys, _values, max_size=4) | _json,
        "timestamp": st.sampled_from(["2025-01-01T00:00:00Z", "soon"]) | _json,
        "extra": _json,
    },
).map(json.dumps)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.text(max_size=200) | _frames)
def test_any_text_frame_never_raises(fast_config: orchestra.OrchestraConfig, raw: str) -> None:
    async def scenario() -> None:
        engine, _ = make_engine(fast_config)
        conn, sock = connect(engine)
        await conn.receive_text(raw)
        me = asyncio.current_task()
        mine = [f for f, t in zip(sock.frames, sock.senders, strict=True) if t is me]
        errors = [f for f in mine if f["type"] == "control" and f["data"]["action"] == "error"]
        assert len(errors) <= 1
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not (isinstance(parsed, dict) and parsed.get("type") in ("chat", "command", "control")):
            assert len(errors) == 1 and len(mine) == 1
        if not conn.should_close:
            await assert_pong(conn, sock)
        await conn.close()
        assert asyncio.all_tasks() == {me}

    asyncio.run(scenario())


# -- the published contract ------------------------------------------------------------------------


async def test_server_frames_match_docs_asyncapi(fast_config: orchestra.OrchestraConfig) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    yaml = pytest.importorskip("yaml")
    from tests.conftest import ROOT

    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())

    def schema_of(frame: Frame) -> str:
        if frame["type"] == "control":
            return {"connected": "ConnectedFrame", "pong": "PongFrame", "status": "StatusFrame"}.get(
                frame["data"]["action"], "ErrorFrame"
            )
        return {"stream": "StreamFrame", "chat": "ChatAnswerFrame", "command": "CommandResultFrame"}[
            frame["type"]
        ]

    engine, _ = make_engine(fast_config)
    conn, sock = connect(engine, limiter=Bucket(capacity=100))
    await conn.open()
    await chat(conn, "Write a poem", "p1", context={"a": 1})
    await sock.wait_terminal("p1")
    await send(conn, "control", {"action": "status"})
    await assert_pong(conn, sock)
    await conn.receive_text("not json")
    for name, args in [("history", {}), ("swarms", {}), ("set", {"use_memory": True}), ("reset", {})]:
        await command(conn, sock, name, **args)
    await command(conn, sock, "cancel")
    await command(conn, sock, "resume", request_id="p1", last_event_id=2)
    await sock.wait_for(lambda: len([f for f in sock.frames if f["type"] == "chat"]) == 2)
    await send(conn, "command", {"command": "resume", "args": {"request_id": "nope"}})  # NOT_FOUND
    await command(conn, sock, "end")
    for frame in sock.frames:
        validator = jsonschema.Draft7Validator({**doc, "$ref": f"#/components/schemas/{schema_of(frame)}"})
        errors = [e.message for e in validator.iter_errors(frame)]
        assert not errors, (frame, errors)
    # and the client frames this test sent are what the document says clients send
    sent = [
        ("ChatRequestFrame", {"type": "chat", "data": {"message": "hi", "request_id": "p1"}}),
        ("CommandRequestFrame", {"type": "command", "data": {"command": "cancel", "args": {}}}),
        (
            "CommandRequestFrame",
            {"type": "command", "data": {"command": "set", "args": {"swarm_type": None}}},
        ),
        (
            "CommandRequestFrame",
            {
                "type": "command",
                "data": {"command": "resume", "args": {"request_id": "p1", "last_event_id": 2}},
            },
        ),
        (
            "ControlRequestFrame",
            {"type": "control", "data": {"action": "ping"}, "timestamp": "2025-01-01T00:00Z"},
        ),
    ]
    for name, frame in sent:
        jsonschema.validate(frame, {**doc, "$ref": f"#/components/schemas/{name}"})
    await conn.close()
