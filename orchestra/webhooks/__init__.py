"""Webhooks: signed, retried, durable deliveries of ``chat.completed`` and ``session.ended``.

- receivers: ``verify(secret, headers, body, tolerance_s=300)`` checks ``X-Orchestra-Signature``
  (``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``) in constant time and rejects stale
  timestamps (``WebhookSignatureError``);
- the server: ``EventPublisher`` queues events in the store (``orchestra.stores.WebhookStore``), the
  ``Dispatcher`` delivers them under a ``DeliveryPolicy`` (retry schedule, URL policy, timeout).

docs/webhooks.md describes the whole contract.
"""

from orchestra.webhooks._dispatcher import Dispatcher
from orchestra.webhooks._events import (
    CHAT_COMPLETED,
    EVENT_TYPES,
    SESSION_ENDED,
    TEST_EVENT,
    EventPublisher,
    event_body,
    sweep_sessions,
)
from orchestra.webhooks._policy import (
    DeliveryPolicy,
    TargetBlockedError,
    check_url,
    is_public,
    resolve_target,
    retry_after_s,
)
from orchestra.webhooks._signing import (
    SIGNATURE_HEADER,
    WebhookSignatureError,
    sign,
    signature_header,
    verify,
)

__all__ = [
    "CHAT_COMPLETED",
    "EVENT_TYPES",
    "SESSION_ENDED",
    "SIGNATURE_HEADER",
    "TEST_EVENT",
    "DeliveryPolicy",
    "Dispatcher",
    "EventPublisher",
    "TargetBlockedError",
    "WebhookSignatureError",
    "check_url",
    "event_body",
    "is_public",
    "resolve_target",
    "retry_after_s",
    "sign",
    "signature_header",
    "sweep_sessions",
    "verify",
]
