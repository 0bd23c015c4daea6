"""Batches as they cross to an agent actor or a coordinator and back: JSON bytes, nothing lost."""

from __future__ import annotations

import pickle

import orchestra
from orchestra.engine import (
    CHATS,
    TURNS,
    ChatMetadata,
    ChatResult,
    Contribution,
    HistoryTurn,
    ProcessingStep,
    RunRequest,
    TurnRequest,
    TurnResult,
)


def _turn(i: int) -> TurnRequest:
    return TurnRequest(
        run_id=f"run-{i}",
        team="coding-debate",
        agent=f"coder-{i}",
        role="coder",
        round=2,
        task="Sort a list — «quickly» 🚀",
        instruction="Revise.",
        inputs=(Contribution(agent="coder-9", role="coder", round=1, text='line 1\nline 2 "quoted"'),),
        history=(HistoryTurn(user="earlier", assistant="answer"),),
        user_context={"tz": "UTC", "nested": {"n": [1, 2.5, None, True]}},
        memories=(HistoryTurn(user="m", assistant="a"),),
        model="scripted/balanced",
        stream=bool(i % 2),
    )


def _result(i: int) -> TurnResult:
    return TurnResult(
        agent=f"coder-{i}", role="coder", round=1, text=f"answer {i} ✓", model="scripted/x",
        provider="scripted", prompt_tokens=10 + i, completion_tokens=5, latency_s=0.25,
    )  # fmt: skip


def _chat(run_id: str) -> ChatResult:
    step = _result(1).step()
    return ChatResult(
        response="final ✓",
        session_id="s-1",
        execution_mode="routed:coding-debate",
        quality_score=0.8,
        execution_time=1.5,
        metadata=ChatMetadata(
            tokens_used=15,
            model="scripted/x",
            swarm_type="coding-debate",
            optimization_mode="quality",
            processing_steps=[step, ProcessingStep(**{**step.model_dump(), "round": 2})],
        ),
        run_id=run_id,
    )


def _travel(data: object) -> object:
    return pickle.loads(pickle.dumps(data))  # as Ray sends it


def test_a_batch_of_turns_arrives_equal_to_what_was_sent() -> None:
    sent = [_turn(i) for i in range(5)]
    data = TURNS.requests(sent)
    assert isinstance(data, bytes)
    assert TURNS.read_requests(data) == sent


def test_outcomes_keep_their_keys_order_results_and_each_errors_type_and_retry_after() -> None:
    limited = orchestra.RateLimitError("provider rate limit", details={"provider": "openai"}, retry_after=7.0)
    cancelled = orchestra.RunCancelledError("the turn was cancelled", details={"agent": "coder-2"})
    sent = [("a", _result(0)), ("b", limited), ("c", _result(2)), ("d", cancelled)]
    back = TURNS.read_outcomes(_travel(TURNS.outcomes(sent)))  # type: ignore[arg-type]
    assert [key for key, _ in back] == ["a", "b", "c", "d"]
    assert back[0][1] == _result(0) and back[2][1] == _result(2)
    assert type(back[1][1]) is orchestra.RateLimitError and back[1][1].retry_after == 7.0
    assert back[1][1].to_dict() == limited.to_dict()
    assert type(back[3][1]) is orchestra.RunCancelledError and back[3][1].details == {"agent": "coder-2"}


def test_chats_and_their_results_keep_every_field_and_the_run_id() -> None:
    requests = [
        RunRequest(message="hi", tenant="t1", session_id="s-1", use_memory=True, user_context={"k": [1]}),
        RunRequest(message="again ✓", tenant="t2", optimization_mode="quality", swarm_type="coding-team"),
    ]
    assert CHATS.read_requests(CHATS.requests(requests)) == requests
    timeout = orchestra.DeadlineExceededError("too slow", details={"deadline_s": 5})
    back = CHATS.read_outcomes(_travel(CHATS.outcomes([("r-1", _chat("r-1")), ("r-2", timeout)])))  # type: ignore[arg-type]
    (key1, result), (key2, error) = back
    assert (key1, key2) == ("r-1", "r-2")
    assert isinstance(result, ChatResult) and result == _chat("r-1") and result.run_id == "r-1"
    assert type(error) is orchestra.DeadlineExceededError and error.details == {"deadline_s": 5}


def test_an_empty_batch_round_trips() -> None:
    assert TURNS.read_requests(TURNS.requests([])) == []
    assert CHATS.read_outcomes(CHATS.outcomes([])) == []
