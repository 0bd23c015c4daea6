"""Rate limits (api.md §6): the token bucket in memory and shared through a real redis-server."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.errors import RateLimitError, ServiceUnavailableError
from orchestra.serving import _contract as api
from orchestra.stores import _ratelimit as rl
from orchestra.stores.redis import RedisTokenBucket


class Clock:
    """Seconds for LocalTokenBucket; ``us`` gives the same instant in microseconds for RedisTokenBucket."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def us(self) -> int:
        return round(self.now * 1_000_000)


def spec_local(clock: Clock) -> rl.LocalTokenBucket:
    return rl.LocalTokenBucket(
        rl.DEFAULT_CAPACITY, rl.DEFAULT_REFILL_PER_S, limit_per_minute=1000, clock=clock
    )


# -- the algorithm, in memory with a fake clock -------------------------------------------------------


def test_burst_of_50_then_refused_with_retry_after() -> None:
    clock = Clock()
    bucket = spec_local(clock)
    decisions = [bucket.acquire_now("k") for _ in range(51)]
    assert all(d.allowed for d in decisions[:50])
    assert [d.remaining for d in decisions[:50]] == list(range(49, -1, -1))
    refused = decisions[50]
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(0.06)  # one token every 60 ms
    assert refused.reset_s == pytest.approx(3.0)  # 50 tokens to refill
    assert decisions[0].retry_after_s is None and decisions[0].limit == 1000


def test_retry_after_is_exact() -> None:
    clock = Clock()
    bucket = rl.LocalTokenBucket(capacity=5, refill_per_s=10, clock=clock)
    for _ in range(5):
        assert bucket.acquire_now("k").allowed
    refused = bucket.acquire_now("k", cost=3)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.3)
    clock.now += 0.299
    assert not bucket.acquire_now("k", cost=3).allowed  # a refusal takes nothing
    clock.now += 0.001
    assert bucket.acquire_now("k", cost=3).allowed


def test_refill_is_continuous_and_capped() -> None:
    clock = Clock()
    bucket = rl.LocalTokenBucket(capacity=10, refill_per_s=100 / 60, clock=clock)
    assert bucket.limit == 100
    for _ in range(10):
        assert bucket.acquire_now().allowed
    assert not bucket.acquire_now().allowed
    clock.now += 1.2  # two tokens (one per 0.6 s)
    assert [bucket.acquire_now().allowed for _ in range(3)] == [True, True, False]
    clock.now += 3600  # an idle hour refills to the capacity, not beyond
    assert sum(bucket.acquire_now().allowed for _ in range(20)) == 10


def test_keys_are_independent_and_full_buckets_are_forgotten() -> None:
    clock = Clock()
    bucket = rl.LocalTokenBucket(capacity=2, refill_per_s=1, clock=clock, max_keys=2)
    assert bucket.acquire_now("a").allowed and bucket.acquire_now("a").allowed
    assert not bucket.acquire_now("a").allowed
    assert bucket.acquire_now("b").allowed
    clock.now += 10  # both buckets full again
    bucket.acquire_now("c")
    assert set(bucket._tat) == {"c"}  # over max_keys: the full ones were dropped


@pytest.mark.parametrize("cost", [0, -1, 51])
def test_cost_must_fit_the_bucket(cost: int) -> None:
    with pytest.raises(ValueError):
        spec_local(Clock()).acquire_now("k", cost)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=8),
    st.sampled_from([0.5, 3.0, 1000 / 60, 40.0]),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=400), st.integers(min_value=1, max_value=3)),
        max_size=150,
    ),
)
def test_no_window_admits_more_than_capacity_plus_refill(
    capacity: int, rate: float, schedule: list[tuple[int, int]]
) -> None:
    """For every interval [t_i, t_j]: admitted cost <= capacity + rate * (t_j - t_i)."""
    clock = Clock()
    bucket = rl.LocalTokenBucket(capacity=capacity, refill_per_s=rate, clock=clock)
    admitted: list[tuple[float, int]] = []
    for gap_ms, cost in schedule:
        clock.now += gap_ms / 1000
        cost = min(cost, capacity)
        d = bucket.acquire_now("k", cost)
        if d.allowed:
            admitted.append((clock.now, cost))
        assert 0 <= d.remaining <= capacity
    interval = round(1e6 / rate) / 1e6  # the bucket works in whole microseconds
    for i in range(len(admitted)):
        total = 0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            assert total <= capacity + (admitted[j][0] - admitted[i][0]) / interval + 1e-6


def test_a_saturated_minute_admits_exactly_1050() -> None:
    clock = Clock(0.0)
    bucket = spec_local(clock)
    admitted: list[float] = []
    for step in range(0, 120_001, 5):  # a request every 5 ms for two minutes
        clock.now = step / 1000
        if bucket.acquire_now("k").allowed:
            admitted.append(step)
    _assert_windows(admitted)


def _assert_windows(admitted_ms: list[float]) -> None:
    # Sliding 60 s windows [t, t + 60 s] starting at each admission: never more than 1050 ...
    j = 0
    worst = 0
    for i, start in enumerate(admitted_ms):
        while j < len(admitted_ms) and admitted_ms[j] <= start + 60_000:
            j += 1
        worst = max(worst, j - i)
    assert worst == 1050  # ... and the first (starting with a full bucket) gets all of them


# -- headers and the 429 ---------------------------------------------------------------------------


def test_headers() -> None:
    clock = Clock()
    bucket = spec_local(clock)
    first = bucket.acquire_now("k")
    assert api.rate_limit_headers(first) == {
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Remaining": "49",
        "X-RateLimit-Reset": "1",  # 60 ms until full, rounded up
    }
    for _ in range(49):
        bucket.acquire_now("k")
    refused = bucket.acquire_now("k")
    assert api.rate_limit_headers(refused) == {
        "X-RateLimit-Limit": "1000",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "3",
        "Retry-After": "1",
    }
    clock.now += 60
    assert api.rate_limit_headers(bucket.acquire_now("other"))["X-RateLimit-Reset"] == "1"
    assert api.rate_limit_headers(bucket.acquire_now("k"))["X-RateLimit-Remaining"] == "49"


def test_rate_limit_error_carries_retry_after() -> None:
    clock = Clock()
    bucket = rl.LocalTokenBucket(capacity=1, refill_per_s=1 / 7.5, clock=clock)
    bucket.acquire_now()
    refused = bucket.acquire_now()
    error = api.rate_limit_error(refused)
    assert isinstance(error, RateLimitError) and error.http_status == 429
    assert error.retry_after == pytest.approx(7.5)
    assert api.error_headers(error) == {"Retry-After": "8"}
    assert api.rate_limit_headers(refused)["Retry-After"] == "8"


# -- Redis: the same bucket shared by every replica -----------------------------------------------------


async def test_redis_burst_then_429(redis_client: aioredis.Redis) -> None:
    bucket = RedisTokenBucket(redis_client)
    started = time.monotonic()
    decisions = [await bucket.acquire("tenant-a") for _ in range(60)]
    elapsed = time.monotonic() - started
    allowed = [d for d in decisions if d.allowed]
    # 50 at once, plus at most one per 60 ms that passed while we were asking.
    assert 50 <= len(allowed) <= 50 + elapsed / 0.06
    assert decisions[:50] == [d for d in decisions[:50] if d.allowed]
    refused = [d for d in decisions if not d.allowed]
    assert refused, "the 51st request within a few ms must be refused"
    for d in refused:
        assert d.retry_after_s is not None and 0 < d.retry_after_s <= 0.06
        assert d.remaining == 0 and d.limit == 1000
        assert api.rate_limit_headers(d)["Retry-After"] == "1"
    assert (await bucket.acquire("tenant-b")).remaining == 49  # another key has its own bucket


async def _script_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_an_empty_bucket_refuses_without_asking_redis_until_it_refills(
    redis_client: aioredis.Redis,
) -> None:
    bucket = RedisTokenBucket(redis_client, capacity=2, refill_per_s=10, limit_per_minute=600)
    assert [(await bucket.acquire("k")).allowed for _ in range(3)] == [True, True, False]
    before = await _script_calls(redis_client)
    again = [await bucket.acquire("k") for _ in range(20)]
    assert await _script_calls(redis_client) == before  # the replica knew the bucket was empty
    assert not any(d.allowed for d in again)
    waits = [d.retry_after_s or 0.0 for d in again]
    assert all(0 < w <= 0.1 for w in waits) and waits == sorted(waits, reverse=True)
    assert all(d.remaining == 0 and d.limit == 600 for d in again)
    await asyncio.sleep(waits[-1] + 0.01)
    assert (await bucket.acquire("k")).allowed  # asked Redis again once the token was due
    assert await _script_calls(redis_client) == before + 1
    assert (await bucket.acquire("other")).allowed  # another key never shares a refusal


async def test_redis_refill_over_time(redis_client: aioredis.Redis) -> None:
    bucket = RedisTokenBucket(redis_client, capacity=3, refill_per_s=20, limit_per_minute=1200)
    assert [(await bucket.acquire("k")).allowed for _ in range(3)] == [True, True, True]
    refused = await bucket.acquire("k")
    assert not refused.allowed and refused.retry_after_s is not None
    await asyncio.sleep(refused.retry_after_s + 0.01)
    assert (await bucket.acquire("k")).allowed
    assert not (await bucket.acquire("k")).allowed
    await asyncio.sleep(0.16)  # three tokens back (one per 50 ms) ...
    results = [(await bucket.acquire("k")).allowed for _ in range(4)]
    assert results == [True, True, True, False]  # ... but never more than the capacity


async def test_redis_uses_the_server_clock_and_expires_idle_buckets(redis_client: aioredis.Redis) -> None:
    bucket = RedisTokenBucket(redis_client, prefix="t:rl:")
    await bucket.acquire("k")
    seconds, micros = await redis_client.time()
    raw = await redis_client.get("t:rl:k")
    assert isinstance(raw, bytes)
    stored = int(raw)
    # tat = server time of the call + one emission interval (60 ms)
    assert abs(stored - (seconds * 1_000_000 + micros + 60_000)) < 500_000
    ttl_ms = await redis_client.pttl("t:rl:k")
    assert 0 < ttl_ms <= 60 + 1000  # gone once the bucket is full again (plus a second of slack)


async def test_redis_script_is_reloaded_after_a_flush(redis_client: aioredis.Redis) -> None:
    bucket = RedisTokenBucket(redis_client)
    assert (await bucket.acquire("k")).remaining == 49
    await redis_client.script_flush()  # as after a Redis restart or failover: EVALSHA gets NOSCRIPT
    assert (await bucket.acquire("k")).remaining == 48


async def _replicas(
    redis_server: str, n: int, make: Callable[[aioredis.Redis], RedisTokenBucket]
) -> tuple[list[aioredis.Redis], list[RedisTokenBucket]]:
    clients = [aioredis.Redis.from_url(redis_server) for _ in range(n)]
    return clients, [make(c) for c in clients]


async def test_replicas_share_the_bucket_exactly_at_one_instant(
    redis_client: aioredis.Redis, redis_server: str
) -> None:
    """Frozen time: however many concurrent requests from however many replicas, exactly `capacity` pass."""
    clock = Clock()
    clients, buckets = await _replicas(
        redis_server, 3, lambda c: RedisTokenBucket(c, capacity=7, refill_per_s=1, now_us=clock.us)
    )
    try:
        results = await asyncio.gather(*(buckets[i % 3].acquire("shared") for i in range(120)))
        assert sum(d.allowed for d in results) == 7
        clock.now += 2.0  # two tokens later
        results = await asyncio.gather(*(buckets[i % 3].acquire("shared") for i in range(60)))
        assert sum(d.allowed for d in results) == 2
    finally:
        for c in clients:
            await c.aclose()


async def test_replicas_hammering_never_exceed_capacity_plus_refill(
    redis_client: aioredis.Redis, redis_server: str
) -> None:
    """Real server time, two replicas with four workers each: admitted <= C + r * elapsed, and close to it."""
    capacity, rate = 5, 50.0
    clients, buckets = await _replicas(
        redis_server, 2, lambda c: RedisTokenBucket(c, capacity=capacity, refill_per_s=rate)
    )
    admitted = 0
    stop = time.monotonic() + 0.6

    async def worker(bucket: RedisTokenBucket) -> None:
        nonlocal admitted
        while time.monotonic() < stop:
            if (await bucket.acquire("hammered")).allowed:
                admitted += 1

    try:
        started = time.monotonic()
        await asyncio.gather(*(worker(buckets[i % 2]) for i in range(8)))
        elapsed = time.monotonic() - started  # covers every server-side call, so the bound is safe
    finally:
        for c in clients:
            await c.aclose()
    assert admitted <= capacity + rate * elapsed
    assert admitted >= capacity + rate * (elapsed - 0.15)  # they really were saturating it


async def test_a_saturated_minute_through_redis_admits_exactly_1050(redis_client: aioredis.Redis) -> None:
    """The Lua script itself in simulated time (now_us replaces TIME): 60 s windows hold at most 1050."""
    clock = Clock(0.0)
    bucket = RedisTokenBucket(redis_client, now_us=clock.us)
    admitted: list[float] = []
    for step in range(0, 120_001, 20):  # a request every 20 ms for two minutes
        clock.now = step / 1000
        if (await bucket.acquire("k")).allowed:
            admitted.append(step)
    _assert_windows(admitted)


def _dead_client(**kwargs: object) -> tuple[socket.socket, aioredis.Redis]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    return sock, aioredis.Redis(port=sock.getsockname()[1], socket_connect_timeout=0.5, **kwargs)  # type: ignore[arg-type]


async def test_redis_down_is_service_unavailable() -> None:
    sock, client = _dead_client()  # the default client retries with backoff for seconds ...
    with sock:
        bucket = RedisTokenBucket(client, timeout_s=0.2)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError) as info:
            await bucket.acquire("k")
        assert time.monotonic() - started < 1.0  # ... the limiter's timeout answers first
        assert info.value.http_status == 503 and info.value.retry_after == 1
        assert api.error_headers(info.value) == {"Retry-After": "1"}
        await client.aclose()


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        rl.LocalTokenBucket(capacity=0, refill_per_s=1)
    with pytest.raises(ValueError):
        rl.LocalTokenBucket(capacity=1, refill_per_s=0)
    with pytest.raises(ValueError):
        rl.LocalTokenBucket(capacity=1, refill_per_s=1e7)


async def test_local_async_acquire_matches_sync() -> None:
    clock = Clock()
    bucket = rl.LocalTokenBucket(rl.WS_CAPACITY, rl.WS_REFILL_PER_S, clock=clock)
    assert bucket.limit == 100
    results = [(await bucket.acquire("conn")).allowed for _ in range(11)]
    assert results == [True] * 10 + [False]
    assert bucket.acquire_now("conn").retry_after_s == pytest.approx(0.6)


def test_limits_from_settings_defaults_overrides_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestra import ConfigError, settings

    monkeypatch.delenv("ORCHESTRA_RATE_LIMIT_PER_MINUTE", raising=False)
    monkeypatch.delenv("ORCHESTRA_RATE_LIMIT_BURST", raising=False)
    env = settings()
    assert (env.rate_limit_per_minute, env.rate_limit_burst) == (1000, 50)  # the spec's numbers
    monkeypatch.setenv("ORCHESTRA_RATE_LIMIT_PER_MINUTE", "6000")
    monkeypatch.setenv("ORCHESTRA_RATE_LIMIT_BURST", "7")
    env = settings()
    assert (env.rate_limit_per_minute, env.rate_limit_burst) == (6000, 7)
    for name, value in (
        ("ORCHESTRA_RATE_LIMIT_PER_MINUTE", "lots"),
        ("ORCHESTRA_RATE_LIMIT_BURST", "0"),
        ("ORCHESTRA_RATE_LIMIT_PER_MINUTE", "60000001"),
    ):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ConfigError) as info:
                settings()
        assert info.value.details["field"] == name


@pytest.mark.parametrize(("rpm", "allowance"), [(None, 50 + 1000), (600, 50 + 600), (30, 30 + 30)])
async def test_two_replicas_many_clients_one_key_admit_the_allowance_of_a_window(
    redis_client: aioredis.Redis, redis_server: str, rpm: int | None, allowance: int
) -> None:
    """Issue 11: two independent limiters (two replicas, each its own connections) and 40 concurrent
    clients on one key: over a saturated 60 s window the admitted count is the bucket's allowance
    (capacity + a minute's refill; the key's own rpm when it has one) within 2 requests.

    Time is simulated (``now_us`` replaces Redis TIME): every 0.5 s all 40 clients send at once, through
    both replicas."""
    clock = Clock(0.0)
    clients, buckets = await _replicas(redis_server, 2, lambda c: RedisTokenBucket(c, now_us=clock.us))
    admitted = 0
    try:
        for step in range(121):  # t = 0, 0.5, ... 60 s
            clock.now = step / 2
            decisions = await asyncio.gather(
                *(buckets[i % 2].acquire("one-key", limit_per_minute=rpm) for i in range(40))
            )
            admitted += sum(d.allowed for d in decisions)
            assert all(d.limit == (rpm or 1000) for d in decisions)
    finally:
        for c in clients:
            await c.aclose()
    assert abs(admitted - allowance) <= 2, (admitted, allowance)
