"""API key records and where they are kept: ``KeyStore`` and its in-memory implementation.

Only a key's hash is ever stored (see ``orchestra.serving`` for hashing, caching and checks).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import Field, field_serializer, field_validator

from orchestra._types import IDENTIFIER_RE, FrozenModel

__all__ = ["SCOPES", "ApiKeyRecord", "InMemoryKeyStore", "KeyStore"]

SCOPES = frozenset({"chat", "metrics", "admin"})
_ID_PATTERN = IDENTIFIER_RE.pattern  # key ids and tenants: 1-128 of [A-Za-z0-9._:-]


class ApiKeyRecord(FrozenModel):
    """What is stored about a key; never the key itself."""

    key_id: str = Field(pattern=_ID_PATTERN)
    key_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    tenant: str = Field(pattern=_ID_PATTERN)
    scopes: frozenset[str]
    created_at: datetime
    revoked: bool = False
    name: str = Field(default="", max_length=200)

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {sorted(SCOPES)}")
        if not value:
            raise ValueError("at least one scope is required")
        return value

    @field_serializer("scopes")
    def _sorted_scopes(self, value: frozenset[str]) -> list[str]:
        return sorted(value)  # stable JSON


@runtime_checkable
class KeyStore(Protocol):
    """Key records by hash and by id. Every method may raise ``ServiceUnavailableError`` when shared."""

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        """The record of the key with this hash (a corrupt record is None, never an authentication)."""
        ...

    async def hash_for_id(self, key_id: str) -> str | None:
        """The hash of the key with this id."""
        ...

    async def put(self, record: ApiKeyRecord) -> None:
        """Store (or replace) a record, indexed by hash and id."""
        ...

    async def all(self) -> builtins.list[ApiKeyRecord]:
        """Every record, in no particular order."""
        ...


class InMemoryKeyStore:
    """Keys in this process's memory (tests, one-process use)."""

    def __init__(self) -> None:
        self._by_hash: dict[str, ApiKeyRecord] = {}
        self._by_id: dict[str, str] = {}

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        return self._by_hash.get(key_hash)

    async def hash_for_id(self, key_id: str) -> str | None:
        return self._by_id.get(key_id)

    async def put(self, record: ApiKeyRecord) -> None:
        self._by_hash[record.key_hash] = record
        self._by_id[record.key_id] = record.key_hash

    async def all(self) -> builtins.list[ApiKeyRecord]:
        return builtins.list(self._by_hash.values())
