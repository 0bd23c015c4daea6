"""``orchestra keys create|list|revoke|rotate`` against a real redis-server, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest
import redis

from orchestra.cli import main
from orchestra.cli._server_file import write_server_file
from orchestra.errors import AuthenticationError
from orchestra.serving._auth import ApiKeys, Principal, hash_secret
from orchestra.stores.redis import RedisKeyStore, redis_client


@pytest.fixture
def store_env(redis_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    redis.Redis.from_url(redis_server).flushdb()
    monkeypatch.setenv("ORCHESTRA_REDIS_URL", redis_server)
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(tmp_path / ".orchestra"))
    return redis_server


def _authenticate(url: str, key: str) -> Principal:
    """What a server replica on the same store and secret decides about ``key``."""

    async def check() -> Principal:
        client = redis_client(url)
        keys = ApiKeys(RedisKeyStore(client), secret=hash_secret())
        try:
            return await keys.authenticate(f"Bearer {key}")
        finally:
            await keys.drain()  # its last use noted before the client closes
            await client.aclose()

    return asyncio.run(check())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keys", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_create_list_revoke(store_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "create", "--name", "ci", "--scopes", "chat,metrics", "--expires", "30d",
        "--daily-tokens", "5000", "--rpm", "60",
    )  # fmt: skip
    assert code == 0, out
    key = out.strip().splitlines()[-1]
    assert re.fullmatch(r"orch_[A-Za-z0-9_-]{40}", key) and out.count(key) == 1  # printed once
    principal = _authenticate(store_env, key)
    assert principal.scopes == frozenset({"chat", "metrics"}) and principal.rpm == 60
    assert principal.daily_tokens == 5000

    code, out, _ = _run(capsys, "list")
    assert code == 0 and key not in out
    header, row = out.strip().splitlines()
    columns = [
        "ID",
        "NAME",
        "SCOPES",
        "STATUS",
        "CREATED",
        "LAST",
        "USED",
        "EXPIRES",
        "RPM",
        "TOKENS",
        "TODAY",
    ]
    assert header.split() == columns
    assert principal.key_id in row and " ci " in row and "chat,metrics" in row and "active" in row
    assert "0/5000" in row and " 60 " in row

    code, out, _ = _run(capsys, "list", "--json")
    (listed,) = json.loads(out)
    assert listed["id"] == principal.key_id and listed["expires_at"] and listed["last_used_at"]
    assert key not in out

    code, out, _ = _run(capsys, "revoke", "ci")  # by name
    assert code == 0 and principal.key_id in out
    with pytest.raises(AuthenticationError):
        _authenticate(store_env, key)
    code, out, _ = _run(capsys, "list", "--json")
    assert json.loads(out)[0]["status"] == "revoked"
    code, _, err = _run(capsys, "revoke", "nobody")
    assert code == 2 and "NOT_FOUND" in err


def test_rotate_states_the_grace_period(store_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "create", "--name", "svc", "--json")
    created = json.loads(out)
    code, out, _ = _run(capsys, "rotate", created["id"], "--grace", "2h")
    assert code == 0 and "keeps working until" in out and "(2h)" in out
    new = out.strip().splitlines()[-1]
    assert new != created["key"]
    assert _authenticate(store_env, created["key"]).key_id == created["id"]  # during the grace period
    assert _authenticate(store_env, new).key_id == created["id"]
    code, out, _ = _run(capsys, "rotate", "svc", "--grace", "0s", "--json")
    newest = json.loads(out)
    assert newest["previous_key_valid_until"] is None
    for old in (created["key"], new):
        with pytest.raises(AuthenticationError):
            _authenticate(store_env, old)
    assert _authenticate(store_env, newest["key"]).key_id == created["id"]


def test_bad_arguments_are_errors_not_tracebacks(store_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "create", "--name", "x", "--scopes", "chat,root")
    assert code == 2 and "VALIDATION_ERROR" in err and "root" in err
    code, _, err = _run(capsys, "create", "--name", "x", "--expires", "soon")
    assert code == 2 and "--expires" in err
    _run(capsys, "create", "--name", "dup")
    code, _, err = _run(capsys, "create", "--name", "dup")
    assert code == 2 and "name" in err
    with pytest.raises(SystemExit):
        main(["keys", "create", "--name", "x", "--rpm", "0"])


def test_the_cli_finds_the_embedded_store_of_the_running_server(
    redis_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    redis.Redis.from_url(redis_server).flushdb()
    data_dir = tmp_path / ".orchestra"
    monkeypatch.delenv("ORCHESTRA_REDIS_URL", raising=False)
    monkeypatch.delenv("ORCHESTRA_KEY_HASH_SECRET", raising=False)
    monkeypatch.setenv("ORCHESTRA_DATA_DIR", str(data_dir))

    code, _, err = _run(capsys, "list")  # no server, no secret yet
    assert code == 2 and "ORCHESTRA_KEY_HASH_SECRET" in err
    data_dir.mkdir()
    (data_dir / "key-hash-secret").write_text("s" * 64 + "\n")
    code, _, err = _run(capsys, "list")
    assert code == 2 and "no key store" in err and "orchestra serve" in err

    info = {"pid": os.getpid(), "url": "http://127.0.0.1:1", "ray_address": "", "namespace": "n"}
    write_server_file(data_dir, {**info, "redis_url": redis_server, "ray_auth_mode": ""})  # type: ignore[typeddict-item]
    code, out, _ = _run(capsys, "create", "--name", "found")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert _authenticate(redis_server, key).key_id  # the same store, hashed with the data dir's secret
