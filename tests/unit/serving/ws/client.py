"""The client side of the WebSocket tests: a socket that records what the server sent, a connection
over an in-process Engine, the frames a client sends, and a rate-limit bucket on a test clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import orchestra
import orchestra.engine
from orchestra.providers import ScriptedSettings
from orchestra.serving.ws import WsConnection
from orchestra.stores import WS_CAPACITY, WS_REFILL_PER_S, LocalTokenBucket, RateLimitDecision

Frame = dict[str, Any]
SLOW = ScriptedSettings(latency_s=0.05, tokens_per_s=300)


class Socket:
    """The client side: records what the server sent; can be told to break."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.senders: list[asyncio.Task[Any] | None] = []
        self.fail_after: int | None = None

    async def send(self, frame: Frame) -> None:
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise ConnectionError("socket is gone")
        # What a real socket would do: serialise as UTF-8 JSON text.
        json.dumps(frame, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.frames.append(frame)
        self.senders.append(asyncio.current_task())

    def errors(self, request_id: str | None = None) -> list[Frame]:
        return [
            f["data"]
            for f in self.frames
            if f["type"] == "control"
            and f["data"]["action"] == "error"
            and (request_id is None or f["data"].get("request_id") == request_id)
        ]

    def of(self, kind: str) -> list[Frame]:
        return [f["data"] for f in self.frames if f["type"] == kind]

    def terminal(self, request_id: str) -> Frame | None:
        for f in self.frames:
            d = f["data"]
            if d.get("request_id") == request_id and (
                f["type"] == "chat" or (f["type"] == "control" and d.get("action") == "error")
            ):
                return f
        return None

    async def wait_for(self, check: Callable[[], Any], within: float = 5.0) -> Any:
        async with asyncio.timeout(within):
            # Polling: some conditions are engine state, which has no event to wait on.
            while not (value := check()):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        return value

    async def wait_terminal(self, request_id: str, within: float = 5.0) -> Frame:
        frame: Frame = await self.wait_for(lambda: self.terminal(request_id), within)
        return frame


def connect(
    engine: orchestra.engine.Engine, session_id: str = "s-1", **kwargs: Any
) -> tuple[WsConnection, Socket]:
    sock = Socket()
    conn = WsConnection(
        engine,
        send=sock.send,
        tenant="alice",
        client_id="c-1",
        session_id=session_id,
        **kwargs,
    )
    return conn, sock


async def send(conn: WsConnection, kind: str, data: Any, **extra: Any) -> None:
    await conn.receive_text(json.dumps({"type": kind, "data": data, **extra}))


async def chat(conn: WsConnection, message: str, rid: str, **fields: Any) -> None:
    await send(conn, "chat", {"message": message, "request_id": rid, "optimization_mode": "lite", **fields})


async def command(conn: WsConnection, sock: Socket, name: str, **args: Any) -> Any:
    before = len(sock.of("command"))
    await send(conn, "command", {"command": name, "args": args})
    commands = sock.of("command")
    assert len(commands) == before + 1, sock.errors()
    assert commands[-1]["command"] == name
    return commands[-1]["result"]


async def assert_pong(conn: WsConnection, sock: Socket) -> None:
    await send(conn, "control", {"action": "ping"})
    assert sock.frames[-1]["data"] == {"action": "pong"}


class Bucket(LocalTokenBucket):
    """The real per-connection bucket (capacity 10, 100/min) on a clock the test moves."""

    def __init__(self, capacity: int = WS_CAPACITY) -> None:
        self.now = 0.0
        self.keys: set[str] = set()
        super().__init__(capacity=capacity, refill_per_s=WS_REFILL_PER_S, clock=lambda: self.now)

    async def acquire(self, key: str = "", cost: int = 1) -> RateLimitDecision:
        self.keys.add(key)
        return await super().acquire(key, cost)
