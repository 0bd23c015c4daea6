"""The events webhooks carry, and how they enter the store's delivery queue.

Wire body (the same bytes on every attempt): ``{"id": "evt_…", "type", "created": <unix>, "data"}``.

- ``chat.completed``: every finished chat (REST and WebSocket); ``data`` = the v2 chat ``data``
  (api.md §5) plus ``request_id``.
- ``session.ended``: a session ended, exactly once, whichever way: ``data`` =
  ``{session_id, reason: "ended"|"expired", turns, created_at, last_active}`` (``ended``: DELETE or the
  WebSocket ``end`` command; ``expired``: idle past the TTL, found by a sweep).
- ``webhook.test``: sent on request to one subscription (``POST /webhooks/v2/{id}/test``).

Publishing is one store write per event (the fan-out to subscriptions happens in the store) and never
fails the caller: a store outage is logged and the event is lost, the chat or session end is not.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Literal

from orchestra.errors import OrchestraError
from orchestra.stores._sessions import Session, SessionStore
from orchestra.stores._webhooks import WebhookStore

__all__ = [
    "CHAT_COMPLETED",
    "EVENT_TYPES",
    "SESSION_ENDED",
    "TEST_EVENT",
    "EventPublisher",
    "event_body",
    "sweep_sessions",
]

log = logging.getLogger("orchestra.webhooks")

CHAT_COMPLETED: Final = "chat.completed"
SESSION_ENDED: Final = "session.ended"
TEST_EVENT: Final = "webhook.test"
EVENT_TYPES: tuple[str, ...] = (CHAT_COMPLETED, SESSION_ENDED)
"""What a subscription may ask for (``webhook.test`` is sent on request, to any subscription)."""


def event_body(event_id: str, event_type: str, created: int, data: dict[str, Any]) -> str:
    return json.dumps(
        {"id": event_id, "type": event_type, "created": created, "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


class EventPublisher:
    """Puts events into the store's delivery queue (the dispatcher delivers them)."""

    def __init__(self, store: WebhookStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    async def publish(
        self, tenant: str, event_type: str, data: dict[str, Any], *, only: str | None = None
    ) -> tuple[str, list[str]]:
        """Queue the event for the tenant's subscriptions to it (or the one subscription ``only``):
        (event id, delivery ids). Raises ``ServiceUnavailableError`` when the store is down."""
        now = self._clock()
        event_id = f"evt_{uuid.uuid4().hex}"
        body = event_body(event_id, event_type, int(now), data)
        ids = await self.store.enqueue(tenant, event_type, event_id, body, due=now, only=only)
        return event_id, ids

    async def _publish_quietly(self, tenant: str, event_type: str, data: dict[str, Any]) -> None:
        try:
            await self.publish(tenant, event_type, data)
        except OrchestraError as e:
            log.warning("%s event of tenant %s not queued: %r", event_type, tenant, e)

    async def chat_completed(self, tenant: str, data: dict[str, Any], request_id: str) -> None:
        """``data``: the chat's v2 ``data``."""
        await self._publish_quietly(tenant, CHAT_COMPLETED, {**data, "request_id": request_id})

    async def session_ended(self, session: Session, reason: Literal["ended", "expired"]) -> None:
        data = {
            "session_id": session.session_id,
            "reason": reason,
            "turns": len(session.turns),
            "created_at": session.created_at,
            "last_active": session.last_active,
        }
        await self._publish_quietly(session.tenant, SESSION_ENDED, data)


async def sweep_sessions(sessions: SessionStore, events: EventPublisher | None) -> list[Session]:
    """End the sessions idle past their TTL and publish ``session.ended`` for each. The store hands
    each ended session to exactly one sweeper, so every process may sweep."""
    ended = await sessions.expire()
    for session in ended:
        log.info("session %s of %s expired", session.session_id, session.tenant)
        if events is not None:
            await events.session_ended(session, "expired")
    return ended
