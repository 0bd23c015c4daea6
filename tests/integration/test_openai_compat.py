"""The OpenAI-compatible API on the live Serve app, through the official SDKs: Python's ``openai`` here, and
the ``openai`` npm package under ``node --test`` (tests/node/openai-compat, installed by ``./dev test``).

Keys: 28 (Python), 29 (Python, its bucket exhausted), 30 (Node), 31 (Node, its bucket exhausted).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from .conftest import ServeInfo

ROOT = Path(__file__).resolve().parents[2]
NODE_TESTS = ROOT / "tests" / "node" / "openai-compat"
MODEL = "orchestra/coding-debate:lite"
TASK: list[Any] = [
    {"role": "system", "content": "Answer in Python."},
    {"role": "user", "content": "Write a function that merges overlapping intervals"},
]


def _client(serve_app: ServeInfo, key: str) -> OpenAI:
    return OpenAI(base_url=f"{serve_app.base_url}/v1", api_key=key, max_retries=0, timeout=60)


def _extra(model: Any) -> dict[str, Any]:
    """The ``orchestra`` extension of an SDK object (the SDK keeps fields it does not know)."""
    extension: dict[str, Any] = (model.model_extra or {})["orchestra"]
    return extension


def test_models_list(serve_app: ServeInfo) -> None:
    models = list(_client(serve_app, serve_app.key(28)).models.list())
    ids = [m.id for m in models]
    assert ids[0] == "orchestra/auto"
    for team in ("coding-debate", "coding-team", "research-team", "creative-team", "slow-debate"):
        for suffix in ("", ":lite", ":balanced", ":quality"):
            assert f"orchestra/{team}{suffix}" in ids
    quality = next(m for m in models if m.id == "orchestra/coding-debate:quality")
    assert quality.object == "model" and quality.owned_by == "ai-orchestra"
    assert _extra(quality)["optimization_mode"] == "quality" and _extra(quality)["judge"] is True


def test_chat_completion(serve_app: ServeInfo) -> None:
    client = _client(serve_app, serve_app.key(28))
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL,
        messages=TASK,
        temperature=0.3,
        user="end-user-1",
        metadata={"session_id": "oa-session-1"},
    )
    completion = raw.parse()
    assert completion.id == f"chatcmpl-{raw.headers['x-request-id']}"
    assert int(raw.headers["x-ratelimit-limit"]) == 1000
    assert completion.object == "chat.completion" and completion.model == MODEL
    (choice,) = completion.choices
    assert choice.message.role == "assistant" and choice.message.content and choice.finish_reason == "stop"
    info = _extra(completion)
    assert info["session_id"] == "oa-session-1" and info["execution_mode"] == "coding-debate"
    assert (
        info["metadata"]["swarm_type"] == "coding-debate" and info["metadata"]["optimization_mode"] == "lite"
    )
    assert 0 <= info["quality_score"] <= 1
    roles = [s["role"] for s in info["metadata"]["processing_steps"]]
    assert roles.count("debater") == 2 and roles[-1] == "judge"
    assert completion.usage is not None
    assert completion.usage.total_tokens == info["metadata"]["tokens_used"] > 0
    assert (
        completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    # the same session as the native API: the turn is there, under the same key
    session = httpx.get(
        f"{serve_app.base_url}/chat/v2/sessions/oa-session-1", headers=serve_app.auth(serve_app.key(28))
    )
    assert session.status_code == 200, session.text
    (turn,) = session.json()["data"]["turns"]
    assert turn["message"] == TASK[-1]["content"] and turn["response"] == choice.message.content


def test_auto_picks_the_team(serve_app: ServeInfo) -> None:
    completion = _client(serve_app, serve_app.key(28)).chat.completions.create(
        model="orchestra/auto", messages=[{"role": "user", "content": "Write a haiku about rain"}],
        reasoning_effort="low",
    )  # fmt: skip
    info = _extra(completion)
    assert (
        info["execution_mode"] == "routed:creative-team" and info["metadata"]["optimization_mode"] == "lite"
    )
    assert completion.model == "orchestra/auto"


def test_streamed_chat_completion(serve_app: ServeInfo) -> None:
    stream = _client(serve_app, serve_app.key(28)).chat.completions.create(
        model=MODEL, messages=TASK, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and all(c.model == MODEL for c in chunks)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    extensions = [_extra(c) for c in chunks if c.model_extra and "orchestra" in c.model_extra]
    (completed,) = [e for e in extensions if e["event"] == "completed"]
    agents = [e for e in extensions if e["event"] != "completed"]
    assert {e["event"] for e in agents} == {"turn_start", "token", "turn_end"}
    assert {e["role"] for e in agents} == {"debater", "judge"}
    # a debate's answer is its judge's turn: the streamed tokens reassemble it, and so do the content chunks
    judge = "".join(e["token"] for e in agents if e["role"] == "judge" and e["event"] == "token")
    assert answer and answer == judge
    steps = completed["metadata"]["processing_steps"]
    ended = [e["step"] for e in agents if e["event"] == "turn_end"]  # parallel turns end in any order

    def order(step: dict[str, Any]) -> tuple[int, str]:
        return step["round"], step["agent"]

    assert sorted(ended, key=order) == sorted(steps, key=order)
    *_, stop, usage = chunks
    assert stop.choices[0].finish_reason == "stop" and _extra(stop) == completed
    assert usage.choices == [] and usage.usage is not None
    assert usage.usage.total_tokens == completed["metadata"]["tokens_used"]
    assert all(c.usage is None for c in chunks[:-1])


def test_authentication_error(serve_app: ServeInfo) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(serve_app, "not-a-key").chat.completions.create(model=MODEL, messages=TASK)
    error = caught.value
    assert error.status_code == 401 and error.code == "invalid_api_key"
    assert error.response.headers["www-authenticate"] == "Bearer" and "not-a-key" not in error.message


def test_rate_limit_error(serve_app: ServeInfo) -> None:
    client = _client(serve_app, serve_app.key(29))
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(500):  # much faster than the refill: the burst of 50 runs out
            client.models.list()
    error = caught.value
    assert error.status_code == 429 and error.code == "rate_limit_exceeded" and error.type == "requests"
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers["x-ratelimit-remaining"] == "0"


def test_bad_requests(serve_app: ServeInfo) -> None:
    client = _client(serve_app, serve_app.key(28))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "hello"}])
    assert caught.value.param == "messages.0.role" and caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=TASK, tools=[{"type": "function", "function": {"name": "lookup"}}]
        )
    assert caught.value.param == "tools" and caught.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=TASK, temperature=3)
    assert caught.value.param == "temperature"


def test_unknown_model(serve_app: ServeInfo) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _client(serve_app, serve_app.key(28)).chat.completions.create(model="gpt-4o", messages=TASK)
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_the_official_node_sdk(serve_app: ServeInfo) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20+ runs tests/node/openai-compat)")
    if not (NODE_TESTS / "node_modules" / "openai").is_dir():
        pytest.fail(f"the npm dependencies are missing: run `npm ci` in {NODE_TESTS} (./dev test does)")
    env = {
        **os.environ,
        "ORCHESTRA_BASE_URL": serve_app.base_url,
        "ORCHESTRA_API_KEY": serve_app.key(30),
        "ORCHESTRA_RATE_LIMIT_KEY": serve_app.key(31),
    }
    run = subprocess.run(
        [node, "--test", "--test-reporter=tap"],
        cwd=NODE_TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = f"node --test exited with {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert run.returncode == 0, output
    assert "# fail 0" in run.stdout and "# pass 7" in run.stdout, output
