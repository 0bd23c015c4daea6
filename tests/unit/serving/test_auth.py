"""API keys (api.md §1) against a real redis-server and in memory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
import stat
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from orchestra.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    ServiceUnavailableError,
    ValidationError,
)
from orchestra.serving import _auth as auth
from orchestra.stores import ApiKeyRecord, InMemoryKeyStore
from orchestra.stores.redis import RedisKeyStore

SECRET = b"unit-test-secret-for-api-key-hashing-0000"


def keyed(key: str) -> str:
    return hmac.new(SECRET, key.encode(), hashlib.sha256).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_server: str) -> AsyncIterator[auth.ApiKeys]:
    """The same tests for both backends (an async fixture cannot request redis_client dynamically)."""
    if request.param == "memory":
        yield auth.ApiKeys(InMemoryKeyStore(), secret=SECRET)
        return
    client = aioredis.Redis.from_url(redis_server)
    await client.flushdb()
    try:
        yield auth.ApiKeys(RedisKeyStore(client), secret=SECRET)
    finally:
        await client.aclose()


async def deny(store: auth.ApiKeys, header: str | None) -> AuthenticationError:
    with pytest.raises(AuthenticationError) as info:
        await store.authenticate(header)
    assert info.value.http_status == 401 and info.value.code == "AUTHENTICATION_ERROR"
    return info.value


# -- issue, list, revoke ---------------------------------------------------------------------------


async def test_create_and_authenticate(store: auth.ApiKeys) -> None:
    key, record = await store.create(name="ci")
    assert re.fullmatch(r"orch_[A-Za-z0-9_-]{40}", key)
    assert record.key_hash == keyed(key)  # HMAC-SHA256 with the server's secret
    assert record.key_hash != hashlib.sha256(key.encode()).hexdigest()
    assert record.scopes == frozenset({"chat"}) and record.tenant == record.key_id and not record.revoked
    assert record.name == "ci"
    principal = await store.authenticate(f"Bearer {key}")
    assert principal == auth.Principal(key_id=record.key_id, tenant=record.key_id, scopes=frozenset({"chat"}))
    assert principal.rpm is None and principal.daily_tokens is None
    assert (
        await store.authenticate(f"bearer   {key}  ")
    ).key_id == record.key_id  # scheme is case-insensitive


async def test_keys_are_unique_and_tenant_and_scopes_can_be_chosen(store: auth.ApiKeys) -> None:
    key1, r1 = await store.create()
    key2, r2 = await store.create(tenant="acme", scopes=["metrics", "chat"])
    assert key1 != key2 and r1.key_id != r2.key_id
    assert r2.tenant == "acme" and r2.scopes == frozenset({"chat", "metrics"})
    assert (await store.authenticate(f"Bearer {key2}")).tenant == "acme"


@pytest.mark.parametrize("scopes", [[], ["chat", "root"], ["Chat"]])
async def test_create_rejects_bad_scopes(store: auth.ApiKeys, scopes: list[str]) -> None:
    with pytest.raises(ValidationError):
        await store.create(scopes=scopes)
    assert await store.list() == []


async def test_create_rejects_a_bad_tenant(store: auth.ApiKeys) -> None:
    with pytest.raises(ValidationError) as info:
        await store.create(tenant="has space")
    assert info.value.details["field"] == "tenant"


async def test_list_and_revoke(store: auth.ApiKeys) -> None:
    key1, r1 = await store.create(name="one")
    key2, r2 = await store.create(name="two", scopes=["admin"])
    listed = await store.list()
    assert [r.key_id for r in listed] == [r1.key_id, r2.key_id]  # oldest first
    assert listed[1].scopes == frozenset({"admin"})

    assert await store.revoke(r1.key_id) is True
    assert await store.revoke(r1.key_id) is True  # idempotent
    assert await store.revoke("key_doesnotexist") is False
    error = await deny(store, f"Bearer {key1}")
    assert "revoked" in error.message
    assert (await store.authenticate(f"Bearer {key2}")).key_id == r2.key_id  # others unaffected
    assert {r.key_id: r.revoked for r in await store.list()} == {r1.key_id: True, r2.key_id: False}


# -- authentication failures -----------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   "])
async def test_missing_key(store: auth.ApiKeys, header: str | None) -> None:
    error = await deny(store, header)
    assert "missing" in error.message and error.details["reason"] == "missing"


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "Token orch_abc",
        "orch_abcdef",
        "Bearer kéy",
        "Bearer a,b",
    ],
)
async def test_malformed_header(store: auth.ApiKeys, header: str) -> None:
    error = await deny(store, header)
    assert "malformed" in error.message and error.details["reason"] == "malformed"


async def test_unknown_key_is_never_echoed(store: auth.ApiKeys) -> None:
    await store.create()
    guess = "orch_" + "A" * 40
    error = await deny(store, f"Bearer {guess}")
    assert error.message == "unknown or revoked API key"
    assert guess not in json.dumps(error.to_dict()) and "AAAA" not in repr(error)


async def test_comparison_goes_through_compare_digest(
    store: auth.ApiKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, _ = await store.create()
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # _auth calls hmac.compare_digest
    await store.authenticate(f"Bearer {key}")
    # the current hash and the (absent) previous one, both compared every time
    assert calls == [(keyed(key), keyed(key)), ("", keyed(key))]


# -- scopes ----------------------------------------------------------------------------------------


def test_require_scope() -> None:
    chat = auth.Principal("k1", "t", frozenset({"chat"}))
    metrics = auth.Principal("k2", "t", frozenset({"metrics"}))
    admin = auth.Principal("k3", "t", frozenset({"admin"}))
    auth.require_scope(chat, "chat")
    auth.require_scope(metrics, "metrics")
    auth.require_scope(admin, "metrics")  # admin implies every scope
    auth.require_scope(admin, "chat")
    with pytest.raises(AuthenticationError) as info:
        auth.require_scope(chat, "metrics")
    assert "'metrics' scope" in info.value.message and info.value.details["required_scope"] == "metrics"
    with pytest.raises(AuthenticationError):
        auth.require_scope(metrics, "chat")
    with pytest.raises(AuthenticationError):
        auth.require_scope(chat, "admin")


# -- storage: hashes only --------------------------------------------------------------------------


async def test_redis_holds_hashes_only(redis_client: aioredis.Redis) -> None:
    store = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET)
    plaintexts = [(await store.create(name=f"created-{i}"))[0] for i in range(3)]
    bootstrap = "bootstrap-key-0123456789"
    await store.add_plaintext(bootstrap, ["chat", "metrics"], name="env")
    plaintexts.append(bootstrap)
    await store.revoke((await store.list())[0].key_id)

    await store.authenticate(f"Bearer {bootstrap}")  # notes its last use
    await asyncio.sleep(0.05)
    dump = []
    async for name in redis_client.scan_iter(match="*"):
        dump.append(name)
        assert await redis_client.type(name) == b"hash"
        for field, value in (await redis_client.hgetall(name)).items():
            dump += [field, value]
    blob = b"\n".join(dump)
    assert len(dump) > 4 and b"orchestra:keys:last_used" in blob
    assert SECRET not in blob
    for key in plaintexts:
        assert key.encode() not in blob
        assert keyed(key).encode() in blob
        # no unkeyed hash to test guesses against
        assert hashlib.sha256(key.encode()).hexdigest().encode() not in blob


async def test_a_second_store_on_the_same_redis_sees_the_keys(redis_client: aioredis.Redis) -> None:
    key, record = await auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET).create(
        scopes=["chat", "metrics"]
    )
    other = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET)
    assert (await other.authenticate(f"Bearer {key}")).scopes == frozenset({"chat", "metrics"})
    assert [r.key_id for r in await other.list()] == [record.key_id]


async def test_a_corrupt_record_is_a_401_not_a_500(redis_client: aioredis.Redis) -> None:
    store = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET)
    key, _ = await store.create()
    await redis_client.hset("orchestra:keys:records", (await store.list())[0].key_id, "{not json")
    await deny(auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET), f"Bearer {key}")
    assert await store.list() == []


# -- cache and revocation across replicas ----------------------------------------------------------


async def test_revocation_reaches_other_replicas_within_the_cache_ttl(redis_client: aioredis.Redis) -> None:
    clock = Clock()
    replica_a = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET, cache_ttl_s=2.0, clock=clock)
    replica_b = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET, cache_ttl_s=2.0, clock=clock)
    key, record = await replica_a.create()
    header = f"Bearer {key}"
    await replica_a.authenticate(header)
    await replica_b.authenticate(header)

    assert await replica_b.revoke(record.key_id)
    await deny(replica_b, header)  # at once where it was revoked
    clock.now += 1.9
    await replica_a.authenticate(header)  # still cached on the other replica...
    clock.now += 0.2
    await deny(replica_a, header)  # ...but not beyond the TTL


async def test_hot_path_uses_the_cache(redis_client: aioredis.Redis) -> None:
    clock = Clock()
    store = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET, clock=clock)
    key, _ = await store.create()
    await store.authenticate(f"Bearer {key}")
    await redis_client.flushdb()  # if the next call hit Redis it would fail
    await store.authenticate(f"Bearer {key}")
    clock.now += auth.CACHE_TTL_S + 0.01
    await deny(store, f"Bearer {key}")


async def test_a_burst_on_one_key_reads_the_store_once(redis_client: aioredis.Redis) -> None:
    class CountingStore(RedisKeyStore):  # the real Redis store, counting its reads
        reads = 0

        async def get(self, key_hash: str) -> ApiKeyRecord | None:
            CountingStore.reads += 1
            return await super().get(key_hash)

    key, record = await auth.ApiKeys(RedisKeyStore(redis_client)).create()
    store = auth.ApiKeys(CountingStore(redis_client))  # a replica that has not seen the key yet
    principals = await asyncio.gather(*(store.authenticate(f"Bearer {key}") for _ in range(200)))
    assert {p.key_id for p in principals} == {record.key_id}
    assert CountingStore.reads == 1


async def test_a_new_key_from_another_replica_works_after_the_negative_cache_expires(
    redis_client: aioredis.Redis,
) -> None:
    clock = Clock()
    replica_a = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET, clock=clock)
    # Bootstrap keys are deterministic: probe one on A before B adds it.
    bootstrap = "another-bootstrap-key-42"
    await deny(replica_a, f"Bearer {bootstrap}")
    await auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET).add_plaintext(bootstrap)
    clock.now += auth.CACHE_TTL_S + 0.01
    await replica_a.authenticate(f"Bearer {bootstrap}")


async def test_the_cache_is_bounded() -> None:
    store = auth.ApiKeys(InMemoryKeyStore(), secret=SECRET, cache_size=3)
    for i in range(10):
        await deny(store, f"Bearer unknown-key-{i}")
    assert len(store._cache) == 3


# -- bootstrap keys --------------------------------------------------------------------------------


async def test_add_plaintext_is_idempotent_and_deterministic(redis_client: aioredis.Redis) -> None:
    key = "env-provided-key-0001"
    first = await auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET).add_plaintext(
        key, ["chat"], name="env"
    )
    again = await auth.ApiKeys(InMemoryKeyStore(), secret=SECRET).add_plaintext(
        key, ["chat"], name="env"
    )  # another process, in memory
    assert first.key_id == again.key_id and first.tenant == first.key_id
    assert keyed(key)[:16] not in first.key_id  # the id does not reveal part of the stored hash
    # keyed too: without the secret the id cannot be recomputed from a guess
    assert hashlib.sha256(b"orchestra-key-id\0" + key.encode()).hexdigest()[:16] not in first.key_id

    store = auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET)
    updated = await store.add_plaintext(key, ["chat", "metrics"])
    assert updated.key_id == first.key_id and updated.created_at == first.created_at and updated.name == "env"
    assert updated.scopes == frozenset({"chat", "metrics"})
    assert len(await store.list()) == 1
    principal = await store.authenticate(f"Bearer {key}")
    assert principal.scopes == frozenset({"chat", "metrics"}) and principal.tenant == first.key_id


async def test_add_plaintext_never_resurrects_a_revoked_key(store: auth.ApiKeys) -> None:
    key = "revoked-bootstrap-key-01"
    record = await store.add_plaintext(key, tenant="team-x")
    assert record.tenant == "team-x"
    await store.revoke(record.key_id)
    again = await store.add_plaintext(key)
    assert again.revoked and again.tenant == "team-x"
    await deny(store, f"Bearer {key}")


@pytest.mark.parametrize("key", ["short", "has spaces in it ok?", "colon:inside-the-key-123", ""])
async def test_add_plaintext_rejects_weak_or_odd_keys_without_echoing(store: auth.ApiKeys, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        await store.add_plaintext(key)
    if key:
        assert key not in info.value.message


# -- ORCHESTRA_API_KEYS ----------------------------------------------------------------------------


def test_parse_api_keys_env() -> None:
    assert auth.parse_api_keys_env("") == []
    assert auth.parse_api_keys_env("  ") == []
    parsed = auth.parse_api_keys_env(
        "first-key-0000000001, second-key-000000002:chat+metrics ,third-key-00000003:admin"
    )
    assert parsed == [
        ("first-key-0000000001", frozenset({"chat"})),
        ("second-key-000000002", frozenset({"chat", "metrics"})),
        ("third-key-00000003", frozenset({"admin"})),
    ]


@pytest.mark.parametrize(
    ("value", "position", "problem"),
    [
        ("good-key-0000000001,,other-key-000000002", 2, "empty key"),
        ("good-key-0000000001,", 2, "empty key"),
        (":chat", 1, "empty key"),
        ("good-key-0000000001,secret-key-00000002:chat+secretpart", 2, "unknown scope"),
        ("secret-key-00000002:", 1, "at least one scope"),
        ("secret-key-00000002:chat+", 1, "empty scope name"),
        ("secret-short", 1, "shorter than 16"),
        ("secret key with space", 1, "may only contain"),
        ("secret-key-00000002,secret-key-00000002", 2, "same key as entry 1"),
    ],
)
def test_parse_api_keys_env_errors_name_the_position_not_the_key(
    value: str, position: int, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        auth.parse_api_keys_env(value)
    assert f"entry {position}" in info.value.message and problem in info.value.message
    assert info.value.details["entry"] == position
    assert "secret" not in json.dumps(info.value.to_dict())


async def test_env_keys_round_trip_through_the_store(store: auth.ApiKeys) -> None:
    for key, scopes in auth.parse_api_keys_env("ops-key-000000000001:metrics,user-key-00000000001"):
        await store.add_plaintext(key, scopes, name="env")
    ops = await store.authenticate("Bearer ops-key-000000000001")
    auth.require_scope(ops, "metrics")
    with pytest.raises(AuthenticationError):
        auth.require_scope(ops, "chat")
    user = await store.authenticate("Bearer user-key-00000000001")
    assert user.scopes == frozenset({"chat"}) and user.tenant != ops.tenant


# -- Redis down ------------------------------------------------------------------------------------


def _dead_redis(**kwargs: Any) -> tuple[socket.socket, aioredis.Redis]:
    """A client for a port that is bound but not listening: every connection is refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, aioredis.Redis(port=sock.getsockname()[1], socket_connect_timeout=0.5, **kwargs)


async def test_redis_down_is_service_unavailable() -> None:
    sock, client = _dead_redis(retry=Retry(NoBackoff(), 0))
    with sock:
        store = auth.ApiKeys(RedisKeyStore(client), secret=SECRET)
        for call in (
            store.authenticate("Bearer some-key-that-is-long"),
            store.create(),
            store.list(),
            store.revoke("key_x"),
            store.add_plaintext("bootstrap-key-00000001"),
        ):
            with pytest.raises(ServiceUnavailableError) as info:
                await call
            assert info.value.http_status == 503 and info.value.retry_after == 1
        await client.aclose()


async def test_the_timeout_bounds_the_client_retries() -> None:
    sock, client = _dead_redis()  # default client: retries with exponential backoff (seconds)
    with sock:
        store = auth.ApiKeys(RedisKeyStore(client, timeout_s=0.2), secret=SECRET)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError):
            await store.authenticate("Bearer some-key-that-is-long")
        assert time.monotonic() - started < 1.0
        await client.aclose()


# -- the hashing secret ----------------------------------------------------------------------------


async def test_without_the_secret_a_leaked_store_authenticates_nothing(redis_client: aioredis.Redis) -> None:
    key, _ = await auth.ApiKeys(RedisKeyStore(redis_client), secret=SECRET).create()
    other_secret = auth.ApiKeys(RedisKeyStore(redis_client), secret=b"another-secret-of-at-least-32-chars!!")
    await deny(other_secret, f"Bearer {key}")


def test_the_secret_comes_from_the_environment_else_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRA_KEY_HASH_SECRET", "x" * 40)
    assert auth.hash_secret(tmp_path) == b"x" * 40
    monkeypatch.setenv("ORCHESTRA_KEY_HASH_SECRET", "too-short")
    with pytest.raises(ConfigError) as short:
        auth.hash_secret(tmp_path)
    assert "too-short" not in json.dumps(short.value.to_dict())
    monkeypatch.delenv("ORCHESTRA_KEY_HASH_SECRET")
    with pytest.raises(ConfigError) as missing:
        auth.hash_secret(tmp_path)
    assert missing.value.details == {"field": "ORCHESTRA_KEY_HASH_SECRET", "reason": "is not set"}
    with pytest.raises(ConfigError):
        auth.ApiKeys(InMemoryKeyStore())  # no secret, no server: refuses to start rather than guess

    made = auth.ensure_hash_secret(tmp_path / "data")  # what `orchestra serve` does
    path = tmp_path / "data" / auth.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(made) >= 32
    assert auth.ensure_hash_secret(tmp_path / "data") == made  # kept, not replaced
    assert auth.hash_secret(tmp_path / "data") == made  # what the CLI reads
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(tmp_path / "data"))
    assert auth.hash_secret() == made


# -- expiry, rotation, names -----------------------------------------------------------------------


class Now:
    def __init__(self) -> None:
        self.at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(params=["memory", "redis"])
async def timed(request: pytest.FixtureRequest) -> AsyncIterator[tuple[auth.ApiKeys, Now]]:
    now = Now()
    if request.param == "memory":
        yield auth.ApiKeys(InMemoryKeyStore(), secret=SECRET, now=now, cache_ttl_s=0), now
        return
    client = aioredis.Redis.from_url(request.getfixturevalue("redis_server"))
    await client.flushdb()
    yield auth.ApiKeys(RedisKeyStore(client), secret=SECRET, now=now, cache_ttl_s=0), now
    await client.aclose()


async def test_an_expired_key_is_refused_exactly_at_its_expiry(timed: tuple[auth.ApiKeys, Now]) -> None:
    keys, now = timed
    key, record = await keys.create(name="short-lived", expires_at=now.at + timedelta(days=30))
    await keys.authenticate(f"Bearer {key}")
    now.at += timedelta(days=30, seconds=-1)
    await keys.authenticate(f"Bearer {key}")  # the cache cannot stretch it: checked every request
    now.at += timedelta(seconds=1)
    error = await deny(keys, f"Bearer {key}")
    assert error.details == {"reason": "expired"} and "expired" in error.message
    assert auth.key_status((await keys.list())[0], now.at) == "expired"
    with pytest.raises(ValidationError) as past:
        await keys.create(name="already-gone", expires_at=now.at)
    assert past.value.details["field"] == "expires_at"
    assert record.expires_at == datetime(2026, 5, 31, 12, 0, tzinfo=UTC)


async def test_rotation_keeps_the_old_secret_for_the_grace_period(timed: tuple[auth.ApiKeys, Now]) -> None:
    keys, now = timed
    old, record = await keys.create(name="ci", rpm=30, daily_tokens=1000)
    new, rotated = await keys.rotate(record.key_id, timedelta(hours=1))
    assert new != old and new.startswith(auth.KEY_PREFIX)
    assert rotated.key_id == record.key_id and rotated.tenant == record.tenant
    assert rotated.rpm == 30 and rotated.daily_tokens == 1000 and rotated.rotated_at == now.at
    assert rotated.previous_valid_until == now.at + timedelta(hours=1)
    for presented in (old, new):
        principal = await keys.authenticate(f"Bearer {presented}")
        assert principal.key_id == record.key_id and principal.rpm == 30
    now.at += timedelta(hours=1)
    await deny(keys, f"Bearer {old}")  # the grace period is over
    await keys.authenticate(f"Bearer {new}")

    newer, again = await keys.rotate(record.key_id, timedelta(0))  # no grace: the old one stops at once
    await deny(keys, f"Bearer {new}")
    await deny(keys, f"Bearer {old}")
    await keys.authenticate(f"Bearer {newer}")
    assert again.previous_hash is None and len(await keys.list()) == 1
    assert await keys.store.get(keyed(old)) is None and await keys.store.get(keyed(new)) is None

    await keys.revoke(record.key_id)
    with pytest.raises(ValidationError) as revoked:
        await keys.rotate(record.key_id)
    assert "revoked" in revoked.value.message
    with pytest.raises(NotFoundError):
        await keys.rotate("key_unknown")


async def test_keys_are_found_by_id_or_unique_name(timed: tuple[auth.ApiKeys, Now]) -> None:
    keys, _ = timed
    _, a = await keys.create(name="deploy")
    with pytest.raises(ValidationError) as taken:
        await keys.create(name="deploy")
    assert taken.value.details["field"] == "name"
    assert (await keys.find("deploy")).key_id == a.key_id
    assert (await keys.find(a.key_id)).key_id == a.key_id
    await keys.revoke(a.key_id)
    _, b = await keys.create(name="deploy")  # the name is free again once revoked
    assert (await keys.find("deploy")).key_id == b.key_id
    with pytest.raises(NotFoundError):
        await keys.find("nobody")
    await keys.add_plaintext("bootstrap-key-0000000001", name="env")
    await keys.add_plaintext("bootstrap-key-0000000002", name="env")
    with pytest.raises(ValidationError) as ambiguous:
        await keys.find("env")
    assert "2 keys" in ambiguous.value.message


async def test_a_rotated_bootstrap_key_does_not_come_back_from_the_environment(
    timed: tuple[auth.ApiKeys, Now],
) -> None:
    keys, now = timed
    bootstrap = "bootstrap-key-rotated-0001"
    record = await keys.add_plaintext(bootstrap, name="env")
    new, _ = await keys.rotate(record.key_id, timedelta(minutes=5))
    assert (await keys.add_plaintext(bootstrap, name="env")).key_id == record.key_id  # a replica restarts
    now.at += timedelta(minutes=5)
    again = await keys.add_plaintext(bootstrap, name="env")  # after the grace period, too
    assert again.key_id == record.key_id and again.key_hash == keyed(new)
    await deny(keys, f"Bearer {bootstrap}")
    await keys.authenticate(f"Bearer {new}")


async def test_last_use_is_noted_at_most_once_a_minute(redis_client: aioredis.Redis) -> None:
    clock, now = Clock(), Now()
    store = RedisKeyStore(redis_client)
    keys = auth.ApiKeys(store, secret=SECRET, clock=clock, now=now)
    key, record = await keys.create(name="used")
    assert await keys.last_used() == {}
    await keys.authenticate(f"Bearer {key}")
    await asyncio.sleep(0.05)  # noted in the background, off the request path
    assert await keys.last_used() == {record.key_id: now.at}
    first = now.at
    now.at += timedelta(seconds=30)
    clock.now += 30
    await keys.authenticate(f"Bearer {key}")
    await asyncio.sleep(0.05)
    assert await keys.last_used() == {record.key_id: first}
    now.at += timedelta(seconds=31)
    clock.now += 31
    await keys.authenticate(f"Bearer {key}")
    await asyncio.sleep(0.05)
    assert await keys.last_used() == {record.key_id: now.at}


async def test_store_down_fails_closed_except_within_the_cache_window(redis_server: str) -> None:
    """A key looked up in the last CACHE_TTL_S still works when the store is down; any other gets 503."""
    clock = Clock()
    sock, dead = _dead_redis(retry=Retry(NoBackoff(), 0))
    live = aioredis.Redis.from_url(redis_server)
    await live.flushdb()
    with sock:
        key, _ = await auth.ApiKeys(RedisKeyStore(live), secret=SECRET).create()
        other, _ = await auth.ApiKeys(RedisKeyStore(live), secret=SECRET).create()
        keys = auth.ApiKeys(RedisKeyStore(live), secret=SECRET, clock=clock)
        await keys.authenticate(f"Bearer {key}")
        keys.store = RedisKeyStore(dead)  # the store goes away
        clock.now += auth.CACHE_TTL_S - 0.1
        await keys.authenticate(f"Bearer {key}")  # in the cache window
        with pytest.raises(ServiceUnavailableError) as unknown:
            await keys.authenticate(f"Bearer {other}")  # never seen here: not let through unchecked
        assert unknown.value.http_status == 503
        clock.now += 0.2
        with pytest.raises(ServiceUnavailableError):
            await keys.authenticate(f"Bearer {key}")  # the window is over: closed
    await dead.aclose()
    await live.aclose()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("2w", 1209600)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert auth.parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d30", "0d", "-1d", "1.5h", "3651d", "30 days"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        auth.parse_duration(text, "expires_in")
    assert info.value.details["field"] == "expires_in"
