"""How a batch of turns crosses a process boundary: JSON bytes written and read by pydantic-core.

Pickling the models instead (what Ray does with any object) runs cloudpickle's Python-level hooks for
every model of a batch on both sides: in W1 that was the largest single item of the coordinator's CPU
after the garbage collector. Bytes pass through Ray's serializer as they are. A failed turn's error stays
a Python object beside the JSON (errors are rare, and pickling keeps their type and ``retry_after``).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter

from orchestra.engine._messages import TurnRequest, TurnResult
from orchestra.errors import OrchestraError

__all__ = ["TurnOutcomes", "decode_outcomes", "decode_turns", "encode_outcomes", "encode_turns"]

_REQUESTS: TypeAdapter[list[TurnRequest]] = TypeAdapter(list[TurnRequest])
_RESULTS: TypeAdapter[list[TurnResult | None]] = TypeAdapter(list[TurnResult | None])

TurnOutcomes = tuple[bytes, dict[int, OrchestraError]]
"""The results as JSON (``null`` where a turn failed) and each failed turn's error by its index."""


def encode_turns(requests: Sequence[TurnRequest]) -> bytes:
    return _REQUESTS.dump_json(list(requests))


def decode_turns(data: bytes) -> list[TurnRequest]:
    return _REQUESTS.validate_json(data)


def encode_outcomes(outcomes: Sequence[TurnResult | OrchestraError]) -> TurnOutcomes:
    errors = {i: o for i, o in enumerate(outcomes) if isinstance(o, OrchestraError)}
    results = [None if isinstance(o, OrchestraError) else o for o in outcomes]
    return _RESULTS.dump_json(results), errors


def decode_outcomes(data: TurnOutcomes) -> list[TurnResult | OrchestraError]:
    results, errors = data
    decoded = _RESULTS.validate_json(results)
    return [errors[i] if r is None else r for i, r in enumerate(decoded)]
