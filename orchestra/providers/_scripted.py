"""The offline ``scripted`` provider: a labelled, deterministic stand-in for a model.

It is never presented as a real model: every model name it reports starts with ``scripted/``. Its answers
are role-aware so the team patterns behave as with a real model (a reviewer approves or requests changes,
a judge returns a score...), they depend only on the request and the seed, and they arrive with realistic
timing: ``latency_s`` to the first token, then ``tokens_per_s``.

Tokens are whitespace-separated words; prompt tokens are counted the same way (documented approximation).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncGenerator

from orchestra.providers._base import (
    ChatMessage,
    Completion,
    CompletionRequest,
    StreamItem,
    TokenDelta,
    Usage,
)
from orchestra.providers._settings import ScriptedSettings

__all__ = ["SCRIPTED_PREFIX", "ScriptedProvider", "count_tokens", "scripted_text"]

SCRIPTED_PREFIX = "scripted/"

_WORDS = re.compile(r"\S+")
_TOKENS = re.compile(r"\s*\S+\s*")


def count_tokens(text: str) -> int:
    """The scripted provider's token count: whitespace-separated words."""
    return len(text.split())  # same count as the regex \S+, several times faster on long prompts


def _digest(*parts: object) -> int:
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x00")
    return int.from_bytes(h.digest(), "big")


_APPROACHES = (
    "an iterative two-pointer walk",
    "a recursive divide-and-conquer split",
    "a hash map keyed by the normalised input",
    "a single pass with a bounded deque",
    "a sort followed by a linear merge",
    "a generator pipeline that streams the input",
)
_TOPICS = (
    "prior work and its limits",
    "the core mechanism",
    "trade-offs in practice",
    "failure modes and mitigations",
    "measurable outcomes",
)
_IMAGES = ("a lighthouse at dusk", "a train of paper boats", "an orchestra tuning up", "a city of kites")


def _task_of(request: CompletionRequest) -> str:
    """The user's task as the agents were given it (first line after 'Task:'), for flavour only."""
    for message in request.messages:
        if message.role == "user":
            match = re.search(r"Task:\s*(.+)", message.content)
            line = (match.group(1) if match else message.content).strip().splitlines()
            return (line[0] if line else "")[:80]
    return ""


def scripted_text(request: CompletionRequest, settings: ScriptedSettings) -> str:
    """The deterministic answer to ``request``: role-aware, roughly ``completion_tokens`` long."""
    meta = request.metadata
    role = str(meta.get("role", "assistant"))
    round_ = int(meta.get("round", 1) or 1)
    agent = str(meta.get("agent", role))
    task = _task_of(request)
    key = _digest(settings.seed, meta.get("team", ""), role, agent, task, round_)
    approach = _APPROACHES[key % len(_APPROACHES)]

    if role == "reviewer":
        # Each task needs 0-2 rounds of changes: deterministic, and the review loop gets exercised.
        needed = 1 + _digest(settings.seed, "review", task) % 3
        if round_ >= needed:
            head = "VERDICT: APPROVED. The implementation is correct, readable and handles the edge cases."
        else:
            head = (
                "VERDICT: CHANGES_REQUESTED. Handle the empty input explicitly and add a test for "
                f"the boundary case (review {round_})."
            )
    elif role in ("judge", "critic"):
        score = 0.55 + (key % 41) / 100  # 0.55 .. 0.95
        pick = "proposal " + "ABC"[key % 3]
        head = (
            f"Assessment: {pick} is the strongest; it is merged with the best points of the others. "
            f"SCORE: {score:.2f}"
        )
    elif role == "planner":
        head = f"PLAN for {task!r}: 1. clarify inputs 2. implement with {approach} 3. test edge cases."
    elif role in ("coder", "debater"):
        verb = "Proposal" if round_ == 1 else f"Revised proposal (round {round_})"
        head = f"{verb}: use {approach}. ```python\ndef solve(data):\n    return sorted(data)\n```"
    elif role == "researcher":
        head = f"Findings on {_TOPICS[key % len(_TOPICS)]} for {task!r}: three sources agree on the basics."
    elif role == "synthesizer":
        head = f"Synthesis for {task!r}: the findings converge; key points are merged and conflicts noted."
    elif role == "ideator":
        head = f"Idea: frame {task!r} through {_IMAGES[key % len(_IMAGES)]}."
    elif role == "writer":
        head = f"Final piece on {task!r}, built on the critic's favourite idea and its notes."
    elif role == "router":
        head = "ROUTE: research-team"
    else:
        head = f"Answer for {task!r}."

    words = head.split(" ")
    filler = ("detail", "step", "check", "note", "result", "reason", "example", "case")
    i = 0
    while len(words) < settings.completion_tokens:
        words.append(filler[(key + i) % len(filler)])
        i += 1
    return " ".join(words)


def _prompt_tokens(messages: tuple[ChatMessage, ...]) -> int:
    return sum(count_tokens(m.content) for m in messages)


class ScriptedProvider:
    """Deterministic offline provider with realistic latency, token rate and real streaming."""

    def __init__(self, settings: ScriptedSettings | None = None) -> None:
        self._settings = settings or ScriptedSettings()

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def settings(self) -> ScriptedSettings:
        return self._settings

    def _model(self, request: CompletionRequest) -> str:
        return request.model if request.model.startswith(SCRIPTED_PREFIX) else SCRIPTED_PREFIX + request.model

    def _completion(self, request: CompletionRequest, text: str) -> Completion:
        return Completion(
            text=text,
            model=self._model(request),
            provider=self.name,
            usage=Usage(prompt_tokens=_prompt_tokens(request.messages), completion_tokens=count_tokens(text)),
            finish_reason="stop",
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        text = scripted_text(request, self._settings)
        s = self._settings
        n = count_tokens(text)
        await asyncio.sleep(s.latency_s + (max(0, n - 1) / s.tokens_per_s if s.tokens_per_s > 0 else 0.0))
        return self._completion(request, text)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        text = scripted_text(request, self._settings)
        s = self._settings
        # Each token carries the whitespace after it, so the deltas join back to the exact text.
        tokens = _TOKENS.findall(text)
        start = time.monotonic()
        await asyncio.sleep(s.latency_s)
        due: list[str] = []  # tokens already due: at high rates they go as one delta, like a busy socket
        for i, token in enumerate(tokens):
            if s.tokens_per_s > 0 and i > 0:
                # Pace against the schedule, sleeping only when >1 ms ahead: per-token sleeps (and deltas)
                # would cost more than the tokens at high rates.
                ahead = start + s.latency_s + i / s.tokens_per_s - time.monotonic()
                if ahead > 0.001:
                    if due:
                        yield TokenDelta(text="".join(due))
                        due = []
                    await asyncio.sleep(ahead)
            due.append(token)
            if s.tokens_per_s <= 0 or i == 0:  # unpaced: every token is its own delta; the first at once
                yield TokenDelta(text="".join(due))
                due = []
        if due:
            yield TokenDelta(text="".join(due))
        yield self._completion(request, text)

    async def aclose(self) -> None:
        return None
