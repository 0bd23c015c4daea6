"""Sessions: per-tenant conversation state with bounded history and idle expiry.

``SessionStore`` is the contract; ``InMemorySessionStore`` keeps them in this process. A session is keyed
by ``(tenant, session_id)``: one tenant never sees another's session, even with the same id.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["InMemorySessionStore", "Session", "SessionStore", "SessionTurn"]


class SessionTurn(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    message: str
    response: str
    swarm_type: str
    optimization_mode: str
    created_at: float


class Session(BaseModel):
    session_id: str
    tenant: str
    swarm_type: str | None = Field(default=None, description="Team of the session's first routed/named run.")
    created_at: float
    last_active: float
    turns: list[SessionTurn] = Field(default_factory=list)


@runtime_checkable
class SessionStore(Protocol):
    """Where sessions live. Every method may raise ``ServiceUnavailableError`` for a shared store."""

    async def get(self, tenant: str, session_id: str, *, last: int | None = None) -> Session | None:
        """The session (a copy the caller may keep), or None when there is none or it expired; with
        ``last``, only its latest ``last`` turns (what a chat's history needs: not the whole session)."""
        ...

    async def append(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        """Add a turn, creating the session on its first turn; the oldest turns beyond the cap go."""
        ...

    async def reset(self, tenant: str, session_id: str) -> Session | None:
        """Forget the turns, keep the session; None when there is none."""
        ...

    async def end(self, tenant: str, session_id: str) -> Session | None:
        """Remove the session and return it as it was; None when there was none."""
        ...

    async def expire(self) -> list[Session]:
        """End the sessions idle for longer than the TTL and return them."""
        ...

    async def count(self) -> int:
        """Sessions held now."""
        ...


class InMemorySessionStore:
    """Sessions in this process's memory, least recently active first."""

    def __init__(
        self, ttl_s: float = 1800.0, *, max_turns: int = 200, clock: Callable[[], float] = time.time
    ) -> None:
        self._ttl = ttl_s
        self._max_turns = max_turns
        self._clock = clock
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()
        # Idle sessions dropped by a read or write, kept for the next expire() to hand out (session.ended).
        self._ended: list[Session] = []

    async def get(self, tenant: str, session_id: str, *, last: int | None = None) -> Session | None:
        self._drop_idle()
        session = self._sessions.get((tenant, session_id))
        if session is None:
            return None
        turns = session.turns if last is None else session.turns[max(0, len(session.turns) - last) :]
        return session.model_copy(update={"turns": list(turns)})  # turns are frozen: sharing them is safe

    async def append(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        self._drop_idle()
        key = (tenant, session_id)
        now = self._clock()
        session = self._sessions.get(key)
        if session is None:
            session = self._sessions[key] = Session(
                session_id=session_id, tenant=tenant, created_at=now, last_active=now
            )
        session.last_active = now
        self._sessions.move_to_end(key)
        session.turns.append(turn)
        if session.swarm_type is None:
            session.swarm_type = turn.swarm_type
        del session.turns[: max(0, len(session.turns) - self._max_turns)]

    async def reset(self, tenant: str, session_id: str) -> Session | None:
        self._drop_idle()
        session = self._sessions.get((tenant, session_id))
        if session is None:
            return None
        session.turns.clear()
        return session.model_copy(deep=True)

    async def end(self, tenant: str, session_id: str) -> Session | None:
        return self._sessions.pop((tenant, session_id), None)

    async def expire(self) -> list[Session]:
        self._drop_idle()
        ended, self._ended = self._ended, []
        return ended

    def _drop_idle(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.last_active > cutoff:
                break
            self._ended.append(self._sessions.pop(key))

    async def count(self) -> int:
        return len(self._sessions)
