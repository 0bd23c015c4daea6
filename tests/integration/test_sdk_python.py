"""The Python SDK (``sdk/python``, import ``ai_orchestra``) against the session's live Serve app.

Keys 34 to 39 of ``ServeInfo.keys`` are this module's, one per concern, so that no test eats another's
rate-limit budget (the 429 test empties key 38's bucket on purpose).
"""

from __future__ import annotations

import ast
import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ai_orchestra
import httpx
import pytest
from ai_orchestra import (
    AsyncClient,
    AuthenticationError,
    ChatResponse,
    Client,
    CompletedEvent,
    NotFoundError,
    RunCancelledError,
    StreamEvent,
    StreamInterruptedError,
    TokenEvent,
    TurnEndEvent,
    TurnStartEvent,
    ValidationError,
)

from .conftest import ServeInfo

CHAT, STREAM, CANCEL, ERRORS, RETRY, SOCKETS = 34, 35, 36, 37, 38, 39

# The "SDK Examples" Python snippet of the API document (shared/spec/original-api-doc.md), as written.
SNIPPET = """from ai_orchestra import Client

client = Client(api_key="YOUR_TOKEN")

# Synchronous chat
response = client.chat(
    message="Explain machine learning",
    optimization_mode="balanced"
)

# Async streaming
async for token in client.stream_chat(
    message="Write a Python function",
    session_id="session-123"
):
    print(token, end="")
"""
API_DOC = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "original-api-doc.md"


def sync_client(info: ServeInfo, key: int, **kwargs: Any) -> Client:
    return Client(api_key=info.key(key), base_url=info.base_url, **kwargs)


def async_client(info: ServeInfo, key: int, **kwargs: Any) -> AsyncClient:
    return AsyncClient(api_key=info.key(key), base_url=info.base_url, **kwargs)


ClientFactory = Callable[[ServeInfo, int], Client | AsyncClient]
BOTH = pytest.mark.parametrize("make", [sync_client, async_client], ids=["Client", "AsyncClient"])


async def close(client: Client | AsyncClient) -> None:
    if isinstance(client, AsyncClient):
        await client.aclose()
    else:
        await client.close_streams()
        client.close()


def session_id() -> str:
    return f"sdk-test-{uuid.uuid4().hex[:12]}"


def is_uuid(value: str | None) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


# -- REST ------------------------------------------------------------------------------------------


def test_chat_sessions_and_typed_answers(serve_app: ServeInfo) -> None:
    sid = session_id()
    with sync_client(serve_app, CHAT) as client:
        first = client.chat(
            message="Write a Python function that merges overlapping intervals",
            session_id=sid,
            optimization_mode="lite",
            swarm_type="coding-team",
            use_memory=False,
            user_context={"language": "python"},
        )
        assert isinstance(first, ChatResponse)
        assert first.session_id == sid and first.response.strip()
        assert first.execution_mode == "coding-team"
        assert 0.0 <= first.quality_score <= 1.0 and first.execution_time > 0
        assert first.metadata.swarm_type == "coding-team" and first.metadata.optimization_mode == "lite"
        steps = first.metadata.processing_steps
        assert steps and first.metadata.tokens_used == sum(
            s.prompt_tokens + s.completion_tokens for s in steps
        )
        assert {s.role for s in steps} >= {"planner", "coder", "reviewer"}
        assert is_uuid(first.request_id)

        second = client.chat(message="Now add type hints", session_id=sid, optimization_mode="lite")
        assert second.session_id == sid and second.request_id != first.request_id

        session = client.get_session(sid)
        assert session.session_id == sid and is_uuid(session.request_id)
        assert [t.run_id for t in session.turns] == [first.request_id, second.request_id]
        assert session.turns[0].response == first.response
        assert session.turns[1].message == "Now add type hints"

        ended = client.end_session(sid)
        assert ended.ended and ended.session_id == sid and ended.turns == 2
        with pytest.raises(NotFoundError):
            client.get_session(sid)


async def test_async_client_v1_and_probes(serve_app: ServeInfo) -> None:
    async with async_client(serve_app, CHAT) as client:
        v1 = await client.chat_v1("Hello from v1")
        assert v1.response.strip() and v1.session_id and is_uuid(v1.request_id)
        assert v1.sunset is not None and "2027" in v1.sunset
        again = await client.chat_v1("And again", session_id=v1.session_id)
        assert again.session_id == v1.session_id
        assert len((await client.get_session(v1.session_id)).turns) == 2

        answer = await client.chat(message="Write a haiku about actors", optimization_mode="lite")
        assert answer.session_id and answer.metadata.processing_steps  # the server made the session

        health = await client.health()
        assert health.status == "healthy" and health.version == "0.1.0" and health.uptime >= 0
        assert health.components.orchestra_manager == "healthy"
        readiness = await client.readiness()
        assert readiness.ready and readiness.checks.database and readiness.checks.external_services


def test_probes_need_no_key(serve_app: ServeInfo) -> None:
    with Client(api_key="", base_url=serve_app.base_url) as client:
        assert client.health().status == "healthy"
        assert client.readiness().ready


# -- errors ----------------------------------------------------------------------------------------


async def test_errors_map_to_their_classes_with_request_ids(serve_app: ServeInfo) -> None:
    bad = Client(api_key="not-a-key", base_url=serve_app.base_url)
    with pytest.raises(AuthenticationError) as auth:
        bad.chat(message="hi")
    bad.close()
    assert auth.value.code == "AUTHENTICATION_ERROR" and auth.value.status_code == 401
    assert is_uuid(auth.value.request_id) and auth.value.message

    with sync_client(serve_app, ERRORS) as client:
        with pytest.raises(ValidationError) as empty:
            client.chat(message="")
        assert empty.value.status_code == 400 and empty.value.code == "VALIDATION_ERROR"
        assert empty.value.details["field"] == "message" and is_uuid(empty.value.request_id)

        with pytest.raises(ValidationError) as team:
            client.chat(message="hi", swarm_type="no-such-team")
        assert team.value.details["field"] == "swarm_type"

        with pytest.raises(NotFoundError) as missing:
            client.get_session("no-such-session")
        assert missing.value.status_code == 404 and is_uuid(missing.value.request_id)
        assert empty.value.request_id != missing.value.request_id

        # The WebSocket's refusals and error frames map to the same classes.
        with pytest.raises(ValidationError) as frame:
            async for _ in client.stream_chat(message="", session_id=session_id()):
                pass
        assert frame.value.code == "VALIDATION_ERROR" and frame.value.details["field"] == "data.message"
        assert frame.value.request_id is not None
        await client.close_streams()

    async with AsyncClient(api_key="not-a-key", base_url=serve_app.base_url) as bad_ws:
        with pytest.raises(AuthenticationError):
            async for _ in bad_ws.stream_chat(message="hi"):
                pass


async def test_a_real_429_is_retried_after_its_retry_after(serve_app: ServeInfo) -> None:
    """Key 38's bucket (50, refilled one token per 60 ms) kept empty by a flood until the SDK's chat
    meets a 429: the SDK waits what Retry-After says, then its retry succeeds."""
    seen: list[tuple[float, int, str | None]] = []
    sent: list[float] = []
    flooding = asyncio.Event()
    flooding.set()

    async def on_request(request: httpx.Request) -> None:
        sent.append(time.monotonic())

    async def on_response(response: httpx.Response) -> None:
        seen.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))
        if response.status_code == 429:
            flooding.clear()  # the bucket refills while the SDK waits

    hooks: dict[str, list[Callable[..., Any]]] = {"request": [on_request], "response": [on_response]}
    http = httpx.AsyncClient(event_hooks=hooks)
    limited = asyncio.Event()

    async with httpx.AsyncClient(headers=serve_app.auth(serve_app.key(RETRY))) as flood:

        async def worker() -> None:
            while flooding.is_set():
                response = await flood.get(f"{serve_app.base_url}/chat/v2/sessions/flood")
                if response.status_code == 429:
                    limited.set()

        async with async_client(serve_app, RETRY, http_client=http) as client:
            for _ in range(5):  # the flood takes nearly every token; the SDK's first try may still win one
                seen.clear()
                sent.clear()
                flooding.set()
                limited.clear()
                workers = [asyncio.create_task(worker()) for _ in range(8)]
                await asyncio.wait_for(limited.wait(), 30)
                started = time.monotonic()
                answer = await client.chat(message="Write a haiku about actors", optimization_mode="lite")
                elapsed = time.monotonic() - started
                flooding.clear()
                await asyncio.gather(*workers)
                if seen[0][1] == 429:
                    break
    await http.aclose()

    assert [status for _, status, _ in seen] == [429, 200], seen
    assert answer.response.strip()
    retry_after = float(seen[0][2] or "nan")
    assert retry_after >= 1
    assert sent[1] - seen[0][0] >= retry_after * 0.99  # it waited what the server asked, then retried
    assert elapsed >= retry_after


# -- streaming -------------------------------------------------------------------------------------


@BOTH
async def test_stream_chat_yields_the_tokens(serve_app: ServeInfo, make: ClientFactory) -> None:
    client = make(serve_app, STREAM)
    sid = session_id()
    stream = client.stream_chat(
        message="Write merge intervals", session_id=sid, swarm_type="coding-debate", optimization_mode="lite"
    )
    tokens = [token async for token in stream]
    assert tokens and all(isinstance(t, str) for t in tokens)
    result = stream.result
    assert result is not None and stream.finished
    assert result.session_id == sid and result.request_id == stream.request_id
    assert "".join(tokens).endswith(result.response)  # the judge speaks last, alone in its round
    # The REST session and the WebSocket's are one.
    assert [t.run_id for t in client_session(client, sid, serve_app).turns] == [stream.request_id]
    await close(client)


def client_session(client: Client | AsyncClient, sid: str, info: ServeInfo) -> ai_orchestra.Session:
    with Client(api_key=client.api_key, base_url=info.base_url) as rest:
        return rest.get_session(sid)


@BOTH
async def test_stream_events_attribute_every_token_then_answer(
    serve_app: ServeInfo, make: ClientFactory
) -> None:
    client = make(serve_app, STREAM)
    events: list[StreamEvent] = []
    async with client.stream_events(
        message="Research actor runtimes", swarm_type="research-team", optimization_mode="lite"
    ) as stream:
        events = [event async for event in stream]
    assert isinstance(events[0], TurnStartEvent)
    final = events[-1]
    assert isinstance(final, CompletedEvent) and final.result == stream.result
    assert {e.request_id for e in events} == {stream.request_id}
    texts: dict[tuple[str, int], str] = {}
    ends: dict[tuple[str, int], TurnEndEvent] = {}
    for event in events[:-1]:
        assert not isinstance(event, CompletedEvent)
        if isinstance(event, TokenEvent):
            texts[(event.agent, event.round)] = texts.get((event.agent, event.round), "") + event.token
        elif isinstance(event, TurnEndEvent):
            ends[(event.agent, event.round)] = event
    steps = final.result.metadata.processing_steps
    assert set(texts) == set(ends) == {(s.agent, s.round) for s in steps}
    assert {(e.agent, e.round): e.step for e in ends.values()} == {(s.agent, s.round): s for s in steps}
    assert {e.role for e in ends.values()} == {"researcher", "synthesizer"}
    assert final.result.session_id == stream.session_id and final.result.session_id.startswith("sdk-")
    await close(client)


async def test_cancel_a_running_stream(serve_app: ServeInfo) -> None:
    """A quality coding-debate runs for seconds: cancelling it (explicitly, by closing the stream, or by
    leaving ``async for`` early) stops it, so the next chat on the connection starts at once and the
    cancelled runs never become turns of the session."""
    client = async_client(serve_app, CANCEL)
    sid = session_id()
    options: dict[str, Any] = {
        "session_id": sid,
        "swarm_type": "coding-debate",
        "optimization_mode": "quality",
    }

    explicit = client.stream_chat(message="Design a rate limiter", **options)
    async for _ in explicit:
        assert await explicit.cancel()
    assert explicit.finished and explicit.result is None
    with pytest.raises(RunCancelledError):
        await explicit.final_response()

    async with client.stream_events(message="Design a cache", **options) as closed:
        async for event in closed:
            if isinstance(event, TokenEvent):
                break
    closed_id = closed.request_id

    async for _ in client.stream_chat(message="Design a queue", **options):
        break  # the dropped stream cancels its run

    started = time.monotonic()
    follow = client.stream_events(message="Now one line", session_id=sid, optimization_mode="lite")
    first = await anext(follow)
    waited = time.monotonic() - started
    result = await follow.final_response()
    assert isinstance(first, TurnStartEvent) and first.request_id == follow.request_id
    assert waited < 2.0, f"the next chat waited {waited:.2f} s behind a run that should be cancelled"
    session = await client.get_session(sid)
    assert [t.run_id for t in session.turns] == [result.request_id]
    assert explicit.request_id not in {t.run_id for t in session.turns} and closed_id != result.request_id
    await client.aclose()


async def test_reconnects_after_the_socket_drops_between_chats(serve_app: ServeInfo) -> None:
    client = sync_client(serve_app, SOCKETS)
    sid = session_id()
    one = client.stream_chat(message="First", session_id=sid, optimization_mode="lite")
    _ = [t async for t in one]
    first_connection = client._streams.connection_of(sid)
    assert first_connection is not None and first_connection.usable

    first_connection.ws.transport.abort()  # the network drops the idle socket
    await asyncio.sleep(0.2)
    assert not first_connection.usable
    two = client.stream_chat(message="Second", session_id=sid, optimization_mode="lite")
    _ = [t async for t in two]
    second_connection = client._streams.connection_of(sid)
    assert second_connection is not None and second_connection is not first_connection

    second_connection.ws.transport.abort()  # and again, this time right before the next chat is sent
    three = client.stream_chat(message="Third", session_id=sid, optimization_mode="lite")
    _ = [t async for t in three]
    assert client._streams.connection_of(sid) not in (first_connection, second_connection)

    turns = client.get_session(sid).turns
    assert [t.run_id for t in turns] == [one.request_id, two.request_id, three.request_id]
    await close(client)


def test_the_blocking_client_streams_under_successive_event_loops(serve_app: ServeInfo) -> None:
    """``Client.stream_chat`` from plain code, one ``asyncio.run`` after another: the connection the first
    loop opened is dropped with that loop and the second opens its own."""
    sid = session_id()
    with sync_client(serve_app, SOCKETS) as client:

        async def stream(message: str) -> str:
            return "".join([t async for t in client.stream_chat(message=message, session_id=sid)])

        first = asyncio.run(stream("First"))
        loop_one = client._streams.connection_of(sid)
        second = asyncio.run(stream("Second"))
        assert first and second and client._streams.connection_of(sid) is not loop_one
        assert len(client.get_session(sid).turns) == 2


async def test_a_stream_dropped_midway_raises_stream_interrupted(serve_app: ServeInfo) -> None:
    client = async_client(serve_app, SOCKETS)
    sid = session_id()
    stream = client.stream_chat(
        message="Design a scheduler", session_id=sid, swarm_type="coding-debate", optimization_mode="quality"
    )
    await anext(stream)
    connection = client._streams.connection_of(sid)
    assert connection is not None
    connection.ws.transport.abort()
    with pytest.raises(StreamInterruptedError) as dropped:
        async for _ in stream:
            pass
    assert dropped.value.request_id == stream.request_id and "send the chat again" in dropped.value.message
    assert stream.finished and stream.result is None
    # The session goes on over a new connection. The server may have finished the interrupted run for a
    # resume (docs/websocket.md), so its turn may be there too (before or after), never anything else.
    again = await client.stream_chat(
        message="Again, briefly", session_id=sid, optimization_mode="lite"
    ).final_response()
    turns = [t.run_id for t in (await client.get_session(sid)).turns]
    assert again.request_id in turns and set(turns) <= {stream.request_id, again.request_id}
    await client.aclose()


# -- the API document's snippet --------------------------------------------------------------------


def test_the_snippet_is_the_documents() -> None:
    if not API_DOC.exists():
        pytest.skip(f"{API_DOC} is not in this checkout's neighbourhood")
    text = API_DOC.read_text()
    start = text.index("### Python SDK\n```python\n") + len("### Python SDK\n```python\n")
    assert text[start : text.index("```", start)] == SNIPPET


async def test_the_documents_python_snippet_runs_as_written(
    serve_app: ServeInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verbatim but for the key and an added base URL; top-level ``async for`` as in an async REPL."""
    source = SNIPPET.replace(
        'Client(api_key="YOUR_TOKEN")',
        f'Client(api_key="{serve_app.key(SOCKETS)}", base_url="{serve_app.base_url}")',
    )
    assert source.count(serve_app.base_url) == 1
    namespace: dict[str, Any] = {}
    code = compile(source, "<api-doc snippet>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    await eval(code, namespace)  # a coroutine, because of the top-level async for

    response = namespace["response"]
    assert isinstance(response, ChatResponse) and response.metadata.optimization_mode == "balanced"
    printed = capsys.readouterr().out
    assert printed.strip()
    client: Client = namespace["client"]
    turns = client.get_session("session-123").turns
    assert turns[-1].message == "Write a Python function" and turns[-1].response in printed
    await close(client)
