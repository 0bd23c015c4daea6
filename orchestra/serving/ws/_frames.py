"""What travels on the socket (spec §7): the protocol's constants, the handshake credentials, the client
frames (parsed and validated here, into the payload models below) and the server frames (built here)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import IDENTIFIER_RE, Mode
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
    OrchestraError,
    PayloadTooLargeError,
    invalid,
    pydantic_errors,
)
from orchestra.serving import _json as strict_json
from orchestra.serving._contract import utc_timestamp

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
    "CancelArgs",
    "ChatData",
    "CommandData",
    "ControlData",
    "Frame",
    "NoArgs",
    "ResumeArgs",
    "ServerFrames",
    "SetArgs",
    "agent_event_data",
    "build_request",
    "handshake_credentials",
    "invalid_field",
    "parse_frame",
    "peek_request_id",
    "too_large",
    "validate",
]

Frame = dict[str, Any]
"""One frame as a JSON object: ``{"type", "data", "timestamp"}``."""

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


# -- client frame payloads -------------------------------------------------------------------------


class _Payload(BaseModel):
    # strict: "true" is not a boolean and 1 is not a message.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatData(_Payload):
    message: str
    context: dict[str, Any] | None = None
    optimization_mode: Mode | None = None
    swarm_type: str | None = Field(default=None, min_length=1, max_length=128)
    use_memory: bool | None = None
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_RE.pattern)


class CommandData(_Payload):
    command: Literal["cancel", "reset", "history", "swarms", "set", "end", "resume"]
    args: dict[str, Any] = Field(default_factory=dict)


class ControlData(_Payload):
    action: Literal["ping", "status"]


class NoArgs(_Payload):
    pass


class CancelArgs(_Payload):
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_RE.pattern)
    all: bool = False


class ResumeArgs(_Payload):
    request_id: str = Field(pattern=REQUEST_ID_RE.pattern)
    last_event_id: int = Field(default=0, ge=0)


class SetArgs(_Payload):
    optimization_mode: Mode | None = None
    swarm_type: str | None = Field(default=None, min_length=1, max_length=128)
    use_memory: bool | None = None


_P = TypeVar("_P", bound=_Payload)


def _field(parts: Sequence[object]) -> str:
    return ".".join(str(p)[:_MAX_FIELD_CHARS] for p in parts)


def invalid_field(field: str, reason: str) -> OrchestraError:
    """The ``VALIDATION_ERROR`` for one bad part of a client frame."""
    return invalid([{"field": field, "reason": reason}], what="invalid frame")


def validate(model: type[_P], value: Any, prefix: str) -> _P:
    """Validate a payload; errors name the dotted path from the frame (``data.args.use_memory``)."""
    try:
        return model.model_validate(value)
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e, prefix=prefix.split(".")), what="invalid frame") from None


# RunRequest field → the name the client used in its chat frame.
_CHAT_FIELDS = {"message": "data.message", "user_context": "data.context", "run_id": "data.request_id"}


def build_request(fields: dict[str, Any]) -> RunRequest:
    """The ``RunRequest`` of a chat frame; errors name the chat frame's fields."""
    try:
        return RunRequest.model_validate(fields)
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e, rename=_CHAT_FIELDS), what="invalid frame") from None


# -- parsing a client frame ------------------------------------------------------------------------


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
        raise invalid_field("timestamp", "must be an ISO-8601 string")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise invalid_field("timestamp", "must be an ISO-8601 string") from None


def too_large(size: int, max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"frame is {size} bytes; at most {max_bytes} allowed",
        details={"field": "<frame>", "max_bytes": max_bytes, "bytes": size},
    )


def parse_frame(raw: str, max_bytes: int) -> Frame:
    """The client's text frame as ``{type, data[, timestamp]}`` with a client ``type`` and an object
    ``data``; anything else raises the ``OrchestraError`` to answer with."""
    size = len(raw.encode("utf-8", "surrogatepass"))  # the limit is on bytes, not characters
    if size > max_bytes:
        raise too_large(size, max_bytes)
    try:
        frame = strict_json.loads(raw)
    except strict_json.InvalidJson as e:
        raise invalid_field("<frame>", f"not valid JSON: {e.reason}") from None
    if not isinstance(frame, dict):
        raise invalid_field("<frame>", "must be a JSON object {type, data, timestamp}")
    try:
        bad_text = _has_lone_surrogate(frame)
    except RecursionError:
        raise invalid_field("<frame>", "JSON nested too deeply") from None
    if bad_text:
        raise invalid_field("<frame>", "contains a lone UTF-16 surrogate (invalid Unicode)")
    extra = sorted(str(k) for k in frame if k not in _FRAME_KEYS)
    if extra:
        raise invalid_field(_field([extra[0]]), "unknown field; a frame has only type, data, timestamp")
    kind = frame.get("type")
    if kind is None:
        raise invalid_field("type", "field required")
    if kind == "stream":
        raise invalid_field("type", "stream frames are sent by the server only")
    if kind not in _CLIENT_TYPES:
        raise invalid_field("type", "must be one of chat, command, control")
    _parse_timestamp(frame.get("timestamp"))
    if "data" not in frame:
        raise invalid_field("data", "field required")
    if not isinstance(frame["data"], dict):
        raise invalid_field("data", "must be a JSON object")
    return frame


def peek_request_id(frame: Frame | str, max_bytes: int) -> str | None:
    """The chat's request id when it is readable, so even a rejected chat's error can be matched."""
    if isinstance(frame, str):
        if len(frame) > max_bytes:
            return None
        try:
            frame = strict_json.loads(frame)
        except strict_json.InvalidJson:
            return None
    if not isinstance(frame, dict) or frame.get("type") != "chat" or not isinstance(frame.get("data"), dict):
        return None
    rid = frame["data"].get("request_id")
    return rid if isinstance(rid, str) and REQUEST_ID_RE.fullmatch(rid) else None


# -- server frames ---------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ServerFrames:
    """Builds the frames the server sends, each stamped with ``now()`` (the connection's clock)."""

    now: Callable[[], datetime]

    def frame(self, kind: str, data: dict[str, Any]) -> Frame:
        return {"type": kind, "data": data, "timestamp": utc_timestamp(self.now())}

    def error(self, error: dict[str, Any], request_id: str | None) -> Frame:
        """The ``control`` error frame for an ``OrchestraError.to_dict()`` (or a ``RunFailed.error``)."""
        data: dict[str, Any] = {"action": "error"}
        if request_id is not None:
            data["request_id"] = request_id
        data["error"] = {
            "code": error.get("code", InternalError.code),
            "message": error.get("message", ""),
            "details": error.get("details") or {},
        }
        return self.frame("control", data)

    def event(self, event: RunEvent) -> Frame:
        """A chat's event as the client sees it: the ``chat`` answer, its error frame, or a ``stream``
        frame (``turn_end`` also carries ``step``: the turn's ``processing_steps`` entry); each with its
        ``event_id`` once the run logged it."""
        frame: Frame
        if isinstance(event, RunCompleted):
            frame = self.frame("chat", {**event.result.model_dump(mode="json"), "request_id": event.run_id})
        elif isinstance(event, RunFailed):
            frame = self.error(event.error, event.run_id)
        else:
            frame = self.frame("stream", {"request_id": event.run_id, **agent_event_data(event)})
        if event.event_id:  # its id in the run's event log: what a `resume` continues after
            frame["data"]["event_id"] = event.event_id
        return frame
