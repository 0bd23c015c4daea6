"""The Python SDK of AI Orchestra: teams of LLM agents behind one API.

    from ai_orchestra import Client

    client = Client(api_key="...", base_url="http://localhost:8000")
    response = client.chat(message="Explain machine learning", optimization_mode="balanced")

    async for token in client.stream_chat(message="Write a Python function", session_id="session-123"):
        print(token, end="")

``Client`` blocks, ``AsyncClient`` awaits; both stream over the WebSocket with async iterators. Every error
is an ``OrchestraError`` subclass carrying ``code``, ``message``, ``details``, ``status_code`` and
``request_id``. This package needs only httpx, websockets and pydantic: not Ray, not the server.
"""

from ._base import DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, ClientConfig
from ._client import AsyncClient, Client
from ._errors import (
    APIConnectionError,
    APIResponseError,
    APITimeoutError,
    AuthenticationError,
    InternalError,
    NotFoundError,
    OrchestraError,
    PayloadTooLargeError,
    RateLimitError,
    RunCancelledError,
    ServiceUnavailableError,
    StreamInterruptedError,
    TimeoutError,
    ValidationError,
)
from ._models import (
    ChatMetadata,
    ChatOptions,
    ChatResponse,
    ChatV1Response,
    CompletedEvent,
    EndedSession,
    Health,
    HealthComponents,
    OptimizationMode,
    ProcessingStep,
    Readiness,
    ReadinessChecks,
    Session,
    SessionTurn,
    StreamEvent,
    StreamOptions,
    TokenEvent,
    TurnEndEvent,
    TurnStartEvent,
)
from ._streaming import ChatStream
from ._version import __version__
from ._webhooks import WebhookSignatureError, verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "APIConnectionError",
    "APIResponseError",
    "APITimeoutError",
    "AsyncClient",
    "AuthenticationError",
    "ChatMetadata",
    "ChatOptions",
    "ChatResponse",
    "ChatStream",
    "ChatV1Response",
    "Client",
    "ClientConfig",
    "CompletedEvent",
    "EndedSession",
    "Health",
    "HealthComponents",
    "InternalError",
    "NotFoundError",
    "OptimizationMode",
    "OrchestraError",
    "PayloadTooLargeError",
    "ProcessingStep",
    "RateLimitError",
    "Readiness",
    "ReadinessChecks",
    "RunCancelledError",
    "ServiceUnavailableError",
    "Session",
    "SessionTurn",
    "StreamEvent",
    "StreamInterruptedError",
    "StreamOptions",
    "TimeoutError",
    "TokenEvent",
    "TurnEndEvent",
    "TurnStartEvent",
    "ValidationError",
    "WebhookSignatureError",
    "__version__",
    "verify_webhook",
]
