"""The webhook routes' contract (api.md §9): the subscription body, and what the routes answer.

A subscription is answered as ``{id, url, events, created_at, active, disabled_reason}``; its secret is
never part of an answer (nor of an error: validation reasons never echo the input).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import FrozenModel
from orchestra.errors import invalid, pydantic_errors
from orchestra.serving._contract import load_object
from orchestra.settings import settings
from orchestra.stores import DeliveryAttempt, Subscription
from orchestra.webhooks import TargetBlockedError, check_url

__all__ = [
    "MAX_SUBSCRIPTIONS",
    "SubscriptionRequest",
    "attempt_data",
    "new_subscription",
    "parse_subscription",
    "subscription_data",
]

MAX_SUBSCRIPTIONS = 25
"""Subscriptions per tenant."""


class SubscriptionRequest(FrozenModel):
    """``POST /webhooks/v2``."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="https URL to a public address (http and private addresses only when the operator "
        "allows private targets).",
    )
    events: list[Literal["chat.completed", "session.ended"]] = Field(min_length=1, max_length=2)
    secret: SecretStr = Field(
        min_length=16, max_length=256, description="Signs every delivery; stored, never returned."
    )

    @field_validator("url")
    @classmethod
    def _deliverable(cls, url: str) -> str:
        try:
            check_url(url, allow_private=settings().webhook_allow_private)
        except TargetBlockedError as e:
            raise ValueError(str(e)) from None
        return url

    @field_validator("events")
    @classmethod
    def _unique(cls, events: list[str]) -> list[str]:
        if len(set(events)) != len(events):
            raise ValueError("events must not repeat")
        return events


def parse_subscription(raw: bytes) -> SubscriptionRequest:
    data = load_object(raw)
    try:
        return SubscriptionRequest.model_validate(data)
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e)) from None


def new_subscription(tenant: str, body: SubscriptionRequest) -> Subscription:
    return Subscription(
        id=f"wh_{uuid.uuid4().hex[:16]}",
        tenant=tenant,
        url=body.url,
        events=tuple(body.events),
        secret=body.secret,
        created_at=time.time(),
    )


def subscription_data(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events),
        "created_at": sub.created_at,
        "active": sub.disabled_reason is None,
        "disabled_reason": sub.disabled_reason,
    }


def attempt_data(attempt: DeliveryAttempt) -> dict[str, Any]:
    return attempt.model_dump(mode="json")
