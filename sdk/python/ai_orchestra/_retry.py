"""The retry policy shared by HTTP calls and WebSocket (re)connects, as pure functions.

- Retried: HTTP 429, 503 and 504, connection errors and timeouts (``RETRY_STATUSES``, ``is_retryable``);
  never any other 4xx or a 500.
- Wait before retry ``n`` (0-based): what the server asked for in ``retry-after-ms`` or ``Retry-After``
  (seconds or an HTTP date) when that is more than 0 and at most ``MAX_RETRY_AFTER_S``; else exponential
  backoff with jitter, ``min(0.5 * 2**n, 8)`` seconds scaled by a random 75-100 %.
- A server asking for more than ``MAX_RETRY_AFTER_S`` is not retried: the error is raised at once, with
  its ``retry_after``, for the caller to decide.
"""

from __future__ import annotations

import email.utils
import random as _random
import time
from collections.abc import Callable, Mapping

from ._errors import (
    APIConnectionError,
    OrchestraError,
    RateLimitError,
    ServiceUnavailableError,
)
from ._errors import TimeoutError as GatewayTimeoutError

__all__ = [
    "INITIAL_RETRY_DELAY_S",
    "MAX_RETRY_AFTER_S",
    "MAX_RETRY_DELAY_S",
    "RETRY_STATUSES",
    "backoff_delay",
    "is_retryable",
    "parse_retry_after",
    "retry_delay",
]

INITIAL_RETRY_DELAY_S = 0.5
MAX_RETRY_DELAY_S = 8.0
MAX_RETRY_AFTER_S = 60.0
RETRY_STATUSES = frozenset({429, 503, 504})
"""HTTP statuses worth another attempt: rate limited, unavailable, the run's deadline passed."""

_RETRYABLE = (RateLimitError, ServiceUnavailableError, GatewayTimeoutError, APIConnectionError)


def backoff_delay(retries_done: int, *, random: Callable[[], float] = _random.random) -> float:
    """Seconds before retry number ``retries_done`` (0 for the first): ``min(0.5 * 2**n, 8) * U(0.75, 1]``."""
    base = min(INITIAL_RETRY_DELAY_S * 2.0 ** min(max(retries_done, 0), 32), MAX_RETRY_DELAY_S)
    return base * (1.0 - 0.25 * random())


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` (seconds or HTTP date).

    Header names are matched case-insensitively; ``None`` when absent or unreadable.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return float(email.utils.mktime_tz(parsed)) - now()


def retry_delay(
    retries_done: int, retry_after: float | None, *, random: Callable[[], float] = _random.random
) -> float:
    """Seconds before retry ``retries_done``: the server's ``retry_after`` when usable, else backoff."""
    if retry_after is not None and 0 < retry_after <= MAX_RETRY_AFTER_S:
        return retry_after
    return backoff_delay(retries_done, random=random)


def is_retryable(error: OrchestraError) -> bool:
    """Whether another attempt may succeed: 429/503/504 and connection failures, unless the server asked
    to wait longer than ``MAX_RETRY_AFTER_S``."""
    if not isinstance(error, _RETRYABLE) and error.status_code not in RETRY_STATUSES:
        return False
    return error.retry_after is None or error.retry_after <= MAX_RETRY_AFTER_S
