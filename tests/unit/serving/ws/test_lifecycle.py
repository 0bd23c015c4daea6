"""The connection's state machine (orchestra/serving/ws/_lifecycle.py) on its own."""

from __future__ import annotations

from orchestra.serving.ws import CLOSE_GOING_AWAY, CLOSE_NORMAL, ConnectionState
from orchestra.serving.ws._lifecycle import Lifecycle

OPEN, ENDING, ENDED, GONE, CLOSED = ConnectionState


def test_end_then_close() -> None:
    life = Lifecycle()
    assert life.state is OPEN and life.open and life.sending
    assert (life.closed_reason, life.close_code) == (None, None)
    assert life.move(ENDING) and not life.open and life.sending
    assert life.move(OPEN) and life.open  # the end failed: the client may try again
    assert life.move(ENDING) and life.move(ENDED)
    assert (life.closed_reason, life.close_code) == ("session ended", CLOSE_NORMAL)
    assert life.move(GONE) and not life.sending
    assert (life.closed_reason, life.close_code) == ("session ended", CLOSE_NORMAL)  # the first stop wins
    assert life.move(CLOSED) and life.close_code == CLOSE_NORMAL
    assert not any(life.move(state) for state in ConnectionState)  # closed is final
    assert life.state is CLOSED


def test_gone_stays_gone() -> None:
    life = Lifecycle()
    assert life.move(ENDING) and life.move(GONE)
    assert not life.move(ENDED) and not life.move(OPEN) and life.state is GONE
    assert not life.open and not life.sending
    assert (life.closed_reason, life.close_code) == ("send failed", CLOSE_GOING_AWAY)
    assert life.move(CLOSED) and life.closed_reason == "send failed"


def test_close_while_open_asks_for_no_close() -> None:
    life = Lifecycle()
    assert not life.move(ENDED)  # only through ENDING
    assert life.move(CLOSED) and not life.sending and not life.open
    assert (life.closed_reason, life.close_code) == ("closed", None)
