"""API keys (api.md §1): issued once, stored only as hashes, checked in constant time, scoped.

Storage. A key is ``orch_`` + 40 URL-safe characters (240 random bits). Only ``sha256(key)`` (hex) is
stored: in Redis two hashes, ``<prefix>:by_hash`` (key hash → record JSON) and ``<prefix>:by_id`` (key id →
key hash, for revocation), or in process memory when no Redis client is given (tests, single process).
An unsalted fast hash is enough because generated keys carry 240 bits of entropy; operator-chosen
bootstrap keys must be at least ``MIN_KEY_CHARS`` long for the same reason.

Authentication looks the record up by the presented key's hash and then compares the stored hash with
``hmac.compare_digest``: the lookup can only leak timing about the *hash*, which does not help forge a key.

Caching. ``authenticate`` keeps hash → record (or "unknown") for ``cache_ttl_s`` (default 2 s, bounded
LRU) so the hot path does not hit Redis on every request. A revocation takes effect at once on the
replica that made it and within ``cache_ttl_s`` on every other replica; likewise a new key is usable
everywhere within that time. Redis failures, or no answer within ``timeout_s`` (default 1 s, the client's
retries included), surface as ``ServiceUnavailableError`` (503) with ``retry_after`` 1 s.

Scopes: ``chat`` (default), ``metrics``, ``admin``; ``admin`` implies every other scope. A key without the
needed scope gets 401 ``AUTHENTICATION_ERROR`` (the spec defines no 403).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from orchestra.errors import (
    AuthenticationError,
    ConfigError,
    OrchestraError,
    ValidationError,
    invalid,
    pydantic_errors,
)
from orchestra.stores._keys import SCOPES, ApiKeyRecord, KeyStore

__all__ = [
    "CACHE_TTL_S",
    "DEFAULT_SCOPES",
    "KEY_PREFIX",
    "MIN_KEY_CHARS",
    "SCOPES",
    "ApiKeys",
    "Principal",
    "hash_key",
    "parse_api_keys_env",
    "require_scope",
]

log = logging.getLogger("orchestra.auth")

DEFAULT_SCOPES = frozenset({"chat"})
KEY_PREFIX = "orch_"
MIN_KEY_CHARS = 16
CACHE_TTL_S = 2.0
# RFC 6750 b64token: what may follow "Bearer ". Also keeps ',' and ':' free for ORCHESTRA_API_KEYS.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")


def hash_key(key: str) -> str:
    """The stored form of a key: sha256 of its UTF-8 bytes, lowercase hex."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its tenant (owner of sessions, memory, webhooks) and its scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def require_scope(principal: Principal, scope: str) -> None:
    """Raise ``AuthenticationError`` (401) unless the key has ``scope`` (or ``admin``)."""
    if not principal.has_scope(scope):
        raise AuthenticationError(
            f"this API key lacks the {scope!r} scope",
            details={"reason": "missing_scope", "required_scope": scope},
        )


def _scopes(
    scopes: Iterable[str], error: type[OrchestraError], where: str, details: dict[str, Any] | None = None
) -> frozenset[str]:
    result = frozenset(scopes)
    info = {**(details or {}), "known_scopes": sorted(SCOPES)}
    if not result:
        raise error(f"{where}: at least one scope is required", details=info)
    unknown = result - SCOPES
    if unknown:
        # From the environment the text after ':' might be part of a mistyped secret: never echo it there.
        named = "" if error is ConfigError else f" {', '.join(sorted(unknown))}"
        raise error(f"{where}: unknown scope(s){named}; known: {', '.join(sorted(SCOPES))}", details=info)
    return result


def parse_api_keys_env(value: str) -> list[tuple[str, frozenset[str]]]:
    """Parse ``ORCHESTRA_API_KEYS``: comma-separated ``key`` or ``key:scope+scope`` (default scope chat).

    Errors are ``ConfigError`` naming the 1-based entry position, never the key.
    """
    if not value.strip():
        return []
    result: list[tuple[str, frozenset[str]]] = []
    seen: dict[str, int] = {}
    for position, entry in enumerate(value.split(","), start=1):
        where = f"ORCHESTRA_API_KEYS entry {position}"
        details: dict[str, Any] = {"env": "ORCHESTRA_API_KEYS", "entry": position}
        key, sep, scope_text = entry.strip().partition(":")
        if not key:
            raise ConfigError(f"{where}: empty key", details=details)
        if not _TOKEN_RE.match(key):
            raise ConfigError(
                f"{where}: a key may only contain letters, digits and -._~+/ (then '=' padding)",
                details=details,
            )
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"{where}: key shorter than {MIN_KEY_CHARS} characters", details=details)
        if key in seen:
            raise ConfigError(f"{where}: same key as entry {seen[key]}", details=details)
        seen[key] = position
        names = [s.strip() for s in scope_text.split("+")] if sep else []
        if sep and not scope_text.strip():
            raise ConfigError(f"{where}: at least one scope is required after ':'", details=details)
        if "" in names:
            raise ConfigError(f"{where}: empty scope name (scopes are joined with '+')", details=details)
        scopes = _scopes(names, ConfigError, where, details) if sep else DEFAULT_SCOPES
        result.append((key, scopes))
    return result


class ApiKeys:
    """Issuing, revoking and checking API keys over a ``KeyStore`` (memory or Redis), with a per-replica
    cache of lookups (see the module docstring for its bound)."""

    def __init__(
        self,
        store: KeyStore,
        *,
        cache_ttl_s: float = CACHE_TTL_S,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        self._clock = clock
        # LRU of key hash → (expires at, record or None for "unknown"); bounded so random keys cannot grow it.
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord | None]] = OrderedDict()
        # One store read per key hash at a time: a burst on one key waits for the same answer.
        self._reading: dict[str, asyncio.Task[ApiKeyRecord | None]] = {}

    async def _put(self, record: ApiKeyRecord) -> None:
        await self.store.put(record)
        # After the write: a lookup racing with it cannot leave the old record cached here.
        self._cache.pop(record.key_hash, None)

    # -- operator operations (CLI, admin endpoints, bootstrap) -------------------------------------

    async def create(
        self, tenant: str | None = None, scopes: Iterable[str] = ("chat",), name: str = ""
    ) -> tuple[str, ApiKeyRecord]:
        """Issue a new key. Returns the plaintext key (show it once; it cannot be recovered) and its record.

        ``tenant`` defaults to the new key's id, i.e. every key is its own tenant unless told otherwise.
        Bad scopes/tenant/name are a ``ValidationError``.
        """
        key = KEY_PREFIX + secrets.token_urlsafe(30)  # 30 bytes → exactly 40 URL-safe characters
        key_id = "key_" + secrets.token_hex(8)
        record = self._record(
            key_id=key_id,
            key_hash=hash_key(key),
            tenant=tenant or key_id,
            scopes=_scopes(scopes, ValidationError, "scopes"),
            name=name,
            created_at=datetime.now(UTC),
            revoked=False,
            error=ValidationError,
        )
        await self._put(record)
        return key, record

    async def add_plaintext(
        self,
        key: str,
        scopes: Iterable[str] = ("chat",),
        tenant: str | None = None,
        name: str = "",
        key_id: str | None = None,
    ) -> ApiKeyRecord:
        """Register an operator-chosen key (``ORCHESTRA_API_KEYS``, the development key). Idempotent.

        The key id (and so the default tenant) is derived from the key, so every replica and every restart
        agree on it and sessions keep their owner. Re-adding an existing key updates its scopes (and tenant
        and name when given) but keeps its id, creation time and revocation: a revoked key stays revoked
        even if it is still in the environment. Problems are ``ConfigError`` (start-up) without the key.
        """
        if not _TOKEN_RE.match(key) or len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                f"a bootstrap API key needs at least {MIN_KEY_CHARS} characters of letters, digits and -._~+/"
            )
        key_hash = hash_key(key)
        existing = await self.store.get(key_hash)
        # Domain-separated from the stored hash, so the id does not reveal a prefix of it.
        derived_id = "key_" + hashlib.sha256(b"orchestra-key-id\0" + key.encode()).hexdigest()[:16]
        record_id = existing.key_id if existing else (key_id or derived_id)
        record = self._record(
            key_id=record_id,
            key_hash=key_hash,
            tenant=tenant or (existing.tenant if existing else record_id),
            scopes=_scopes(scopes, ConfigError, "scopes"),
            name=name or (existing.name if existing else ""),
            created_at=existing.created_at if existing else datetime.now(UTC),
            revoked=existing.revoked if existing else False,
            error=ConfigError,
        )
        if record != existing:
            await self._put(record)
        return record

    @staticmethod
    def _record(*, error: type[OrchestraError], **fields: Any) -> ApiKeyRecord:
        try:
            return ApiKeyRecord(**fields)
        except PydanticValidationError as e:
            raise invalid(pydantic_errors(e), what="invalid API key", cls=error) from None

    async def list(self) -> builtins.list[ApiKeyRecord]:
        """Every key record (revoked ones included), oldest first."""
        return sorted(await self.store.all(), key=lambda r: (r.created_at, r.key_id))

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id. True when the key exists (revoking twice is fine), False when unknown.

        The record is kept, marked revoked, so ``list`` still shows it.
        """
        key_hash = await self.store.hash_for_id(key_id)
        record = None if key_hash is None else await self.store.get(key_hash)
        if record is None:
            return False
        if not record.revoked:
            await self._put(record.model_copy(update={"revoked": True}))
        return True

    # -- the hot path ------------------------------------------------------------------------------

    async def _lookup(self, key_hash: str) -> ApiKeyRecord | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(key_hash)
            return cached[1]
        reading = self._reading.get(key_hash)
        if reading is None:
            reading = self._reading[key_hash] = asyncio.ensure_future(self.store.get(key_hash))
            reading.add_done_callback(lambda t: self._read_done(key_hash, t))
        record = await asyncio.shield(reading)  # one caller's cancellation is not the others'
        self._cache[key_hash] = (now + self._cache_ttl_s, record)
        self._cache.move_to_end(key_hash)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return record

    def _read_done(self, key_hash: str, task: asyncio.Task[ApiKeyRecord | None]) -> None:
        self._reading.pop(key_hash, None)
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone

    async def authenticate(self, authorization_header: str | None) -> Principal:
        """The caller behind an ``Authorization`` header, or ``AuthenticationError`` (401).

        The message says whether the header was missing, malformed, or the key unknown/revoked; it never
        contains the key. ``ServiceUnavailableError`` (503) when the store cannot be reached.
        """
        if authorization_header is None or not authorization_header.strip():
            raise AuthenticationError(
                "missing API key: send 'Authorization: Bearer <api-key>'", details={"reason": "missing"}
            )
        parts = authorization_header.split()
        if len(parts) != 2 or parts[0].lower() != "bearer" or not _TOKEN_RE.match(parts[1]):
            raise AuthenticationError(
                "malformed Authorization header: expected 'Bearer <api-key>'", details={"reason": "malformed"}
            )
        presented = hash_key(parts[1])
        record = await self._lookup(presented)
        # compare_digest on the hash: constant-time whatever the dict/Redis lookup did.
        if record is None or not hmac.compare_digest(record.key_hash, presented) or record.revoked:
            raise AuthenticationError("unknown or revoked API key", details={"reason": "invalid"})
        return Principal(key_id=record.key_id, tenant=record.tenant, scopes=record.scopes)
