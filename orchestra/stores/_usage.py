"""Token usage per API key per UTC day: ``UsageStore`` and its in-memory implementation.

Runs add their tokens when they finish; a key's daily budget (``orchestra.serving._budgets``) is checked
against the day's total before a run starts. The Redis implementation adds with one ``INCRBY``, so
replicas and nodes count exactly together.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Protocol, runtime_checkable

__all__ = ["USAGE_KEEP_DAYS", "InMemoryUsageStore", "UsageStore"]

USAGE_KEEP_DAYS = 2
"""A day's counter is kept this long after it began (yesterday stays readable), then expires."""


@runtime_checkable
class UsageStore(Protocol):
    """Tokens used per key and UTC day. Every method may raise ``ServiceUnavailableError`` when shared."""

    async def add(self, key_id: str, day: date, tokens: int) -> int:
        """Add ``tokens`` (>= 0) to ``key_id``'s total of ``day``, atomically; the new total."""
        ...

    async def used(self, key_id: str, day: date) -> int:
        """``key_id``'s total of ``day`` (0 when nothing was used)."""
        ...

    async def used_many(self, key_ids: Sequence[str], day: date) -> list[int]:
        """``used`` for each of ``key_ids``, in their order, in one step (listings)."""
        ...


class InMemoryUsageStore:
    """Usage in this process's memory (tests, one-process use); forgets days older than yesterday."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, date], int] = {}

    async def add(self, key_id: str, day: date, tokens: int) -> int:
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        self._totals = {k: v for k, v in self._totals.items() if (day - k[1]).days < USAGE_KEEP_DAYS}
        total = self._totals.get((key_id, day), 0) + tokens
        self._totals[(key_id, day)] = total
        return total

    async def used(self, key_id: str, day: date) -> int:
        return self._totals.get((key_id, day), 0)

    async def used_many(self, key_ids: Sequence[str], day: date) -> list[int]:
        return [self._totals.get((k, day), 0) for k in key_ids]
