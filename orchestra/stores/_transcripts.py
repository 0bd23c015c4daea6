"""Transcripts of finished runs (every turn with its full text), for inspection after the fact.

Stored as the ``Transcript``'s JSON, keyed by ``(tenant, run_id)``: the engine serialises them, the
store only keeps them (a tenant reading another's run id finds nothing).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, runtime_checkable

__all__ = ["InMemoryTranscriptStore", "TranscriptStore"]


@runtime_checkable
class TranscriptStore(Protocol):
    async def put(self, tenant: str, run_id: str, transcript_json: str) -> None:
        """Keep a run's transcript (replacing an earlier one of the same run)."""
        ...

    async def get(self, tenant: str, run_id: str) -> str | None:
        """The transcript's JSON, or None when there is none (or it is another tenant's, or expired)."""
        ...


class InMemoryTranscriptStore:
    """The newest ``max_kept`` transcripts of this process."""

    def __init__(self, max_kept: int = 1000) -> None:
        self._max = max_kept
        self._kept: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def put(self, tenant: str, run_id: str, transcript_json: str) -> None:
        if self._max == 0:
            return
        self._kept[(tenant, run_id)] = transcript_json
        self._kept.move_to_end((tenant, run_id))
        while len(self._kept) > self._max:
            self._kept.popitem(last=False)

    async def get(self, tenant: str, run_id: str) -> str | None:
        return self._kept.get((tenant, run_id))
