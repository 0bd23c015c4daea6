"""Last in the integration suite (by name): no secret the app was given shows up anywhere it wrote or
answered during the whole session: every log file of the session's Ray (replicas, proxy, actors,
raylet), /metrics, the OpenAPI document, and error bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .conftest import KEY_HASH_SECRET, PROVIDER_SECRETS, ServeInfo


def _secrets(serve_app: ServeInfo) -> list[str]:
    keys = [serve_app.chat_key, serve_app.metrics_key, serve_app.other_key, serve_app.burst_key]
    keys += [serve_app.fuzz_key, *serve_app.keys]
    return [*keys, *PROVIDER_SECRETS.values(), KEY_HASH_SECRET]


def _log_files(ray_session: Any) -> list[Path]:
    node = ray_session._private.worker._global_node
    logs = Path(node.get_logs_dir_path())
    return [p for p in logs.rglob("*") if p.is_file()]


async def test_no_secret_in_any_log_answer_or_document(serve_app: ServeInfo, ray_session: Any) -> None:
    secrets = _secrets(serve_app)
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=30) as client:
        answers = [
            await client.get("/metrics", headers=serve_app.auth(serve_app.metrics_key)),
            await client.get("/openapi.json"),
            # errors about keys: a wrong key, a key of the wrong scope, a malformed header
            await client.get("/chat/v2/sessions/x", headers={"Authorization": f"Bearer {secrets[0]}x"}),
            await client.get("/metrics", headers=serve_app.auth(serve_app.key(101))),
            await client.get("/chat/v2/sessions/x", headers={"Authorization": f"Basic {secrets[1]}"}),
        ]
    assert answers[0].status_code == 200 and answers[1].status_code == 200
    assert [a.status_code for a in answers[2:]] == [401, 401, 401]
    texts = {f"answer {a.request.method} {a.request.url.path}": a.text for a in answers}
    files = _log_files(ray_session)
    assert len(files) > 10, "the session's Ray logs were not found: this test would prove nothing"
    for path in files:
        texts[str(path)] = path.read_text(errors="replace")
    found = [(where, s[:12] + "…") for where, text in texts.items() for s in secrets if s in text]
    assert found == [], found
    # A client that left mid-body (test_hostile) is a line in the log, never a traceback.
    assert [where for where, text in texts.items() if "ClientDisconnect" in text] == []


def test_secrets_never_travel_in_a_runtime_env() -> None:
    from actors._env import split_env

    env = {
        "ORCHESTRA_API_KEYS": "k" * 20,
        "ORCHESTRA_KEY_HASH_SECRET": "s" * 32,
        "OPENAI_API_KEY": "sk-x",
        "MY_PROVIDER_TOKEN": "t",
        "ORCHESTRA_REDIS_URL": "redis://:pw@db:6379/0",
        "ORCHESTRA_CONFIG": "/etc/swarms.yaml",
        "OPENAI_BASE_URL": "https://api.example",
        "ORCHESTRA_LLM_PROVIDER": "scripted",
    }
    shareable, secrets = split_env(env)
    assert shareable == {
        "ORCHESTRA_CONFIG": "/etc/swarms.yaml",
        "OPENAI_BASE_URL": "https://api.example",
        "ORCHESTRA_LLM_PROVIDER": "scripted",
    }
    assert {**shareable, **secrets} == env
