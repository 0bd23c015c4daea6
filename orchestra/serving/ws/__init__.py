"""The WebSocket protocol of spec §7 (see ``_connection`` for the decisions the spec leaves open)."""

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
    handshake_credentials,
)

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
    "WsConnection",
    "handshake_credentials",
]
