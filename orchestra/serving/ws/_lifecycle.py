"""A connection's lifecycle: its ``ConnectionState`` and the one place that changes it."""

from __future__ import annotations

from enum import Enum

from orchestra.serving.ws._frames import CLOSE_GOING_AWAY, CLOSE_NORMAL

__all__ = ["ConnectionState", "Lifecycle"]


class ConnectionState(Enum):
    """Where one connection is. ``Lifecycle.move`` is the only place it changes, along these transitions
    (any other is ignored: a connection that is gone stays gone, a closed one closed)::

        OPEN --end--> ENDING --session ended--> ENDED
        ENDING --end failed--> OPEN
        OPEN | ENDING | ENDED --send failed--> GONE
        any but CLOSED --close()--> CLOSED

    The first of ENDED, GONE and CLOSED the connection reaches gives its ``closed_reason`` and
    ``close_code``: a connection whose session ended still closes with 1000 when a send fails after.
    """

    OPEN = "open"
    """Client frames are handled and chats start."""
    ENDING = "ending"
    """``end`` is cancelling the chats and ending the session: input is ignored, no chat starts."""
    ENDED = "ended"
    """The session is over: the ingress should close with ``CLOSE_NORMAL``."""
    GONE = "gone"
    """Sending failed: nothing more is sent; the ingress should close with ``CLOSE_GOING_AWAY``."""
    CLOSED = "closed"
    """``close()`` was called: the chats are cancelled, nothing more is handled or sent."""


_OPEN, _ENDING, _ENDED, _GONE, _CLOSED = ConnectionState
_MOVES: dict[ConnectionState, frozenset[ConnectionState]] = {
    _OPEN: frozenset({_ENDING, _GONE, _CLOSED}),
    _ENDING: frozenset({_OPEN, _ENDED, _GONE, _CLOSED}),
    _ENDED: frozenset({_GONE, _CLOSED}),
    _GONE: frozenset({_CLOSED}),
    _CLOSED: frozenset(),
}
# (closed_reason, close_code) of the state the connection stopped in first.
_STOPPED: dict[ConnectionState, tuple[str, int | None]] = {
    _ENDED: ("session ended", CLOSE_NORMAL),
    _GONE: ("send failed", CLOSE_GOING_AWAY),
    _CLOSED: ("closed", None),
}


class Lifecycle:
    """One connection's state, from OPEN to CLOSED."""

    def __init__(self) -> None:
        self._state = ConnectionState.OPEN
        self._stopped_in: ConnectionState | None = None  # the first of ENDED, GONE, CLOSED reached

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def open(self) -> bool:
        """Client frames are handled and chats may start."""
        return self._state is ConnectionState.OPEN

    @property
    def sending(self) -> bool:
        """Frames may still be sent: the socket is not known to be gone, and ``close()`` was not called."""
        return self._state not in (ConnectionState.GONE, ConnectionState.CLOSED)

    @property
    def closed_reason(self) -> str | None:
        return _STOPPED[self._stopped_in][0] if self._stopped_in else None

    @property
    def close_code(self) -> int | None:
        return _STOPPED[self._stopped_in][1] if self._stopped_in else None

    def move(self, to: ConnectionState) -> bool:
        """Go to ``to`` if the transitions allow it; False (and nothing changes) when they do not."""
        if to not in _MOVES[self._state]:
            return False
        self._state = to
        if self._stopped_in is None and to in _STOPPED:
            self._stopped_in = to
        return True
