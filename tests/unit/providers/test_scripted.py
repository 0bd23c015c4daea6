from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestra import ProviderRequestError
from orchestra.providers import (
    ChatMessage,
    Completion,
    CompletionRequest,
    RecordingProvider,
    ReplayProvider,
    ScriptedProvider,
    ScriptedSettings,
    TokenDelta,
)
from orchestra.providers._scripted import count_tokens


def req(
    role: str, round_: int = 1, task: str = "sort a list", model: str = "scripted/fast"
) -> CompletionRequest:
    return CompletionRequest(
        model=model,
        messages=(
            ChatMessage(role="system", content="sys"),
            ChatMessage(role="user", content=f"Task: {task}"),
        ),
        metadata={"role": role, "agent": role, "round": round_},
    )


async def test_deterministic_and_labelled() -> None:
    p = ScriptedProvider(ScriptedSettings(latency_s=0, tokens_per_s=0))
    a, b = await p.complete(req("coder")), await p.complete(req("coder"))
    assert a == b
    assert a.model.startswith("scripted/") and a.provider == "scripted"
    other_seed = await ScriptedProvider(ScriptedSettings(latency_s=0, tokens_per_s=0, seed=7)).complete(
        req("coder")
    )
    assert other_seed.text != a.text  # the seed reaches the text generator
    assert a.usage.completion_tokens == count_tokens(a.text) >= 40
    assert a.usage.prompt_tokens == count_tokens("sys") + count_tokens("Task: sort a list")


async def test_role_aware_answers() -> None:
    p = ScriptedProvider(ScriptedSettings(latency_s=0, tokens_per_s=0))
    from orchestra.engine import parse_score, parse_verdict

    judge = await p.complete(req("judge"))
    score = parse_score(judge.text)
    assert score is not None and 0 <= score <= 1
    verdicts = [parse_verdict((await p.complete(req("reviewer", r))).text) for r in range(1, 5)]
    assert verdicts[-1] is True  # every task is approved by the third review at the latest
    assert verdicts == sorted(verdicts)  # once approved, later reviews approve too
    assert "Proposal" in (await p.complete(req("debater"))).text
    assert "Revised proposal" in (await p.complete(req("debater", 2))).text


async def test_stream_joins_to_the_completion_and_keeps_its_pace() -> None:
    settings = ScriptedSettings(latency_s=0.05, tokens_per_s=400, completion_tokens=40)
    p = ScriptedProvider(settings)
    started = time.monotonic()
    first_at = None
    deltas: list[str] = []
    final: Completion | None = None
    async for item in p.stream(req("writer")):
        if isinstance(item, TokenDelta):
            first_at = first_at or time.monotonic() - started
            deltas.append(item.text)
        else:
            final = item
    elapsed = time.monotonic() - started
    assert final is not None and "".join(deltas) == final.text
    tokens = final.usage.completion_tokens
    # 2.5 ms apart: one delta per token, but for a token a late wake-up made due at once
    assert tokens * 0.5 <= len(deltas) <= tokens
    assert first_at is not None and first_at >= 0.05
    assert elapsed >= 0.05 + (tokens - 1) / 400 * 0.9


async def test_fast_stream_sends_due_tokens_together_at_the_same_pace() -> None:
    settings = ScriptedSettings(latency_s=0.0, tokens_per_s=20_000, completion_tokens=400)
    started = time.monotonic()
    items = [i async for i in ScriptedProvider(settings).stream(req("writer"))]
    elapsed = time.monotonic() - started
    deltas = [i.text for i in items if isinstance(i, TokenDelta)]
    final = items[-1]
    assert isinstance(final, Completion) and "".join(deltas) == final.text
    assert len(deltas[0].split()) == 1  # the first token goes alone, at once
    assert len(deltas) < final.usage.completion_tokens / 5  # ~1 ms of tokens per delta, not one each
    assert elapsed >= (final.usage.completion_tokens - 1) / 20_000 * 0.9


async def test_record_then_replay(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    rec = RecordingProvider(ScriptedProvider(ScriptedSettings(latency_s=0, tokens_per_s=0)), path)
    originals = [await rec.complete(req("coder")), await rec.complete(req("judge"))]
    streamed = [i async for i in rec.stream(req("writer"))]
    assert len(path.read_text().splitlines()) == 3

    replay = ReplayProvider(path)
    again = await replay.complete(req("coder"))
    assert again.text == originals[0].text and again.usage == originals[0].usage
    assert again.provider == "replay:scripted"
    items = [i async for i in replay.stream(req("writer"))]
    assert "".join(i.text for i in items if isinstance(i, TokenDelta)) == streamed[-1].text  # type: ignore[union-attr]
    with pytest.raises(ProviderRequestError, match="no recorded answer"):
        await replay.complete(req("coder", task="something never recorded"))


def test_replay_of_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(ProviderRequestError, match="does not exist"):
        ReplayProvider(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ProviderRequestError, match="line 1"):
        ReplayProvider(bad)
