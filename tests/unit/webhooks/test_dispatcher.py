"""The dispatcher over the Redis store (a real redis-server) delivering to real HTTP receivers."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from orchestra.stores import Subscription
from orchestra.stores.redis import RedisWebhookStore
from orchestra.webhooks import DeliveryPolicy, Dispatcher, EventPublisher, verify

from .receiver import Receiver, Reply

SECRET = "whsec-unit-0123456789"
ROOT = Path(__file__).resolve().parents[3]
FAST = DeliveryPolicy(timeout_s=0.5, retry_base_s=0.05, retry_cap_s=0.2, max_attempts=8, lease_s=2.0,
                      poll_s=0.02, allow_private=True)  # fmt: skip


@pytest.fixture
async def store(redis_client: aioredis.Redis) -> AsyncIterator[RedisWebhookStore]:
    yield RedisWebhookStore(redis_client)


async def _subscribe(store: RedisWebhookStore, url: str, sid: str = "wh_0000000000000001") -> Subscription:
    sub = Subscription(id=sid, tenant="alice", url=url, events=("chat.completed",), secret=SecretStr(SECRET),
                       created_at=1.0)  # fmt: skip
    await store.add_subscription(sub)
    return sub


async def _drain(dispatcher: Dispatcher, store: RedisWebhookStore, timeout_s: float = 20.0) -> None:
    """Run the dispatcher until the queue is empty (bounded: a hang fails, it is no timing)."""
    task = asyncio.ensure_future(dispatcher.run())
    try:
        async with asyncio.timeout(timeout_s):
            while await store.pending():  # noqa: ASYNC110 (the queue is in Redis: nothing to wait on)
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_delivery_is_signed_posted_once_and_recorded(store: RedisWebhookStore) -> None:
    outcomes: list[tuple[str, str]] = []
    async with Receiver(Reply(204)) as rx:
        await _subscribe(store, rx.url())
        event_id, [did] = await EventPublisher(store).publish("alice", "chat.completed", {"response": "hi"})
        await _drain(Dispatcher(store, FAST, on_outcome=lambda e, o: outcomes.append((e, o))), store)
    [got] = rx.received
    assert got.headers["X-Orchestra-Event"] == "chat.completed"
    assert got.headers["X-Orchestra-Delivery"] == did
    assert got.headers["Content-Type"] == "application/json"
    assert verify(SECRET, got.headers, got.body) > 0
    body = json.loads(got.body)
    assert body["id"] == event_id and body["type"] == "chat.completed" and body["data"] == {"response": "hi"}
    assert isinstance(body["created"], int)
    assert outcomes == [("chat.completed", "delivered")]
    [attempt] = await store.attempts("wh_0000000000000001")
    assert (attempt.delivery_id, attempt.attempt, attempt.outcome, attempt.status_code) == (
        did,
        1,
        "delivered",
        204,
    )
    assert attempt.next_retry_at is None


async def test_500s_and_timeouts_are_retried_on_the_schedule_with_the_same_delivery_id(
    store: RedisWebhookStore,
) -> None:
    replies = (Reply(500), Reply(200, delay_s=3.0), Reply(503), Reply(200))  # the second one hangs
    async with Receiver(*replies) as rx:
        await _subscribe(store, rx.url())
        _, [did] = await EventPublisher(store).publish("alice", "chat.completed", {})
        await _drain(Dispatcher(store, FAST), store)
    assert [r.headers["X-Orchestra-Delivery"] for r in rx.received] == [did] * 4
    attempts = list(reversed(await store.attempts("wh_0000000000000001")))
    assert [(a.attempt, a.outcome, a.status_code, a.error) for a in attempts] == [
        (1, "retrying", 500, None),
        (2, "retrying", None, "timeout"),
        (3, "retrying", 503, None),
        (4, "delivered", 200, None),
    ]
    for a, nominal in zip(attempts, [0.05, 0.1, 0.2], strict=False):
        assert a.next_retry_at is not None and a.next_retry_at - a.at >= 0.8 * nominal  # the backoff
    for before, after in itertools.pairwise(attempts):
        assert before.next_retry_at is not None and after.at >= before.next_retry_at  # never early
    # every attempt signs the same body afresh
    assert len({r.body for r in rx.received}) == 1


async def test_retry_after_on_429_is_honoured(store: RedisWebhookStore) -> None:
    policy = DeliveryPolicy(
        timeout_s=0.5, retry_base_s=0.01, retry_cap_s=5, lease_s=2, poll_s=0.02, allow_private=True
    )
    async with Receiver(Reply(429, {"Retry-After": "1"}), Reply(200)) as rx:
        await _subscribe(store, rx.url())
        await EventPublisher(store).publish("alice", "chat.completed", {})
        await _drain(Dispatcher(store, policy), store)
    first, second = reversed(await store.attempts("wh_0000000000000001"))
    assert first.status_code == 429 and first.next_retry_at is not None
    assert first.next_retry_at - first.at >= 1.0 and second.at >= first.next_retry_at


async def test_attempts_stop_at_the_maximum(store: RedisWebhookStore) -> None:
    policy = DeliveryPolicy(timeout_s=0.5, retry_base_s=0.01, retry_cap_s=0.02, max_attempts=3, lease_s=2,
                            poll_s=0.02, allow_private=True)  # fmt: skip
    outcomes: list[str] = []
    async with Receiver(Reply(500)) as rx:
        await _subscribe(store, rx.url())
        await EventPublisher(store).publish("alice", "chat.completed", {})
        await _drain(Dispatcher(store, policy, on_outcome=lambda e, o: outcomes.append(o)), store)
    assert len(rx.received) == 3 and outcomes == ["retrying", "retrying", "failed"]


async def test_410_disables_the_subscription_and_2xx_stops(store: RedisWebhookStore) -> None:
    async with Receiver(Reply(410)) as gone, Receiver(Reply(201)) as ok:
        await _subscribe(store, gone.url(), "wh_0000000000000001")
        await _subscribe(store, ok.url(), "wh_0000000000000002")
        events = EventPublisher(store)
        await events.publish("alice", "chat.completed", {"n": 1})
        await _drain(Dispatcher(store, FAST), store)
        await events.publish("alice", "chat.completed", {"n": 2})
        await _drain(Dispatcher(store, FAST), store)
        assert len(gone.received) == 1  # no retry after 410, and nothing more: it is disabled
        assert len(ok.received) == 2  # one each: 2xx stops
        sub = await store.subscription("alice", "wh_0000000000000001")
        assert sub is not None and sub.disabled_reason is not None
        _, ids = await events.publish("alice", "chat.completed", {"n": 3})
        assert len(ids) == 1  # only the active one


async def test_redirects_are_not_followed(store: RedisWebhookStore) -> None:
    async with Receiver(Reply(200)) as elsewhere:
        async with Receiver(Reply(307, {"Location": elsewhere.url()}), Reply(200)) as rx:
            await _subscribe(store, rx.url())
            await EventPublisher(store).publish("alice", "chat.completed", {})
            await _drain(Dispatcher(store, FAST), store)
        assert elsewhere.received == [] and len(rx.received) == 2
    assert [a.status_code for a in reversed(await store.attempts("wh_0000000000000001"))] == [307, 200]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "rebound.example.com"])
async def test_no_delivery_to_loopback_when_private_targets_are_not_allowed(
    store: RedisWebhookStore, host: str
) -> None:
    async def resolver(name: str, port: int) -> list[str]:  # the system's, plus a name rebinding to loopback
        if name == "rebound.example.com":
            return ["127.0.0.1"]
        infos = await asyncio.get_running_loop().getaddrinfo(name, port)
        return [str(i[4][0]) for i in infos]

    strict = DeliveryPolicy(timeout_s=0.5, lease_s=2, poll_s=0.02, allow_private=False)
    outcomes: list[str] = []
    async with Receiver(Reply(200)) as rx:
        await _subscribe(store, f"https://{host}:{rx.port}/hook")
        await EventPublisher(store).publish("alice", "chat.completed", {})
        dispatcher = Dispatcher(store, strict, resolver=resolver, on_outcome=lambda e, o: outcomes.append(o))
        await _drain(dispatcher, store)
    assert rx.received == [] and outcomes == ["blocked"]
    [attempt] = await store.attempts("wh_0000000000000001")
    assert attempt.outcome == "blocked" and "not public" in (attempt.error or "")


async def test_the_connection_goes_to_the_resolved_ip_with_the_host_name_kept(
    store: RedisWebhookStore,
) -> None:
    asked: list[str] = []

    async def resolver(name: str, port: int) -> list[str]:
        asked.append(name)
        return ["127.0.0.1"]

    async with Receiver(Reply(200)) as rx:
        await _subscribe(store, f"http://hooks.invalid:{rx.port}/hook")  # .invalid never resolves for real
        await EventPublisher(store).publish("alice", "chat.completed", {})
        await _drain(Dispatcher(store, FAST, resolver=resolver), store)
    assert asked == ["hooks.invalid"]
    assert rx.received[0].headers["Host"] == f"hooks.invalid:{rx.port}"


async def test_secrets_never_reach_the_logs(
    store: RedisWebhookStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with Receiver(Reply(500), Reply(410)) as rx:
        await _subscribe(store, rx.url())
        await EventPublisher(store).publish("alice", "chat.completed", {})
        await _drain(Dispatcher(store, FAST), store)
    signatures = [r.headers["X-Orchestra-Signature"].split("v1=")[1] for r in rx.received]
    text = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert "attempt" in text  # the failures were logged...
    assert SECRET not in text and not any(s in text for s in signatures)  # ...without the secret
    sub = await store.subscription("alice", "wh_0000000000000001")
    assert SECRET not in repr(sub) and SECRET not in str(sub)


_CHILD = """
import asyncio, sys
import redis.asyncio as aioredis
from orchestra.stores.redis import RedisWebhookStore
from orchestra.webhooks import DeliveryPolicy, Dispatcher

async def main():
    store = RedisWebhookStore(aioredis.Redis.from_url(sys.argv[1]))
    policy = DeliveryPolicy(timeout_s=60, lease_s=1.5, poll_s=0.02, allow_private=True)
    await Dispatcher(store, policy).run()

asyncio.run(main())
"""


async def test_a_killed_dispatcher_loses_no_delivery(store: RedisWebhookStore, redis_server: str) -> None:
    """A dispatcher process is SIGKILLed mid-attempt; another claims the delivery when the lease ends."""
    async with Receiver(Reply(200, delay_s=60), Reply(200)) as rx:
        await _subscribe(store, rx.url())
        _, [did] = await EventPublisher(store).publish("alice", "chat.completed", {})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        child = subprocess.Popen([sys.executable, "-c", _CHILD, redis_server], env=env)  # noqa: ASYNC220
        try:
            await rx.wait_for(1)  # the child's attempt is in flight (the receiver holds it)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        assert await store.pending() == 1
        await _drain(Dispatcher(store, FAST), store)
    assert [r.headers["X-Orchestra-Delivery"] for r in rx.received] == [did, did]
    [attempt] = await store.attempts("wh_0000000000000001")  # the killed one never settled
    assert attempt.attempt == 2 and attempt.outcome == "delivered"
