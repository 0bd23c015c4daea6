"""``WsConnection``: one connection. It dispatches each client frame to the chat queue (``_chats``), a
command or a control action, rate-limits the frames, and keeps the lifecycle (``_lifecycle``): ``open``,
``close``, ``should_close`` and ``close_code`` for the ingress.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from orchestra._types import IDENTIFIER_RE, MODES
from orchestra.engine import ChatService
from orchestra.errors import (
    InternalError,
    NotFoundError,
    OrchestraError,
    RateLimitError,
    ValidationError,
)
from orchestra.serving._contract import rate_limit_error
from orchestra.serving.ws._chats import ChatQueue
from orchestra.serving.ws._frames import (
    MAX_FRAME_BYTES,
    MAX_WAITING,
    CancelArgs,
    ChatData,
    CommandData,
    ControlData,
    NoArgs,
    ResumeArgs,
    ServerFrames,
    SetArgs,
    build_request,
    invalid_field,
    parse_frame,
    peek_request_id,
    too_large,
    validate,
)
from orchestra.serving.ws._lifecycle import ConnectionState, Lifecycle
from orchestra.stores import RateLimitDecision, RateLimiter

__all__ = ["WsConnection"]

log = logging.getLogger("orchestra.ws")

# -- one connection --------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WsConnection:
    """One WebSocket connection: validates client frames, queues chats, streams their events.

    Chats run one at a time in arrival order (each in its own task); at most ``max_waiting`` wait behind
    the running one. ``receive_text`` never raises for anything the client sends; the ``send`` callback may
    raise when the socket is gone, after which the connection stops its chats and ignores further input.
    """

    def __init__(
        self,
        service: ChatService,
        *,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        tenant: str,
        client_id: str,
        session_id: str,
        version: str = "v2",
        limiter: RateLimiter | None = None,
        rate_key: str | None = None,
        max_waiting: int = MAX_WAITING,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        cancel_grace_s: float = 5.0,
        resume_grace_s: float = 0.0,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``resume_grace_s``: when the socket goes away, the running chat's run goes on this long for a
        ``resume`` from another connection (then to its end if resumed); 0 cancels it at once."""
        # The ingress checks these first and closes with CLOSE_INVALID_PATH; no chat could run on a bad
        # session id, so refuse to build the connection at all.
        if not IDENTIFIER_RE.fullmatch(session_id):
            raise ValidationError(
                "invalid session_id",
                details={"field": "session_id", "reason": "must be 1-128 of [A-Za-z0-9._:-]"},
            )
        if not 0 < len(client_id) <= 128:
            raise ValidationError(
                "invalid client_id", details={"field": "client_id", "reason": "must be 1-128 characters"}
            )
        self.service = service
        self.tenant = tenant
        self.client_id = client_id
        self.session_id = session_id
        self.version = version
        self._send_cb = send
        self._limiter = limiter
        self._rate_key = rate_key or f"ws:{tenant}:{client_id}:{uuid.uuid4().hex}"
        self._max_frame_bytes = max_frame_bytes
        self._frames = ServerFrames(now)
        self._defaults: dict[str, Any] = {
            "optimization_mode": "balanced",
            "swarm_type": None,
            "use_memory": False,
        }
        self._send_lock = asyncio.Lock()
        self._lifecycle = Lifecycle()
        self._chats = ChatQueue(
            service,
            tenant,
            send=self._send,
            frames=self._frames,
            may_start=lambda: self._lifecycle.open,
            may_send=lambda: self._lifecycle.sending,
            max_waiting=max_waiting,
            cancel_grace_s=cancel_grace_s,
            resume_grace_s=resume_grace_s,
        )
        self._last_decision: RateLimitDecision | None = None

    # -- state --------------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._lifecycle.state

    @property
    def closed_reason(self) -> str | None:
        """Why the connection stopped: ``session ended``, ``send failed`` or ``closed``; None while open."""
        return self._lifecycle.closed_reason

    @property
    def close_code(self) -> int | None:
        """The code the ingress should close the socket with; None when it need not close it."""
        return self._lifecycle.close_code

    @property
    def should_close(self) -> bool:
        """The ingress should close the socket now, with ``close_code``."""
        return self.close_code is not None

    @property
    def running(self) -> str | None:
        running = self._chats.running
        return running.request_id if running else None

    @property
    def waiting(self) -> list[str]:
        return self._chats.waiting

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self._defaults)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Send the ``connected`` frame; call right after accepting the socket."""
        await self._send(
            self._frames.frame(
                "control",
                {
                    "action": "connected",
                    "session_id": self.session_id,
                    "client_id": self.client_id,
                    "version": self.version,
                },
            )
        )

    async def close(self) -> None:
        """The socket is gone (or about to be): cancel running and waiting chats, wait for their tasks."""
        self._lifecycle.move(ConnectionState.CLOSED)
        await self._chats.close()

    # -- input --------------------------------------------------------------------------------------

    async def receive_text(self, raw: str) -> None:
        """Handle one client text frame. Answers through ``send``; never raises for client input."""
        if not self._lifecycle.open:
            return
        request_id: str | None = None
        try:
            if not await self._admit():
                request_id = peek_request_id(raw, self._max_frame_bytes)
                raise self._rate_limited()
            frame = parse_frame(raw, self._max_frame_bytes)
            request_id = peek_request_id(frame, self._max_frame_bytes)
            kind, data = frame["type"], frame["data"]
            if kind == "chat":
                await self._on_chat(data)
            elif kind == "command":
                await self._on_command(data)
            else:
                await self._on_control(data)
        except OrchestraError as e:
            await self._send_error(e.to_dict(), request_id)
        except Exception:
            log.exception("websocket frame handling failed (client %s)", self.client_id)
            await self._send_error(InternalError("the frame could not be handled").to_dict(), request_id)

    async def receive_bytes(self, raw: bytes) -> None:
        """Binary frames are not part of the protocol: answer with an error frame, stay open."""
        if not self._lifecycle.open:
            return
        try:
            if not await self._admit():
                raise self._rate_limited()
            if len(raw) > self._max_frame_bytes:
                raise too_large(len(raw), self._max_frame_bytes)
            raise invalid_field("<frame>", "binary frames are not supported; send JSON text frames")
        except OrchestraError as e:
            await self._send_error(e.to_dict(), None)

    # -- rate limit ---------------------------------------------------------------------------------

    async def _admit(self) -> bool:
        if self._limiter is None:
            return True
        try:
            decision = await self._limiter.acquire(self._rate_key)
        except Exception:
            # A limiter outage must not take chats down with it: fail open, loudly.
            log.exception("websocket rate limiter failed; admitting the message")
            return True
        self._last_decision = decision
        return decision.allowed

    def _rate_limited(self) -> RateLimitError:
        assert self._last_decision is not None
        return rate_limit_error(
            self._last_decision, "too many messages on this connection; this one was dropped"
        )

    # -- chat ---------------------------------------------------------------------------------------

    async def _on_chat(self, data: dict[str, Any]) -> None:
        chat = validate(ChatData, data, "data")
        request_id = chat.request_id or str(uuid.uuid4())
        if request_id in {c.request_id for c in self._chats.chats()}:
            raise invalid_field(
                "data.request_id", "a chat with this request_id is already waiting or running"
            )

        def pick(name: str) -> Any:  # the chat's own field, else the connection default from `set`
            value = getattr(chat, name)
            return self._defaults[name] if value is None else value

        request = build_request(
            {
                "message": chat.message,
                "session_id": self.session_id,
                "optimization_mode": pick("optimization_mode"),
                "swarm_type": pick("swarm_type"),
                "use_memory": pick("use_memory"),
                "user_context": chat.context or {},
                "tenant": self.tenant,
                "run_id": request_id,
            }
        )
        self._chats.submit(request)

    # -- commands -----------------------------------------------------------------------------------

    async def _on_command(self, data: dict[str, Any]) -> None:
        command = validate(CommandData, data, "data")
        result: Any
        if command.command == "cancel":
            args = validate(CancelArgs, command.args, "data.args")
            if args.request_id is not None:
                targets = [c for c in self._chats.chats() if c.request_id == args.request_id]
            elif args.all:
                targets = self._chats.chats()
            else:
                running = self._chats.running
                targets = [running] if running else []
            result = {"cancelled": await self._chats.cancel(targets)}
        elif command.command == "set":
            result = await self._set(validate(SetArgs, command.args, "data.args"))
        elif command.command == "resume":
            await self._resume(validate(ResumeArgs, command.args, "data.args"))
            return
        else:
            validate(NoArgs, command.args, "data.args")
            if command.command == "reset":
                with suppress(NotFoundError):  # nothing to forget yet
                    await self.service.reset_session(self.tenant, self.session_id)
                result = {"reset": True, "session_id": self.session_id}
            elif command.command == "history":
                result = {"session_id": self.session_id, "turns": await self._history()}
            elif command.command == "swarms":
                result = {"teams": await self._teams(), "modes": list(MODES)}
            else:  # end
                self._lifecycle.move(ConnectionState.ENDING)  # no chat may start while we wind down
                try:
                    cancelled = await self._chats.cancel(self._chats.chats())
                    with suppress(NotFoundError):  # a session with no turn yet ends all the same
                        await self.service.end_session(self.tenant, self.session_id)
                except Exception:
                    # The client gets the error frame and may try again (a gone connection stays gone).
                    self._lifecycle.move(ConnectionState.OPEN)
                    raise
                self._lifecycle.move(ConnectionState.ENDED)
                result = {"ended": True, "session_id": self.session_id, "cancelled": cancelled}
        await self._send(self._frames.frame("command", {"command": command.command, "result": result}))

    async def _resume(self, args: ResumeArgs) -> None:
        """Follow a run of this session from its event log: the result, then every event after
        ``last_event_id``, then the live ones and the terminal frame, as for a chat of this connection."""
        rid = args.request_id
        if rid in {c.request_id for c in self._chats.chats()}:
            raise invalid_field(
                "data.args.request_id", "a chat with this request_id is already waiting or running"
            )
        try:
            record = await self.service.run_record(self.tenant, rid)
            if record.session_id != self.session_id:  # another session's run is not this one's to resume
                raise NotFoundError(f"no run {rid!r} in session {self.session_id!r}")
        except NotFoundError as e:
            await self._send_error(e.to_dict(), rid)
            return
        request = build_request(
            {
                "message": "(resumed)",
                "session_id": self.session_id,
                "optimization_mode": record.optimization_mode or self._defaults["optimization_mode"],
                "tenant": self.tenant,
                "run_id": rid,
            }
        )
        result = {"request_id": rid, "last_event_id": args.last_event_id, "status": record.status}
        # The result first: every frame of the run follows it.
        await self._send(self._frames.frame("command", {"command": "resume", "result": result}))
        self._chats.submit(request, follow_after=args.last_event_id)

    async def _set(self, args: SetArgs) -> dict[str, Any]:
        given = args.model_fields_set
        if "swarm_type" in given and args.swarm_type is not None:
            known = sorted(str(t["swarm_type"]) for t in await self._teams())
            if args.swarm_type not in known:
                raise invalid_field("data.args.swarm_type", f"unknown team; must be one of {known}")
        if "optimization_mode" in given and args.optimization_mode is None:
            raise invalid_field("data.args.optimization_mode", "must be one of lite, balanced, quality")
        if "use_memory" in given and args.use_memory is None:
            raise invalid_field("data.args.use_memory", "must be a boolean")
        for name in given:  # swarm_type null = let the router choose again
            self._defaults[name] = getattr(args, name)
        return self.defaults

    async def _history(self) -> list[dict[str, Any]]:
        try:
            session = await self.service.session(self.tenant, self.session_id)
        except NotFoundError:
            return []
        return [turn.model_dump(mode="json") for turn in session.turns]  # as REST returns them

    async def _teams(self) -> list[dict[str, Any]]:
        return [team.model_dump(mode="json") for team in await self.service.teams()]

    # -- control ------------------------------------------------------------------------------------

    async def _on_control(self, data: dict[str, Any]) -> None:
        control = validate(ControlData, data, "data")
        if control.action == "ping":
            await self._send(self._frames.frame("control", {"action": "pong"}))
            return
        status: dict[str, Any] = {
            "action": "status",
            "session_id": self.session_id,
            "client_id": self.client_id,
            "version": self.version,
            "running": self.running,
            "waiting": self.waiting,
            "max_waiting": self._chats.max_waiting,
            "defaults": self.defaults,
        }
        if self._limiter is not None and self._last_decision is not None:
            status["rate_limit"] = {
                "remaining": self._last_decision.remaining,
                "retry_after": round(float(self._last_decision.retry_after_s or 0.0), 3),
            }
        await self._send(self._frames.frame("control", status))

    # -- output -------------------------------------------------------------------------------------

    async def _send_error(self, error: dict[str, Any], request_id: str | None) -> None:
        await self._send(self._frames.error(error, request_id))

    async def _send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False (and the connection stops its work) when the socket is gone."""
        if not self._lifecycle.sending:
            return False
        try:
            async with self._send_lock:  # frames never interleave, whichever task sends them
                await self._send_cb(frame)
        except Exception as e:
            log.debug("websocket send to %s failed: %r", self.client_id, e)
            self._abandon()
            return False
        return True

    def _abandon(self) -> None:
        self._lifecycle.move(ConnectionState.GONE)
        self._chats.drop()
