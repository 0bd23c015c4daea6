"""AI Orchestra: an actor-model runtime for teams of LLM agents.

The core (this package) is free of Ray: patterns, agents, providers, config and the engine can be used and
tested in one process. ``orchestra.connect()`` returns a handle to the live Ray actors (it imports Ray
lazily).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchestra._types import MODES
from orchestra.engine._agent import Agent, EventSink, build_messages
from orchestra.engine._config import (
    AgentConfig,
    OrchestraConfig,
    RouterConfig,
    RuntimeConfig,
    TeamConfig,
    TeamModeSettings,
    default_config_path,
    load_config,
)
from orchestra.engine._engine import Engine, parse_run_request
from orchestra.engine._messages import (
    ChatMetadata,
    ChatResult,
    Contribution,
    HistoryTurn,
    ProcessingStep,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    TeamInfo,
    TokenEvent,
    Transcript,
    TranscriptEntry,
    TurnEnd,
    TurnRequest,
    TurnResult,
    TurnStart,
)
from orchestra.engine._patterns import PATTERNS, TeamRun, parse_score, parse_verdict, run_pattern
from orchestra.engine._router import route
from orchestra.engine._runtime import AgentRuntime, LocalRuntime
from orchestra.errors import (
    AuthenticationError,
    ConfigError,
    DeadlineExceededError,
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    ProviderAuthenticationError,
    ProviderError,
    ProviderRateLimitError,
    ProviderRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    RunCancelledError,
    ServiceUnavailableError,
    ValidationError,
    error_from_dict,
)
from orchestra.providers import LLMProvider
from orchestra.providers._factory import make_provider
from orchestra.stores._memory import InMemoryMemoryStore, MemoryItem, MemoryStore, RedisMemoryStore
from orchestra.stores._sessions import Session, SessionStore

if TYPE_CHECKING:
    from actors.client import OrchestraHandle

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "PATTERNS",
    "Agent",
    "AgentConfig",
    "AgentRuntime",
    "AuthenticationError",
    "ChatMetadata",
    "ChatResult",
    "ConfigError",
    "Contribution",
    "DeadlineExceededError",
    "Engine",
    "EventSink",
    "HistoryTurn",
    "InMemoryMemoryStore",
    "InternalError",
    "LLMProvider",
    "LocalRuntime",
    "MemoryItem",
    "MemoryStore",
    "NotFoundError",
    "OrchestraConfig",
    "OrchestraError",
    "PayloadTooLargeError",
    "ProcessingStep",
    "ProviderAuthenticationError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderRequestError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RedisMemoryStore",
    "RouterConfig",
    "RunCancelledError",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequest",
    "RuntimeConfig",
    "ServiceUnavailableError",
    "Session",
    "SessionStore",
    "TeamConfig",
    "TeamInfo",
    "TeamModeSettings",
    "TeamRun",
    "TokenEvent",
    "Transcript",
    "TranscriptEntry",
    "TurnEnd",
    "TurnRequest",
    "TurnResult",
    "TurnStart",
    "ValidationError",
    "__version__",
    "build_messages",
    "connect",
    "default_config_path",
    "error_from_dict",
    "load_config",
    "make_provider",
    "parse_run_request",
    "parse_score",
    "parse_verdict",
    "route",
    "run_pattern",
]


def connect(address: str | None = None, **kwargs: Any) -> OrchestraHandle:
    """Handle to the running orchestrator on Ray (starting a local Ray and the actors when none run).

    See ``actors.client.connect`` for the options.
    """
    from actors.client import connect as _connect

    return _connect(address, **kwargs)
