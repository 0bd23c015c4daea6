"""The OpenAPI document, made to tell the truth about the app.

FastAPI documents what it can see: routes whose handlers parse their own bodies (to control every
error) get no body schema, every route gets a 422 it never returns, and nothing says which errors come
back in which shape. ``finish`` takes FastAPI's document and adds, per operation:

- the request body of each chat route (``/chat/chat`` takes either version's body), with ``swarm_type``
  an enum of the configured teams;
- every status the route really returns, each error with its schema: the envelope on native routes,
  OpenAI's error object on ``/v1/*``; ``Retry-After`` on 429/503, ``WWW-Authenticate`` on 401;
- the ``bearer`` security scheme on every route that needs a key;
- ``/metrics`` as ``text/plain``, ``/health`` and ``/readiness`` with their bodies.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from orchestra.engine._messages import MAX_USER_CONTEXT_BYTES
from orchestra.serving._contract import MAX_BODY_BYTES, V1ChatRequest, V2ChatRequest
from orchestra.serving._openai import ChatCompletionRequest

__all__ = ["ERROR_CODES", "finish"]

ERROR_CODES = [
    "VALIDATION_ERROR",
    "AUTHENTICATION_ERROR",
    "NOT_FOUND",
    "PAYLOAD_TOO_LARGE",
    "RATE_LIMIT_ERROR",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",
    "TIMEOUT_ERROR",
]

# Routes anyone may call; every other route needs `Authorization: Bearer <api-key>`.
_PUBLIC = ("/health", "/readiness", "/playground", "/openapi.json", "/docs", "/redoc")
_CHAT = ("/chat/v2/chat", "/chat/v1/chat", "/chat/chat")

_DESCRIPTIONS = {
    "400": "VALIDATION_ERROR: bad JSON (also duplicate keys, non-finite or huge numbers, deep nesting), "
    "missing, extra or out-of-range fields, a bad Content-Length",
    "401": "AUTHENTICATION_ERROR: missing, malformed, unknown or revoked key, or a missing scope",
    "404": "NOT_FOUND: no such resource for this key",
    "408": "VALIDATION_ERROR: the body stopped arriving (ORCHESTRA_BODY_IDLE_S); the connection closes",
    "413": f"PAYLOAD_TOO_LARGE: body over {MAX_BODY_BYTES // 1024} KiB (refused before it is read)",
    "429": "RATE_LIMIT_ERROR: the key's bucket is empty; Retry-After says when to try again",
    "431": "VALIDATION_ERROR: a header over 8 KiB, or a header block over 64 KiB",
    "503": "SERVICE_UNAVAILABLE: overloaded, a backend or the LLM provider down; Retry-After",
    "504": "TIMEOUT_ERROR: the swarm run exceeded its mode's deadline",
}

_METADATA = {
    "type": "object",
    "required": ["request_id", "timestamp", "version"],
    "properties": {
        "request_id": {"type": "string", "format": "uuid"},
        "timestamp": {"type": "string", "format": "date-time"},
        "version": {"type": "string", "enum": ["v1", "v2"]},
    },
}

SCHEMAS: dict[str, Any] = {
    "ErrorEnvelope": {
        "type": "object",
        "required": ["success", "data", "metadata", "error"],
        "properties": {
            "success": {"type": "boolean", "enum": [False]},
            "data": {"type": "null"},
            "metadata": _METADATA,
            "error": {
                "type": "object",
                "required": ["code", "message", "details"],
                "properties": {
                    "code": {"type": "string", "enum": ERROR_CODES},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                },
            },
        },
    },
    "Envelope": {
        "type": "object",
        "required": ["success", "data", "metadata", "error"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": {},
            "metadata": _METADATA,
            "error": {"type": "null"},
        },
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "uptime", "components"],
        "properties": {
            "status": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            "version": {"type": "string"},
            "uptime": {"type": "integer"},
            "components": {
                "type": "object",
                "additionalProperties": {"type": "string", "enum": ["healthy", "degraded", "unhealthy"]},
            },
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["ready", "checks"],
        "properties": {
            "ready": {"type": "boolean"},
            "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    },
}

_RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 1}}
}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(status: str, shape: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": _DESCRIPTIONS[status],
        "content": {"application/json": {"schema": _ref(shape)}},
    }
    if status in ("429", "503"):
        response["headers"] = copy.deepcopy(_RETRY_AFTER)
    elif status == "401":
        response["headers"] = copy.deepcopy(_WWW_AUTHENTICATE)
    return response


def _json_value(depth: int) -> dict[str, Any]:
    """A JSON value as the strict reader takes it (``_json``): numbers finite and within 20 digits. The
    real nesting bound is 64 levels; the document shows ``depth`` of them (a schema cannot recurse here)."""
    scalars: list[dict[str, Any]] = [
        {"type": "string"},
        {"type": "boolean"},
        {"type": "null"},
        {"type": "number", "minimum": -(10**19), "maximum": 10**19},
    ]
    if depth == 0:
        return {"anyOf": scalars}
    inner = _json_value(depth - 1)
    return {
        "anyOf": [
            *scalars,
            {"type": "array", "items": inner},
            {"type": "object", "additionalProperties": inner},
        ]
    }


def _chat_schema(model: type[Any], teams: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema()
    context = schema.get("properties", {}).get("user_context")
    if context is not None:
        schema["properties"]["user_context"] = {
            "anyOf": [{"type": "object", "additionalProperties": _json_value(2)}, {"type": "null"}],
            "description": f"any JSON object of at most {MAX_USER_CONTEXT_BYTES} bytes as compact JSON, "
            "nested at most 64 levels, integers of at most 20 digits; given to every agent",
        }
    swarm = schema.get("properties", {}).get("swarm_type")
    if swarm is not None and teams:
        schema["properties"]["swarm_type"] = {
            "anyOf": [{"type": "string", "enum": teams}, {"type": "null"}],
            "description": "a configured team; null or absent lets the router choose",
        }
    return schema


def _statuses(path: str, method: str, public: bool) -> list[str]:
    statuses = ["400", "413", "431"]  # the input guard answers these on every route
    if method in ("post", "put", "patch"):
        statuses.append("408")
    if not public:
        statuses += ["401", "429", "503"]
    if "{" in path or path == "/v1/chat/completions":
        statuses.append("404")
    if path in _CHAT or path == "/v1/chat/completions":
        statuses.append("504")
    return sorted(set(statuses))


def finish(spec: dict[str, Any], teams: Iterable[str]) -> dict[str, Any]:
    """``spec`` (FastAPI's document) made truthful, for the configured ``teams``; see the module docstring."""
    spec = copy.deepcopy(spec)
    team_names = sorted(teams)
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {}).update(copy.deepcopy(SCHEMAS))
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 bodies: never sent here
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <api-key>"}
    }
    v2, v1 = _chat_schema(V2ChatRequest, team_names), _chat_schema(V1ChatRequest, team_names)
    completion = ChatCompletionRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    components["schemas"].update(completion.pop("$defs", {}))
    completion["properties"]["model"] = {
        "type": "string",
        "enum": [
            f"orchestra/{t}{m}" for t in ["auto", *team_names] for m in ("", ":lite", ":balanced", ":quality")
        ],
    }
    completion["description"] = (
        "OpenAI's Chat Completions request. Beyond this schema: the last message must be the user's and "
        "non-empty; n must be 1, logprobs false, response_format text, no tool use (README: the mapping)."
    )
    bodies = {
        "/chat/v2/chat": v2,
        "/chat/v1/chat": v1,
        "/chat/chat": {"oneOf": [v2, v1]},
        "/v1/chat/completions": completion,
    }
    for path, operations in spec.get("paths", {}).items():
        public = path == "/" or path.startswith(_PUBLIC)
        shape = "OpenAIError" if path.startswith("/v1/") else "ErrorEnvelope"
        for method, op in operations.items():
            responses: dict[str, Any] = op.setdefault("responses", {})
            responses.pop("422", None)
            if not public:
                op["security"] = [{"bearer": []}]
            if path in bodies:
                media = (
                    op.setdefault("requestBody", {})
                    .setdefault("content", {})
                    .setdefault("application/json", {})
                )
                media["schema"] = bodies[path]  # beside the route's own example
                op["requestBody"]["required"] = True
            for status in _statuses(path, method, public):
                responses[status] = _error(status, shape)
            if not any(code.startswith("2") for code in responses):
                responses["200"] = {"description": "OK"}
            ok = next(r for code, r in sorted(responses.items()) if code.startswith("2"))
            if path == "/metrics":
                ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
            elif path == "/health":
                ok["content"] = {"application/json": {"schema": _ref("Health")}}
                responses["503"] = {
                    "description": "unhealthy",
                    "content": {"application/json": {"schema": _ref("Health")}},
                }
            elif path == "/readiness":
                ok["content"] = {"application/json": {"schema": _ref("Readiness")}}
                responses["503"] = {
                    "description": "not ready",
                    "content": {"application/json": {"schema": _ref("Readiness")}},
                }
            elif path.startswith("/chat/"):
                ok["content"] = {"application/json": {"schema": _ref("Envelope")}}
            elif path == "/playground":
                ok["content"] = {"text/html": {"schema": {"type": "string"}}}
            elif path.startswith("/playground/"):
                ok["content"] = {"*/*": {"schema": {"type": "string"}}}  # the page's html, js, css
            elif path == "/v1/chat/completions":
                ok["content"] = {
                    "application/json": {"schema": {"type": "object"}},
                    # each server-sent event: `data:` one chat.completion.chunk (then `[DONE]`)
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "required": ["data"],
                            "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                        }
                    },
                }
    return spec
