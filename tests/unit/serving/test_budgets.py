"""Daily token budgets: checked before a run, counted when it finishes, reset at UTC midnight."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

import orchestra
from orchestra.engine import RunCompleted, RunRequest
from orchestra.errors import RateLimitError, ServiceUnavailableError
from orchestra.serving._auth import Principal
from orchestra.serving._budgets import Budgets, next_reset
from orchestra.serving._metrics import Metrics
from orchestra.stores import InMemoryUsageStore, UsageStore
from orchestra.stores.redis import RedisUsageStore
from tests.unit.conftest import make_engine


class Now:
    """23:00 UTC of the real day (Redis expires counters of days long past at once)."""

    def __init__(self) -> None:
        today = datetime.now(UTC).date()
        self.at = datetime(today.year, today.month, today.day, 23, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["memory", "redis"])
async def usage(request: pytest.FixtureRequest) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield InMemoryUsageStore()
        return
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_server"))
    await client.flushdb()
    yield RedisUsageStore(client)
    await client.aclose()


BUDGETED = Principal("key_a", "alice", frozenset({"chat"}), daily_tokens=100)
FREE = Principal("key_b", "bob", frozenset({"chat"}))


def test_next_reset_is_the_next_utc_midnight() -> None:
    assert next_reset(datetime(2026, 5, 1, 23, 59, tzinfo=UTC)) == datetime(2026, 5, 2, tzinfo=UTC)
    assert next_reset(datetime(2026, 5, 2, 0, 0, tzinfo=UTC)) == datetime(2026, 5, 3, tzinfo=UTC)


async def test_a_budget_refuses_once_reached_until_midnight(usage: UsageStore) -> None:
    now = Now()
    budgets = Budgets(usage, now=now)
    await budgets.check(BUDGETED)
    await budgets.charge(BUDGETED, 99)
    await budgets.check(BUDGETED)  # 99 < 100: the next run may start...
    await budgets.charge(BUDGETED, 30)  # ...and take the day past the budget
    with pytest.raises(RateLimitError) as info:
        await budgets.check(BUDGETED)
    details = info.value.details
    assert details == {
        "budget": "daily_tokens",
        "limit": 100,
        "used": 129,
        "resets_at": f"{now.at.date() + timedelta(days=1)}T00:00:00Z",
        "retry_after": 3600,
    }
    assert info.value.retry_after == 3600 and "100" in info.value.message
    assert (await budgets.today("key_a", 100))["remaining"] == 0
    await budgets.check(FREE)  # other keys are not affected
    now.at += timedelta(hours=1)  # midnight UTC
    await budgets.check(BUDGETED)
    assert (await budgets.today("key_a", 100)) == {
        "date": now.at.date().isoformat(),
        "tokens_used": 0,
        "daily_tokens": 100,
        "remaining": 100,
        "resets_at": f"{now.at.date() + timedelta(days=1)}T00:00:00Z",
    }


async def test_runs_are_checked_and_charged_through_the_service(
    usage: UsageStore, fast_config: orchestra.OrchestraConfig
) -> None:
    engine, _ = make_engine(fast_config)
    metrics = Metrics()
    budgets = Budgets(usage, metrics=metrics)
    principal = Principal("key_c", "carol", frozenset({"chat"}), daily_tokens=1)
    service = budgets.service(engine, principal)
    request = RunRequest(message="Write a haiku", optimization_mode="lite", tenant="carol", run_id="r1")
    result = await service.run(request)
    used = result.metadata.tokens_used
    assert used > 0 and (await budgets.today("key_c", 1))["tokens_used"] == used
    with pytest.raises(RateLimitError):
        await service.run(request.model_copy(update={"run_id": "r2"}))
    with pytest.raises(RateLimitError):  # a stream is refused before its first batch
        async for _ in service.stream(request.model_copy(update={"run_id": "r3"})):
            pass

    unlimited = budgets.service(engine, FREE)
    completed = [
        e
        async for batch in unlimited.stream(request.model_copy(update={"tenant": "bob", "run_id": "r4"}))
        for e in batch
        if isinstance(e, RunCompleted)
    ]
    streamed = completed[0].result.metadata.tokens_used
    assert (await budgets.today("key_b", None))["tokens_used"] == streamed
    samples = {
        s.labels["key_id"]: s.value
        for family in metrics.registry.collect()
        if family.name == "api_key_tokens"
        for s in family.samples
        if s.name == "api_key_tokens_total"
    }
    assert samples == {"key_c": used, "key_b": streamed}


async def test_the_store_down_refuses_budgeted_runs_and_never_fails_a_finished_one() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    with sock:
        client = aioredis.Redis(
            port=sock.getsockname()[1], socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
        )
        budgets = Budgets(RedisUsageStore(client))
        with pytest.raises(ServiceUnavailableError):
            await budgets.check(BUDGETED)  # fail closed: the budget cannot be skipped
        await budgets.check(FREE)  # no budget: nothing to read
        await budgets.charge(BUDGETED, 10)  # logged, not raised: the run is already done
        await client.aclose()
