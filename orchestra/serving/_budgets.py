"""Daily token budgets per API key (issue 11): what a key's runs used today (UTC), checked before a run
starts and added when it finishes.

- Counting: a finished run adds its ``tokens_used`` (the sum over its agent turns, ``ChatResult``) to
  its key's counter of the UTC day, one atomic ``INCRBY`` in the shared store, so replicas and nodes
  count exactly together; every key is counted (its owner sees the usage, ``/metrics`` has it by key id
  as ``api_key_tokens_total``), budget or not.
- Checking: a key with ``daily_tokens`` whose total has reached it gets 429 ``RATE_LIMIT_ERROR`` before
  its run starts, ``details = {budget: "daily_tokens", limit, used, resets_at, retry_after}`` and
  ``Retry-After`` until the next UTC midnight. A run's tokens are known only when it ends, so the runs
  already under way when the budget is reached finish, and may take the total past it.
- Runs that fail or are cancelled report no usage and add nothing. If the store cannot be reached when a
  run ends, its tokens are logged and not counted; when it cannot be reached before a run of a key with
  a budget, the run is refused with 503 (the budget is not skipped).

``BudgetedService`` applies both to any ``ChatService``, for one caller: the REST chat routes, the
OpenAI-compatible routes and each WebSocket connection run their chats through it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncGenerator, Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from orchestra.engine import (
    ChatResult,
    ChatService,
    RunCompleted,
    RunEvent,
    RunRequest,
    TeamInfo,
    Transcript,
)
from orchestra.errors import OrchestraError, RateLimitError
from orchestra.serving._auth import Principal
from orchestra.serving._metrics import Metrics
from orchestra.stores import RunRecord, Session, UsageStore

__all__ = ["BudgetedService", "Budgets", "next_reset"]

log = logging.getLogger("orchestra.budgets")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def next_reset(now: datetime) -> datetime:
    """The next UTC midnight: when a day's budget starts again."""
    day = now.astimezone(UTC).date()
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


class Budgets:
    def __init__(
        self,
        usage: UsageStore,
        *,
        metrics: Metrics | None = None,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        """``now`` returns aware UTC datetimes (tests move it)."""
        self.usage = usage
        self._metrics = metrics
        self._now = now

    def _day(self) -> tuple[datetime, date]:
        now = self._now().astimezone(UTC)
        return now, now.date()

    async def check(self, principal: Principal) -> None:
        """``RateLimitError`` (429) when the key's daily budget is used up; nothing for keys without one."""
        if principal.daily_tokens is None:
            return
        now, day = self._day()
        used = await self.usage.used(principal.key_id, day)
        if used < principal.daily_tokens:
            return
        reset = next_reset(now)
        wait = math.ceil((reset - now).total_seconds())
        raise RateLimitError(
            f"daily token budget of this API key used up: {used} of {principal.daily_tokens} tokens "
            f"today (UTC); it resets at {_iso(reset)}",
            details={
                "budget": "daily_tokens",
                "limit": principal.daily_tokens,
                "used": used,
                "resets_at": _iso(reset),
                "retry_after": wait,
            },
            retry_after=wait,
        )

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Add a finished run's tokens to its key's day (never raises: the run is already done)."""
        if tokens <= 0:
            return
        if self._metrics is not None:
            self._metrics.key_tokens(principal.key_id, tokens)
        _, day = self._day()
        try:
            await self.usage.add(principal.key_id, day, tokens)
        except OrchestraError as e:
            log.warning("%d tokens of key %s not counted: %r", tokens, principal.key_id, e)

    async def today(self, key_id: str, daily_tokens: int | None) -> dict[str, Any]:
        """The key's usage of the UTC day, as its owner sees it."""
        now, day = self._day()
        used = await self.usage.used(key_id, day)
        remaining = None if daily_tokens is None else max(0, daily_tokens - used)
        return {
            "date": day.isoformat(),
            "tokens_used": used,
            "daily_tokens": daily_tokens,
            "remaining": remaining,
            "resets_at": _iso(next_reset(now)),
        }

    async def used_today(self, key_ids: Sequence[str]) -> list[int]:
        """Each key's tokens of the UTC day, in one store round trip (listings)."""
        _, day = self._day()
        return await self.usage.used_many(key_ids, day)

    def service(self, inner: ChatService, principal: Principal) -> BudgetedService:
        return BudgetedService(inner, self, principal)


class BudgetedService:
    """``inner`` for one caller: every run is checked against the caller's budget before it starts
    (``stream`` raises the 429 before its first batch) and adds its tokens when it completes."""

    def __init__(self, inner: ChatService, budgets: Budgets, principal: Principal) -> None:
        self._inner = inner
        self._budgets = budgets
        self._principal = principal

    async def run(self, request: RunRequest) -> ChatResult:
        await self._budgets.check(self._principal)
        result = await self._inner.run(request)
        await self._budgets.charge(self._principal, result.metadata.tokens_used)
        return result

    async def stream(self, request: RunRequest) -> AsyncGenerator[list[RunEvent], None]:
        await self._budgets.check(self._principal)
        inner = self._inner.stream(request)
        try:
            async for batch in inner:
                for event in batch:
                    if isinstance(event, RunCompleted):
                        await self._budgets.charge(self._principal, event.result.metadata.tokens_used)
                yield batch
        finally:
            await inner.aclose()

    def follow(self, tenant: str, run_id: str, after: int = 0) -> AsyncGenerator[list[RunEvent], None]:
        # A resumed stream costs no new run: its tokens were counted when it started.
        return self._inner.follow(tenant, run_id, after)

    async def run_record(self, tenant: str, run_id: str) -> RunRecord:
        return await self._inner.run_record(tenant, run_id)

    async def cancel(self, tenant: str, run_id: str) -> bool:
        return await self._inner.cancel(tenant, run_id)

    async def session(self, tenant: str, session_id: str) -> Session:
        return await self._inner.session(tenant, session_id)

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        return await self._inner.reset_session(tenant, session_id)

    async def end_session(self, tenant: str, session_id: str) -> Session:
        return await self._inner.end_session(tenant, session_id)

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        return await self._inner.transcript(tenant, run_id)

    async def teams(self) -> list[TeamInfo]:
        return await self._inner.teams()
