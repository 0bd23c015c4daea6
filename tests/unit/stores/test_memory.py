"""Long-term memory (use_memory): recalled only for the same tenant, only when asked, by relevance."""

from __future__ import annotations

from typing import Any

import orchestra
from orchestra import RunRequest
from orchestra.stores import InMemoryMemoryStore, MemoryItem, relevance
from orchestra.stores.redis import RedisMemoryStore
from tests.unit.conftest import make_engine


def test_relevance_counts_shared_words() -> None:
    item = MemoryItem(
        session_id="s", message="Tell me about sourdough bread", response="Use starter", created_at=0
    )
    assert relevance("bread baking with a starter", item) == 2
    assert relevance("quantum physics", item) == 0


async def test_memory_is_recalled_across_sessions_of_one_tenant(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, spy = make_engine(fast_config)
    first = await engine.run(
        RunRequest(
            message="My favourite bread is sourdough rye",
            tenant="alice",
            use_memory=True,
            optimization_mode="lite",
            swarm_type="research-team",
        )
    )
    spy.requests.clear()
    await engine.run(
        RunRequest(
            message="What bread should I bake?",
            tenant="alice",
            use_memory=True,
            optimization_mode="lite",
            swarm_type="research-team",
        )
    )
    system = spy.requests[0].messages[0].content
    assert "earlier sessions" in system and "sourdough rye" in system and first.response[:30] in system

    spy.requests.clear()  # another tenant asking the same never sees alice's memory
    await engine.run(
        RunRequest(
            message="What bread should I bake?",
            tenant="bob",
            use_memory=True,
            optimization_mode="lite",
            swarm_type="research-team",
        )
    )
    assert all("sourdough" not in r.messages[0].content for r in spy.requests)

    spy.requests.clear()  # and without use_memory nothing is recalled
    await engine.run(
        RunRequest(
            message="What bread should I bake?",
            tenant="alice",
            optimization_mode="lite",
            swarm_type="research-team",
        )
    )
    assert all("earlier sessions" not in r.messages[0].content for r in spy.requests)


async def test_without_use_memory_nothing_is_stored(fast_config: orchestra.OrchestraConfig) -> None:
    store = InMemoryMemoryStore()
    engine, _ = make_engine(fast_config)
    engine.memory = store
    await engine.run(
        RunRequest(message="secret plans for bread", optimization_mode="lite", swarm_type="research-team")
    )
    assert await store.recall("local", "bread") == []


async def test_memory_outage_is_503_and_never_loses_the_answer(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    class Broken:
        async def remember(self, *args: Any) -> None:
            raise ConnectionError("down")

        async def recall(self, *args: Any, **kwargs: Any) -> list[MemoryItem]:
            raise ConnectionError("down")

    engine, _ = make_engine(fast_config)
    engine.memory = Broken()
    try:
        await engine.run(RunRequest(message="hi", use_memory=True, optimization_mode="lite"))
        raise AssertionError("expected SERVICE_UNAVAILABLE")
    except orchestra.ServiceUnavailableError as e:
        assert e.details["component"] == "memory_system" and e.retry_after
    ok = await engine.run(RunRequest(message="hi", optimization_mode="lite"))
    assert ok.response


async def test_redis_memory_store(redis_client: Any) -> None:
    store = RedisMemoryStore(redis_client, max_items=3)
    for i in range(5):
        await store.remember("t1", f"s{i}", f"note {i} about gardening tomatoes", f"answer {i}")
    await store.remember("t2", "x", "gardening secrets of t2", "hidden")
    got = await store.recall("t1", "tomatoes gardening", k=5)
    assert [m.session_id for m in got] == ["s4", "s3", "s2"]  # capped at 3, newest first among equals
    assert all(m.session_id != "x" for m in got)
    assert [m.session_id for m in await store.recall("t1", "tomatoes", exclude_session="s4")] == ["s3", "s2"]
