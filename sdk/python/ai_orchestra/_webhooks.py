"""Checking a webhook delivery on the receiving side (api.md §9).

Every delivery carries ``X-Orchestra-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``:
the timestamp is signed with the body, so a captured request cannot be replayed once it is older than the
tolerance. Compare in constant time, on the raw body exactly as received, and dedupe by
``X-Orchestra-Delivery`` (deliveries are at-least-once).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from ._errors import AuthenticationError

__all__ = ["SIGNATURE_HEADER", "WebhookSignatureError", "verify_webhook"]

SIGNATURE_HEADER = "X-Orchestra-Signature"


class WebhookSignatureError(AuthenticationError):
    """A webhook request whose signature is missing, malformed, wrong or too old: do not act on it."""


def verify_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> int:
    """Check a received webhook and return its signed timestamp.

    ``body`` is the raw request body (bytes, exactly as received: re-serialised JSON will not match).
    Raises ``WebhookSignatureError`` when the ``X-Orchestra-Signature`` header is missing or malformed,
    no ``v1`` signature matches (compared in constant time), or the timestamp is more than
    ``tolerance_s`` seconds from ``now`` (default: the current time).
    """
    raw = body.encode() if isinstance(body, str) else body
    value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
    if not value:
        raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t" and item.isdigit():
            timestamp = int(item)
        elif key == "v1" and item:
            candidates.append(item)
    if timestamp is None or not candidates:
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header")
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookSignatureError("webhook timestamp outside the tolerance")
    expected = hmac.new(secret.encode(), str(timestamp).encode() + b"." + raw, hashlib.sha256).hexdigest()
    matched = False
    for candidate in candidates:  # all compared: the time taken says nothing about which matched
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookSignatureError("webhook signature does not match")
    return timestamp
