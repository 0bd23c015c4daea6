"""The one strict JSON reader for everything a client sends (REST bodies and WebSocket frames).

``json.loads`` is lenient where an API must not be: it accepts ``NaN``/``Infinity``, turns ``1e999999``
into infinity, lets the last of two equal keys silently win, and parses integers of thousands of digits
(slowly, then fails in ways that vary by Python version). Here each of those is an ``InvalidJson`` with a
reason that never echoes the input.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "InvalidJson", "loads"]

# Deeper than any body of this API needs, shallow enough to stay far from Python's recursion limit.
MAX_DEPTH = 64
# 20 digits hold every 64-bit integer; longer literals are not numbers anyone means.
MAX_INT_DIGITS = 20


class InvalidJson(ValueError):
    """The text is not JSON this API accepts; ``reason`` says why, without the input."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidJson("a number is too large (beyond the range of a double)")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidJson(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJson(f"duplicate key {key[:64]!r} in an object")
        result[key] = value
    return result


def _depth_ok(text: str | bytes) -> bool:
    """Whether no array/object nests deeper than ``MAX_DEPTH`` (brackets inside strings do not count)."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    depth, in_string, escaped = 0, False, False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def loads(text: str | bytes) -> Any:
    """Parse ``text`` (UTF-8 bytes or str) strictly; ``InvalidJson`` names what is wrong."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson("not UTF-8 text") from None
    if not text.strip():
        raise InvalidJson("the body is empty")
    if not _depth_ok(text):
        raise InvalidJson(f"nested more than {MAX_DEPTH} levels deep")
    try:
        return json.loads(
            text, parse_constant=_constant, parse_float=_float, parse_int=_int, object_pairs_hook=_object
        )
    except InvalidJson:
        raise
    except json.JSONDecodeError as e:  # .msg has no input and no position text
        raise InvalidJson(e.msg) from None
    except (ValueError, RecursionError) as e:
        raise InvalidJson(type(e).__name__) from None
