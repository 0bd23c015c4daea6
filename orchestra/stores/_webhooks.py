"""Webhooks in the store: subscriptions (per tenant), the durable delivery queue and recent attempts.

``WebhookStore`` is the contract; ``InMemoryWebhookStore`` keeps everything in this process (one-process
use and tests), ``orchestra.stores.redis.RedisWebhookStore`` in Redis (shared by every process).

The queue is at-least-once: ``claim`` leases due deliveries (they stay queued, due again at the lease's
end) and counts the attempt; ``settle`` records the attempt's outcome and either removes the delivery or
makes it due again later. A dispatcher that dies between the two loses nothing: its deliveries are
claimed again when their lease runs out. A subscription's secret is kept for signing; it is a
``SecretStr`` so that no repr, log line or JSON dump shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from orchestra._types import FrozenModel

__all__ = [
    "ATTEMPTS_KEPT",
    "Delivery",
    "DeliveryAttempt",
    "InMemoryWebhookStore",
    "Subscription",
    "WebhookStore",
    "delivery_id",
]

ATTEMPTS_KEPT = 50
"""Recent attempts kept per subscription (``GET /webhooks/v2/{id}/deliveries``)."""


class Subscription(FrozenModel):
    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    secret: SecretStr
    created_at: float
    disabled_reason: str | None = None
    """Why deliveries stopped (the receiver answered 410 Gone); None while active."""


class Delivery(FrozenModel):
    """One event for one subscription, as a dispatcher claimed it (``attempt`` counts this claim)."""

    id: str
    subscription_id: str
    tenant: str
    event_type: str
    body: str
    """The event's JSON exactly as it is sent (and signed) on every attempt."""
    attempt: int
    url: str
    secret: SecretStr


class DeliveryAttempt(FrozenModel):
    delivery_id: str
    event: str
    attempt: int
    outcome: str
    """delivered | retrying | failed (gave up) | disabled (410) | blocked (address not allowed)."""
    status_code: int | None = None
    error: str | None = None
    duration_s: float
    at: float
    next_retry_at: float | None = None


def delivery_id(event_id: str, subscription_id: str) -> str:
    """The id of ``event_id``'s delivery to ``subscription_id``: the same on every attempt."""
    return f"dlv_{event_id.removeprefix('evt_')[:16]}{subscription_id.removeprefix('wh_')}"


@runtime_checkable
class WebhookStore(Protocol):
    """Where webhooks live. Every method may raise ``ServiceUnavailableError`` for a shared store."""

    async def add_subscription(self, subscription: Subscription) -> None:
        """Store a new subscription."""
        ...

    async def subscriptions(self, tenant: str) -> list[Subscription]:
        """The tenant's subscriptions, oldest first."""
        ...

    async def subscription(self, tenant: str, subscription_id: str) -> Subscription | None:
        """The subscription when it is the tenant's, else None (another tenant's is indistinguishable)."""
        ...

    async def remove_subscription(self, tenant: str, subscription_id: str) -> bool:
        """Delete it with its attempts (its queued deliveries are dropped when claimed); False when it
        is not the tenant's."""
        ...

    async def disable_subscription(self, subscription_id: str, reason: str) -> None:
        """Stop deliveries to it (kept, so its owner sees why)."""
        ...

    async def enqueue(
        self, tenant: str, event_type: str, event_id: str, body: str, *, due: float, only: str | None = None
    ) -> list[str]:
        """Queue the event for each active subscription of ``tenant`` to ``event_type`` (or for the one
        subscription ``only``, whatever its events); the delivery ids, in one atomic write."""
        ...

    async def claim(self, now: float, lease_until: float, limit: int) -> list[Delivery]:
        """Lease up to ``limit`` deliveries due at ``now`` until ``lease_until`` and count their attempt;
        deliveries of removed or disabled subscriptions are dropped instead."""
        ...

    async def settle(self, delivery: Delivery, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        """Record the attempt; then the delivery is due again at ``retry_at``, or done when None."""
        ...

    async def attempts(self, subscription_id: str, limit: int = ATTEMPTS_KEPT) -> list[DeliveryAttempt]:
        """The subscription's latest attempts, newest first."""
        ...

    async def pending(self) -> int:
        """Deliveries queued (due or leased)."""
        ...


@dataclass
class _Queued:
    subscription_id: str
    tenant: str
    event_type: str
    body: str
    due: float
    attempts: int = 0


@dataclass
class _State:
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    queue: dict[str, _Queued] = field(default_factory=dict)
    attempts: dict[str, list[DeliveryAttempt]] = field(default_factory=dict)


class InMemoryWebhookStore:
    """Webhooks in this process's memory (same semantics as the Redis store, checked by one contract)."""

    def __init__(self) -> None:
        self._s = _State()

    async def add_subscription(self, subscription: Subscription) -> None:
        self._s.subscriptions[subscription.id] = subscription

    async def subscriptions(self, tenant: str) -> list[Subscription]:
        mine = [s for s in self._s.subscriptions.values() if s.tenant == tenant]
        return sorted(mine, key=lambda s: (s.created_at, s.id))

    async def subscription(self, tenant: str, subscription_id: str) -> Subscription | None:
        found = self._s.subscriptions.get(subscription_id)
        return found if found is not None and found.tenant == tenant else None

    async def remove_subscription(self, tenant: str, subscription_id: str) -> bool:
        if await self.subscription(tenant, subscription_id) is None:
            return False
        del self._s.subscriptions[subscription_id]
        self._s.attempts.pop(subscription_id, None)
        return True

    async def disable_subscription(self, subscription_id: str, reason: str) -> None:
        found = self._s.subscriptions.get(subscription_id)
        if found is not None:
            self._s.subscriptions[subscription_id] = found.model_copy(update={"disabled_reason": reason})

    async def enqueue(
        self, tenant: str, event_type: str, event_id: str, body: str, *, due: float, only: str | None = None
    ) -> list[str]:
        ids = []
        for sub in await self.subscriptions(tenant):
            if only is not None and sub.id != only:
                continue
            if sub.disabled_reason is not None or (only is None and event_type not in sub.events):
                continue
            did = delivery_id(event_id, sub.id)
            self._s.queue[did] = _Queued(sub.id, tenant, event_type, body, due)
            ids.append(did)
        return ids

    async def claim(self, now: float, lease_until: float, limit: int) -> list[Delivery]:
        due = sorted((q.due, did) for did, q in self._s.queue.items() if q.due <= now)[:limit]
        claimed = []
        for _, did in due:
            q = self._s.queue[did]
            sub = self._s.subscriptions.get(q.subscription_id)
            if sub is None or sub.disabled_reason is not None:
                del self._s.queue[did]
                continue
            q.due = lease_until
            q.attempts += 1
            claimed.append(
                Delivery(
                    id=did,
                    subscription_id=sub.id,
                    tenant=q.tenant,
                    event_type=q.event_type,
                    body=q.body,
                    attempt=q.attempts,
                    url=sub.url,
                    secret=sub.secret,
                )
            )
        return claimed

    async def settle(self, delivery: Delivery, attempt: DeliveryAttempt, retry_at: float | None) -> None:
        if delivery.subscription_id in self._s.subscriptions:
            kept = self._s.attempts.setdefault(delivery.subscription_id, [])
            kept.insert(0, attempt)
            del kept[ATTEMPTS_KEPT:]
        queued = self._s.queue.get(delivery.id)
        if queued is None:
            return
        if retry_at is None:
            del self._s.queue[delivery.id]
        else:
            queued.due = retry_at

    async def attempts(self, subscription_id: str, limit: int = ATTEMPTS_KEPT) -> list[DeliveryAttempt]:
        return list(self._s.attempts.get(subscription_id, [])[:limit])

    async def pending(self) -> int:
        return len(self._s.queue)
