"""``ChatService``: the one contract every caller of the runtime talks to.

The REST routes, the WebSocket connection, the notebook handle (``orchestra.connect()``) and the command
line all call a ``ChatService``; where the work runs is the implementation's business:

- ``orchestra.engine.Engine``: in this process (unit tests, ``orchestra run --local``);
- ``actors.client.RayChatService``: on the orchestrator actors of a Ray cluster;
- ``serve_app.ServeChatService``: chats through the per-mode Serve deployments, the rest as above.

Every method names the tenant that asks: a tenant never sees, cancels or ends another's runs or sessions
(they are "not found" to it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from orchestra.engine._messages import ChatResult, RunEvent, RunRequest, TeamInfo, Transcript
from orchestra.stores._runs import RunRecord
from orchestra.stores._sessions import Session

__all__ = ["ChatService"]


@runtime_checkable
class ChatService(Protocol):
    async def run(self, request: RunRequest) -> ChatResult:
        """Run one chat turn of ``request.tenant`` to completion.

        Raises:
            ValidationError: unknown ``swarm_type``, or ``run_id`` already running.
            DeadlineExceededError: the run passed its mode's deadline.
            RunCancelledError: the run was cancelled through ``cancel``.
            ServiceUnavailableError: a backend (memory, the runtime itself) is unavailable.
            OrchestraError: any other failure, with its spec code.
        """
        ...

    def stream(self, request: RunRequest) -> AsyncGenerator[list[RunEvent], None]:
        """The run's events in batches as they become ready (turn_start, token, turn_end per agent); the
        last batch ends with ``RunCompleted`` or ``RunFailed`` (errors travel as that event, not raised).

        Batches, not single events: every event that crosses a process boundary costs a hop of CPU.
        Closing the iterator early cancels the run.
        """
        ...

    def follow(self, tenant: str, run_id: str, after: int = 0) -> AsyncGenerator[list[RunEvent], None]:
        """A run's events from its event log: those with an id above ``after``, then its live ones, until
        its last (``RunCompleted`` or ``RunFailed``); each exactly once. Following never cancels the run.

        Raises (on the first iteration) ``NotFoundError`` for an unknown run or another tenant's.
        """
        ...

    async def run_record(self, tenant: str, run_id: str) -> RunRecord:
        """The run's record (status, coordinator, checkpoints…). Raises ``NotFoundError``."""
        ...

    async def cancel(self, tenant: str, run_id: str) -> bool:
        """Cancel a running run of ``tenant``. False when no such run is running (any more)."""
        ...

    async def session(self, tenant: str, session_id: str) -> Session:
        """The session with its turns. Raises ``NotFoundError`` (also for another tenant's session)."""
        ...

    async def reset_session(self, tenant: str, session_id: str) -> Session:
        """Forget the session's turns, keeping the session. Raises ``NotFoundError``."""
        ...

    async def end_session(self, tenant: str, session_id: str) -> Session:
        """End the session; returns it as it was. Raises ``NotFoundError``."""
        ...

    async def transcript(self, tenant: str, run_id: str) -> Transcript:
        """Every turn of a finished (or failed) run with its full text. Raises ``NotFoundError``."""
        ...

    async def teams(self) -> list[TeamInfo]:
        """The configured teams with each mode's agents, rounds, judge, model and deadline."""
        ...
