"""Every pattern through the engine with the scripted provider, plus properties over team configs."""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import orchestra
import orchestra.engine
from orchestra import ChatResult, RunRequest
from orchestra.providers import ScriptedSettings
from tests.conftest import fast_raw_config
from tests.unit.conftest import make_engine


def check_accounting(result: ChatResult) -> None:
    steps = result.metadata.processing_steps
    assert result.metadata.tokens_used == sum(s.prompt_tokens + s.completion_tokens for s in steps)
    assert 0.0 <= result.quality_score <= 1.0
    assert result.execution_time >= 0
    assert all(s.model.startswith("scripted/") for s in steps)


@pytest.mark.parametrize("mode", orchestra.MODES)
@pytest.mark.parametrize("team", ["coding-team", "research-team", "creative-team", "coding-debate"])
async def test_every_team_and_mode(fast_config: orchestra.OrchestraConfig, team: str, mode: str) -> None:
    engine, spy = make_engine(fast_config)
    result = await engine.run(
        RunRequest(message="Write a function to merge intervals", swarm_type=team, optimization_mode=mode)
    )
    check_accounting(result)
    assert result.metadata.swarm_type == team and result.metadata.optimization_mode == mode
    assert result.execution_mode == team
    tier = fast_config.modes[mode].model_tier
    assert result.metadata.model == f"scripted/{tier}"
    assert len(spy.requests) == len(result.metadata.processing_steps)
    # the judge runs in quality mode (always in the debate) and is the last step
    has_judge = mode == "quality" or team == "coding-debate"
    assert (result.metadata.processing_steps[-1].role == "judge") is has_judge


async def test_debate_rounds_see_the_other_proposals(fast_config: orchestra.OrchestraConfig) -> None:
    engine, spy = make_engine(fast_config)
    result = await engine.run(
        RunRequest(message="Merge intervals", swarm_type="coding-debate", optimization_mode="balanced")
    )
    steps = result.metadata.processing_steps
    assert [(s.agent, s.round) for s in steps] == [
        ("coder-1", 1),
        ("coder-2", 1),
        ("coder-3", 1),
        ("coder-1", 2),
        ("coder-2", 2),
        ("coder-3", 2),
        ("judge", 3),
    ]
    round2 = [r for r in spy.requests if r.metadata["round"] == 2 and r.metadata["role"] == "debater"]
    for request in round2:
        prompt = request.messages[-1].content
        me = request.metadata["agent"]
        others = {"coder-1", "coder-2", "coder-3"} - {me}
        assert all(f"### {o} (debater, round 1)" in prompt for o in others)
    judge_prompt = spy.requests[-1].messages[-1].content
    assert all(f"### coder-{i} (debater, round 2)" in judge_prompt for i in (1, 2, 3))


async def test_review_loop_goes_back_to_the_coder_until_approved(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config)
    seen_revisions = set()
    for task in [f"task number {i}" for i in range(12)]:
        result = await engine.run(
            RunRequest(message=task, swarm_type="coding-team", optimization_mode="balanced")
        )
        roles = [s.role for s in result.metadata.processing_steps]
        assert roles[:3] == ["planner", "coder", "reviewer"]
        # coder and reviewer alternate after the plan; the loop ends on a review
        assert roles[1:] == ["coder", "reviewer"] * (len(roles[1:]) // 2)
        seen_revisions.add(roles.count("coder"))
    assert len(seen_revisions) > 1  # some tasks needed changes, some did not


async def test_review_loop_respects_max_iterations(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    for i in range(12):
        result = await engine.run(
            RunRequest(message=f"job {i}", swarm_type="coding-team", optimization_mode="lite")
        )
        roles = Counter(s.role for s in result.metadata.processing_steps)
        assert roles["reviewer"] == 1 and roles["coder"] == 1


async def test_fan_out_gives_each_researcher_a_distinct_angle(fast_config: orchestra.OrchestraConfig) -> None:
    engine, spy = make_engine(fast_config)
    await engine.run(
        RunRequest(message="How do batteries age?", swarm_type="research-team", optimization_mode="quality")
    )
    researcher_prompts = [r.messages[-1].content for r in spy.requests if r.metadata["role"] == "researcher"]
    assert len(researcher_prompts) == 4 and len(set(researcher_prompts)) == 4
    synth = next(r for r in spy.requests if r.metadata["role"] == "synthesizer").messages[-1].content
    assert all(f"### researcher-{i}" in synth for i in range(1, 5))


async def test_creative_quality_comes_from_the_critic(fast_config: orchestra.OrchestraConfig) -> None:
    engine, _ = make_engine(fast_config)
    result = await engine.run(
        RunRequest(message="A poem about tides", swarm_type="creative-team", optimization_mode="balanced")
    )
    transcript = await engine.transcript("local", result.run_id)
    critic = next(e for e in transcript.entries if e.role == "critic")
    assert orchestra.engine.parse_score(critic.text) == pytest.approx(result.quality_score)


def test_score_and_verdict_parsing() -> None:
    assert orchestra.engine.parse_score("ok\nSCORE: 0.8") == 0.8
    assert orchestra.engine.parse_score("Score: 85") == 0.85
    assert orchestra.engine.parse_score("SCORE: 7.5") == 0.075
    assert orchestra.engine.parse_score("SCORE: 250") == 1.0
    assert orchestra.engine.parse_score("no score") is None
    assert orchestra.engine.parse_verdict("VERDICT: APPROVED") is True
    assert orchestra.engine.parse_verdict("**VERDICT:** changes_requested, approve later") is False
    assert orchestra.engine.parse_verdict("I approve.") is True
    assert orchestra.engine.parse_verdict("I do not approve; changes needed") is False


# -- properties ------------------------------------------------------------------------------------

team_shapes = st.fixed_dictionaries(
    {
        "pattern": st.sampled_from(["review_loop", "debate", "pipeline", "fan_out_reduce"]),
        "count": st.integers(1, 5),
        "rounds": st.integers(1, 4),
        "judge": st.booleans(),
        "mode": st.sampled_from(orchestra.MODES),
        "seed": st.integers(0, 10_000),
        "message": st.text(min_size=1, max_size=60).filter(lambda s: s.strip() != ""),
    }
)


def build_team(shape: dict[str, Any]) -> dict[str, Any]:
    pattern, n = shape["pattern"], shape["count"]
    agent = {"role": "worker", "system_prompt": "Work."}
    agents: dict[str, Any] = {"judge": {"role": "judge", "system_prompt": "Judge."}}
    if pattern == "review_loop":
        agents |= {"a": {**agent, "role": "coder"}, "b": {**agent, "role": "reviewer"}}
        flow: dict[str, Any] = {"worker": "a", "reviewer": "b"}
        counts: dict[str, int] = {}
    elif pattern == "debate":
        agents |= {"a": {**agent, "role": "debater"}}
        flow, counts = {"debater": "a"}, {"a": n}
    elif pattern == "pipeline":
        agents |= {"a": {**agent, "role": "ideator"}, "b": {**agent, "role": "writer"}}
        flow, counts = {"stages": ["a", "b"]}, {"a": n}
    else:
        agents |= {"a": {**agent, "role": "researcher"}, "b": {**agent, "role": "synthesizer"}}
        flow, counts = {"workers": "a", "reducer": "b"}, {"a": n}
    mode_settings = {"agents": counts, "rounds": shape["rounds"], "judge": shape["judge"]}
    return {
        "description": "generated",
        "pattern": pattern,
        "flow": flow,
        "judge": "judge",
        "agents": agents,
        "modes": {m: mode_settings for m in orchestra.MODES},
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=team_shapes)
async def test_pattern_properties(raw_config: dict[str, Any], shape: dict[str, Any]) -> None:
    raw = copy.deepcopy(fast_raw_config(raw_config))
    raw["teams"]["generated"] = build_team(shape)
    cfg = orchestra.load_config(raw)
    engine, _ = make_engine(cfg, ScriptedSettings(latency_s=0, tokens_per_s=0, seed=shape["seed"]))
    result = await engine.run(
        RunRequest(message=shape["message"], swarm_type="generated", optimization_mode=shape["mode"])
    )
    check_accounting(result)
    steps = result.metadata.processing_steps
    rounds, n, pattern = shape["rounds"], shape["count"], shape["pattern"]
    work = [s for s in steps if s.role != "judge"]
    judges = [s for s in steps if s.role == "judge"]
    if pattern == "debate":
        per_round = Counter((s.agent, s.round) for s in work)
        assert set(per_round.values()) == {1}  # each debater speaks exactly once per round
        assert {s.round for s in work} == set(range(1, rounds + 1))
        assert {s.agent for s in work} == ({"a"} if n == 1 else {f"a-{i}" for i in range(1, n + 1)})
        assert len(judges) == 1
    else:
        assert len(judges) == (1 if shape["judge"] else 0)
    if pattern == "review_loop":
        coder = [s for s in work if s.role == "coder"]
        reviews = [s for s in work if s.role == "reviewer"]
        assert 1 <= len(reviews) <= rounds and len(coder) <= rounds
        assert max(s.round for s in work) <= rounds
    if pattern in ("pipeline", "fan_out_reduce"):
        assert len(work) == n + 1
    if judges:
        assert judges[0] == steps[-1] and judges[0].round > max(s.round for s in work)
