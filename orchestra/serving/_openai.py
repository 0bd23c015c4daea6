"""The OpenAI-compatible API (``GET /v1/models``, ``POST /v1/chat/completions``), free of Ray and of any
web framework: OpenAI's wire format in, a ``RunRequest`` out; a ``ChatResult`` or the run's events in,
OpenAI's completion, chunks and errors out. ``Gateway.openai_models`` / ``Gateway.openai_chat`` do the
rest (auth, limits, metrics) exactly as for the native routes.

Decisions (the README's "OpenAI-compatible API" is the user-facing version):

* **Models.** ``orchestra/<team>`` for each configured team and ``orchestra/auto`` (the router picks the
  team from the message, as when the native ``swarm_type`` is absent), each also with a mode suffix:
  ``orchestra/coding-debate:quality``. The mode is the suffix, else ``metadata.optimization_mode``, else
  ``reasoning_effort`` (none/minimal/low → lite, medium → balanced, high → quality), else ``balanced``; a
  suffix and ``metadata.optimization_mode`` that disagree are a 400. Any other model is a 404
  ``model_not_found``. Responses echo the model as requested (the team that ran is in ``orchestra``).
* **Messages.** The last message must be the user's: it is the run's ``message`` (the swarm's task).
  ``system`` and ``developer`` messages go to ``user_context.instructions`` (joined by blank lines, in
  order); the earlier turns to ``user_context.conversation`` (``[{role, content, name?, ...}]``, oldest
  first). ``user`` goes to ``user_context.user``. ``user_context`` is bounded (16 KiB as JSON): the oldest
  earlier turns are left out until it fits, and ``user_context.conversation_omitted`` says how many; the
  instructions are never cut (too long → 400). Text content parts are joined by newlines; image, audio
  and file parts are a 400 ``unsupported_value``.
* **Sessions, memory.** ``metadata.session_id`` continues a native session (its server-side history is in
  the agents' context too); without it every completion starts a new session. ``metadata.use_memory``
  (``"true"``/``"false"``) is the native ``use_memory``. Other metadata keys are accepted and ignored.
  ``orchestra.session_id`` in every response names the session.
* **Parameters.** Sampling and output hints the swarm's own configuration decides are accepted, checked
  as OpenAI checks them, and ignored (``IGNORED``). What would change the answer's shape is accepted only
  with the value the swarm gives anyway and rejected otherwise with 400 ``unsupported_value`` /
  ``unsupported_parameter`` (``n`` > 1, ``tools`` that may be called, a non-text ``response_format``,
  ``logprobs``, ``audio``, non-text ``modalities``, ``web_search_options``). Unknown parameters are a 400,
  as OpenAI answers them.
* **Streaming.** ``data: {chat.completion.chunk}`` events then ``data: [DONE]``: first the assistant
  role; while the agents work, one chunk per agent event with an empty ``delta`` and the event in the
  extra field ``orchestra`` (``{event: turn_start|token|turn_end, agent, role, round, token?, step?}``,
  the WebSocket ``stream`` frame's data); once the swarm has answered, the answer as ``delta.content``
  chunks (a word each); the last chunk has ``finish_reason: "stop"`` and ``orchestra`` = the run's
  summary; then, with ``stream_options.include_usage``, the usage chunk (``choices: []``). The answer is
  only known when the run ends (a reviewer may send the code back, a judge merges the proposals), so its
  tokens come after the agents'. A failure once streaming has begun is ``data: {"error": {...}}`` (the
  SDKs raise ``APIError``) and the stream ends without ``[DONE]``; a failure before the first event is an
  ordinary HTTP error.
* **Errors.** ``{"error": {"message", "type", "param", "code"}}`` with the native status, so the SDKs raise
  their usual classes (``error_body``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import IDENTIFIER_RE, MODES, Mode
from orchestra.engine._messages import (
    MAX_MESSAGE_CHARS,
    MAX_USER_CONTEXT_BYTES,
    ChatResult,
    RunCompleted,
    RunEvent,
    RunFailed,
    RunRequest,
    TeamInfo,
)
from orchestra.errors import (
    InternalError,
    NotFoundError,
    OrchestraError,
    ValidationError,
    error_from_dict,
    invalid,
    pydantic_errors,
)
from orchestra.serving._contract import load_object, v2_data
from orchestra.serving.ws import agent_event_data

__all__ = [
    "AUTO",
    "IGNORED",
    "MODEL_PREFIX",
    "ChatCompletionRequest",
    "CompletionCall",
    "CompletionStream",
    "ModelNotFoundError",
    "UnsupportedError",
    "completion",
    "error_body",
    "models_list",
    "open_stream",
    "parse_completion_request",
    "parse_model",
    "sse",
    "usage",
]

MODEL_PREFIX = "orchestra/"
AUTO = "auto"
"""``orchestra/auto``: no team named, the router picks one from the message."""
OWNED_BY = "ai-orchestra"
EFFORT_MODES: dict[str, Mode] = {
    "none": "lite",
    "minimal": "lite",
    "low": "lite",
    "medium": "balanced",
    "high": "quality",
}
IGNORED = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "logit_bias",
    "max_tokens",
    "max_completion_tokens",
    "parallel_tool_calls",
    "prediction",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "store",
    "verbosity",
)
"""Accepted (and checked as OpenAI checks them) but without effect: each agent's model, temperature and
length come from the team's configuration and mode, and completions are not stored."""

_MAX_NAME = 128  # how much of a client-chosen name an error message quotes


# -- errors ----------------------------------------------------------------------------------------


class UnsupportedError(ValidationError):
    """A parameter (``unsupported_parameter``) or value (``unsupported_value``) the swarm cannot honour."""

    def __init__(self, field: str, reason: str, *, value: bool = True) -> None:
        super().__init__(
            f"Unsupported {'value' if value else 'parameter'}: '{field}' {reason}",
            details={"field": field, "reason": reason, "errors": [{"field": field, "reason": reason}]},
        )
        self.openai_code = "unsupported_value" if value else "unsupported_parameter"


class ModelNotFoundError(NotFoundError):
    openai_code: ClassVar[str] = "model_not_found"

    def __init__(self, model: str) -> None:
        reason = "unknown model; GET /v1/models lists the swarms (orchestra/<team>[:<mode>], orchestra/auto)"
        super().__init__(
            f"The model '{model[:_MAX_NAME]}' does not exist: {reason}",
            details={"field": "model", "reason": reason},
        )


_CODES = {
    "VALIDATION_ERROR": "invalid_value",
    "AUTHENTICATION_ERROR": "invalid_api_key",
    "NOT_FOUND": "not_found",
    "PAYLOAD_TOO_LARGE": "payload_too_large",
    "RATE_LIMIT_ERROR": "rate_limit_exceeded",
    "INTERNAL_ERROR": "internal_error",
    "SERVICE_UNAVAILABLE": "service_unavailable",
    "TIMEOUT_ERROR": "timeout",
    "CANCELLED": "cancelled",
}


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"  # OpenAI's type for a requests-per-minute limit
    return "server_error" if status >= 500 else "invalid_request_error"


def error_body(error: OrchestraError) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}``: OpenAI's error shape for one of ours.

    ``type`` follows the status (``invalid_request_error`` for 4xx, ``requests`` for 429, ``server_error``
    for 5xx), ``param`` is the first bad field, ``code`` OpenAI's name for the problem (``invalid_api_key``,
    ``model_not_found``, ``rate_limit_exceeded``, ``unsupported_value``...). An ``INTERNAL_ERROR`` says
    nothing more than that (the gateway logged it with the request id), as in the envelope.
    """
    if error.code == "INTERNAL_ERROR":
        message, param = "internal error; it was logged with this request's X-Request-ID", None
    else:
        field = error.details.get("field")
        message, param = error.message, field if isinstance(field, str) and field != "<body>" else None
    status = 503 if error.http_status == 499 else error.http_status
    code = getattr(error, "openai_code", None) or _CODES.get(error.code, "internal_error")
    return {"error": {"message": message, "type": _error_type(status), "param": param, "code": code}}


# -- models ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRef:
    """A parsed model id: the team (None = the router picks) and the mode its suffix names, if any."""

    swarm_type: str | None
    mode: Mode | None


def parse_model(model: str, teams: Collection[str]) -> ModelRef:
    """``orchestra/<team>[:<mode>]`` or ``orchestra/auto[:<mode>]``; else ``ModelNotFoundError``."""
    name, _, suffix = model.removeprefix(MODEL_PREFIX).partition(":")
    if not model.startswith(MODEL_PREFIX) or (name != AUTO and name not in teams):
        raise ModelNotFoundError(model)
    mode: Mode | None = None
    if suffix or model.endswith(":"):
        mode = next((m for m in MODES if m == suffix), None)
        if mode is None:
            raise ModelNotFoundError(model)
    return ModelRef(swarm_type=None if name == AUTO else name, mode=mode)


def _model(
    model_id: str, created: int, swarm_type: str | None, mode: Mode | None, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": OWNED_BY,
        "orchestra": {"swarm_type": swarm_type, "optimization_mode": mode, **extra},
    }


def models_list(teams: Sequence[TeamInfo], *, created: int) -> dict[str, Any]:
    """``GET /v1/models``: ``orchestra/auto`` and every team, each bare (mode from the request, default
    balanced) and with each mode suffix. ``orchestra`` in each model: team, mode, description, pattern
    (and, per mode, that mode's agents, rounds, judge, model and deadline)."""
    entries: list[tuple[str | None, dict[str, Any], dict[str, dict[str, Any]]]] = [
        (None, {"description": "The router picks the team from the message.", "pattern": None}, {})
    ]
    entries += [
        (t.swarm_type, {"description": t.description, "pattern": t.pattern}, t.modes)
        for t in sorted(teams, key=lambda t: t.swarm_type)
    ]
    data = []
    for team, about, modes in entries:
        base = f"{MODEL_PREFIX}{team or AUTO}"
        data.append(_model(base, created, team, None, about))
        for mode in MODES:
            data.append(_model(f"{base}:{mode}", created, team, mode, {**about, **modes.get(mode, {})}))
    return {"object": "list", "data": data}


# -- the request -----------------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: "true" is not a boolean and "1" is not a number, as for OpenAI.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessage(_Strict):
    """One message of ``messages``: OpenAI's fields; ``content`` is a string or a list of content parts."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(default=None, max_length=256)
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None


class StreamOptions(_Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # accepted and ignored: no obfuscation padding is sent


MetadataKey = Annotated[str, Field(max_length=64)]
MetadataValue = Annotated[str, Field(max_length=512)]


class ChatCompletionRequest(_Strict):
    """The ``POST /v1/chat/completions`` body: OpenAI's parameters with OpenAI's checks."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[MetadataKey, MetadataValue] | None = Field(default=None, max_length=16)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high"] | None = None
    # accepted and ignored (IGNORED)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    logit_bias: dict[str, Annotated[int, Field(ge=-100, le=100)]] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    store: bool | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    # accepted only with the value a swarm gives anyway
    n: int | None = Field(default=None, ge=1, le=128)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None


@dataclass(frozen=True)
class CompletionCall:
    """A validated request: the run, and how to answer it."""

    run: RunRequest
    model: str
    stream: bool
    include_usage: bool
    created: int

    @property
    def id(self) -> str:
        return f"chatcmpl-{self.run.run_id}"


def _unrecognized(field: str) -> str:
    return "unrecognized request argument"


# pydantic names the member of a union that failed (``content.str``, ``stop.list[str].0``): not a field.
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|(list|dict)\[.*\])$")


def _request_errors(e: PydanticValidationError) -> list[dict[str, str]]:
    """pydantic's errors as ``{field, reason}`` with the client's field paths: union members dropped, the
    alternatives of one field merged into one reason ("a valid string or a valid list")."""
    merged: dict[str, list[str]] = {}
    for error in pydantic_errors(e, explain={"extra_forbidden": _unrecognized}):
        field = ".".join(p for p in error["field"].split(".") if not _UNION_MEMBER.match(p))
        reasons = merged.setdefault(field or "<body>", [])
        if error["reason"] not in reasons:
            reasons.append(error["reason"])
    return [
        {"field": f, "reason": " or ".join([r[0], *(x.removeprefix("Input should be ") for x in r[1:])])}
        for f, r in merged.items()
    ]


def _parse(raw: bytes) -> ChatCompletionRequest:
    data = load_object(raw)
    try:
        return ChatCompletionRequest.model_validate(data)
    except PydanticValidationError as e:
        raise invalid(_request_errors(e)) from None


def _reject_unsupported(body: ChatCompletionRequest) -> None:
    """What a swarm cannot do is a 400, as OpenAI answers a model that lacks the feature."""
    if body.n is not None and body.n > 1:
        raise UnsupportedError("n", "must be 1: a swarm gives one answer per run")
    if body.logprobs:
        raise UnsupportedError("logprobs", "must be false: a swarm's answer has no log probabilities")
    if body.top_logprobs:
        raise UnsupportedError("top_logprobs", "is not supported: a swarm's answer has no log probabilities")
    if body.response_format is not None and body.response_format.get("type") != "text":
        raise UnsupportedError("response_format.type", "must be 'text': a swarm answers in text")
    for tools, choice, name in (
        (body.tools, body.tool_choice, "tools"),
        (body.functions, body.function_call, "functions"),
    ):
        if tools and choice != "none":
            raise UnsupportedError(
                name, "is not supported: the swarm cannot call the client's tools", value=False
            )
    for choice, name in ((body.tool_choice, "tool_choice"), (body.function_call, "function_call")):
        if choice is not None and choice not in ("none", "auto"):
            raise UnsupportedError(name, "must be 'none' or 'auto': the swarm calls no tools")
    if body.modalities is not None and body.modalities != ["text"]:
        raise UnsupportedError("modalities", "must be ['text']: a swarm answers in text")
    for value, name in ((body.audio, "audio"), (body.web_search_options, "web_search_options")):
        if value is not None:
            raise UnsupportedError(name, "is not supported by a swarm", value=False)
    if body.stream_options is not None and not body.stream:
        raise _bad("stream_options", "only allowed when stream is true")


def _bad(field: str, reason: str) -> OrchestraError:
    return invalid([{"field": field, "reason": reason}])


def _text(message: ChatMessage, index: int) -> str:
    """A message's text: the string, or its text (and refusal) parts joined by newlines."""
    if message.content is None:
        return message.refusal or ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for i, part in enumerate(message.content):
        kind = part.get("type")
        key = "text" if kind == "text" else "refusal" if kind == "refusal" else None
        if key is None:
            field = f"messages.{index}.content.{i}.type"
            raise UnsupportedError(field, f"'{str(kind)[:_MAX_NAME]}' parts are not supported: send text")
        if not isinstance(part.get(key), str):
            raise _bad(f"messages.{index}.content.{i}.{key}", "must be a string")
        texts.append(part[key])
    return "\n".join(texts)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _context(body: ChatCompletionRequest) -> tuple[str, dict[str, Any]]:
    """The run's message (the last, user, message) and its ``user_context`` (the module docstring)."""
    last = len(body.messages) - 1
    if body.messages[last].role != "user":
        raise _bad(f"messages.{last}.role", "the last message must be the user's: it is the swarm's task")
    message = _text(body.messages[last], last)
    if not message.strip():
        raise _bad(f"messages.{last}.content", "the user's message must not be empty")
    if len(message) > MAX_MESSAGE_CHARS:
        raise _bad(f"messages.{last}.content", f"at most {MAX_MESSAGE_CHARS} characters")
    instructions: list[str] = []
    conversation: list[dict[str, Any]] = []
    for index, m in enumerate(body.messages[:last]):
        text = _text(m, index)
        if m.role in ("system", "developer"):
            instructions.append(text)
            continue
        entry: dict[str, Any] = {"role": m.role, "content": text}
        for key in ("name", "tool_call_id", "tool_calls", "function_call"):
            if (value := getattr(m, key)) is not None:
                entry[key] = value
        conversation.append(entry)
    context: dict[str, Any] = {}
    if instructions:
        context["instructions"] = "\n\n".join(instructions)
    if body.user is not None:
        context["user"] = body.user
    # The oldest turns are left out until the context fits (the engine bounds session history alike).
    # The budget is an upper bound of what the conversation adds: its keys, and each entry and a comma.
    overhead = len(f',"conversation":[],"conversation_omitted":{len(conversation)}') if conversation else 0
    budget = MAX_USER_CONTEXT_BYTES - _json_size(context) - overhead
    if budget < 0:
        raise _bad(
            "messages",
            f"the system and developer messages are over the swarm's context limit "
            f"({MAX_USER_CONTEXT_BYTES} bytes as JSON)",
        )
    kept: list[dict[str, Any]] = []
    for entry in reversed(conversation):
        size = _json_size(entry) + 1  # the comma
        if size > budget:
            break
        kept.append(entry)
        budget -= size
    if conversation:
        context["conversation"] = kept[::-1]
        if len(kept) < len(conversation):
            context["conversation_omitted"] = len(conversation) - len(kept)
    return message, context


def _options(body: ChatCompletionRequest, ref: ModelRef) -> tuple[Mode, str | None, bool]:
    """Mode, session id and use_memory from the model suffix, ``metadata`` and ``reasoning_effort``."""
    meta = body.metadata or {}
    mode: Mode | None = ref.mode
    if "optimization_mode" in meta:
        asked = next((m for m in MODES if m == meta["optimization_mode"]), None)
        if asked is None:
            raise _bad("metadata.optimization_mode", f"must be one of {', '.join(MODES)}")
        if mode is not None and asked != mode:
            raise _bad("metadata.optimization_mode", f"conflicts with the model's mode suffix ':{mode}'")
        mode = asked
    if mode is None:
        mode = EFFORT_MODES[body.reasoning_effort] if body.reasoning_effort else "balanced"
    session_id = meta.get("session_id")
    if session_id is not None and not IDENTIFIER_RE.fullmatch(session_id):
        raise _bad("metadata.session_id", "must be 1-128 of [A-Za-z0-9._:-]")
    memory = meta.get("use_memory", "false")
    if memory not in ("true", "false"):
        raise _bad("metadata.use_memory", "must be 'true' or 'false'")
    return mode, session_id, memory == "true"


def parse_completion_request(
    raw: bytes, *, teams: Collection[str], tenant: str, run_id: str, now: float | None = None
) -> CompletionCall:
    """Validate a ``POST /v1/chat/completions`` body into the run it asks for.

    Raises ``ValidationError`` / ``UnsupportedError`` (400) or ``ModelNotFoundError`` (404); nothing of the
    input is echoed but names the client chose (the model, a part type), cut short.
    """
    body = _parse(raw)
    ref = parse_model(body.model, teams)
    _reject_unsupported(body)
    message, context = _context(body)
    mode, session_id, use_memory = _options(body, ref)
    try:
        run = RunRequest(
            message=message,
            session_id=session_id,
            optimization_mode=mode,
            swarm_type=ref.swarm_type,
            use_memory=use_memory,
            user_context=context,
            tenant=tenant,
            run_id=run_id,
        )
    except PydanticValidationError as e:
        # Every client field was checked above: a failure here is ours, so a 500, not a 400.
        raise invalid(pydantic_errors(e), what="cannot build the run request", cls=InternalError) from None
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    created = int(time.time() if now is None else now)
    return CompletionCall(run, body.model, bool(body.stream), include_usage, created)


# -- the answer ------------------------------------------------------------------------------------


def usage(result: ChatResult) -> dict[str, int]:
    """The run's tokens over every agent turn (``total_tokens`` = the native ``tokens_used``)."""
    steps = result.metadata.processing_steps
    prompt = sum(s.prompt_tokens for s in steps)
    done = sum(s.completion_tokens for s in steps)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


def _summary(result: ChatResult, call: CompletionCall) -> dict[str, Any]:
    """The ``orchestra`` field of an answer: the native v2 ``data`` without the answer, plus request_id."""
    data = {k: v for k, v in v2_data(result).items() if k != "response"}
    return {"request_id": call.run.run_id, **data}


def completion(result: ChatResult, call: CompletionCall) -> dict[str, Any]:
    """The ``chat.completion`` object for a finished run."""
    return {
        "id": call.id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.response, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage(result),
        "orchestra": _summary(result, call),
    }


# -- streaming -------------------------------------------------------------------------------------

DONE = b"data: [DONE]\n\n"
_WORDS = re.compile(r"\S*\s*")


def sse(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class CompletionStream:
    """The server-sent events of one streamed completion (see the module docstring for their order).

    ``body()`` yields them; ``finished`` tells whether the run ended (answered or failed) when it stopped,
    so the caller can cancel a run whose client left early. ``body()`` closes the batches in any case.
    """

    def __init__(
        self, call: CompletionCall, first: list[RunEvent], batches: AsyncGenerator[list[RunEvent], None]
    ) -> None:
        self.call = call
        self.finished = False
        self._first = first
        self._batches = batches

    def _chunk(
        self, delta: dict[str, Any] | None, finish: str | None = None, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.call.id,
            "object": "chat.completion.chunk",
            "created": self.call.created,
            "model": self.call.model,
            "system_fingerprint": None,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.call.include_usage:
            chunk["usage"] = None  # as OpenAI: null on every chunk but the last
        if extra is not None:
            chunk["orchestra"] = extra
        return chunk

    def _answer(self, result: ChatResult) -> list[bytes]:
        events = [sse(self._chunk({"content": word})) for word in _WORDS.findall(result.response) if word]
        events.append(sse(self._chunk({}, "stop", {"event": "completed", **_summary(result, self.call)})))
        if self.call.include_usage:
            events.append(sse({**self._chunk(None), "usage": usage(result)}))
        events.append(DONE)
        return events

    def _events(self, batch: list[RunEvent]) -> list[bytes]:
        out: list[bytes] = []
        for event in batch:
            if isinstance(event, RunCompleted):
                self.finished = True
                return out + self._answer(event.result)
            if isinstance(event, RunFailed):
                self.finished = True
                return [*out, sse(error_body(error_from_dict(event.error)))]
            out.append(sse(self._chunk({}, extra=agent_event_data(event))))
        return out

    async def aclose(self) -> None:
        """Release the batches (and with them the run, if still going); idempotent."""
        await self._batches.aclose()

    async def body(self) -> AsyncGenerator[bytes, None]:
        try:
            yield sse(self._chunk({"role": "assistant", "content": "", "refusal": None}))
            batch: list[RunEvent] | None = self._first
            while batch is not None and not self.finished:
                for item in self._events(batch):
                    yield item
                batch = None if self.finished else await anext(self._batches, None)
            if not self.finished:
                self.finished = True
                lost = InternalError("the run ended without a result", details={})
                yield sse(error_body(lost))
        finally:
            await self.aclose()


async def open_stream(
    call: CompletionCall, batches: AsyncGenerator[list[RunEvent], None]
) -> CompletionStream:
    """Start streaming ``batches`` (a ``ChatService.stream``): waits for the first batch, so that a run
    failing before any event (e.g. the backend is down) is an HTTP error, raised here, not a 200."""
    try:
        first: list[RunEvent] = await anext(batches, [])
    except BaseException:
        await batches.aclose()
        raise
    if first and isinstance(first[0], RunFailed):
        await batches.aclose()
        raise error_from_dict(first[0].error)
    return CompletionStream(call, first, batches)
