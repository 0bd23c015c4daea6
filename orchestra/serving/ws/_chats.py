"""One connection's chats: the queue of waiting chats, the running one, and their cancellation.

A ``ChatQueue`` runs each chat in its own task against the ``ChatService`` stream and turns the run's
events into frames; every chat it accepted ends with exactly one terminal frame (the ``chat`` answer or
an error frame with its ``request_id``) unless the connection drops it (closed, or the socket is gone).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum

from orchestra.engine import ChatService, events
from orchestra.engine._messages import RunCompleted, RunEvent, RunFailed, RunRequest
from orchestra.errors import InternalError, OrchestraError, RunCancelledError, ServiceUnavailableError
from orchestra.serving.ws._frames import Frame, ServerFrames

__all__ = ["Chat", "ChatQueue", "ChatState"]

log = logging.getLogger("orchestra.ws")


class ChatState(Enum):
    """Where one chat is. ``Chat.move`` is the only place it changes, along these transitions::

        WAITING --start--> SCHEDULED --its task runs--> RUNNING --> COMPLETED | FAILED | CANCELLED
        WAITING --cancel--> CANCELLED

    A chat the connection drops (``close()``, or the socket is gone) keeps the state it had: nothing will
    report it any more. Whether the client asked to cancel it is not a state but ``Chat.cancel_requested``:
    the request may come in SCHEDULED or RUNNING and the chat still moves on as above (a SCHEDULED chat
    sees it when its task runs; the run may complete before the cancel takes effect).
    """

    WAITING = "waiting"
    """Queued behind the running chat."""
    SCHEDULED = "scheduled"
    """Its task was created but has not run yet: a task cancelled now would never run its body."""
    RUNNING = "running"
    """Its task is consuming the run's events."""
    COMPLETED = "completed"
    """Ended with the ``chat`` answer."""
    FAILED = "failed"
    """Ended with an error frame."""
    CANCELLED = "cancelled"
    """Ended with a ``CANCELLED`` error frame."""


_CHAT_MOVES: dict[ChatState, frozenset[ChatState]] = {
    ChatState.WAITING: frozenset({ChatState.SCHEDULED, ChatState.CANCELLED}),
    ChatState.SCHEDULED: frozenset({ChatState.RUNNING}),
    ChatState.RUNNING: frozenset({ChatState.COMPLETED, ChatState.FAILED, ChatState.CANCELLED}),
}
_ENDED = frozenset({ChatState.COMPLETED, ChatState.FAILED, ChatState.CANCELLED})


_DETACHED: set[asyncio.Task[None]] = set()
"""Tasks of chats whose connection went away while their run goes on for a resume (kept referenced)."""


@dataclass(eq=False)
class Chat:
    request: RunRequest
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False  # the client's cancel: the chat ends CANCELLED unless its run ends first
    follow_after: int | None = None
    """A resumed chat: it follows the run's event log after this id instead of starting the run."""
    detached: bool = False
    """Its connection went away; the run goes on (unsent) for ``resume_grace_s``, then longer if followed."""
    _state: ChatState = field(default=ChatState.WAITING, init=False)

    @property
    def request_id(self) -> str:
        return self.request.run_id

    @property
    def state(self) -> ChatState:
        return self._state

    @property
    def finished(self) -> bool:
        """Its outcome is decided (the terminal event arrived or was synthesised)."""
        return self._state in _ENDED

    def move(self, to: ChatState) -> None:
        if to not in _CHAT_MOVES.get(self._state, frozenset()):
            raise RuntimeError(f"chat {self.request_id}: no transition {self._state.name} -> {to.name}")
        self._state = to


def _outcome(event: RunFailed) -> ChatState:
    return ChatState.CANCELLED if event.error.get("code") == RunCancelledError.code else ChatState.FAILED


class ChatQueue:
    """The chats of one connection, run one at a time in arrival order, each in its own task.

    At most ``max_waiting`` wait behind the running one. Frames go out through ``send``, which returns
    False once the socket is gone. The connection says whether chats may start (``may_start``) and whether
    frames may still be sent (``may_send``).
    """

    def __init__(
        self,
        service: ChatService,
        tenant: str,
        *,
        send: Callable[[Frame], Awaitable[bool]],
        frames: ServerFrames,
        may_start: Callable[[], bool],
        may_send: Callable[[], bool],
        max_waiting: int,
        cancel_grace_s: float,
        resume_grace_s: float = 0.0,
    ) -> None:
        self.service = service
        self.tenant = tenant
        self.max_waiting = max_waiting
        self._send = send
        self._frames = frames
        self._may_start = may_start
        self._may_send = may_send
        self._cancel_grace_s = cancel_grace_s
        self._resume_grace_s = resume_grace_s
        self._running: Chat | None = None
        self._waiting: deque[Chat] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> Chat | None:
        return self._running

    @property
    def waiting(self) -> list[str]:
        return [c.request_id for c in self._waiting]

    def chats(self) -> list[Chat]:
        """The running chat, then the waiting ones in order."""
        return ([self._running] if self._running else []) + list(self._waiting)

    def submit(self, request: RunRequest, *, follow_after: int | None = None) -> None:
        """Queue a chat (it starts at once when none runs); ``SERVICE_UNAVAILABLE`` when the queue is full.

        ``follow_after``: the chat resumes the run ``request.run_id`` (started elsewhere) from its event
        log, after that event id."""
        if self._running is not None and len(self._waiting) >= self.max_waiting:
            raise ServiceUnavailableError(
                f"a chat is running and {len(self._waiting)} are waiting on this connection; "
                f"at most {self.max_waiting} may wait",
                details={
                    "max_waiting": self.max_waiting,
                    "running": self._running.request_id,
                    "waiting": self.waiting,
                },
            )
        self._waiting.append(Chat(request, follow_after=follow_after))
        self._start_next()

    def drop(self) -> None:
        """The socket is gone: forget the waiting chats, stop the running one without waiting for it
        (or, with ``resume_grace_s``, let its run go on for a resume)."""
        self._waiting.clear()
        self._detach_running()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:  # the sending chat task stops on its own when send returns False
                task.cancel()

    async def close(self) -> None:
        """Forget the waiting chats, cancel the running one (or detach it, as ``drop``) and wait until no
        task of ours is left (a detached chat's task goes on by itself)."""
        self._waiting.clear()
        self._detach_running()
        for task in list(self._tasks):
            task.cancel()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending)

    def _detach_running(self) -> None:
        """With ``resume_grace_s``, the running chat's run goes on without its connection: its task
        leaves ours and keeps consuming the run (sending nothing). After the grace period it is cancelled
        unless a client resumed the run meanwhile (it is followed), which lets it run to its end."""
        chat, task = self._running, self._running.task if self._running else None
        if (
            chat is None
            or task is None
            or self._resume_grace_s <= 0
            or chat.follow_after is not None  # a follower only watches: nothing of its own to keep
            or chat.finished
            or chat.cancel_requested
            or chat.state is not ChatState.RUNNING
        ):
            return
        chat.detached = True
        self._tasks.discard(task)
        _DETACHED.add(task)
        task.add_done_callback(_DETACHED.discard)
        loop = asyncio.get_running_loop()
        loop.call_later(self._resume_grace_s, lambda: _DETACHED.add(loop.create_task(self._expire(chat))))

    async def _expire(self, chat: Chat) -> None:
        task = chat.task
        if task is None or task.done() or chat.finished:
            return
        try:
            record = await self.service.run_record(self.tenant, chat.request_id)
            followed = record.followed_at > 0
        except Exception:  # unknown to the store (or it is down): nobody can be following it
            followed = False
        if not followed and not task.done():
            log.info(
                "websocket chat %s was not resumed within %s s: cancelled",
                chat.request_id,
                self._resume_grace_s,
            )
            task.cancel()

    # -- running ------------------------------------------------------------------------------------

    def _start_next(self) -> None:
        if self._running is not None or not self._may_start() or not self._waiting:
            return
        chat = self._waiting.popleft()
        chat.move(ChatState.SCHEDULED)
        self._running = chat
        task = asyncio.create_task(self._run(chat), name=f"ws-chat-{chat.request_id}")
        chat.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, chat: Chat) -> None:
        chat.move(ChatState.RUNNING)
        stream: AsyncIterator[RunEvent] | None = None
        try:
            try:
                if chat.cancel_requested:  # cancelled before its task first ran
                    raise asyncio.CancelledError
                if chat.follow_after is not None:
                    stream = events(self.service.follow(self.tenant, chat.request_id, chat.follow_after))
                else:
                    stream = events(self.service.stream(chat.request))
                async for event in stream:
                    if event.run_id != chat.request_id:
                        continue
                    if isinstance(event, RunCompleted):
                        chat.move(ChatState.COMPLETED)
                    elif isinstance(event, RunFailed):
                        chat.move(_outcome(event))
                    if chat.finished:
                        await self._send(self._frames.event(event))
                        return
                    sent = chat.detached or await self._send(self._frames.event(event))
                    if not sent and not chat.detached:  # gone, and not kept for a resume: stop here
                        return
                raise InternalError("the run ended without a result", details={"request_id": chat.request_id})
            except asyncio.CancelledError:
                if not chat.cancel_requested or chat.finished or not self._may_send():
                    raise
                # The client's cancel stopped us before the backend reported it: report it as it would.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    current.uncancel()
                await self._end(
                    chat, ChatState.CANCELLED, RunCancelledError(f"run {chat.request_id} was cancelled")
                )
            except OrchestraError as e:
                await self._end(chat, ChatState.FAILED, e)
            except Exception:
                log.exception("websocket chat %s failed", chat.request_id)
                error = InternalError("the chat failed unexpectedly", details={"request_id": chat.request_id})
                await self._end(chat, ChatState.FAILED, error)
        finally:
            if stream is not None:
                await self._stop_stream(chat, stream)
            if self._running is chat:
                self._running = None
            if not chat.detached:
                self._start_next()

    async def _end(self, chat: Chat, outcome: ChatState, error: OrchestraError) -> None:
        """End a chat with an error frame: its terminal frame when the run did not send one."""
        chat.move(outcome)
        await self._send(self._frames.error(error.to_dict(), chat.request_id))

    async def _stop_stream(self, chat: Chat, stream: AsyncIterator[RunEvent]) -> None:
        """Release the stream; when we stop before the run did, make sure the run stops too."""
        try:
            async with asyncio.timeout(self._cancel_grace_s):
                # A follower only watches someone's run: leaving stops the run only if asked to.
                if not chat.finished and (chat.follow_after is None or chat.cancel_requested):
                    with suppress(Exception):
                        await self.service.cancel(self.tenant, chat.request_id)
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with suppress(Exception):
                        await aclose()
        except TimeoutError:
            log.warning("stopping websocket chat %s took over %s s", chat.request_id, self._cancel_grace_s)

    # -- cancelling ---------------------------------------------------------------------------------

    async def cancel(self, targets: list[Chat]) -> list[str]:
        """Cancel these chats; each ends with a CANCELLED error frame. Returns the ids really cancelled.

        A running chat's run is cancelled in the backend and its task awaited, within ``cancel_grace_s``
        (then its task is cancelled outright).
        """
        cancelled: list[str] = []
        dropped = [c for c in self._waiting if c in targets]
        # Take them off the queue before any await, so none of them starts meanwhile.
        self._waiting = deque(c for c in self._waiting if c not in dropped)
        for chat in dropped:
            chat.cancel_requested = True
            error = RunCancelledError(f"run {chat.request_id} was cancelled before it started")
            await self._end(chat, ChatState.CANCELLED, error)
            cancelled.append(chat.request_id)
        running = self._running
        if running is not None and running in targets and running.task is not None:
            task = running.task
            running.cancel_requested = True
            if not running.finished:
                try:
                    stopped = await self.service.cancel(self.tenant, running.request_id)
                except Exception:
                    log.warning("backend cancel of %s failed", running.request_id, exc_info=True)
                    stopped = False
                if not stopped and running.state is ChatState.RUNNING:
                    # Not (yet) known to the backend: stop consuming, which stops the run. A SCHEDULED
                    # task must not be cancelled (it would never run its body): it sees cancel_requested
                    # when it runs.
                    task.cancel()
            done, _ = await asyncio.wait({task}, timeout=self._cancel_grace_s)
            if not done:
                task.cancel()
                await asyncio.wait({task})
            if running.state is ChatState.CANCELLED:
                cancelled.append(running.request_id)
        return cancelled
