"""The stores in Redis (production, several replicas or nodes): each implements the Protocol beside its
in-memory version in ``orchestra.stores``, and one contract test suite runs against both."""

from orchestra.stores.redis._cancel import listen_cancels, publish_cancel
from orchestra.stores.redis._client import redis_client, unavailable
from orchestra.stores.redis._keys import RedisKeyStore
from orchestra.stores.redis._memory import RedisMemoryStore
from orchestra.stores.redis._ratelimit import RedisTokenBucket
from orchestra.stores.redis._runs import RedisRunStore
from orchestra.stores.redis._sessions import RedisSessionStore
from orchestra.stores.redis._transcripts import RedisTranscriptStore
from orchestra.stores.redis._usage import RedisUsageStore
from orchestra.stores.redis._webhooks import RedisWebhookStore

__all__ = [
    "RedisKeyStore",
    "RedisMemoryStore",
    "RedisRunStore",
    "RedisSessionStore",
    "RedisTokenBucket",
    "RedisTranscriptStore",
    "RedisUsageStore",
    "RedisWebhookStore",
    "listen_cancels",
    "publish_cancel",
    "redis_client",
    "unavailable",
]
