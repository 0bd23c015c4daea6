"""Typed messages: what agents exchange, what a run returns (spec §5) and streams (spec §7)."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from orchestra._types import IDENTIFIER_RE, FrozenModel, Mode

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MAX_USER_CONTEXT_BYTES",
    "ChatMetadata",
    "ChatResult",
    "Contribution",
    "HistoryTurn",
    "ProcessingStep",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequest",
    "SessionId",
    "TeamInfo",
    "TokenEvent",
    "Transcript",
    "TranscriptEntry",
    "TurnEnd",
    "TurnRequest",
    "TurnResult",
    "TurnStart",
    "UserContext",
]

MAX_MESSAGE_CHARS = 32_000
MAX_USER_CONTEXT_BYTES = 16 * 1024
SessionId = Annotated[str, Field(pattern=IDENTIFIER_RE.pattern)]


def _check_user_context(value: dict[str, Any]) -> dict[str, Any]:
    try:
        size = len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        raise ValueError("must be JSON-serialisable") from None
    if size > MAX_USER_CONTEXT_BYTES:
        raise ValueError(f"is {size} bytes as compact JSON; at most {MAX_USER_CONTEXT_BYTES} allowed")
    return value


UserContext = Annotated[dict[str, Any], AfterValidator(_check_user_context)]
"""``user_context``: any JSON object of at most ``MAX_USER_CONTEXT_BYTES`` as compact JSON."""


# -- requests --------------------------------------------------------------------------------------


class RunRequest(FrozenModel):
    """One chat turn for a swarm: the spec §5 request plus who asks (tenant) and a run id."""

    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS, description="The user's message.")
    session_id: SessionId | None = Field(
        default=None, description="Session to continue; a new one is created when absent."
    )
    optimization_mode: Mode = Field(default="balanced")
    swarm_type: str | None = Field(default=None, description="Team to run; the router chooses when absent.")
    use_memory: bool = Field(default=False, description="Recall and store long-term memory (serving layer).")
    user_context: UserContext = Field(default_factory=dict, description="Given to every agent.")
    tenant: str = Field(default="local", min_length=1, max_length=128, description="Owner of the session.")
    run_id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1, max_length=128)


class HistoryTurn(FrozenModel):
    """A prior turn of the same session, given to agents as context."""

    user: str
    assistant: str


class Contribution(FrozenModel):
    """What one agent said, as its teammates see it."""

    agent: str
    role: str
    round: int
    text: str


class TurnRequest(FrozenModel):
    """Coordinator → agent: take one turn."""

    run_id: str
    team: str
    agent: str = Field(description="Agent instance name within the team (e.g. coder-2).")
    role: str
    round: int = Field(ge=1)
    task: str
    instruction: str
    inputs: tuple[Contribution, ...] = ()
    history: tuple[HistoryTurn, ...] = ()
    user_context: dict[str, Any] = Field(default_factory=dict)
    memories: tuple[HistoryTurn, ...] = Field(default=(), description="Recalled turns of earlier sessions.")
    model: str
    stream: bool = False


class ProcessingStep(FrozenModel):
    """One agent turn as reported in ``metadata.processing_steps`` (spec §5)."""

    agent: str
    role: str
    round: int
    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0)


class TurnResult(FrozenModel):
    """Agent → coordinator: the turn's text and its accounting."""

    agent: str
    role: str
    round: int
    text: str
    model: str
    provider: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    latency_s: float = Field(ge=0)

    def step(self) -> ProcessingStep:
        return ProcessingStep(
            agent=self.agent,
            role=self.role,
            round=self.round,
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_s=self.latency_s,
        )

    def contribution(self) -> Contribution:
        return Contribution(agent=self.agent, role=self.role, round=self.round, text=self.text)


# -- results ---------------------------------------------------------------------------------------


class ChatMetadata(FrozenModel):
    tokens_used: int = Field(ge=0, description="Sum of prompt and completion tokens over processing_steps.")
    model: str
    swarm_type: str
    optimization_mode: str
    processing_steps: list[ProcessingStep]


class ChatResult(FrozenModel):
    """The spec §5 response ``data``. ``run_id`` is for callers of the Python API and is not serialised."""

    response: str
    session_id: str
    execution_mode: str
    quality_score: float = Field(ge=0.0, le=1.0)
    execution_time: float = Field(ge=0.0)
    metadata: ChatMetadata
    run_id: str = Field(default="", exclude=True)


class TranscriptEntry(FrozenModel):
    """A turn with its full text, for inspecting a run after the fact."""

    agent: str
    role: str
    round: int
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class Transcript(FrozenModel):
    run_id: str
    session_id: str
    tenant: str
    swarm_type: str
    optimization_mode: str
    message: str
    outcome: Literal["completed", "failed", "cancelled", "timeout", "running"]
    entries: list[TranscriptEntry]
    error: dict[str, Any] | None = None


class TeamInfo(FrozenModel):
    swarm_type: str
    description: str
    pattern: str
    agents: dict[str, str] = Field(description="Agent name → role.")
    modes: dict[str, dict[str, Any]] = Field(
        description="Per mode: agents, rounds, judge, model, deadline_s."
    )


# -- stream events (spec §7 ``stream`` frames, plus the end of the run) -----------------------------


class _Event(FrozenModel):
    run_id: str
    event_id: int = Field(
        default=0, ge=0, description="Its id in the run's event log (1, 2, 3, …; 0: not logged yet)."
    )


class _TurnEvent(_Event):
    agent: str
    role: str
    round: int


class TurnStart(_TurnEvent):
    event: Literal["turn_start"] = "turn_start"


class TokenEvent(_TurnEvent):
    """One or more tokens (coalesced over at most ``runtime.stream_coalesce_s``) from one agent."""

    event: Literal["token"] = "token"
    token: str


class TurnEnd(_TurnEvent):
    event: Literal["turn_end"] = "turn_end"
    step: ProcessingStep


class RunCompleted(_Event):
    event: Literal["completed"] = "completed"
    result: ChatResult


class RunFailed(_Event):
    event: Literal["failed"] = "failed"
    error: dict[str, Any] = Field(description="The spec error object: code, message, details.")


RunEvent = TurnStart | TokenEvent | TurnEnd | RunCompleted | RunFailed
