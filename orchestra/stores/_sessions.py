"""Sessions: per-tenant conversation state, bounded history, idle expiry."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from orchestra.engine._messages import HistoryTurn

__all__ = ["Session", "SessionStore", "SessionTurn"]


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


class SessionStore:
    """In-memory sessions keyed by (tenant, session_id): one tenant never sees another's session."""

    def __init__(
        self, ttl_s: float = 1800.0, *, max_turns: int = 200, clock: Callable[[], float] = time.time
    ):
        self._ttl = ttl_s
        self._max_turns = max_turns
        self._clock = clock
        self._sessions: OrderedDict[tuple[str, str], Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, tenant: str, session_id: str) -> Session | None:
        self.expire()
        return self._sessions.get((tenant, session_id))

    def get_or_create(self, tenant: str, session_id: str) -> Session:
        self.expire()
        key = (tenant, session_id)
        session = self._sessions.get(key)
        now = self._clock()
        if session is None:
            session = Session(session_id=session_id, tenant=tenant, created_at=now, last_active=now)
            self._sessions[key] = session
        session.last_active = now
        self._sessions.move_to_end(key)
        return session

    def append(self, tenant: str, session_id: str, turn: SessionTurn) -> None:
        session = self.get_or_create(tenant, session_id)
        session.turns.append(turn)
        if session.swarm_type is None:
            session.swarm_type = turn.swarm_type
        del session.turns[: max(0, len(session.turns) - self._max_turns)]

    def history(self, tenant: str, session_id: str, turns: int, chars: int) -> tuple[HistoryTurn, ...]:
        """The latest ``turns`` turns, oldest first, dropping the oldest until they fit in ``chars``."""
        session = self.get(tenant, session_id)
        if session is None or turns <= 0:
            return ()
        picked: list[HistoryTurn] = []
        used = 0
        for t in reversed(session.turns[-turns:]):
            size = len(t.message) + len(t.response)
            if used + size > chars:
                break
            picked.append(HistoryTurn(user=t.message, assistant=t.response))
            used += size
        return tuple(reversed(picked))

    def reset(self, tenant: str, session_id: str) -> bool:
        session = self.get(tenant, session_id)
        if session is None:
            return False
        session.turns.clear()
        return True

    def end(self, tenant: str, session_id: str) -> Session | None:
        return self._sessions.pop((tenant, session_id), None)

    def expire(self) -> list[Session]:
        """End sessions idle for longer than the TTL; returns them (oldest activity first)."""
        cutoff = self._clock() - self._ttl
        ended: list[Session] = []
        while self._sessions:
            key, session = next(iter(self._sessions.items()))
            if session.last_active > cutoff:
                break
            ended.append(self._sessions.pop(key))
        return ended
