"""The WebSocket protocol of spec §7, free of Ray and of any web framework.

``WsConnection`` is one connection's state machine: it is fed the client's frames (``receive_text`` /
``receive_bytes``) and answers through an async ``send`` callback taking the frame as a dict. The Serve
ingress wraps a real Starlette WebSocket around it (authenticate, ``open()``, loop on receive, close with
``close_code`` when ``should_close``, always ``close()`` in ``finally``); tests drive it directly.

The runtime behind it is any ``ChatService`` (``orchestra/engine/_service.py``): an in-process
``orchestra.engine.Engine``, or the Ray edge's implementation the Serve ingress passes in.

The modules, by job: ``_frames`` (what travels on the socket: the protocol's constants, parsing and
validating client frames, building server frames), ``_lifecycle`` (the connection's ``ConnectionState``),
``_chats`` (the queue of waiting and running chats, each with its ``ChatState``) and ``_connection``
(``WsConnection``: dispatch, rate limit, commands, control).

Decisions the spec leaves open (also in docs/websocket.md and docs/asyncapi.yaml):

* Every accepted chat ends with exactly one terminal frame: a ``chat`` frame (the answer) or a ``control``
  error frame carrying its ``request_id``.
* ``cancel`` without arguments cancels the running chat; ``{"request_id": id}`` cancels that chat whether
  running or waiting; ``{"all": true}`` cancels the running and every waiting chat. Each cancelled chat ends
  with an error frame with code ``CANCELLED`` (the engine's own cancellation code), sent *before* the
  ``command`` result ``{"cancelled": [ids]}``. An unknown id is not an error: it is just not in the list.
* ``turn_end`` stream frames also carry ``step``: the turn's ``processing_steps`` entry.
* Oversized frames get a ``PAYLOAD_TOO_LARGE`` error frame and the connection stays open.
* ``receive_text`` is meant to be awaited by one receive loop, frame after frame; a ``cancel`` or ``end``
  answers only once the cancelled chats have ended (bounded by ``cancel_grace_s``).
"""

from orchestra.serving.ws._chats import ChatState
from orchestra.serving.ws._connection import WsConnection
from orchestra.serving.ws._frames import (
    BEARER_SUBPROTOCOL_PREFIX,
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_PATH,
    CLOSE_NORMAL,
    CLOSE_RATE_LIMITED,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    MAX_WAITING,
    REQUEST_ID_RE,
    SUBPROTOCOL,
    agent_event_data,
    handshake_credentials,
)
from orchestra.serving.ws._lifecycle import ConnectionState

__all__ = [
    "BEARER_SUBPROTOCOL_PREFIX",
    "CLOSE_AUTH_FAILED",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_PATH",
    "CLOSE_NORMAL",
    "CLOSE_RATE_LIMITED",
    "CLOSE_TOO_BIG",
    "MAX_FRAME_BYTES",
    "MAX_WAITING",
    "REQUEST_ID_RE",
    "SUBPROTOCOL",
    "ChatState",
    "ConnectionState",
    "WsConnection",
    "agent_event_data",
    "handshake_credentials",
]
