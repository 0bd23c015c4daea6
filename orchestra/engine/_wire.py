"""How batches cross a process boundary: JSON bytes written and read by pydantic-core.

Turns go to an agent actor and come back in batches (``TURNS``); chats go to a coordinator (a mode replica
or the orchestrator actor) and their results stream back in groups (``CHATS``). Pickling the models
instead, which is what Ray and Serve do with any object, runs cloudpickle's Python-level hooks for every
model of a batch on both sides: in W1 that was the largest single item of the coordinator's CPU after the
garbage collector. Bytes pass through Ray's serializer as they are. A failed item's error stays a Python
object beside the JSON (errors are rare, and pickling keeps their type and ``retry_after``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Optional, TypeVar

from pydantic import BaseModel, TypeAdapter

from orchestra.engine._messages import ChatResult, RunRequest, TurnRequest, TurnResult
from orchestra.errors import OrchestraError

__all__ = ["CHATS", "TURNS", "Outcomes", "Wire"]

Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)

Outcomes = tuple[bytes, dict[int, OrchestraError], list[str]]
"""A group of outcomes: the results as JSON (``null`` where one failed), each failed one's error by its
index, and each outcome's key (what the caller matches it to its request by)."""


class Wire(Generic[Req, Res]):
    """The encoding of one kind of batch: requests one way, keyed outcomes the other."""

    def __init__(self, request: type[Req], result: type[Res], restore: Callable[[Res, str], Res]) -> None:
        self._requests: TypeAdapter[list[Req]] = TypeAdapter(list[request])  # type: ignore[valid-type]
        self._results: TypeAdapter[list[Res | None]] = TypeAdapter(list[Optional[result]])  # type: ignore[valid-type]  # noqa: UP045
        self._restore = restore

    def requests(self, requests: Sequence[Req]) -> bytes:
        return self._requests.dump_json(list(requests))

    def read_requests(self, data: bytes) -> list[Req]:
        return self._requests.validate_json(data)

    def outcomes(self, outcomes: Sequence[tuple[str, Res | OrchestraError]]) -> Outcomes:
        errors = {i: o for i, (_, o) in enumerate(outcomes) if isinstance(o, OrchestraError)}
        results = [None if isinstance(o, OrchestraError) else o for _, o in outcomes]
        return self._results.dump_json(results), errors, [key for key, _ in outcomes]

    def read_outcomes(self, data: Outcomes) -> list[tuple[str, Res | OrchestraError]]:
        results, errors, keys = data
        decoded = self._results.validate_json(results)
        return [
            (key, errors[i] if r is None else self._restore(r, key))
            for i, (key, r) in enumerate(zip(keys, decoded, strict=True))
        ]


TURNS: Wire[TurnRequest, TurnResult] = Wire(TurnRequest, TurnResult, lambda result, _: result)
"""Coordinator → agent actor: a batch of turns; back: their results, keyed as the caller chose."""

CHATS: Wire[RunRequest, ChatResult] = Wire(
    RunRequest, ChatResult, lambda result, run_id: result.model_copy(update={"run_id": run_id})
)
"""Caller → coordinator: a batch of chats; back: groups of results keyed by run id (``ChatResult.run_id``
is not part of its JSON, so it is restored from the key)."""
