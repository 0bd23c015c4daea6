"""API key records and where they are kept: ``KeyStore`` and its in-memory implementation.

Only a key's keyed hash (HMAC-SHA256 with the server's secret) is ever stored; ``orchestra.serving``
hashes, caches and checks. A record is kept by its id; an index maps each hash that may authenticate it
(the current one, and during a rotation's grace period the previous one) to that id.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime
from typing import Protocol, runtime_checkable

from pydantic import Field, field_serializer, field_validator

from orchestra._types import IDENTIFIER_RE, FrozenModel

__all__ = ["SCOPES", "ApiKeyRecord", "InMemoryKeyStore", "KeyStore"]

SCOPES = frozenset({"chat", "metrics", "admin"})
_ID_PATTERN = IDENTIFIER_RE.pattern  # key ids and tenants: 1-128 of [A-Za-z0-9._:-]
_HASH_PATTERN = r"^[0-9a-f]{64}$"


class ApiKeyRecord(FrozenModel):
    """What is stored about a key; never the key itself.

    ``rpm`` and ``daily_tokens`` are the key's own request rate and daily token budget (None: the
    server's default rate, no budget). ``previous_hash`` authenticates too until ``previous_valid_until``
    (the grace period of a rotation).
    """

    key_id: str = Field(pattern=_ID_PATTERN)
    key_hash: str = Field(pattern=_HASH_PATTERN)
    tenant: str = Field(pattern=_ID_PATTERN)
    scopes: frozenset[str]
    created_at: datetime
    revoked: bool = False
    name: str = Field(default="", max_length=200)
    expires_at: datetime | None = None
    rpm: int | None = Field(default=None, ge=1, le=60_000_000)
    daily_tokens: int | None = Field(default=None, ge=1, le=10**15)
    previous_hash: str | None = Field(default=None, pattern=_HASH_PATTERN)
    previous_valid_until: datetime | None = None
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None

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

    def hashes(self) -> builtins.list[str]:
        """The hashes the index maps to this record."""
        return [self.key_hash] + ([self.previous_hash] if self.previous_hash else [])


@runtime_checkable
class KeyStore(Protocol):
    """Key records by id, found by hash. Every method may raise ``ServiceUnavailableError`` when shared."""

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        """The record this hash is indexed to (a corrupt record is None, never an authentication).

        The caller still compares the hash with the record's: a stale index entry authenticates nothing.
        """
        ...

    async def by_id(self, key_id: str) -> ApiKeyRecord | None:
        """The record with this id."""
        ...

    async def put(self, record: ApiKeyRecord, *, unindex: Collection[str] = ()) -> None:
        """Store (or replace) a record by id and index its hashes; drop the ``unindex`` hashes, in one
        atomic step."""
        ...

    async def all(self) -> builtins.list[ApiKeyRecord]:
        """Every record, in no particular order."""
        ...

    async def touch(self, key_id: str, at: datetime) -> None:
        """Note that the key was used at ``at`` (kept apart from the record: no write races with it)."""
        ...

    async def last_used(self) -> dict[str, datetime]:
        """When each key was last noted used, by id."""
        ...


class InMemoryKeyStore:
    """Keys in this process's memory (tests, one-process use)."""

    def __init__(self) -> None:
        self._records: dict[str, ApiKeyRecord] = {}
        self._index: dict[str, str] = {}
        self._used: dict[str, datetime] = {}

    async def get(self, key_hash: str) -> ApiKeyRecord | None:
        key_id = self._index.get(key_hash)
        return None if key_id is None else self._records.get(key_id)

    async def by_id(self, key_id: str) -> ApiKeyRecord | None:
        return self._records.get(key_id)

    async def put(self, record: ApiKeyRecord, *, unindex: Collection[str] = ()) -> None:
        for stale in unindex:
            self._index.pop(stale, None)
        self._records[record.key_id] = record
        for key_hash in record.hashes():
            self._index[key_hash] = record.key_id

    async def all(self) -> builtins.list[ApiKeyRecord]:
        return builtins.list(self._records.values())

    async def touch(self, key_id: str, at: datetime) -> None:
        self._used[key_id] = at

    async def last_used(self) -> dict[str, datetime]:
        return dict(self._used)
