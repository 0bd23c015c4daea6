"""Where state lives: each store is a Protocol with its in-memory implementation beside it; the Redis
implementations are in ``orchestra.stores.redis``.

- ``SessionStore``: sessions and their turns (``InMemorySessionStore``);
- ``MemoryStore``: long-term memory for ``use_memory`` (``InMemoryMemoryStore``, ``RedisMemoryStore``);
- ``KeyStore``: API key records, hashes only (``InMemoryKeyStore``, ``RedisKeyStore``);
- ``RateLimiter``: token buckets per key (``LocalTokenBucket``, ``RedisTokenBucket``);
- ``TranscriptStore``: finished runs turn by turn (``InMemoryTranscriptStore``, ``RedisTranscriptStore``);
- ``UsageStore``: tokens used per key and UTC day, for budgets (``InMemoryUsageStore``, ``RedisUsageStore``).
- ``WebhookStore``: webhook subscriptions, their durable delivery queue and recent attempts
  (``InMemoryWebhookStore``, ``RedisWebhookStore``).
- ``RunStore``: runs — record, checkpoints, event log (``InMemoryRunStore``, ``RedisRunStore``), written in
  batches through a ``RunWriter``.
"""

from orchestra.stores._keys import SCOPES, ApiKeyRecord, InMemoryKeyStore, KeyStore
from orchestra.stores._memory import InMemoryMemoryStore, MemoryItem, MemoryStore, relevance
from orchestra.stores._ratelimit import (
    DEFAULT_CAPACITY,
    DEFAULT_LIMIT_PER_MINUTE,
    WS_CAPACITY,
    WS_LIMIT_PER_MINUTE,
    WS_REFILL_PER_S,
    LocalTokenBucket,
    RateLimitDecision,
    RateLimiter,
)
from orchestra.stores._runs import (
    RUN_STATUSES,
    InMemoryRunStore,
    RunRecord,
    RunStatus,
    RunStore,
    RunWrite,
    RunWriter,
)
from orchestra.stores._sessions import InMemorySessionStore, Session, SessionStore, SessionTurn
from orchestra.stores._transcripts import InMemoryTranscriptStore, TranscriptStore
from orchestra.stores._usage import InMemoryUsageStore, UsageStore
from orchestra.stores._webhooks import (
    Delivery,
    DeliveryAttempt,
    InMemoryWebhookStore,
    Subscription,
    WebhookStore,
)

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_LIMIT_PER_MINUTE",
    "RUN_STATUSES",
    "SCOPES",
    "WS_CAPACITY",
    "WS_LIMIT_PER_MINUTE",
    "WS_REFILL_PER_S",
    "ApiKeyRecord",
    "Delivery",
    "DeliveryAttempt",
    "InMemoryKeyStore",
    "InMemoryMemoryStore",
    "InMemoryRunStore",
    "InMemorySessionStore",
    "InMemoryTranscriptStore",
    "InMemoryUsageStore",
    "InMemoryWebhookStore",
    "KeyStore",
    "LocalTokenBucket",
    "MemoryItem",
    "MemoryStore",
    "RateLimitDecision",
    "RateLimiter",
    "RunRecord",
    "RunStatus",
    "RunStore",
    "RunWrite",
    "RunWriter",
    "Session",
    "SessionStore",
    "SessionTurn",
    "Subscription",
    "TranscriptStore",
    "UsageStore",
    "WebhookStore",
    "relevance",
]
