"""Long-term memory (spec §5 ``use_memory``): earlier turns of the same tenant, recalled by relevance.

Relevance is a documented, model-free heuristic: the number of distinct words (3+ letters, lower-cased)
a remembered turn shares with the new message, ties broken by recency; turns sharing no word are never
recalled. Only the tenant's own entries are searched, and never those of the current session (its turns
are already in the context as history).
"""

from __future__ import annotations

import re
import time
from typing import Protocol, runtime_checkable

from orchestra._types import FrozenModel

__all__ = ["InMemoryMemoryStore", "MemoryItem", "MemoryStore", "pick", "relevance"]

_WORD = re.compile(r"[a-z0-9]{3,}")


class MemoryItem(FrozenModel):
    session_id: str
    message: str
    response: str
    created_at: float


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def relevance(query: str, item: MemoryItem) -> int:
    return len(_words(query) & _words(item.message + " " + item.response))


def pick(items: list[MemoryItem], query: str, exclude_session: str | None, k: int) -> list[MemoryItem]:
    scored = [
        (relevance(query, item), item.created_at, item)
        for item in items
        if item.session_id != exclude_session
    ]
    scored = [s for s in scored if s[0] > 0]
    scored.sort(key=lambda s: (s[0], s[1]), reverse=True)
    return [item for _, _, item in scored[:k]]


@runtime_checkable
class MemoryStore(Protocol):
    async def remember(self, tenant: str, session_id: str, message: str, response: str) -> None: ...

    async def recall(
        self, tenant: str, query: str, *, exclude_session: str | None = None, k: int = 3
    ) -> list[MemoryItem]: ...


class InMemoryMemoryStore:
    """Per-process memory (tests, the in-process engine); the newest ``max_items`` per tenant are kept."""

    def __init__(self, max_items: int = 500) -> None:
        self._items: dict[str, list[MemoryItem]] = {}
        self._max = max_items

    async def remember(self, tenant: str, session_id: str, message: str, response: str) -> None:
        items = self._items.setdefault(tenant, [])
        items.append(
            MemoryItem(session_id=session_id, message=message, response=response, created_at=time.time())
        )
        del items[: max(0, len(items) - self._max)]

    async def recall(
        self, tenant: str, query: str, *, exclude_session: str | None = None, k: int = 3
    ) -> list[MemoryItem]:
        return pick(self._items.get(tenant, []), query, exclude_session, k)
