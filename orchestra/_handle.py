"""``OrchestraHandle``: the notebook and script API over any ``ChatService``.

``orchestra.connect()`` returns one over the live Ray actors (the same sessions and actors HTTP clients
use); ``orchestra run --local`` uses one over an in-process ``Engine``. The handle adds only convenience:
keyword arguments instead of a ``RunRequest``, a fixed tenant, and blocking twins of the async methods.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Protocol, TypedDict, TypeVar

from typing_extensions import Unpack

from orchestra._types import Mode
from orchestra.engine._config import OrchestraConfig
from orchestra.engine._engine import parse_run_request
from orchestra.engine._messages import ChatResult, RunEvent, RunFailed, RunRequest, TeamInfo, Transcript
from orchestra.engine._service import ChatService
from orchestra.errors import ConfigError, error_from_dict
from orchestra.stores._sessions import Session

__all__ = ["HostControl", "OrchestraHandle"]

T = TypeVar("T")


class ChatOptions(TypedDict, total=False):
    """The optional fields of a chat, as keyword arguments (``None`` = the default)."""

    swarm_type: str | None
    optimization_mode: Mode
    session_id: str | None
    user_context: dict[str, Any] | None
    use_memory: bool | None
    run_id: str | None


class HostControl(Protocol):
    """What a runtime host (Ray) offers beyond chats: its processes, and starting/stopping them."""

    def actors(self) -> list[dict[str, Any]]:
        """The live actors with their kind, name, pid and counters."""
        ...

    def warm_up(self, teams: list[str] | None = None) -> int:
        """Start the agent actors of ``teams`` (all by default) now; returns how many exist."""
        ...

    def running(self, tenant: str) -> list[str]:
        """Run ids of ``tenant`` running now."""
        ...

    def shutdown(self) -> None:
        """Stop the orchestrator actors and the agent actors of their namespace."""
        ...


class _Loop:
    """A private event loop in a daemon thread: the blocking methods run their coroutine there, so they
    work the same in a plain script and inside Jupyter (whose own loop is already running)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="orchestra-handle", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()


class OrchestraHandle:
    """Chats, streams, sessions and transcripts of one tenant. ``a``-prefixed methods and ``stream`` are
    async; their plain twins block."""

    def __init__(
        self,
        service: ChatService,
        config: OrchestraConfig,
        *,
        tenant: str = "local",
        host: HostControl | None = None,
        _loop: _Loop | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.tenant = tenant
        self._host = host
        self._loop = _loop or _Loop()

    def with_tenant(self, tenant: str) -> OrchestraHandle:
        """The same runtime seen as another tenant."""
        return OrchestraHandle(self.service, self.config, tenant=tenant, host=self._host, _loop=self._loop)

    def request(self, message: str, **options: Unpack[ChatOptions]) -> RunRequest:
        """A validated request of this tenant (``ValidationError`` with spec details otherwise)."""
        given = {k: v for k, v in options.items() if v is not None}
        return parse_run_request({"message": message, "tenant": self.tenant, **given})

    # -- chat ----------------------------------------------------------------------------------------

    async def achat(self, message: str, **options: Unpack[ChatOptions]) -> ChatResult:
        """Run a swarm on ``message`` and return the answer (spec §5 ``data``)."""
        return await self.service.run(self.request(message, **options))

    def chat(self, message: str, **options: Unpack[ChatOptions]) -> ChatResult:
        """``achat``, blocking."""
        return self._loop.run(self.achat(message, **options))

    async def stream(
        self, message: str, *, raise_on_error: bool = False, **options: Unpack[ChatOptions]
    ) -> AsyncIterator[RunEvent]:
        """The run's events as they happen: turn_start / token / turn_end per agent, then the result.

        Ends with ``RunCompleted`` (or ``RunFailed``, raised as its error instead with
        ``raise_on_error``). Leaving the loop early cancels the run.
        """
        batches = self.service.stream(self.request(message, **options))
        try:
            async for batch in batches:
                for event in batch:
                    if raise_on_error and isinstance(event, RunFailed):
                        raise error_from_dict(event.error)
                    yield event
        finally:
            await batches.aclose()

    async def acancel(self, run_id: str) -> bool:
        """Cancel a running run of this tenant; False when it is not running."""
        return await self.service.cancel(self.tenant, run_id)

    def cancel(self, run_id: str) -> bool:
        return self._loop.run(self.acancel(run_id))

    # -- sessions, transcripts, teams ----------------------------------------------------------------

    async def asession(self, session_id: str) -> Session:
        """The session with its turns (``NotFoundError`` if it is not this tenant's)."""
        return await self.service.session(self.tenant, session_id)

    def session(self, session_id: str) -> Session:
        return self._loop.run(self.asession(session_id))

    async def areset_session(self, session_id: str) -> Session:
        """Forget the session's turns (its context), keeping the session."""
        return await self.service.reset_session(self.tenant, session_id)

    async def aend_session(self, session_id: str) -> Session:
        return await self.service.end_session(self.tenant, session_id)

    def end_session(self, session_id: str) -> Session:
        return self._loop.run(self.aend_session(session_id))

    async def atranscript(self, run_id: str) -> Transcript:
        """Every turn of a finished (or failed) run of this tenant, with its full text."""
        return await self.service.transcript(self.tenant, run_id)

    def transcript(self, run_id: str) -> Transcript:
        return self._loop.run(self.atranscript(run_id))

    async def ateams(self) -> list[TeamInfo]:
        return await self.service.teams()

    def teams(self) -> list[TeamInfo]:
        """The configured teams with each mode's agents, rounds, judge, model and deadline."""
        return self._loop.run(self.ateams())

    # -- the host --------------------------------------------------------------------------------------

    def _control(self) -> HostControl:
        if self._host is None:
            raise ConfigError("this handle runs in-process: there are no actors to list, warm up or stop")
        return self._host

    def actors(self) -> list[dict[str, Any]]:
        """The live actors: each orchestrator and every agent actor."""
        return self._control().actors()

    def warm_up(self, teams: list[str] | None = None) -> int:
        """Start the agent actors now (they start on first use otherwise). Returns how many exist."""
        return self._control().warm_up(teams)

    def running(self) -> list[str]:
        """Run ids of this tenant running now."""
        return self._control().running(self.tenant)

    def shutdown(self) -> None:
        """Stop the orchestrator actors and the agent actors of their namespace (a Serve app running in
        the same namespace loses its agents too; they are made anew on its next turn)."""
        self._control().shutdown()
