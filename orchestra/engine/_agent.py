"""An agent: a role, a system prompt and a provider. It turns a ``TurnRequest`` into a ``TurnResult``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from orchestra.engine._config import AgentConfig
from orchestra.engine._messages import RunEvent, TokenEvent, TurnEnd, TurnRequest, TurnResult, TurnStart
from orchestra.providers._base import ChatMessage, Completion, CompletionRequest, LLMProvider, TokenDelta

__all__ = ["Agent", "EventSink", "build_messages"]

EventSink = Callable[[RunEvent], None]
"""Receives a run's events in order; must not block (it is called on the event loop)."""


def build_messages(config: AgentConfig, request: TurnRequest) -> tuple[ChatMessage, ...]:
    """The model's view of a turn: system prompt, prior session turns, then the team's work and the task."""
    system = config.system_prompt
    if request.user_context:
        system += "\n\nUser context (JSON): " + json.dumps(request.user_context, sort_keys=True)
    if request.memories:
        system += "\n\nRelevant memories from the user's earlier sessions:" + "".join(
            f"\n- User: {m.user}\n  Answer: {m.assistant}" for m in request.memories
        )
    messages = [ChatMessage(role="system", content=system)]
    for turn in request.history:
        messages.append(ChatMessage(role="user", content=turn.user))
        messages.append(ChatMessage(role="assistant", content=turn.assistant))
    parts = [f"Task: {request.task}"]
    if request.inputs:
        parts.append("Work of your team so far:")
        parts.extend(f"### {c.agent} ({c.role}, round {c.round})\n{c.text}" for c in request.inputs)
    parts.append(f"Your turn ({request.agent}, round {request.round}): {request.instruction}")
    messages.append(ChatMessage(role="user", content="\n\n".join(parts)))
    return tuple(messages)


class _Coalescer:
    """Batches token deltas: the first goes out at once, later ones at most ``window`` seconds late."""

    def __init__(self, request: TurnRequest, sink: EventSink, window: float) -> None:
        self._req = request
        self._sink = sink
        self._window = window
        self._buf: list[str] = []
        self._last_flush = float("-inf")
        self._timer: asyncio.TimerHandle | None = None

    def add(self, text: str) -> None:
        self._buf.append(text)
        now = time.monotonic()
        if self._window <= 0 or now - self._last_flush >= self._window:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_at(
                asyncio.get_running_loop().time() + self._window - (now - self._last_flush), self.flush
            )

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buf:
            return
        r = self._req
        token = "".join(self._buf)
        self._buf.clear()
        self._last_flush = time.monotonic()
        self._sink(TokenEvent(run_id=r.run_id, agent=r.agent, role=r.role, round=r.round, token=token))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class Agent:
    """Runs turns for one agent instance. Stateless between turns: everything it needs is in the request."""

    def __init__(self, name: str, config: AgentConfig, provider: LLMProvider) -> None:
        self.name = name
        self.config = config
        self.provider = provider

    def _completion_request(self, request: TurnRequest) -> CompletionRequest:
        return CompletionRequest(
            model=request.model,
            messages=build_messages(self.config, request),
            max_tokens=self.config.max_tokens,
            temperature=self.config.temperature,
            metadata={
                "role": request.role,
                "agent": request.agent,
                "round": request.round,
                "team": request.team,
            },
        )

    async def run_turn(
        self, request: TurnRequest, sink: EventSink | None = None, *, coalesce_s: float = 0.0
    ) -> TurnResult:
        """Take one turn. With a sink and ``request.stream``, tokens are emitted as they arrive."""
        started = time.monotonic()
        creq = self._completion_request(request)
        r = request
        if sink is not None:
            sink(TurnStart(run_id=r.run_id, agent=r.agent, role=r.role, round=r.round))
        completion: Completion | None = None
        if sink is not None and request.stream:
            coalescer = _Coalescer(request, sink, coalesce_s)
            try:
                async for item in self.provider.stream(creq):
                    if isinstance(item, TokenDelta):
                        if item.text:
                            coalescer.add(item.text)
                    else:
                        completion = item
                coalescer.flush()
            finally:
                coalescer.close()
            if completion is None:  # a provider that broke the contract; fail loudly, not silently
                raise RuntimeError(f"provider {self.provider.name!r} ended a stream without a completion")
        else:
            completion = await self.provider.complete(creq)
        result = TurnResult(
            agent=r.agent,
            role=r.role,
            round=r.round,
            text=completion.text,
            model=completion.model,
            provider=completion.provider,
            prompt_tokens=completion.usage.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens,
            latency_s=round(time.monotonic() - started, 6),
        )
        if sink is not None:
            sink(TurnEnd(run_id=r.run_id, agent=r.agent, role=r.role, round=r.round, step=result.step()))
        return result
