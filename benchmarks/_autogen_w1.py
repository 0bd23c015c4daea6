"""W1 on autogen-core's SingleThreadedAgentRuntime (run in its own venv: autogen-core pins protobuf 5,
which Ray 2.60 cannot use). Prints one JSON line. Usage: python _autogen_w1.py LAT C TOTAL_FACTOR WORDS
"""

import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

from autogen_core import AgentId, MessageContext, RoutedAgent, SingleThreadedAgentRuntime, message_handler

LAT, C, FACTOR, WORDS = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
DEBATERS = ("debater1", "debater2", "debater3")


@dataclass
class Turn:
    session: int
    round: int
    inputs: list[str] = field(default_factory=list)


@dataclass
class Reply:
    agent: str
    text: str


class ModelAgent(RoutedAgent):
    """An agent whose model call takes LAT seconds and answers ~WORDS tokens, like the scripted model."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._name = name

    @message_handler
    async def on_turn(self, message: Turn, ctx: MessageContext) -> Reply:
        await asyncio.sleep(LAT)
        text = f"{self._name} round {message.round} session {message.session}: " + " ".join(
            f"w{i}" for i in range(WORDS)
        )
        return Reply(self._name, text)


async def main() -> None:
    runtime = SingleThreadedAgentRuntime()
    for name in (*DEBATERS, "judge"):
        await ModelAgent.register(runtime, name, lambda name=name: ModelAgent(name))
    runtime.start()

    async def session(i: int) -> None:
        latest: list[str] = []
        for round_ in (1, 2):  # debaters in parallel, each seeing the previous round's proposals
            replies = await asyncio.gather(
                *(runtime.send_message(Turn(i, round_, latest), AgentId(d, "default")) for d in DEBATERS)
            )
            latest = [r.text for r in replies]
        await runtime.send_message(Turn(i, 3, latest), AgentId("judge", "default"))

    await asyncio.gather(*(session(-i - 1) for i in range(C)))  # warm-up
    todo = iter(range(FACTOR * C))
    latencies: list[float] = []

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            await session(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(C)))
    elapsed = time.perf_counter() - start
    await runtime.stop()
    print(json.dumps({"sessions": FACTOR * C, "elapsed_s": elapsed, "latencies": latencies}))


asyncio.run(main())
