"""Record completions of any provider to a JSONL file, and replay them offline.

A recording line is ``{"key", "model", "provider", "text", "usage", "finish_reason"}``; the key hashes the
model, the messages and the agent role/round, so a replayed run gets the same answer at the same step.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
from collections.abc import AsyncGenerator
from pathlib import Path

from orchestra.errors import ProviderRequestError
from orchestra.providers._base import (
    Completion,
    CompletionRequest,
    LLMProvider,
    StreamItem,
    TokenDelta,
    Usage,
)

__all__ = ["RecordingProvider", "ReplayProvider", "request_key"]


def request_key(request: CompletionRequest) -> str:
    payload = {
        "model": request.model,
        "messages": [[m.role, m.content] for m in request.messages],
        "role": request.metadata.get("role"),
        "agent": request.metadata.get("agent"),
        "round": request.metadata.get("round"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class RecordingProvider:
    """Wraps a provider and appends each finished completion to ``path`` (one JSON object per line)."""

    _lock = threading.Lock()  # one process may hold several recorders of the same file

    def __init__(self, inner: LLMProvider, path: str | os.PathLike[str]) -> None:
        self._inner = inner
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def name(self) -> str:
        return self._inner.name

    def _append(self, request: CompletionRequest, completion: Completion) -> None:
        line = json.dumps(
            {
                "key": request_key(request),
                "model": completion.model,
                "provider": completion.provider,
                "text": completion.text,
                "usage": completion.usage.model_dump(),
                "finish_reason": completion.finish_reason,
            }
        )
        with self._lock, self._path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    async def complete(self, request: CompletionRequest) -> Completion:
        completion = await self._inner.complete(request)
        self._append(request, completion)
        return completion

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        async for item in self._inner.stream(request):
            if isinstance(item, Completion):
                self._append(request, item)
            yield item

    async def aclose(self) -> None:
        await self._inner.aclose()


class ReplayProvider:
    """Answers from a recording; a request that was never recorded is a clear error, never a made-up answer.

    Repeated identical requests replay their recorded answers in order (the last one repeats).
    """

    def __init__(self, path: str | os.PathLike[str], *, tokens_per_s: float = 0.0) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            raise ProviderRequestError(
                f"replay file {str(self._path)!r} does not exist", details={"provider": "replay"}
            )
        self._answers: dict[str, list[dict[str, object]]] = {}
        self._next: dict[str, int] = {}
        self._tokens_per_s = tokens_per_s
        with self._path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self._answers.setdefault(str(entry["key"]), []).append(entry)
                except (ValueError, KeyError, TypeError):
                    raise ProviderRequestError(
                        f"replay file {str(self._path)!r} line {n} is not a recording entry",
                        details={"provider": "replay"},
                    ) from None

    @property
    def name(self) -> str:
        return "replay"

    def _lookup(self, request: CompletionRequest) -> Completion:
        key = request_key(request)
        entries = self._answers.get(key)
        if not entries:
            raise ProviderRequestError(
                f"no recorded answer for this request (model {request.model!r}, "
                f"agent {request.metadata.get('agent')!r}) in {str(self._path)!r}",
                details={"provider": "replay", "key": key},
            )
        i = self._next.get(key, 0)
        self._next[key] = i + 1
        entry = entries[min(i, len(entries) - 1)]
        usage = entry.get("usage")
        return Completion(
            text=str(entry["text"]),
            model=str(entry["model"]),
            provider=f"replay:{entry.get('provider', 'unknown')}",
            usage=Usage.model_validate(usage) if isinstance(usage, dict) else Usage(),
            finish_reason=str(entry.get("finish_reason") or "stop"),
        )

    async def complete(self, request: CompletionRequest) -> Completion:
        return self._lookup(request)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        completion = self._lookup(request)
        words = completion.text.split(" ")
        for i, word in enumerate(words):
            if self._tokens_per_s > 0:
                await asyncio.sleep(1 / self._tokens_per_s)
            yield TokenDelta(text=word if i == len(words) - 1 else word + " ")
        yield completion

    async def aclose(self) -> None:
        return None
