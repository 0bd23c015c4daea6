"""The key management API's wire format: request bodies and the documented shapes of its answers.

Routes (``admin`` scope, except ``/keys/v2/me``, which any valid key may call about itself):

- ``POST /keys/v2`` ``{name, scopes?, tenant?, expires_in?, daily_tokens?, rpm?}`` → 201, the key once;
- ``GET /keys/v2`` → every key (never the key or its hash), with usage of the UTC day;
- ``DELETE /keys/v2/{key}`` (id or name) → the revoked key;
- ``POST /keys/v2/{key}/rotate`` ``{grace?}`` → the new key once, the old one valid for ``grace``;
- ``GET /keys/v2/me`` → the calling key and its usage today.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import Field, StrictInt
from pydantic import ValidationError as PydanticValidationError

from orchestra._types import IDENTIFIER_RE, FrozenModel
from orchestra.errors import invalid, pydantic_errors
from orchestra.serving._auth import DEFAULT_GRACE, parse_duration
from orchestra.serving._contract import load_object

__all__ = [
    "CreateKeyRequest",
    "CreatedKey",
    "KeyUsage",
    "KeyView",
    "RotateKeyRequest",
    "envelope_schema",
    "parse_create",
    "parse_rotate",
]

Scope = Literal["chat", "metrics", "admin"]


class CreateKeyRequest(FrozenModel):
    """``POST /keys/v2``."""

    name: str = Field(min_length=1, max_length=200, description="Unique among active keys.")
    scopes: list[Scope] = Field(default=["chat"], min_length=1, max_length=3)
    tenant: str | None = Field(
        default=None,
        pattern=IDENTIFIER_RE.pattern,
        description="Owner of the key's sessions and memory (default: the new key's id).",
    )
    expires_in: str | None = Field(default=None, description="e.g. 30d, 12h, 90m, 2w (default: never).")
    daily_tokens: StrictInt | None = Field(default=None, ge=1, le=10**15, description="Daily token budget.")
    rpm: StrictInt | None = Field(
        default=None, ge=1, le=60_000_000, description="Requests per minute (default: the server's)."
    )


class RotateKeyRequest(FrozenModel):
    """``POST /keys/v2/{key}/rotate``."""

    grace: str = Field(
        default="1h", description="How long the previous secret keeps working: e.g. 1h, 7d, 0s (at once)."
    )


class KeyView(FrozenModel):
    """A key as operators and its owner see it: never the key or its hash."""

    id: str
    name: str
    tenant: str
    scopes: list[Scope]
    status: Literal["active", "expired", "revoked"]
    created_at: str | None
    last_used_at: str | None = Field(description="Noted at most once a minute per replica.")
    expires_at: str | None
    revoked_at: str | None
    rotated_at: str | None
    previous_key_valid_until: str | None = Field(description="End of a rotation's grace period.")
    rpm: int | None
    daily_tokens: int | None
    tokens_today: int = Field(description="Tokens used by the key's finished runs today (UTC).")


class CreatedKey(KeyView):
    key: str = Field(description="The key itself: shown this once, it cannot be recovered.")


class KeyUsage(FrozenModel):
    date: str
    tokens_used: int
    daily_tokens: int | None
    remaining: int | None
    resets_at: str


def parse_create(raw: bytes) -> tuple[CreateKeyRequest, timedelta | None]:
    body = _parse(CreateKeyRequest, raw)
    expires = None if body.expires_in is None else parse_duration(body.expires_in, "expires_in")
    return body, expires


def parse_rotate(raw: bytes) -> timedelta:
    body = _parse(RotateKeyRequest, raw) if raw.strip() else RotateKeyRequest()
    if body.grace.strip() in ("0", "0s", "0m", "0h", "0d", "0w"):
        return timedelta(0)
    return parse_duration(body.grace, "grace") if body.grace else DEFAULT_GRACE


def _parse(model: type[Any], raw: bytes) -> Any:
    try:
        return model.model_validate(load_object(raw))
    except PydanticValidationError as e:
        raise invalid(pydantic_errors(e)) from None


def envelope_schema(data: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema of a successful envelope around ``data``."""
    return {
        "type": "object",
        "required": ["success", "data", "metadata", "error"],
        "properties": {
            "success": {"type": "boolean", "enum": [True]},
            "data": data,
            "metadata": {
                "type": "object",
                "properties": {
                    "request_id": {"type": "string"},
                    "timestamp": {"type": "string"},
                    "version": {"type": "string"},
                },
            },
            "error": {"type": "null"},
        },
    }
