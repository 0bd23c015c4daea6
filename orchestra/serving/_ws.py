"""The WebSocket protocol of spec §7, free of Ray and of any web framework.

``WsConnection`` is one connection's state machine: it is fed the client's frames (``receive_text`` /
``receive_bytes``) and answers through an async ``send`` callback taking the frame as a dict. The Serve
ingress wraps a real Starlette WebSocket around it (authenticate, ``open()``, loop on receive, close with
``close_code`` when ``should_close``, always ``close()`` in ``finally``); tests drive it directly.

The runtime behind it is a ``ChatBackend``: ``EngineBackend`` runs an in-process ``orchestra.Engine``; the
ingress implements the same protocol over Ray.

Decisions the spec leaves open (also in docs/websocket.md and docs/asyncapi.yaml):

* Every accepted chat ends with exactly one terminal frame: a ``chat`` frame (the answer) or a ``control``
  error frame carrying its ``request_id``.
* ``cancel`` without arguments cancels the running chat; ``{"request_id": id}`` cancels that chat whether
  running or waiting; ``{"all": true}`` cancels the running and every waiting chat. Each cancelled chat ends
  with an error frame with code ``CANCELLED`` (the engine's own cancellation code), sent *before* the
  ``command`` result ``{"cancelled": [ids]}``. An unknown id is not an error: it is just not in the list.
* ``turn_end`` stream frames also carry ``step``: the turn's ``processing_steps`` entry.
* Oversized frames get a ``PAYLOAD_TOO_LARGE`` error frame and the connection stays open.
* ``receive_text`` is meant to be awaited by one receive loop, frame after frame; a ``cancel`` or ``end``
  answers only once the cancelled chats have ended (bounded by ``cancel_grace_s``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import IDENTIFIER_RE, MODES, Mode
from orchestra.engine import ChatService, events
from orchestra.engine._messages import (
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    TokenEvent,
    TurnEnd,
    TurnStart,
)
from orchestra.errors import (
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    RateLimitError,
    RunCancelledError,
    ServiceUnavailableError,
    ValidationError,
    invalid,
    pydantic_errors,
)
from orchestra.serving._contract import rate_limit_error, utc_timestamp
from orchestra.stores import RateLimitDecision, RateLimiter

__all__ = [
    "BEARER_SUBPROTOCOL_PREFIX",
    "CLOSE_AUTH_FAILED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_PATH",
    "CLOSE_NORMAL",
    "CLOSE_RATE_LIMITED",
    "CLOSE_TOO_BIG",
    "MAX_FRAME_BYTES",
    "MAX_WAITING",
    "REQUEST_ID_RE",
    "SUBPROTOCOL",
    "WsConnection",
    "agent_event_data",
    "handshake_credentials",
]

log = logging.getLogger("orchestra.ws")

# -- constants for the ingress ---------------------------------------------------------------------

CLOSE_NORMAL = 1000
"""After the ``end`` command (the session is over)."""
CLOSE_GOING_AWAY = 1001
"""The server stopped the connection because sending to the client failed."""
CLOSE_INVALID_PATH = 1008
"""``session_id`` in the URL is not 1-128 of ``[A-Za-z0-9._:-]`` or ``client_id`` not 1-128 characters."""
CLOSE_TOO_BIG = 1009
"""Only for frames the transport itself refuses; a frame over ``MAX_FRAME_BYTES`` gets an error frame."""
CLOSE_AUTH_FAILED = 4401
CLOSE_RATE_LIMITED = 4429

SUBPROTOCOL = "orchestra.v2"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
MAX_FRAME_BYTES = 64 * 1024
MAX_WAITING = 4
REQUEST_ID_RE = IDENTIFIER_RE
"""Client-chosen request ids: 1-128 of ``[A-Za-z0-9._:-]`` (a UUID fits)."""

_CLIENT_TYPES = ("chat", "command", "control")
_FRAME_KEYS = frozenset({"type", "data", "timestamp"})
_MAX_FIELD_CHARS = 100  # client-chosen key names are echoed in error details; keep them short


def handshake_credentials(
    authorization: str | None, subprotocols: Sequence[str]
) -> tuple[str | None, str | None]:
    """``(api_key, subprotocol_to_select)`` from the upgrade request.

    The ``Authorization: Bearer <key>`` header wins; browsers, which cannot set headers on a WebSocket,
    send the subprotocol list ``["orchestra.v2", "bearer.<key>"]`` instead. The server must select
    ``orchestra.v2`` when offered (never echo the bearer entry back).
    """
    selected = SUBPROTOCOL if SUBPROTOCOL in subprotocols else None
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip(), selected
        return None, selected
    for entry in subprotocols:
        if entry.startswith(BEARER_SUBPROTOCOL_PREFIX) and len(entry) > len(BEARER_SUBPROTOCOL_PREFIX):
            return entry[len(BEARER_SUBPROTOCOL_PREFIX) :], selected
    return None, selected


def agent_event_data(event: TurnStart | TokenEvent | TurnEnd) -> dict[str, Any]:
    """One agent's event as on the wire: ``{event, agent, role, round}`` plus ``token`` (token) or
    ``step`` (turn_end). The ``stream`` frame's data (with its ``request_id``) and the OpenAI-compatible
    stream's ``orchestra`` field (``orchestra.serving._openai``) are both this."""
    data: dict[str, Any] = {
        "event": event.event,
        "agent": event.agent,
        "role": event.role,
        "round": event.round,
    }
    if isinstance(event, TokenEvent):
        data["token"] = event.token
    elif isinstance(event, TurnEnd):
        data["step"] = event.step.model_dump(mode="json")
    return data


# -- client frame payloads -------------------------------------------------------------------------


class _Payload(BaseModel):
    # strict: "true" is not a boolean and 1 is not a message.
    model_config = ConfigDict(extra="forbid", strict=True)


class _ChatData(_Payload):
    message: str
    context: dict[str, Any] | None = None
    optimization_mode: Mode | None = None
    swarm_type: str | None = Field(default=None, min_length=1, max_length=128)
    use_memory: bool | None = None
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_RE.pattern)


class _CommandData(_Payload):
    command: Literal["cancel", "reset", "history", "swarms", "set", "end"]
    args: dict[str, Any] = Field(default_factory=dict)


class _ControlData(_Payload):
    action: Literal["ping", "status"]


class _NoArgs(_Payload):
    pass


class _CancelArgs(_Payload):
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_RE.pattern)
    all: bool = False


class _SetArgs(_Payload):
    optimization_mode: Mode | None = None
    swarm_type: str | None = Field(default=None, min_length=1, max_length=128)
    use_memory: bool | None = None


_P = TypeVar("_P", bound=_Payload)


def _field(parts: Sequence[object]) -> str:
    return ".".join(str(p)[:_MAX_FIELD_CHARS] for p in parts)


def _invalid(field: str, reason: str) -> OrchestraError:
    return invalid([{"field": field, "reason": reason}], what="invalid frame")


def _validate(model: type[_P], value: Any, prefix: str) -> _P:
    """Validate a payload; errors name the dotted path from the frame (``data.args.use_memory``)."""
    try:
        return model.model_validate(value)
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e, prefix=prefix.split(".")), what="invalid frame") from None


# RunRequest field → the name the client used in its chat frame.
_CHAT_FIELDS = {"message": "data.message", "user_context": "data.context", "run_id": "data.request_id"}


def _build_request(fields: dict[str, Any]) -> RunRequest:
    try:
        return RunRequest.model_validate(fields)
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e, rename=_CHAT_FIELDS), what="invalid frame") from None


def _has_lone_surrogate(value: Any) -> bool:
    # ``"\ud800"`` escapes decode to strings that can never be sent on as UTF-8 (to agents, back to us).
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_timestamp(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise _invalid("timestamp", "must be an ISO-8601 string")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _invalid("timestamp", "must be an ISO-8601 string") from None


# -- one connection --------------------------------------------------------------------------------


@dataclass(eq=False)
class _Chat:
    request: RunRequest
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    started: bool = False  # its task began (a task cancelled before that never runs its body)
    finished: bool = False  # its outcome is decided (the terminal event arrived or was synthesised)
    outcome: Literal["completed", "failed", "cancelled"] | None = None

    @property
    def request_id(self) -> str:
        return self.request.run_id


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
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
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
        self.closed_reason: str | None = None
        self.close_code: int | None = None
        self._send_cb = send
        self._limiter = limiter
        self._rate_key = rate_key or f"ws:{tenant}:{client_id}:{uuid.uuid4().hex}"
        self._max_waiting = max_waiting
        self._max_frame_bytes = max_frame_bytes
        self._cancel_grace_s = cancel_grace_s
        self._now = now
        self._defaults: dict[str, Any] = {
            "optimization_mode": "balanced",
            "swarm_type": None,
            "use_memory": False,
        }
        self._running: _Chat | None = None
        self._waiting: deque[_Chat] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._send_lock = asyncio.Lock()
        self._stopped = False  # no new chats start (ended, closed or socket gone)
        self._gone = False  # sending failed: nothing more is sent
        self._last_decision: RateLimitDecision | None = None

    # -- state --------------------------------------------------------------------------------------

    @property
    def should_close(self) -> bool:
        """The ingress should close the socket now, with ``close_code``."""
        return self.close_code is not None

    @property
    def running(self) -> str | None:
        return self._running.request_id if self._running else None

    @property
    def waiting(self) -> list[str]:
        return [c.request_id for c in self._waiting]

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self._defaults)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Send the ``connected`` frame; call right after accepting the socket."""
        await self._send(
            self._frame(
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
        self.closed_reason = self.closed_reason or "closed"
        self._stopped = True
        self._waiting.clear()
        for task in list(self._tasks):
            task.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending)

    # -- input --------------------------------------------------------------------------------------

    async def receive_text(self, raw: str) -> None:
        """Handle one client text frame. Answers through ``send``; never raises for client input."""
        if self._stopped:
            return
        request_id: str | None = None
        try:
            if not await self._admit():
                request_id = self._peek_request_id(raw)
                raise self._rate_limited()
            frame = self._parse(raw)
            request_id = self._peek_request_id(frame)
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
        if self._stopped:
            return
        try:
            if not await self._admit():
                raise self._rate_limited()
            if len(raw) > self._max_frame_bytes:
                raise self._too_large(len(raw))
            raise _invalid("<frame>", "binary frames are not supported; send JSON text frames")
        except OrchestraError as e:
            await self._send_error(e.to_dict(), None)

    # -- parsing ------------------------------------------------------------------------------------

    def _too_large(self, size: int) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"frame is {size} bytes; at most {self._max_frame_bytes} allowed",
            details={"field": "<frame>", "max_bytes": self._max_frame_bytes, "bytes": size},
        )

    def _parse(self, raw: str) -> dict[str, Any]:
        size = len(raw.encode("utf-8", "surrogatepass"))  # the limit is on bytes, not characters
        if size > self._max_frame_bytes:
            raise self._too_large(size)
        try:
            frame = json.loads(raw)
        except ValueError as e:
            raise _invalid("<frame>", f"not valid JSON: {getattr(e, 'msg', 'parse error')}") from None
        except RecursionError:
            raise _invalid("<frame>", "JSON nested too deeply") from None
        if not isinstance(frame, dict):
            raise _invalid("<frame>", "must be a JSON object {type, data, timestamp}")
        try:
            bad_text = _has_lone_surrogate(frame)
        except RecursionError:
            raise _invalid("<frame>", "JSON nested too deeply") from None
        if bad_text:
            raise _invalid("<frame>", "contains a lone UTF-16 surrogate (invalid Unicode)")
        extra = sorted(str(k) for k in frame if k not in _FRAME_KEYS)
        if extra:
            raise _invalid(_field([extra[0]]), "unknown field; a frame has only type, data, timestamp")
        kind = frame.get("type")
        if kind is None:
            raise _invalid("type", "field required")
        if kind == "stream":
            raise _invalid("type", "stream frames are sent by the server only")
        if kind not in _CLIENT_TYPES:
            raise _invalid("type", "must be one of chat, command, control")
        _parse_timestamp(frame.get("timestamp"))
        if "data" not in frame:
            raise _invalid("data", "field required")
        if not isinstance(frame["data"], dict):
            raise _invalid("data", "must be a JSON object")
        return frame

    def _peek_request_id(self, frame: dict[str, Any] | str) -> str | None:
        """The chat's request id when it is readable, so even a rejected chat's error can be matched."""
        if isinstance(frame, str):
            if len(frame) > self._max_frame_bytes:
                return None
            try:
                frame = json.loads(frame)
            except (ValueError, RecursionError):
                return None
        if (
            not isinstance(frame, dict)
            or frame.get("type") != "chat"
            or not isinstance(frame.get("data"), dict)
        ):
            return None
        rid = frame["data"].get("request_id")
        return rid if isinstance(rid, str) and REQUEST_ID_RE.fullmatch(rid) else None

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
        chat = _validate(_ChatData, data, "data")
        request_id = chat.request_id or str(uuid.uuid4())
        if request_id in {c.request_id for c in self._chats()}:
            raise _invalid("data.request_id", "a chat with this request_id is already waiting or running")

        def pick(name: str) -> Any:  # the chat's own field, else the connection default from `set`
            value = getattr(chat, name)
            return self._defaults[name] if value is None else value

        request = _build_request(
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
        if self._running is not None and len(self._waiting) >= self._max_waiting:
            raise ServiceUnavailableError(
                f"a chat is running and {len(self._waiting)} are waiting on this connection; "
                f"at most {self._max_waiting} may wait",
                details={"max_waiting": self._max_waiting, "running": self.running, "waiting": self.waiting},
            )
        self._waiting.append(_Chat(request))
        self._start_next()

    def _chats(self) -> list[_Chat]:
        return ([self._running] if self._running else []) + list(self._waiting)

    def _start_next(self) -> None:
        if self._running is not None or self._stopped or not self._waiting:
            return
        chat = self._waiting.popleft()
        self._running = chat
        task = asyncio.create_task(self._run_chat(chat), name=f"ws-chat-{chat.request_id}")
        chat.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_chat(self, chat: _Chat) -> None:
        chat.started = True
        stream: AsyncIterator[RunEvent] | None = None
        try:
            try:
                if chat.cancel_requested:  # cancelled before its task first ran
                    raise asyncio.CancelledError
                stream = events(self.service.stream(chat.request))
                async for event in stream:
                    frame = self._event_frame(chat, event)
                    if frame is None:
                        continue
                    if not await self._send(frame) or chat.finished:
                        return
                raise InternalError("the run ended without a result", details={"request_id": chat.request_id})
            except asyncio.CancelledError:
                if not chat.cancel_requested or chat.finished or self._gone:
                    raise
                # The client's cancel stopped us before the backend reported it: report it as it would.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    current.uncancel()
                chat.finished, chat.outcome = True, "cancelled"
                cancelled = RunCancelledError(f"run {chat.request_id} was cancelled")
                await self._send_error(cancelled.to_dict(), chat.request_id)
            except OrchestraError as e:
                chat.finished, chat.outcome = True, "failed"
                await self._send_error(e.to_dict(), chat.request_id)
            except Exception:
                log.exception("websocket chat %s failed", chat.request_id)
                chat.finished, chat.outcome = True, "failed"
                error = InternalError("the chat failed unexpectedly", details={"request_id": chat.request_id})
                await self._send_error(error.to_dict(), chat.request_id)
        finally:
            if stream is not None:
                await self._stop_stream(chat, stream)
            if self._running is chat:
                self._running = None
            self._start_next()

    def _event_frame(self, chat: _Chat, event: RunEvent) -> dict[str, Any] | None:
        if event.run_id != chat.request_id:
            return None
        if isinstance(event, RunCompleted):
            chat.finished, chat.outcome = True, "completed"
            return self._frame(
                "chat", {**event.result.model_dump(mode="json"), "request_id": chat.request_id}
            )
        if isinstance(event, RunFailed):
            chat.finished = True
            chat.outcome = "cancelled" if event.error.get("code") == RunCancelledError.code else "failed"
            return self._error_frame(event.error, chat.request_id)
        return self._frame("stream", {"request_id": chat.request_id, **agent_event_data(event)})

    async def _stop_stream(self, chat: _Chat, stream: AsyncIterator[RunEvent]) -> None:
        """Release the stream; when we stop before the run did, make sure the run stops too."""
        try:
            async with asyncio.timeout(self._cancel_grace_s):
                if not chat.finished:
                    with suppress(Exception):
                        await self.service.cancel(self.tenant, chat.request_id)
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with suppress(Exception):
                        await aclose()
        except TimeoutError:
            log.warning("stopping websocket chat %s took over %s s", chat.request_id, self._cancel_grace_s)

    async def _cancel(self, targets: list[_Chat]) -> list[str]:
        """Cancel these chats; each ends with a CANCELLED error frame. Returns the ids really cancelled."""
        cancelled: list[str] = []
        dropped = [c for c in self._waiting if c in targets]
        # Take them off the queue before any await, so none of them starts meanwhile.
        self._waiting = deque(c for c in self._waiting if c not in dropped)
        for chat in dropped:
            chat.cancel_requested, chat.finished, chat.outcome = True, True, "cancelled"
            error = RunCancelledError(f"run {chat.request_id} was cancelled before it started")
            await self._send_error(error.to_dict(), chat.request_id)
            cancelled.append(chat.request_id)
        running = self._running
        if running is not None and running in targets and running.task is not None:
            task = running.task
            running.cancel_requested = True
            if not running.finished:
                try:
                    stopped = await self.service.cancel(self.tenant, running.request_id)
                except Exception:
                    log.warning("backend cancel of %s failed", running.request_id, exc_info=True)
                    stopped = False
                if not stopped and not running.finished and running.started:
                    # Not (yet) known to the backend: stop consuming, which stops the run. A task that
                    # has not started sees cancel_requested when it does.
                    task.cancel()
            done, _ = await asyncio.wait({task}, timeout=self._cancel_grace_s)
            if not done:
                task.cancel()
                await asyncio.wait({task})
            if running.outcome == "cancelled":
                cancelled.append(running.request_id)
        return cancelled

    # -- commands -----------------------------------------------------------------------------------

    async def _on_command(self, data: dict[str, Any]) -> None:
        command = _validate(_CommandData, data, "data")
        result: Any
        if command.command == "cancel":
            args = _validate(_CancelArgs, command.args, "data.args")
            if args.request_id is not None:
                targets = [c for c in self._chats() if c.request_id == args.request_id]
            elif args.all:
                targets = self._chats()
            else:
                targets = [self._running] if self._running else []
            result = {"cancelled": await self._cancel(targets)}
        elif command.command == "set":
            result = await self._set(_validate(_SetArgs, command.args, "data.args"))
        else:
            _validate(_NoArgs, command.args, "data.args")
            if command.command == "reset":
                with suppress(NotFoundError):  # nothing to forget yet
                    await self.service.reset_session(self.tenant, self.session_id)
                result = {"reset": True, "session_id": self.session_id}
            elif command.command == "history":
                result = {"session_id": self.session_id, "turns": await self._history()}
            elif command.command == "swarms":
                result = {"teams": await self._teams(), "modes": list(MODES)}
            else:  # end
                self._stopped = True  # no chat may start while we wind down
                try:
                    cancelled = await self._cancel(self._chats())
                    with suppress(NotFoundError):  # a session with no turn yet ends all the same
                        await self.service.end_session(self.tenant, self.session_id)
                except Exception:
                    self._stopped = False  # the client gets the error frame and may try again
                    raise
                self.closed_reason, self.close_code = "session ended", CLOSE_NORMAL
                result = {"ended": True, "session_id": self.session_id, "cancelled": cancelled}
        await self._send(self._frame("command", {"command": command.command, "result": result}))

    async def _set(self, args: _SetArgs) -> dict[str, Any]:
        given = args.model_fields_set
        if "swarm_type" in given and args.swarm_type is not None:
            known = sorted(str(t["swarm_type"]) for t in await self._teams())
            if args.swarm_type not in known:
                raise _invalid("data.args.swarm_type", f"unknown team; must be one of {known}")
        if "optimization_mode" in given and args.optimization_mode is None:
            raise _invalid("data.args.optimization_mode", "must be one of lite, balanced, quality")
        if "use_memory" in given and args.use_memory is None:
            raise _invalid("data.args.use_memory", "must be a boolean")
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
        control = _validate(_ControlData, data, "data")
        if control.action == "ping":
            await self._send(self._frame("control", {"action": "pong"}))
            return
        status: dict[str, Any] = {
            "action": "status",
            "session_id": self.session_id,
            "client_id": self.client_id,
            "version": self.version,
            "running": self.running,
            "waiting": self.waiting,
            "max_waiting": self._max_waiting,
            "defaults": self.defaults,
        }
        if self._limiter is not None and self._last_decision is not None:
            status["rate_limit"] = {
                "remaining": self._last_decision.remaining,
                "retry_after": round(float(self._last_decision.retry_after_s or 0.0), 3),
            }
        await self._send(self._frame("control", status))

    # -- output -------------------------------------------------------------------------------------

    def _frame(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"type": kind, "data": data, "timestamp": utc_timestamp(self._now())}

    def _error_frame(self, error: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {"action": "error"}
        if request_id is not None:
            data["request_id"] = request_id
        data["error"] = {
            "code": error.get("code", InternalError.code),
            "message": error.get("message", ""),
            "details": error.get("details") or {},
        }
        return self._frame("control", data)

    async def _send_error(self, error: dict[str, Any], request_id: str | None) -> None:
        await self._send(self._error_frame(error, request_id))

    async def _send(self, frame: dict[str, Any]) -> bool:
        """Send one frame; False (and the connection stops its work) when the socket is gone."""
        if self._gone:
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
        self._gone = self._stopped = True
        self.closed_reason = self.closed_reason or "send failed"
        self.close_code = self.close_code or CLOSE_GOING_AWAY
        self._waiting.clear()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # the sending chat task stops on its own when _send returns False
                task.cancel()
