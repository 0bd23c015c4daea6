"""AI Orchestra: an actor-model runtime for teams of LLM agents.

This package is the Ray-free core. Its public API is what this module exports (``__all__``, checked by a
test): ``connect()`` to the live runtime, the typed results and stream events, the errors, and config
loading, and ``webhooks`` (``orchestra.webhooks.verify`` for receivers). The folders are the architecture
(docs/architecture.md): ``engine``, ``providers``, ``stores``, ``serving``, ``webhooks``, ``cli``; their
modules are internal.
"""

from __future__ import annotations

from typing import Any

from orchestra import webhooks  # orchestra.webhooks.verify: the receivers' signature check
from orchestra._edges import load_edge as _load_edge
from orchestra._handle import HostControl, OrchestraHandle
from orchestra._types import MODES, Mode
from orchestra.engine import (
    ChatMetadata,
    ChatResult,
    ChatService,
    OrchestraConfig,
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
    TurnStart,
    default_config_path,
    load_config,
)
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
from orchestra.settings import Settings, settings
from orchestra.stores import Session, SessionTurn

__version__ = "0.1.0"

__all__ = [
    "MODES",
    "AuthenticationError",
    "ChatMetadata",
    "ChatResult",
    "ChatService",
    "ConfigError",
    "DeadlineExceededError",
    "HostControl",
    "InternalError",
    "Mode",
    "NotFoundError",
    "OrchestraConfig",
    "OrchestraError",
    "OrchestraHandle",
    "PayloadTooLargeError",
    "ProcessingStep",
    "ProviderAuthenticationError",
    "ProviderError",
    "ProviderRateLimitError",
    "ProviderRequestError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RunCancelledError",
    "RunCompleted",
    "RunEvent",
    "RunFailed",
    "RunRequest",
    "ServiceUnavailableError",
    "Session",
    "SessionTurn",
    "Settings",
    "TeamInfo",
    "TokenEvent",
    "Transcript",
    "TranscriptEntry",
    "TurnEnd",
    "TurnStart",
    "ValidationError",
    "__version__",
    "connect",
    "default_config_path",
    "error_from_dict",
    "load_config",
    "settings",
    "webhooks",
]


def connect(address: str | None = None, **options: Any) -> OrchestraHandle:
    """A handle to the live runtime on Ray: the orchestrator actors (started when none run).

    ``address``: a Ray cluster (``auto``, ``ray://host:10001``...); None: ``RAY_ADDRESS`` when set, else a
    Ray already initialised in this process, else the ``orchestra serve`` running from this data
    directory (same sessions and agent actors as its HTTP clients), else a new local Ray. ``options``:
    ``config`` (an OrchestraConfig or YAML path), ``namespace``, ``shards``, ``detached``, ``tenant``,
    ``api_key`` (act as that key's tenant), ``init_kwargs``
    (see ``actors.client.connect``, which the entry point ``orchestra.edges:connect`` names).
    """
    handle: OrchestraHandle = _load_edge("connect")(address, **options)
    return handle
