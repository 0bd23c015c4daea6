"""One contract per store, run against every implementation (in memory, and Redis on a real redis-server).

A store that passes here can replace another: that is what lets the engine and the serving layer take
any of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from orchestra.stores import (
    ApiKeyRecord,
    DeliveryAttempt,
    InMemoryKeyStore,
    InMemoryMemoryStore,
    InMemoryRunStore,
    InMemorySessionStore,
    InMemoryTranscriptStore,
    InMemoryUsageStore,
    InMemoryWebhookStore,
    KeyStore,
    LocalTokenBucket,
    MemoryStore,
    RateLimiter,
    RunStore,
    RunWrite,
    RunWriter,
    SessionStore,
    SessionTurn,
    Subscription,
    TranscriptStore,
    UsageStore,
    WebhookStore,
)
from orchestra.stores.redis import (
    RedisKeyStore,
    RedisMemoryStore,
    RedisRunStore,
    RedisSessionStore,
    RedisTokenBucket,
    RedisTranscriptStore,
    RedisUsageStore,
    RedisWebhookStore,
)


def _turn(run_id: str) -> SessionTurn:
    return SessionTurn(
        run_id=run_id,
        message="m",
        response="r",
        swarm_type="coding-team",
        optimization_mode="lite",
        created_at=0,
    )


async def _fresh_redis(request: pytest.FixtureRequest) -> aioredis.Redis:
    """A client on an empty database of the session's real redis-server."""
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_server"))
    await client.flushdb()
    return client


# -- sessions --------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def clocked_sessions(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SessionStore, list[float]]]:
    now = [1000.0]
    if request.param == "memory":
        yield InMemorySessionStore(ttl_s=60, max_turns=3, clock=lambda: now[0]), now
    else:
        client = await _fresh_redis(request)
        yield RedisSessionStore(client, ttl_s=60, max_turns=3, clock=lambda: now[0]), now
        await client.aclose()


async def test_sessions_expire_reset_end_and_stay_per_tenant(
    clocked_sessions: tuple[SessionStore, list[float]],
) -> None:
    store, now = clocked_sessions
    assert isinstance(store, SessionStore)
    await store.append("t", "a", _turn("1"))
    now[0] += 30
    await store.append("t", "b", _turn("2"))
    now[0] += 40
    ended = await store.expire()
    assert [s.session_id for s in ended] == ["a"]
    assert await store.get("t", "a") is None and await store.get("t", "b") is not None
    assert await store.reset("t", "b") is not None and await store.reset("t", "a") is None
    b = await store.get("t", "b")
    assert b is not None and b.turns == [] and b.swarm_type == "coding-team"
    assert await store.get("other-tenant", "b") is None
    assert await store.count() == 1
    gone = await store.end("t", "b")
    assert gone is not None and gone.session_id == "b" and await store.get("t", "b") is None
    assert await store.end("t", "b") is None


async def test_sessions_keep_the_latest_turns_and_hand_out_copies(
    clocked_sessions: tuple[SessionStore, list[float]],
) -> None:
    store, _ = clocked_sessions
    for i in range(5):
        await store.append("t", "s", _turn(str(i)))
    session = await store.get("t", "s")
    assert session is not None and [t.run_id for t in session.turns] == ["2", "3", "4"]
    session.turns.clear()  # the caller's copy, not the store's
    again = await store.get("t", "s")
    assert again is not None and len(again.turns) == 3
    latest = await store.get("t", "s", last=2)
    assert latest is not None and [t.run_id for t in latest.turns] == ["3", "4"]
    none = await store.get("t", "s", last=0)
    assert none is not None and none.turns == [] and none.swarm_type == "coding-team"


# -- API keys --------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def key_store(request: pytest.FixtureRequest) -> AsyncIterator[KeyStore]:
    if request.param == "memory":
        yield InMemoryKeyStore()
    else:
        client = await _fresh_redis(request)
        yield RedisKeyStore(client)
        await client.aclose()


def _record(
    key_id: str, key_hash: str, *, revoked: bool = False, previous: str | None = None
) -> ApiKeyRecord:
    return ApiKeyRecord(
        key_id=key_id,
        key_hash=key_hash,
        tenant="t",
        scopes=frozenset({"chat"}),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        revoked=revoked,
        previous_hash=previous,
    )


async def test_keys_by_hash_and_by_id(key_store: KeyStore) -> None:
    assert isinstance(key_store, KeyStore)
    assert await key_store.get("a" * 64) is None and await key_store.by_id("k1") is None
    await key_store.put(_record("k1", "a" * 64))
    await key_store.put(_record("k2", "b" * 64))
    found = await key_store.get("a" * 64)
    assert found is not None and found.key_id == "k1" and not found.revoked
    assert await key_store.by_id("k1") == found
    await key_store.put(_record("k1", "a" * 64, revoked=True))  # replaced, not added
    replaced = await key_store.get("a" * 64)
    assert replaced is not None and replaced.revoked
    assert sorted(r.key_id for r in await key_store.all()) == ["k1", "k2"]


async def test_a_rotated_key_is_found_by_both_hashes_until_unindexed(key_store: KeyStore) -> None:
    await key_store.put(_record("k1", "a" * 64))
    await key_store.put(_record("k1", "b" * 64, previous="a" * 64))
    for key_hash in ("a" * 64, "b" * 64):
        found = await key_store.get(key_hash)
        assert found is not None and found.key_hash == "b" * 64
    await key_store.put(_record("k1", "c" * 64), unindex=["a" * 64, "b" * 64])
    assert await key_store.get("a" * 64) is None and await key_store.get("b" * 64) is None
    assert (await key_store.by_id("k1")) == await key_store.get("c" * 64)
    assert len(await key_store.all()) == 1


async def test_last_use_is_kept_apart_from_the_record(key_store: KeyStore) -> None:
    await key_store.put(_record("k1", "a" * 64))
    assert await key_store.last_used() == {}
    when = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)
    await key_store.touch("k1", when)
    assert await key_store.last_used() == {"k1": when}
    assert (await key_store.by_id("k1")) == _record("k1", "a" * 64)


# -- token usage -----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def usage_store(request: pytest.FixtureRequest) -> AsyncIterator[UsageStore]:
    if request.param == "memory":
        yield InMemoryUsageStore()
    else:
        client = await _fresh_redis(request)
        yield RedisUsageStore(client)
        await client.aclose()


async def test_usage_adds_per_key_and_day(usage_store: UsageStore) -> None:
    assert isinstance(usage_store, UsageStore)
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    assert await usage_store.used("k1", today) == 0
    assert await usage_store.add("k1", today, 100) == 100
    assert await usage_store.add("k1", today, 50) == 150
    assert await usage_store.add("k2", today, 7) == 7
    assert await usage_store.add("k1", tomorrow, 1) == 1
    assert await usage_store.used("k1", today) == 150 and await usage_store.used("k1", tomorrow) == 1
    assert await usage_store.used_many(["k2", "k3", "k1"], today) == [7, 0, 150]
    assert await usage_store.used_many([], today) == []
    with pytest.raises(ValueError):
        await usage_store.add("k1", today, -1)


async def test_usage_adds_exactly_under_concurrency_from_several_clients(redis_server: str) -> None:
    clients = [aioredis.Redis.from_url(redis_server) for _ in range(3)]
    await clients[0].flushdb()
    stores = [RedisUsageStore(c) for c in clients]
    day = datetime.now(UTC).date()
    await asyncio.gather(*(stores[i % 3].add("k", day, 3) for i in range(300)))
    assert await stores[0].used("k", day) == 900
    ttl = await clients[0].ttl(f"orchestra:usage:k:{day.isoformat()}")
    assert 86400 < ttl <= 2 * 86400  # kept through tomorrow (yesterday stays readable), then gone
    old = day - timedelta(days=3)
    await stores[1].add("k", old, 5)  # a day long past expires at once
    assert await stores[0].used("k", old) == 0
    for client in clients:
        await client.aclose()


# -- long-term memory ------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def memory_store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore]:
    if request.param == "memory":
        yield InMemoryMemoryStore(max_items=3)
    else:
        client = await _fresh_redis(request)
        yield RedisMemoryStore(client, max_items=3)
        await client.aclose()


async def test_memory_is_per_tenant_capped_and_by_relevance(memory_store: MemoryStore) -> None:
    assert isinstance(memory_store, MemoryStore)
    await memory_store.remember("alice", "s1", "sourdough bread recipe", "use a starter")
    await memory_store.remember("alice", "s2", "weather today", "sunny")
    await memory_store.remember("bob", "s3", "sourdough bread", "bob's answer")
    recalled = await memory_store.recall("alice", "bread please", exclude_session="now")
    assert [m.session_id for m in recalled] == ["s1"]
    assert await memory_store.recall("alice", "bread please", exclude_session="s1") == []
    for i in range(3):
        await memory_store.remember("alice", f"n{i}", f"topic{i} bread", "x")
    assert [m.session_id for m in await memory_store.recall("alice", "bread", k=10)] == ["n2", "n1", "n0"]


# -- rate limits -----------------------------------------------------------------------------------


@pytest.fixture(params=["local", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    if request.param == "local":
        yield LocalTokenBucket(capacity=3, refill_per_s=0.01, limit_per_minute=1)
    else:
        client = await _fresh_redis(request)
        yield RedisTokenBucket(client, capacity=3, refill_per_s=0.01, limit_per_minute=1)
        await client.aclose()


async def test_a_bucket_admits_its_capacity_then_refuses_per_key(limiter: RateLimiter) -> None:
    assert isinstance(limiter, RateLimiter)
    decisions = [await limiter.acquire("k") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[-1]
    assert refused.retry_after_s is not None and 99 < refused.retry_after_s <= 100
    assert (await limiter.acquire("other")).allowed
    assert limiter.capacity == 3 and limiter.limit == 1


async def test_a_key_may_have_its_own_rate(limiter: RateLimiter) -> None:
    # rpm 2: a bucket of min(capacity 3, 2) = 2 tokens, refilled at 2/min
    decisions = [await limiter.acquire("slow", limit_per_minute=2) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[0].limit == 2 and decisions[0].remaining == 1
    refused = decisions[-1]
    assert refused.retry_after_s is not None and 29 < refused.retry_after_s <= 30
    assert (await limiter.acquire("fast")).limit == 1  # others keep the limiter's own


async def test_an_idle_session_is_ended_once_however_many_replicas_sweep(redis_server: str) -> None:
    clients = [aioredis.Redis.from_url(redis_server) for _ in range(2)]
    await clients[0].flushdb()
    now = [1000.0]
    stores = [RedisSessionStore(c, ttl_s=60, clock=lambda: now[0]) for c in clients]
    for i in range(20):
        await stores[0].append("t", f"s{i}", _turn(str(i)))
    now[0] += 61
    assert await stores[1].get("t", "s0") is None  # idle past the TTL: gone for readers at once
    swept = await asyncio.gather(*(store.expire() for store in stores for _ in range(3)))
    ended = sorted(s.session_id for batch in swept for s in batch)
    assert ended == sorted(f"s{i}" for i in range(20))  # each exactly once, with its turns
    assert all(len(s.turns) == 1 for batch in swept for s in batch)
    assert await stores[0].end("t", "s0") is None and await stores[0].count() == 0
    for client in clients:
        await client.aclose()


# -- transcripts -----------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def transcript_store(request: pytest.FixtureRequest) -> AsyncIterator[TranscriptStore]:
    if request.param == "memory":
        yield InMemoryTranscriptStore(max_kept=2)
    else:
        client = await _fresh_redis(request)
        yield RedisTranscriptStore(client, ttl_s=60)
        await client.aclose()


async def test_transcripts_are_per_tenant_and_replaced(transcript_store: TranscriptStore) -> None:
    assert isinstance(transcript_store, TranscriptStore)
    await transcript_store.put("alice", "r1", '{"v": 1}')
    await transcript_store.put("alice", "r1", '{"v": 2}')
    assert await transcript_store.get("alice", "r1") == '{"v": 2}'
    assert await transcript_store.get("bob", "r1") is None
    assert await transcript_store.get("alice", "r2") is None


# -- webhooks --------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def webhook_store(request: pytest.FixtureRequest) -> AsyncIterator[WebhookStore]:
    if request.param == "memory":
        yield InMemoryWebhookStore()
    else:
        client = await _fresh_redis(request)
        yield RedisWebhookStore(client)
        await client.aclose()


def _sub(
    sid: str, tenant: str, events: tuple[str, ...] = ("chat.completed",), at: float = 1.0
) -> Subscription:
    return Subscription(
        id=sid, tenant=tenant, url="https://example.com/h", events=events, secret=SecretStr("x" * 20),
        created_at=at,
    )  # fmt: skip


def _attempt(did: str, n: int, outcome: str) -> DeliveryAttempt:
    return DeliveryAttempt(
        delivery_id=did, event="chat.completed", attempt=n, outcome=outcome, duration_s=0, at=0
    )


async def test_webhook_subscriptions_are_per_tenant(webhook_store: WebhookStore) -> None:
    store = webhook_store
    assert isinstance(store, WebhookStore)
    await store.add_subscription(_sub("wh_b", "alice", at=2.0))
    await store.add_subscription(_sub("wh_a", "alice", ("chat.completed", "session.ended"), at=1.0))
    await store.add_subscription(_sub("wh_c", "bob"))
    assert [s.id for s in await store.subscriptions("alice")] == ["wh_a", "wh_b"]
    got = await store.subscription("alice", "wh_a")
    assert got is not None and got.events == ("chat.completed", "session.ended")
    assert got.secret.get_secret_value() == "x" * 20 and got.disabled_reason is None
    assert await store.subscription("bob", "wh_a") is None  # another tenant's: as if absent
    assert await store.remove_subscription("bob", "wh_a") is False
    assert await store.remove_subscription("alice", "wh_a") is True
    assert await store.subscription("alice", "wh_a") is None
    assert await store.remove_subscription("alice", "wh_a") is False
    await store.disable_subscription("wh_b", "gone")
    disabled = await store.subscription("alice", "wh_b")
    assert disabled is not None and disabled.disabled_reason == "gone"
    await store.disable_subscription("wh_a", "gone")  # a removed one is not brought back
    assert await store.subscription("alice", "wh_a") is None


async def test_webhook_events_fan_out_to_matching_active_subscriptions(webhook_store: WebhookStore) -> None:
    store = webhook_store
    await store.add_subscription(_sub("wh_1", "alice", ("chat.completed",)))
    await store.add_subscription(_sub("wh_2", "alice", ("session.ended",)))
    await store.add_subscription(_sub("wh_3", "alice", ("chat.completed", "session.ended")))
    await store.add_subscription(_sub("wh_4", "bob", ("chat.completed",)))
    await store.add_subscription(_sub("wh_5", "alice", ("chat.completed",)))
    await store.disable_subscription("wh_5", "gone")
    ids = await store.enqueue("alice", "chat.completed", "evt_00aa", "{}", due=10.0)
    assert len(ids) == 2 and len(set(ids)) == 2
    assert await store.enqueue("carol", "chat.completed", "evt_00ab", "{}", due=10.0) == []
    # a test event goes to the one subscription named, whatever its events, and only the tenant's
    assert len(await store.enqueue("alice", "webhook.test", "evt_00ac", "{}", due=10.0, only="wh_2")) == 1
    assert await store.enqueue("bob", "webhook.test", "evt_00ad", "{}", due=10.0, only="wh_2") == []
    assert await store.pending() == 3
    assert await store.claim(now=9.0, lease_until=99.0, limit=10) == []  # not due yet
    claimed = await store.claim(now=10.0, lease_until=40.0, limit=10)
    assert sorted(d.subscription_id for d in claimed) == ["wh_1", "wh_2", "wh_3"]
    assert all(d.attempt == 1 and d.tenant == "alice" and d.body == "{}" for d in claimed)
    assert {d.event_type for d in claimed} == {"chat.completed", "webhook.test"}


async def test_a_claimed_delivery_is_leased_then_claimed_again_with_the_same_id(
    webhook_store: WebhookStore,
) -> None:
    store = webhook_store
    await store.add_subscription(_sub("wh_1", "alice"))
    [did] = await store.enqueue("alice", "chat.completed", "evt_0001", '{"a":1}', due=0.0)
    [first] = await store.claim(now=1.0, lease_until=31.0, limit=5)
    assert first.id == did and first.attempt == 1 and first.url == "https://example.com/h"
    assert await store.claim(now=30.0, lease_until=60.0, limit=5) == []  # leased: nobody else gets it
    [again] = await store.claim(now=31.0, lease_until=61.0, limit=5)  # its dispatcher died
    assert again.id == did and again.attempt == 2 and again.body == '{"a":1}'
    await store.settle(again, _attempt(did, 2, "retrying"), retry_at=100.0)
    assert await store.claim(now=99.0, lease_until=200.0, limit=5) == []
    [third] = await store.claim(now=100.0, lease_until=130.0, limit=5)
    assert third.attempt == 3
    await store.settle(third, _attempt(did, 3, "delivered"), retry_at=None)
    assert await store.pending() == 0 and await store.claim(now=1e9, lease_until=2e9, limit=5) == []
    assert [a.attempt for a in await store.attempts("wh_1")] == [3, 2]  # newest first


async def test_deliveries_of_removed_or_disabled_subscriptions_are_dropped(
    webhook_store: WebhookStore,
) -> None:
    store = webhook_store
    await store.add_subscription(_sub("wh_1", "alice"))
    await store.add_subscription(_sub("wh_2", "alice"))
    await store.enqueue("alice", "chat.completed", "evt_0001", "{}", due=0.0)
    [d1, d2] = sorted(await store.claim(now=0.0, lease_until=5.0, limit=5), key=lambda d: d.subscription_id)
    assert await store.remove_subscription("alice", "wh_1")
    await store.disable_subscription("wh_2", "gone")
    await store.settle(d1, _attempt(d1.id, 1, "retrying"), retry_at=6.0)  # settled after removal: no revival
    assert await store.attempts("wh_1") == []
    assert await store.claim(now=10.0, lease_until=20.0, limit=5) == []
    assert await store.pending() == 0
    for i in range(60):
        await store.settle(d2, _attempt(d2.id, i, "retrying"), retry_at=None)
    assert len(await store.attempts("wh_2")) == 50  # capped


# -- runs ------------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def run_store(request: pytest.FixtureRequest) -> AsyncIterator[RunStore]:
    if request.param == "memory":
        yield InMemoryRunStore()
    else:
        client = await _fresh_redis(request)
        yield RedisRunStore(client, ttl_s=60)
        await client.aclose()


def _created(tenant: str, run_id: str) -> RunWrite:
    fields = {"session_id": "s", "swarm_type": "coding-team", "optimization_mode": "lite"}
    fields |= {"status": "running", "coordinator": "host:1", "created_at": "10.0", "updated_at": "10.0"}
    return RunWrite(tenant, run_id, fields=fields)


async def test_a_run_record_with_its_checkpoints_is_per_tenant(run_store: RunStore) -> None:
    assert isinstance(run_store, RunStore)
    assert await run_store.get("alice", "r1") is None
    await run_store.write([_created("alice", "r1"), _created("bob", "r2")])
    await run_store.write([RunWrite("alice", "r1", checkpoints=['{"step": 1}', '{"step": 2}'])])
    await run_store.write(
        [RunWrite("alice", "r1", fields={"status": "completed", "updated_at": "11.5"}, checkpoints=["3"])]
    )
    record = await run_store.get("alice", "r1")
    assert record is not None and record.status == "completed" and record.finished
    assert (record.session_id, record.coordinator, record.swarm_type) == ("s", "host:1", "coding-team")
    assert (record.created_at, record.updated_at) == (10.0, 11.5)
    assert record.checkpoints == ['{"step": 1}', '{"step": 2}', "3"]
    assert await run_store.get("bob", "r1") is None  # another tenant never sees it
    other = await run_store.get("bob", "r2")
    assert other is not None and other.status == "running" and other.checkpoints == []
    # Writes to a run never created (only events, say) do not make a record appear.
    await run_store.write([RunWrite("alice", "ghost", events=[(1, "{}")])])
    assert await run_store.get("alice", "ghost") is None


async def test_events_after_an_id_in_order_and_per_tenant(run_store: RunStore) -> None:
    await run_store.write([_created("alice", "r1")])
    await run_store.write([RunWrite("alice", "r1", events=[(1, "a"), (2, "b"), (3, "c")])])
    await run_store.write([RunWrite("alice", "r1", events=[(4, "d")])])
    assert await run_store.events("alice", "r1") == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    assert await run_store.events("alice", "r1", 2) == [(3, "c"), (4, "d")]  # inside a batch too
    assert await run_store.events("alice", "r1", 4) == []
    assert await run_store.events("bob", "r1") == []
    record = await run_store.get("alice", "r1")
    assert record is not None and record.last_event_id == 4


async def test_a_reader_waits_for_new_events(run_store: RunStore) -> None:
    await run_store.write([_created("alice", "r1"), RunWrite("alice", "r1", events=[(1, "a")])])
    waiting = asyncio.ensure_future(run_store.events("alice", "r1", 1, wait_s=0.9))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await run_store.write([RunWrite("alice", "r1", events=[(2, "b"), (3, "c")])])
    assert await waiting == [(2, "b"), (3, "c")]
    assert await run_store.events("alice", "r1", 3, wait_s=0.05) == []  # nothing came: empty, no error


async def test_the_event_log_is_bounded(redis_server: str) -> None:
    client = aioredis.Redis.from_url(redis_server)
    await client.flushdb()
    stores: list[RunStore] = [InMemoryRunStore(max_events=100), RedisRunStore(client, max_events=100)]
    for store in stores:
        await store.write([_created("t", "r")])
        for i in range(1, 1001):
            await store.write([RunWrite("t", "r", events=[(i, "x")])])
        kept = await store.events("t", "r")
        assert 100 <= len(kept) < 400 and kept[-1][0] == 1000  # the newest (Redis trims approximately)
        assert [i for i, _ in kept] == list(range(1001 - len(kept), 1001))
    ttl = await client.pttl("orchestra:run:t/r:events")
    assert 0 < ttl <= 3600_000  # every key of a run expires
    await client.aclose()


async def test_the_writer_batches_every_run_into_one_write(run_store: RunStore) -> None:
    writes: list[int] = []
    original = run_store.write

    async def counting(batch: Any) -> None:
        writes.append(len(batch))
        await original(batch)

    run_store.write = counting  # type: ignore[method-assign]
    writer = RunWriter(run_store, flush_s=0.01)
    for run in ("r1", "r2"):
        writer.record("t", run, fields=_created("t", run).fields)
    for i in range(1, 201):  # 200 token events of two runs within one flush interval
        writer.record("t", "r1", events=[(i, f"tok{i}")])
        writer.record("t", "r2", events=[(i, f"tok{i}")], checkpoint="step" if i % 100 == 0 else None)
    await writer.flush()
    assert writes == [2]  # one write (one round trip) for both runs and every event
    assert [i for i, _ in await run_store.events("t", "r1")] == list(range(1, 201))
    r2 = await run_store.get("t", "r2")
    assert r2 is not None and r2.checkpoints == ["step", "step"] and r2.last_event_id == 200
