"""The runtime on a real local Ray: teams end to end, distinct agent actors, streaming, cancel, deadline."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

import orchestra
import orchestra.engine
from actors.client import shard_of
from orchestra import (
    DeadlineExceededError,
    NotFoundError,
    RunCancelledError,
    RunCompleted,
    TokenEvent,
    TurnEnd,
    TurnStart,
    ValidationError,
)

from .conftest import integration_raw_config

TEAMS = ["coding-team", "research-team", "creative-team", "coding-debate"]


async def test_all_teams_in_all_modes(orchestra_handle: Any) -> None:
    runs = [(team, mode) for team in TEAMS for mode in orchestra.MODES]
    results = await asyncio.gather(
        *(
            orchestra_handle.achat(
                "Write a function that merges intervals", swarm_type=t, optimization_mode=m
            )
            for t, m in runs
        )
    )
    for (team, mode), result in zip(runs, results, strict=True):
        steps = result.metadata.processing_steps
        assert result.metadata.swarm_type == team and result.metadata.optimization_mode == mode
        assert result.metadata.tokens_used == sum(s.prompt_tokens + s.completion_tokens for s in steps) > 0
        assert 0 <= result.quality_score <= 1 and result.response
        assert result.metadata.model.startswith("scripted/")
        transcript = orchestra_handle.transcript(result.run_id)
        assert [e.agent for e in transcript.entries] == [s.agent for s in steps]
        assert transcript.outcome == "completed"


def test_agents_are_distinct_actors(orchestra_handle: Any) -> None:
    actors = orchestra_handle.actors()
    orchestrators = [a for a in actors if a["kind"] == "orchestrator"]
    agents = [a for a in actors if a["kind"] == "agent"]
    assert len(orchestrators) == 1
    debate = [a for a in agents if a["team"] == "coding-debate"]
    assert {a["agent"] for a in debate} == {"coder-1", "coder-2", "coder-3", "coder-4", "judge"}
    assert len({a["actor_id"] for a in agents}) == len(agents)
    assert len({a["pid"] for a in agents}) == len(agents)  # each agent is its own process
    assert orchestrators[0]["pid"] not in {a["pid"] for a in agents}

    import ray

    named = ray.get_actor("agent-coding-debate-judge", namespace="orchestra-test")
    assert ray.get(named.info.remote())["role"] == "judge"


def test_connect_again_reuses_the_live_orchestrator(orchestra_handle: Any) -> None:
    again = orchestra.connect(config=orchestra_handle.config, namespace="orchestra-test")
    before = orchestra_handle.actors()[0]["actor_id"]
    assert again.actors()[0]["actor_id"] == before


async def test_many_sessions_share_actor_calls(orchestra_handle: Any) -> None:
    def calls_and_turns() -> tuple[int, int]:
        agents = [
            a for a in orchestra_handle.actors() if a["kind"] == "agent" and a["team"] == "coding-debate"
        ]
        return sum(a["calls"] for a in agents), sum(a["turns"] for a in agents)

    calls0, turns0 = calls_and_turns()
    results = await asyncio.gather(
        *(
            orchestra_handle.achat(f"task {i}", swarm_type="coding-debate", optimization_mode="balanced")
            for i in range(48)
        )
    )
    calls1, turns1 = calls_and_turns()
    assert len({r.session_id for r in results}) == 48
    assert turns1 - turns0 == 48 * 7
    # Turns of sessions in flight together share actor calls (unbatched, calls would equal turns).
    assert calls1 - calls0 < (turns1 - turns0) / 2, (calls1 - calls0, turns1 - turns0)


async def test_stream_through_ray(orchestra_handle: Any) -> None:
    events = [
        e
        async for e in orchestra_handle.stream(
            "Write a haiku", swarm_type="coding-debate", optimization_mode="lite"
        )
    ]
    final = events[-1]
    assert isinstance(final, RunCompleted)
    texts: dict[tuple[str, int], str] = {}
    started: set[tuple[str, int]] = set()
    for e in events[:-1]:
        key = (e.agent, e.round)
        if isinstance(e, TurnStart):
            started.add(key)
        elif isinstance(e, TokenEvent):
            assert key in started
            texts[key] = texts.get(key, "") + e.token
        else:
            assert isinstance(e, TurnEnd) and key in started
    transcript = orchestra_handle.transcript(final.result.run_id)
    assert {(x.agent, x.round): x.text for x in transcript.entries} == texts


async def test_a_streamed_run_ends_in_one_item_per_hop(
    orchestra_handle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every stream item costs a Ray round on both sides: the agent's result travels with its last
    # events, and (with in-process stores, where storing the turn does not wait) the orchestrator's
    # RunCompleted with the last turn's TurnEnd. With a shared store the turn is stored before the answer
    # is sent, which costs one item more: an answer is never sent for a turn that was not stored.
    monkeypatch.delenv("ORCHESTRA_REDIS_URL", raising=False)
    handle = orchestra.connect(config=orchestra_handle.config, namespace="orchestra-hops")
    try:
        request = orchestra.engine.parse_run_request(
            {"message": "Write a haiku", "swarm_type": "research-team", "optimization_mode": "lite"}
        )
        batches = [b async for b in handle.service.stream(request)]
    finally:
        handle.shutdown()
    assert isinstance(batches[-1][-1], RunCompleted) and isinstance(batches[-1][-2], TurnEnd)
    assert sum(isinstance(e, RunCompleted) for b in batches for e in b) == 1

    import ray

    judge = ray.get_actor("agent-coding-debate-judge", namespace="orchestra-test")
    turn = orchestra.engine.TurnRequest(
        run_id="one-item-per-hop", team="coding-debate", agent="judge", role="judge", round=1,
        task="Pick one", instruction="Judge.", model="scripted/judge", stream=True,
    )  # fmt: skip
    items = [await ref async for ref in judge.stream.remote(turn)]
    assert all(isinstance(i, list) for i in items)
    assert isinstance(items[-1][-1], orchestra.engine.TurnResult) and isinstance(items[-1][-2], TurnEnd)
    assert not any(isinstance(e, orchestra.engine.TurnResult) for i in items[:-1] for e in i)


async def test_session_continues_across_calls(orchestra_handle: Any) -> None:
    first = await orchestra_handle.achat("Write a poem about rivers", optimization_mode="lite")
    second = await orchestra_handle.achat(
        "Shorter please", session_id=first.session_id, optimization_mode="lite"
    )
    assert second.execution_mode == "session:creative-team"
    session = orchestra_handle.session(first.session_id)
    assert [t.run_id for t in session.turns] == [first.run_id, second.run_id]
    other = orchestra_handle.with_tenant("someone-else")
    with pytest.raises(NotFoundError):
        other.session(first.session_id)
    with pytest.raises(NotFoundError):
        other.transcript(first.run_id)
    orchestra_handle.end_session(first.session_id)
    with pytest.raises(NotFoundError):
        orchestra_handle.session(first.session_id)


async def test_cancellation_stops_the_run_everywhere(orchestra_handle: Any) -> None:
    run_id = "cancel-me-1"
    task = asyncio.create_task(
        orchestra_handle.achat(
            "long debate", swarm_type="slow-debate", optimization_mode="lite", run_id=run_id
        )
    )
    # wait until the run is really in flight on the orchestrator
    for _ in range(100):
        if run_id in orchestra_handle.running():
            break
        await asyncio.sleep(0.01)
    assert await orchestra_handle.acancel(run_id)
    with pytest.raises(RunCancelledError):
        await task
    assert run_id not in orchestra_handle.running()
    assert orchestra_handle.transcript(run_id).outcome == "cancelled"
    busy = [a for a in orchestra_handle.actors() if a["kind"] == "agent" and a["running_runs"]]
    assert busy == []


async def test_deadline_is_a_timeout_error(orchestra_handle: Any) -> None:
    with pytest.raises(DeadlineExceededError) as info:
        await orchestra_handle.achat("never ends", swarm_type="slow-debate", optimization_mode="quality")
    assert info.value.code == "TIMEOUT_ERROR" and info.value.http_status == 504


async def test_bad_input_is_rejected_before_any_work(orchestra_handle: Any) -> None:
    with pytest.raises(ValidationError):
        await orchestra_handle.achat("hi", swarm_type="no-such-team")
    with pytest.raises(ValidationError):
        await orchestra_handle.achat("", swarm_type="coding-team")


def test_bad_provider_config_fails_at_connect(
    ray_session: Any, raw_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = copy.deepcopy(raw_config)
    raw["providers"]["openai"]["api_key_env"] = "ORCHESTRA_TEST_MISSING_KEY"
    monkeypatch.setenv("ORCHESTRA_LLM_PROVIDER", "openai")
    with pytest.raises(orchestra.ConfigError, match="ORCHESTRA_TEST_MISSING_KEY"):
        orchestra.connect(config=orchestra.load_config(raw), namespace="orchestra-bad-provider")


async def test_sessions_spread_over_orchestrator_shards(ray_session: Any, raw_config: dict[str, Any]) -> None:
    raw = integration_raw_config(raw_config)
    raw["runtime"]["orchestrator_shards"] = 2
    handle = orchestra.connect(config=orchestra.load_config(raw), namespace="orchestra-shards")
    try:
        results = await asyncio.gather(
            *(
                handle.achat(f"question {i}", swarm_type="research-team", optimization_mode="lite")
                for i in range(8)
            )
        )
        by_shard = {shard_of("local", r.session_id, 2) for r in results}
        assert by_shard == {0, 1}
        # each session's later turn lands on the shard that holds its history
        follow = await handle.achat("and then?", session_id=results[0].session_id, optimization_mode="lite")
        assert follow.execution_mode == "session:research-team"
        assert len(handle.session(results[0].session_id).turns) == 2
        orchestrators = [a for a in handle.actors() if a["kind"] == "orchestrator"]
        assert sorted(o["shard"] for o in orchestrators) == [0, 1]
        assert all(o["sessions"] > 0 for o in orchestrators)
    finally:
        handle.shutdown()


def test_teams_listing_and_detached_orchestrator(ray_session: Any, orchestra_handle: Any) -> None:
    teams = {t.swarm_type: t for t in orchestra_handle.teams()}
    assert {"coding-team", "research-team", "creative-team", "coding-debate"} <= set(teams)
    assert teams["coding-debate"].modes["quality"]["agents"] == {"coder": 4}
    assert teams["coding-debate"].modes["lite"]["deadline_s"] == 30

    from ray._private.state import actors as actor_table  # the GCS table; the state API needs a dashboard

    handle = orchestra.connect(config=orchestra_handle.config, namespace="orchestra-detached", detached=True)
    try:
        info = handle.actors()[0]
        row = actor_table()[info["actor_id"]]
        assert row["Name"] == "orchestrator-0" and row["IsDetached"] is True
        assert actor_table()[orchestra_handle.actors()[0]["actor_id"]]["IsDetached"] is False
    finally:
        handle.shutdown()


async def test_a_cancelled_turn_is_reported_as_cancelled_not_internal(
    ray_session: Any, raw_config: dict[str, Any]
) -> None:
    """Regression: an agent actor reported a turn stopped by cancel_run as INTERNAL_ERROR."""
    import ray

    from actors import AgentActor

    raw = copy.deepcopy(integration_raw_config(raw_config))
    raw["providers"]["scripted"].update({"latency_s": 30.0, "tokens_per_s": 0})
    config = orchestra.load_config(raw)
    actor = AgentActor.options(num_cpus=0).remote(config, "coding-debate", "judge", "judge")  # type: ignore[attr-defined]
    try:
        turn = orchestra.engine.TurnRequest(
            run_id="to-cancel", team="coding-debate", agent="judge", role="judge", round=1,
            task="Pick one", instruction="Judge.", model="scripted/judge",
        )  # fmt: skip
        batch = actor.handle.remote(orchestra.engine.TURNS.requests([turn]), ["k"])
        streamed = actor.stream.remote(turn.model_copy(update={"stream": True}))
        for _ in range(100):  # both turns running on the actor
            if (
                await actor.cancel_run.remote("__probe__") == 0
                and (await actor.info.remote())["running_runs"]
            ):
                break
            await asyncio.sleep(0.05)
        assert await actor.cancel_run.remote("to-cancel") == 2
        ((_, outcome),) = orchestra.engine.TURNS.read_outcomes(await batch)
        assert isinstance(outcome, orchestra.RunCancelledError) and outcome.code == "CANCELLED"
        items = [await ref async for ref in streamed]
        assert isinstance(items[-1], orchestra.RunCancelledError) and items[-1].code == "CANCELLED"
    finally:
        ray.kill(actor)
