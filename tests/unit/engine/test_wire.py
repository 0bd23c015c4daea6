"""Turn batches as they cross to an agent actor and back: JSON bytes, nothing lost on the way."""

from __future__ import annotations

import pickle

import orchestra
from orchestra.engine import (
    Contribution,
    HistoryTurn,
    TurnRequest,
    TurnResult,
    decode_outcomes,
    decode_turns,
    encode_outcomes,
    encode_turns,
)


def _request(i: int) -> TurnRequest:
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


def test_a_batch_of_turns_arrives_equal_to_what_was_sent() -> None:
    sent = [_request(i) for i in range(5)]
    data = encode_turns(sent)
    assert isinstance(data, bytes)
    assert decode_turns(data) == sent


def test_outcomes_keep_their_order_results_and_each_errors_type_and_retry_after() -> None:
    limited = orchestra.RateLimitError("provider rate limit", details={"provider": "openai"}, retry_after=7.0)
    cancelled = orchestra.RunCancelledError("the turn was cancelled", details={"agent": "coder-2"})
    outcomes = [_result(0), limited, _result(2), cancelled]
    # The errors travel pickled beside the JSON (as Ray sends the pair): check that round trip too.
    back = decode_outcomes(pickle.loads(pickle.dumps(encode_outcomes(outcomes))))
    assert back[0] == _result(0) and back[2] == _result(2)
    assert type(back[1]) is orchestra.RateLimitError and back[1].retry_after == 7.0
    assert back[1].to_dict() == limited.to_dict()
    assert type(back[3]) is orchestra.RunCancelledError and back[3].details == {"agent": "coder-2"}


def test_an_empty_batch_round_trips() -> None:
    assert decode_turns(encode_turns([])) == []
    assert decode_outcomes(encode_outcomes([])) == []
