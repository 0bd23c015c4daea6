"""Signatures: ``X-Orchestra-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``.

The scheme of Stripe and Standard Webhooks: the timestamp is signed with the body, so a captured request
cannot be replayed after the tolerance; receivers compare in constant time and dedupe by delivery id.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from orchestra.errors import AuthenticationError

__all__ = ["SIGNATURE_HEADER", "WebhookSignatureError", "sign", "signature_header", "verify"]

SIGNATURE_HEADER = "X-Orchestra-Signature"


class WebhookSignatureError(AuthenticationError):
    """A webhook request whose signature is missing, malformed, wrong or too old."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Orchestra-Signature`` value for ``body`` (now, unless ``timestamp`` is given)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={sign(secret, t, body)}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes | str,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> int:
    """Check a received webhook: ``body`` is the raw request body (bytes, exactly as received).

    Returns the signed timestamp. Raises ``WebhookSignatureError`` when the ``X-Orchestra-Signature``
    header is missing or malformed, no ``v1`` signature matches (compared in constant time), or the
    timestamp is more than ``tolerance_s`` seconds away from ``now`` (default: the current time).
    """
    raw = body.encode() if isinstance(body, str) else body
    value = _header(headers, SIGNATURE_HEADER)
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
    expected = sign(secret, timestamp, raw)
    # every candidate compared (no early exit on the first match): the time says nothing about which
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookSignatureError("webhook signature does not match")
    return timestamp
