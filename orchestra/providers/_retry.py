"""Retries with exponential backoff and full jitter that honour the provider's Retry-After."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import TypeVar

from pydantic import Field

from orchestra._types import FrozenModel
from orchestra.errors import ProviderError
from orchestra.providers._base import CompletionRequest, StreamItem, TokenDelta

__all__ = ["RetryPolicy", "parse_retry_after", "retry_call", "retry_stream"]

T = TypeVar("T")


class RetryPolicy(FrozenModel):
    """How a provider call is retried. Only retryable errors (rate limit, timeout, unavailable) are."""

    max_retries: int = Field(default=4, ge=0, le=20, description="Retries after the first attempt.")
    base_delay_s: float = Field(
        default=0.5, gt=0, description="Delay before the first retry, doubled each time."
    )
    max_delay_s: float = Field(default=30.0, gt=0, description="Cap of one backoff delay.")
    max_retry_after_s: float = Field(
        default=60.0,
        gt=0,
        description="A Retry-After longer than this is not waited for: the error is raised.",
    )

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay before retry number ``attempt`` (0-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        return (rng or random).uniform(cap / 2, cap)

    def delay_for(self, error: ProviderError, attempt: int) -> float | None:
        """Seconds to wait before retrying ``error``, or None when it must be raised."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        if error.retry_after is not None:
            if error.retry_after > self.max_retry_after_s:
                return None
            # Honour the server's hint, plus a little jitter so callers don't return in lockstep.
            return error.retry_after + random.uniform(0, min(1.0, self.base_delay_s))
        return self.backoff(attempt)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` / ``Retry-After`` (delta-seconds or HTTP date); None if absent."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unparseable: fall back to our own backoff
    return max(0.0, parsed.timestamp() - time.time())


async def retry_call(
    policy: RetryPolicy,
    call: Callable[[], Awaitable[T]],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``call`` until it succeeds or fails with an error the policy will not retry."""
    attempt = 0
    while True:
        try:
            return await call()
        except ProviderError as error:
            delay = policy.delay_for(error, attempt)
            if delay is None:
                raise
            attempt += 1
            await sleep(delay)


async def retry_stream(
    policy: RetryPolicy,
    open_stream: Callable[[CompletionRequest], AsyncGenerator[StreamItem, None]],
    request: CompletionRequest,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[StreamItem, None]:
    """Retry a stream only while nothing has been yielded: a retry after text went out would repeat it."""
    attempt = 0
    while True:
        started = False
        try:
            # aclosing: a consumer that stops early must close the upstream response now, not at GC.
            async with contextlib.aclosing(open_stream(request)) as items:
                async for item in items:
                    if isinstance(item, TokenDelta):
                        started = True
                    yield item
            return
        except ProviderError as error:
            delay = None if started else policy.delay_for(error, attempt)
            if delay is None:
                raise
            attempt += 1
            await sleep(delay)
