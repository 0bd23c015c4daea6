"""Typed answers of the API (spec §5, §7, §8), as immutable pydantic models.

Unknown fields a newer server adds are kept (``extra="allow"``) rather than rejected, so an older SDK keeps
working; the documented ones are typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeAlias, TypedDict

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMetadata",
    "ChatOptions",
    "ChatResponse",
    "ChatV1Response",
    "CompletedEvent",
    "EndedSession",
    "Health",
    "HealthComponents",
    "OptimizationMode",
    "ProcessingStep",
    "Readiness",
    "ReadinessChecks",
    "Session",
    "SessionTurn",
    "StreamEvent",
    "StreamOptions",
    "TokenEvent",
    "TurnEndEvent",
    "TurnStartEvent",
]

OptimizationMode: TypeAlias = Literal["lite", "balanced", "quality"]
"""``lite`` (smallest team, fast tier), ``balanced`` (the default), ``quality`` (full team and a judge)."""


class ChatOptions(TypedDict, total=False):
    """The optional arguments of ``chat`` (spec §5); ``None`` for any of them means "not given".

    - ``session_id``: continue this session (1-128 of ``[A-Za-z0-9._:-]``); absent, the server makes one.
    - ``optimization_mode``: ``lite``, ``balanced`` (server default) or ``quality``.
    - ``swarm_type``: the team (``coding-team``, ``research-team``, ``creative-team``, ``coding-debate``...);
      when absent the server's router picks one and says which in ``execution_mode``.
    - ``use_memory``: also recall and store this key's long-term memory.
    - ``user_context``: a JSON object (at most 16 KiB) given to every agent.
    """

    session_id: str | None
    optimization_mode: OptimizationMode | None
    swarm_type: str | None
    use_memory: bool | None
    user_context: Mapping[str, Any] | None


class StreamOptions(ChatOptions, total=False):
    """The optional arguments of ``stream_chat`` / ``stream_events``: ``ChatOptions`` plus ``request_id``.

    - ``session_id``: the WebSocket is per session; when absent the SDK makes one (``sdk-<hex>``), which the
      final result carries.
    - ``request_id``: tags every frame of the run (1-128 of ``[A-Za-z0-9._:-]``); a UUID4 when absent.
    """

    request_id: str | None


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class ProcessingStep(_Model):
    """One agent turn of a run: who, which round, which model, tokens and latency."""

    agent: str
    role: str
    round: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class ChatMetadata(_Model):
    """``metadata`` of a chat answer; ``tokens_used`` is the sum over ``processing_steps``."""

    tokens_used: int
    model: str
    swarm_type: str
    optimization_mode: str
    processing_steps: list[ProcessingStep]


class ChatResponse(_Model):
    """A v2 chat answer (spec §5 ``data``) plus the ``request_id`` the server ran it under."""

    response: str
    session_id: str
    execution_mode: str
    quality_score: float
    execution_time: float
    metadata: ChatMetadata
    request_id: str


class ChatV1Response(_Model):
    """A v1 (deprecated) chat answer: the text and the session; ``sunset`` is the server's Sunset date."""

    response: str
    session_id: str = Field(alias="sessionId")
    request_id: str
    sunset: str | None = None


class SessionTurn(_Model):
    """One finished turn of a session."""

    run_id: str
    message: str
    response: str
    swarm_type: str
    optimization_mode: str
    created_at: float


class Session(_Model):
    """A session of the caller's key with its turns (``created_at``/``last_active``: Unix seconds)."""

    session_id: str
    swarm_type: str | None = None
    created_at: float
    last_active: float
    turns: list[SessionTurn]
    request_id: str


class EndedSession(_Model):
    """The answer to ending a session: ``turns`` is how many it had."""

    session_id: str
    ended: bool
    turns: int
    request_id: str


class HealthComponents(_Model):
    """Each component's state: ``healthy``, ``degraded`` or ``unhealthy``."""

    orchestra_manager: str
    command_dispatcher: str
    memory_system: str
    swarm_intelligence: str


class Health(_Model):
    """``GET /health``: overall ``status``, server ``version``, ``uptime`` seconds and the components."""

    status: str
    version: str
    uptime: int
    components: HealthComponents


class ReadinessChecks(_Model):
    """What readiness checked."""

    database: bool
    cache: bool
    external_services: bool


class Readiness(_Model):
    """``GET /readiness``: whether the server accepts requests, and why not."""

    ready: bool
    checks: ReadinessChecks


class _AgentEvent(_Model):
    request_id: str
    agent: str
    role: str
    round: int


class TurnStartEvent(_AgentEvent):
    """An agent began its turn of ``round``."""

    event: Literal["turn_start"] = "turn_start"


class TokenEvent(_AgentEvent):
    """Text an agent produced; the tokens of one ``(agent, round)`` joined are that turn's text."""

    event: Literal["token"] = "token"
    token: str


class TurnEndEvent(_AgentEvent):
    """An agent finished its turn; ``step`` is its entry of ``metadata.processing_steps``."""

    event: Literal["turn_end"] = "turn_end"
    step: ProcessingStep | None = None


class CompletedEvent(_Model):
    """The last event of a streamed chat: the answer."""

    event: Literal["completed"] = "completed"
    request_id: str
    result: ChatResponse


StreamEvent: TypeAlias = TurnStartEvent | TokenEvent | TurnEndEvent | CompletedEvent
"""What ``stream_events`` yields: agents' turn starts, tokens and turn ends, then one ``CompletedEvent``."""
