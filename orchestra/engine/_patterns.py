"""Reusable interaction patterns. A team in YAML names one; nothing here is specific to a team.

- ``review_loop``: [planner →] worker → reviewer, back to the worker on "changes requested", at most
  ``rounds`` reviews.
- ``debate``: N debaters propose in parallel; each later round every debater sees the others' latest
  proposals and revises; then the judge picks or merges and scores.
- ``pipeline``: stages in order; a stage's instances run in parallel and see all earlier work.
- ``fan_out_reduce``: workers in parallel on distinct angles of the task → one reducer (a two-stage pipeline).

Quality score: the last ``SCORE: x`` given by a judge or critic, clamped to [0, 1]. Without one, the
documented heuristic of each pattern (see ``heuristic_score``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.engine._agent import EventSink
from orchestra.engine._config import OrchestraConfig, TeamConfig
from orchestra.engine._messages import Contribution, HistoryTurn, TurnRequest, TurnResult
from orchestra.engine._runtime import AgentRuntime

__all__ = [
    "PATTERNS",
    "PatternOutcome",
    "TeamRun",
    "heuristic_score",
    "parse_score",
    "parse_verdict",
    "run_pattern",
]

_SCORE = re.compile(r"SCORE:\s*\**\s*([0-9]*\.?[0-9]+)", re.IGNORECASE)
_VERDICT = re.compile(r"VERDICT:\s*\**\s*(APPROVED|CHANGES[_ ]REQUESTED)", re.IGNORECASE)

_ANGLES = (
    "background, definitions and how it works",
    "current evidence, numbers and examples",
    "practical implications and trade-offs",
    "risks, open problems and disagreements",
    "history and how it evolved",
    "comparisons with alternatives",
)


def parse_score(text: str) -> float | None:
    """The last ``SCORE: x`` in ``text`` as a float in [0, 1] (percent-like values > 1 are divided by 100)."""
    matches = _SCORE.findall(text)
    if not matches:
        return None
    value = float(matches[-1])
    if value > 1.0:
        value = value / 100 if value <= 100 else 1.0
    return min(1.0, max(0.0, value))


def parse_verdict(text: str) -> bool:
    """True when a review approves. Without an explicit verdict line, only a plain approval counts."""
    match = _VERDICT.search(text)
    if match:
        return match.group(1).upper() == "APPROVED"
    lowered = text.lower()
    return "approve" in lowered and "change" not in lowered and "not approve" not in lowered


def heuristic_score(pattern: str, **facts: Any) -> float:
    """Quality score when no judge or critic scored the run.

    - review_loop: approved after k reviews → 0.9 - 0.1*(k-1), at least 0.6; never approved → 0.4.
    - debate (unused: debate always has a judge) and others: 0.5 + 0.1 per contributing agent beyond the
      first, at most 0.8.
    """
    if pattern == "review_loop":
        if facts.get("approved"):
            return max(0.6, 0.9 - 0.1 * (int(facts.get("reviews", 1)) - 1))
        return 0.4
    return min(0.8, 0.5 + 0.1 * max(0, int(facts.get("contributors", 1)) - 1))


@dataclass
class PatternOutcome:
    response: TurnResult
    score: float | None
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeamRun:
    """One run of a team: the fixed parts of every turn, the runtime, and the steps so far."""

    config: OrchestraConfig
    team_name: str
    mode: str
    provider: str
    run_id: str
    task: str
    runtime: AgentRuntime
    history: tuple[HistoryTurn, ...] = ()
    user_context: dict[str, Any] = field(default_factory=dict)
    memories: tuple[HistoryTurn, ...] = ()
    stream: bool = False
    sink: EventSink | None = None
    steps: list[TurnResult] = field(default_factory=list)
    replay: dict[tuple[str, int], TurnResult] = field(default_factory=dict)
    """Checkpoints of a resumed run by ``(agent instance, round)`` (unique within a run): those turns
    are taken from here instead of asking the agents again. The patterns are deterministic given their
    turns' results, so replaying them reaches the same point."""
    on_step: Callable[[TurnResult], None] | None = None
    """Called with every turn completed by an agent (not replayed): the run's checkpoint."""

    @property
    def team(self) -> TeamConfig:
        return self.config.teams[self.team_name]

    @property
    def settings(self) -> Any:
        return self.team.modes[self.mode]  # type: ignore[index]

    def instances(self, agent: str) -> list[str]:
        return self.team.instances(self.mode, agent)

    def _request(
        self, instance: str, agent: str, round_: int, instruction: str, inputs: Sequence[Contribution]
    ) -> TurnRequest:
        return TurnRequest(
            run_id=self.run_id,
            team=self.team_name,
            agent=instance,
            role=self.team.agents[agent].role,
            round=round_,
            task=self.task,
            instruction=instruction,
            inputs=tuple(inputs),
            history=self.history,
            user_context=self.user_context,
            memories=self.memories,
            model=self.config.model_for(self.provider, self.team_name, self.mode, agent),
            stream=self.stream,
        )

    async def turn(
        self, instance: str, agent: str, round_: int, instruction: str, inputs: Sequence[Contribution] = ()
    ) -> TurnResult:
        result = self.replay.get((instance, round_))
        if result is None:
            result = await self.runtime.send(
                self._request(instance, agent, round_, instruction, inputs), self.sink
            )
            if self.on_step is not None:
                self.on_step(result)
        self.steps.append(result)
        return result

    def _send(self, turn: tuple[str, str, int, str, Sequence[Contribution]]) -> asyncio.Future[TurnResult]:
        replayed = self.replay.get((turn[0], turn[2]))
        if replayed is not None:
            done: asyncio.Future[TurnResult] = asyncio.get_running_loop().create_future()
            done.set_result(replayed)
            return done
        task = asyncio.ensure_future(self.runtime.send(self._request(*turn), self.sink))
        if self.on_step is not None:
            on_step = self.on_step  # each step as it completes, not when its whole round does
            task.add_done_callback(
                lambda t: on_step(t.result()) if not t.cancelled() and not t.exception() else None
            )
        return task

    async def parallel(
        self, turns: Sequence[tuple[str, str, int, str, Sequence[Contribution]]]
    ) -> list[TurnResult]:
        """Run turns concurrently; steps are recorded in the order given. One failure cancels the rest."""
        if len(turns) == 1:  # awaited in place: no task, and a run that ends here ends in this tick
            return [await self.turn(*turns[0])]
        tasks = [self._send(t) for t in turns]
        try:
            results = list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        self.steps.extend(results)
        return results


async def _review_loop(run: TeamRun) -> PatternOutcome:
    flow = run.team.flow
    worker, reviewer = str(flow["worker"]), str(flow["reviewer"])
    context: list[Contribution] = []
    if planner := flow.get("planner"):
        plan = await run.turn(str(planner), str(planner), 1, "Write a short numbered plan for the task.")
        context.append(plan.contribution())
    code = await run.turn(worker, worker, 1, "Implement the task following the plan.", context)
    approved = False
    reviews = 0
    for iteration in range(1, run.settings.rounds + 1):
        review = await run.turn(
            reviewer,
            reviewer,
            iteration,
            "Review the latest code. Start with VERDICT: APPROVED or VERDICT: CHANGES_REQUESTED.",
            [*context, code.contribution()],
        )
        reviews += 1
        if parse_verdict(review.text):
            approved = True
            break
        if iteration == run.settings.rounds:
            break  # out of iterations: the last code stands, unapproved
        code = await run.turn(
            worker,
            worker,
            iteration + 1,
            "Revise your code to address every point of the review.",
            [*context, code.contribution(), review.contribution()],
        )
    facts = {"approved": approved, "reviews": reviews}
    return PatternOutcome(response=code, score=None, facts=facts)


async def _debate(run: TeamRun) -> PatternOutcome:
    debater = str(run.team.flow["debater"])
    judge = str(run.team.judge)
    names = run.instances(debater)
    latest: dict[str, Contribution] = {}
    for round_ in range(1, run.settings.rounds + 1):
        turns: list[tuple[str, str, int, str, Sequence[Contribution]]] = []
        for name in names:
            if round_ == 1:
                turns.append((name, debater, 1, "Propose your solution, with code.", ()))
            else:
                own = [latest[name]]
                others = [latest[n] for n in names if n != name]
                turns.append(
                    (name, debater, round_, "Read the other proposals and revise yours.", own + others)
                )
        for result in await run.parallel(turns):
            latest[result.agent] = result.contribution()
    verdict = await run.turn(
        judge,
        judge,
        run.settings.rounds + 1,
        "Pick the best proposal or merge them into one final answer with code; end with SCORE: <0-1>.",
        [latest[n] for n in names],
    )
    return PatternOutcome(response=verdict, score=parse_score(verdict.text), facts={"debaters": len(names)})


def _default_instruction(index: int, count: int) -> str:
    return "Do your part of the task, building on the team's work."


async def _stages(
    run: TeamRun, stages: Sequence[str], instructions: dict[str, Callable[[int, int], str]]
) -> PatternOutcome:
    work: list[Contribution] = []
    last: list[TurnResult] = []
    score: float | None = None
    for index, agent in enumerate(stages, start=1):
        names = run.instances(agent)
        make = instructions.get(agent, _default_instruction)
        turns = [(name, agent, index, make(i, len(names)), tuple(work)) for i, name in enumerate(names)]
        last = await run.parallel(turns)
        work.extend(r.contribution() for r in last)
        for r in last:
            if r.role in ("critic", "judge") and (s := parse_score(r.text)) is not None:
                score = s
    if len(last) == 1:
        response = last[0]
    else:  # a parallel last stage: its answers together are the response
        first = last[0]
        response = first.model_copy(update={"text": "\n\n".join(r.text for r in last)})
    contributors = len({r.agent for r in run.steps})
    return PatternOutcome(response=response, score=score, facts={"contributors": contributors})


async def _pipeline(run: TeamRun) -> PatternOutcome:
    return await _stages(run, [str(s) for s in run.team.flow["stages"]], {})


async def _fan_out_reduce(run: TeamRun) -> PatternOutcome:
    workers, reducer = str(run.team.flow["workers"]), str(run.team.flow["reducer"])

    def angle(i: int, n: int) -> str:
        return f"Work on angle {i + 1} of {n}: {_ANGLES[i % len(_ANGLES)]}."

    return await _stages(
        run,
        [workers, reducer],
        {workers: angle, reducer: lambda i, n: "Merge the findings into one answer; note disagreements."},
    )


PATTERNS: dict[str, Callable[[TeamRun], Awaitable[PatternOutcome]]] = {
    "review_loop": _review_loop,
    "debate": _debate,
    "pipeline": _pipeline,
    "fan_out_reduce": _fan_out_reduce,
}


async def run_pattern(run: TeamRun) -> tuple[TurnResult, float]:
    """Run the team's pattern, then (when the mode asks and the pattern has not) its judge.

    Returns the turn whose text is the answer, and the quality score in [0, 1].
    """
    pattern = run.team.pattern
    outcome = await PATTERNS[pattern](run)
    score = outcome.score
    if run.settings.judge and pattern != "debate" and run.team.judge:
        judge = run.team.judge
        verdict = await run.turn(
            judge,
            judge,
            max(s.round for s in run.steps) + 1,
            "Grade the final answer to the task; end with SCORE: <0-1>.",
            [outcome.response.contribution()],
        )
        score = parse_score(verdict.text) if parse_score(verdict.text) is not None else score
    if score is None:
        score = heuristic_score(pattern, **outcome.facts)
    return outcome.response, score
