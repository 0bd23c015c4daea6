"""API keys (api.md §1): issued once, stored only as keyed hashes, checked in constant time, scoped.

Keys. A generated key is ``orch_`` + 40 URL-safe characters (240 random bits); the prefix lets secret
scanners find a leaked one. Operators may also register their own (``ORCHESTRA_API_KEYS``, the
development key), at least ``MIN_KEY_CHARS`` long.

Storage. Only ``HMAC-SHA256(secret, key)`` (hex) is stored (``orchestra.stores.KeyStore``: in Redis for
every replica and the ``orchestra keys`` CLI). The secret is ``ORCHESTRA_KEY_HASH_SECRET``, else the file
``<data dir>/key-hash-secret`` that ``orchestra serve`` creates (mode 0600); it never enters the store, so
a leaked store alone does not let anyone test guesses offline. Bootstrap keys' ids are keyed the same way.
Changing the secret invalidates every stored key.

Authentication looks the record up by the presented key's hash and then compares the stored hashes with
``hmac.compare_digest`` (the current one and a rotated key's previous one, both always): the lookup can
only leak timing about the *hash*, which does not help forge a key. Revoked or expired keys, and a
rotated key's previous secret after its grace period, get 401.

Caching. ``authenticate`` keeps hash → record (or "unknown") for ``cache_ttl_s`` (default 2 s, bounded
LRU) so the hot path does not hit the store on every request. A revocation or rotation takes effect at
once on the replica that made it and within ``cache_ttl_s`` on every other replica (and for the CLI,
which is no replica, within ``cache_ttl_s`` everywhere); likewise a new key is usable everywhere within
that time. Expiry is checked on every request against the clock, so it is exact. When the store cannot
be reached (or does not answer within its timeout) authentication fails closed with
``ServiceUnavailableError`` (503, ``retry_after`` 1 s) unless the key was looked up on this replica in
the last ``cache_ttl_s``.

Last use is noted in the store at most once per ``touch_every_s`` (60 s) per key and replica, off the
request path.

Scopes: ``chat`` (default), ``metrics``, ``admin``; ``admin`` implies every other scope. A key without the
needed scope gets 401 ``AUTHENTICATION_ERROR`` (the spec defines no 403).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from orchestra.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    OrchestraError,
    ValidationError,
    invalid,
    pydantic_errors,
)
from orchestra.settings import settings
from orchestra.stores._keys import SCOPES, ApiKeyRecord, KeyStore

__all__ = [
    "CACHE_TTL_S",
    "DEFAULT_GRACE",
    "DEFAULT_SCOPES",
    "KEY_PREFIX",
    "MIN_KEY_CHARS",
    "SCOPES",
    "SECRET_FILE",
    "ApiKeys",
    "Principal",
    "describe_key",
    "ensure_hash_secret",
    "hash_key",
    "hash_secret",
    "key_status",
    "parse_api_keys_env",
    "parse_duration",
    "require_scope",
]

log = logging.getLogger("orchestra.auth")

DEFAULT_SCOPES = frozenset({"chat"})
KEY_PREFIX = "orch_"
MIN_KEY_CHARS = 16
CACHE_TTL_S = 2.0
TOUCH_EVERY_S = 60.0
DEFAULT_GRACE = timedelta(hours=1)
"""How long a rotated key's previous secret keeps working unless told otherwise."""
SECRET_FILE = "key-hash-secret"
MIN_SECRET_CHARS = 32
# RFC 6750 b64token: what may follow "Bearer ". Also keeps ',' and ':' free for ORCHESTRA_API_KEYS.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=3650)


def _utcnow() -> datetime:
    return datetime.now(UTC)


# -- the hashing secret ------------------------------------------------------------------------------


def _secret_error(reason: str) -> ConfigError:
    return ConfigError(
        f"the API key hashing secret {reason}: set ORCHESTRA_KEY_HASH_SECRET (at least {MIN_SECRET_CHARS} "
        f"characters, the same on every replica), or run `orchestra serve`, which creates "
        f"<data dir>/{SECRET_FILE}",
        details={"field": "ORCHESTRA_KEY_HASH_SECRET", "reason": reason},
    )


def _checked(text: str) -> bytes:
    if len(text) < MIN_SECRET_CHARS:
        raise _secret_error(f"is shorter than {MIN_SECRET_CHARS} characters")
    return text.encode()


def hash_secret(data_dir: Path | None = None) -> bytes:
    """The key hashing secret: ``ORCHESTRA_KEY_HASH_SECRET``, else ``<data dir>/key-hash-secret``
    (``data_dir`` defaults to ``ORCHESTRA_DATA_DIR``). ``ConfigError`` when there is none."""
    env = settings()
    from_env = env.key_hash_secret.get_secret_value().strip()
    if from_env:
        return _checked(from_env)
    path = (data_dir or env.data_dir) / SECRET_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        raise _secret_error("is not set") from None
    except OSError:
        raise _secret_error("file cannot be read") from None
    return _checked(text)


def ensure_hash_secret(data_dir: Path) -> bytes:
    """``hash_secret(data_dir)``, creating ``<data_dir>/key-hash-secret`` (mode 0600) when neither the
    variable nor the file exists (``orchestra serve``)."""
    path = data_dir / SECRET_FILE
    if not settings().key_hash_secret.get_secret_value().strip() and not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it just now: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
    return hash_secret(data_dir)


def hash_key(key: str, secret: bytes) -> str:
    """The stored form of a key: HMAC-SHA256 of its UTF-8 bytes with the server's secret, lowercase hex."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


def parse_duration(text: str, field: str = "expires") -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` → a duration (at most ten years); ``ValidationError``
    naming ``field`` otherwise."""
    match = _DURATION_RE.match(text)
    reason = "a positive whole number followed by s, m, h, d or w (e.g. 30d), at most 3650d"
    if match is None:
        raise ValidationError(f"invalid {field}: {reason}", details={"field": field, "reason": reason})
    amount = timedelta(seconds=int(match.group(1)) * _UNIT_S[match.group(2)])
    if not timedelta(0) < amount <= MAX_DURATION:
        raise ValidationError(f"invalid {field}: {reason}", details={"field": field, "reason": reason})
    return amount


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its tenant (owner of sessions, memory, webhooks), its scopes, and its
    own limits (``rpm`` None: the server's rate; ``daily_tokens`` None: no budget)."""

    key_id: str
    tenant: str
    scopes: frozenset[str]
    rpm: int | None = None
    daily_tokens: int | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def require_scope(principal: Principal, scope: str) -> None:
    """Raise ``AuthenticationError`` (401) unless the key has ``scope`` (or ``admin``)."""
    if not principal.has_scope(scope):
        raise AuthenticationError(
            f"this API key lacks the {scope!r} scope",
            details={"reason": "missing_scope", "required_scope": scope},
        )


def key_status(record: ApiKeyRecord, now: datetime) -> str:
    """``active``, ``expired`` or ``revoked``."""
    if record.revoked:
        return "revoked"
    if record.expires_at is not None and now >= record.expires_at:
        return "expired"
    return "active"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def describe_key(
    record: ApiKeyRecord, *, now: datetime, last_used: datetime | None, tokens_today: int
) -> dict[str, Any]:
    """What operators and owners see of a key (CLI, admin endpoints, ``GET /keys/v2/me``): never the key
    or its hash."""
    grace = record.previous_valid_until
    return {
        "id": record.key_id,
        "name": record.name,
        "tenant": record.tenant,
        "scopes": sorted(record.scopes),
        "status": key_status(record, now),
        "created_at": _iso(record.created_at),
        "last_used_at": _iso(last_used),
        "expires_at": _iso(record.expires_at),
        "revoked_at": _iso(record.revoked_at),
        "rotated_at": _iso(record.rotated_at),
        "previous_key_valid_until": _iso(grace) if grace is not None and grace > now else None,
        "rpm": record.rpm,
        "daily_tokens": record.daily_tokens,
        "tokens_today": tokens_today,
    }


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
    """Issuing, rotating, revoking and checking API keys over a ``KeyStore`` (memory or Redis), with a
    per-replica cache of lookups (see the module docstring for its bound).

    ``secret`` is the hashing secret (default ``hash_secret()``); ``clock`` (monotonic seconds) drives the
    cache, ``now`` (aware UTC datetimes) expiry and grace periods.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        secret: bytes | None = None,
        cache_ttl_s: float = CACHE_TTL_S,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        touch_every_s: float = TOUCH_EVERY_S,
    ) -> None:
        self.store = store
        self._secret = secret if secret is not None else hash_secret()
        self._cache_ttl_s = cache_ttl_s
        self._cache_size = cache_size
        self._clock = clock
        self._now = now
        self._touch_every_s = touch_every_s
        # LRU of key hash → (expires at, record or None for "unknown"); bounded so random keys cannot grow it.
        self._cache: OrderedDict[str, tuple[float, ApiKeyRecord | None]] = OrderedDict()
        # One store read per key hash at a time: a burst on one key waits for the same answer.
        self._reading: dict[str, asyncio.Task[ApiKeyRecord | None]] = {}
        self._touched: OrderedDict[str, float] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def hash(self, key: str) -> str:
        return hash_key(key, self._secret)

    async def _put(self, record: ApiKeyRecord, *, unindex: Iterable[str] = ()) -> None:
        stale = builtins.list(unindex)
        await self.store.put(record, unindex=stale)
        # After the write: a lookup racing with it cannot leave the old record cached here.
        for key_hash in [*record.hashes(), *stale]:
            self._cache.pop(key_hash, None)

    # -- operator operations (CLI, admin endpoints, bootstrap) -------------------------------------

    async def create(
        self,
        tenant: str | None = None,
        scopes: Iterable[str] = ("chat",),
        name: str = "",
        *,
        expires_at: datetime | None = None,
        rpm: int | None = None,
        daily_tokens: int | None = None,
    ) -> tuple[str, ApiKeyRecord]:
        """Issue a new key. Returns the plaintext key (show it once; it cannot be recovered) and its record.

        ``tenant`` defaults to the new key's id, i.e. every key is its own tenant unless told otherwise.
        A ``name`` must not be that of another active key (``revoke`` accepts names). Bad fields are a
        ``ValidationError``.
        """
        now = self._now()
        if expires_at is not None and expires_at <= now:
            raise ValidationError(
                "invalid expires_at: must be in the future",
                details={"field": "expires_at", "reason": "must be in the future"},
            )
        if name and any(r.name == name and key_status(r, now) == "active" for r in await self.store.all()):
            reason = "another active key has this name (names identify keys for revoke)"
            raise ValidationError(f"invalid name: {reason}", details={"field": "name", "reason": reason})
        key = KEY_PREFIX + secrets.token_urlsafe(30)  # 30 bytes → exactly 40 URL-safe characters
        key_id = "key_" + secrets.token_hex(8)
        record = self._record(
            key_id=key_id,
            key_hash=self.hash(key),
            tenant=tenant or key_id,
            scopes=_scopes(scopes, ValidationError, "scopes"),
            name=name,
            created_at=now,
            revoked=False,
            expires_at=expires_at,
            rpm=rpm,
            daily_tokens=daily_tokens,
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

        The key id (and so the default tenant) is derived from the key with the hashing secret, so every
        replica and every restart agree on it and sessions keep their owner. Re-adding an existing key
        updates its scopes (and tenant and name when given) but keeps its id, creation time, limits and
        revocation: a revoked key stays revoked even if it is still in the environment. Problems are
        ``ConfigError`` (start-up) without the key.
        """
        if not _TOKEN_RE.match(key) or len(key) < MIN_KEY_CHARS:
            raise ConfigError(
                f"a bootstrap API key needs at least {MIN_KEY_CHARS} characters of letters, digits and -._~+/"
            )
        key_hash = self.hash(key)
        existing = await self.store.get(key_hash)
        # Keyed and domain-separated from the stored hash: the id reveals nothing testable offline.
        derived = hmac.new(self._secret, b"orchestra-key-id\0" + key.encode(), hashlib.sha256).hexdigest()
        if existing is None or existing.key_hash != key_hash:
            same_id = await self.store.by_id(key_id or "key_" + derived[:16])
            if same_id is not None and same_id.key_hash != key_hash:
                # The key was rotated: its old secret, still in the environment, must not come back.
                log.warning("bootstrap key %s was rotated; its old secret is not registered", same_id.key_id)
                return same_id
            existing = None
        record_id = existing.key_id if existing else (key_id or "key_" + derived[:16])
        fields = existing.model_dump() if existing else {"created_at": self._now(), "revoked": False}
        fields.update(
            key_id=record_id,
            key_hash=key_hash,
            tenant=tenant or (existing.tenant if existing else record_id),
            scopes=_scopes(scopes, ConfigError, "scopes"),
            name=name or (existing.name if existing else ""),
        )
        record = self._record(error=ConfigError, **fields)
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

    async def last_used(self) -> dict[str, datetime]:
        """When each key was last used (noted at most once a minute per replica), by id."""
        return await self.store.last_used()

    async def find(self, ref: str) -> ApiKeyRecord:
        """The key with id ``ref``, else the one not revoked named ``ref``: ``NotFoundError`` when none,
        ``ValidationError`` when several share the name."""
        record = await self.store.by_id(ref)
        if record is not None:
            return record
        named = [r for r in await self.store.all() if r.name == ref and not r.revoked]
        if len(named) > 1:
            reason = f"{len(named)} keys are named so; name one by its id"
            raise ValidationError(f"ambiguous key name: {reason}", details={"field": "key", "reason": reason})
        if not named:
            raise NotFoundError("no such API key", details={"field": "key"})
        return named[0]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id. True when the key exists (revoking twice is fine), False when unknown.

        The record is kept, marked revoked, so ``list`` still shows it.
        """
        record = await self.store.by_id(key_id)
        if record is None:
            return False
        if not record.revoked:
            revoked = record.model_copy(update={"revoked": True, "revoked_at": self._now()})
            await self._put(revoked)
        return True

    async def rotate(self, key_id: str, grace: timedelta = DEFAULT_GRACE) -> tuple[str, ApiKeyRecord]:
        """A new secret for the key ``key_id`` (same id, tenant, scopes, limits and usage); the previous
        secret keeps working for ``grace`` (0: it stops at once here, within the cache bound elsewhere).

        ``NotFoundError`` for an unknown key, ``ValidationError`` for a revoked or expired one.
        """
        if grace < timedelta(0) or grace > MAX_DURATION:
            reason = "must be between 0 and 3650 days"
            raise ValidationError(f"invalid grace: {reason}", details={"field": "grace", "reason": reason})
        record = await self.store.by_id(key_id)
        if record is None:
            raise NotFoundError("no such API key", details={"field": "key"})
        now = self._now()
        status = key_status(record, now)
        if status != "active":
            reason = f"the key is {status}"
            raise ValidationError(f"cannot rotate: {reason}", details={"field": "key", "reason": reason})
        key = KEY_PREFIX + secrets.token_urlsafe(30)
        keep_previous = grace > timedelta(0)
        rotated = record.model_copy(
            update={
                "key_hash": self.hash(key),
                "previous_hash": record.key_hash if keep_previous else None,
                "previous_valid_until": now + grace if keep_previous else None,
                "rotated_at": now,
            }
        )
        ApiKeyRecord.model_validate(rotated.model_dump())  # model_copy does not validate
        stale = [h for h in record.hashes() if h not in rotated.hashes()]
        await self._put(rotated, unindex=stale)
        return key, rotated

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

    def _note_use(self, key_id: str) -> None:
        """Record the use in the store at most once per ``touch_every_s`` here, in the background."""
        now = self._clock()
        last = self._touched.get(key_id)
        if last is not None and now - last < self._touch_every_s:
            return
        self._touched[key_id] = now
        self._touched.move_to_end(key_id)
        while len(self._touched) > self._cache_size:
            self._touched.popitem(last=False)
        task = asyncio.ensure_future(self._touch(key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the last-use notes still on their way (a short-lived process, before it closes the
        store's client)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _touch(self, key_id: str) -> None:
        # Last use is informative; the store being down is reported by the request path.
        with suppress(OrchestraError):
            await self.store.touch(key_id, self._now())

    async def authenticate(self, authorization_header: str | None) -> Principal:
        """The caller behind an ``Authorization`` header, or ``AuthenticationError`` (401).

        The message says whether the header was missing, malformed, the key unknown/revoked or expired;
        it never contains the key. ``ServiceUnavailableError`` (503) when the store cannot be reached.
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
        presented = self.hash(parts[1])
        record = await self._lookup(presented)
        if record is None:
            raise AuthenticationError("unknown or revoked API key", details={"reason": "invalid"})
        now = self._now()
        # compare_digest on the hashes, both every time: constant-time whatever the lookup did.
        current = hmac.compare_digest(record.key_hash, presented)
        previous = hmac.compare_digest(record.previous_hash or "", presented)
        in_grace = record.previous_valid_until is not None and now < record.previous_valid_until
        if not (current or (previous and in_grace)) or record.revoked:
            raise AuthenticationError("unknown or revoked API key", details={"reason": "invalid"})
        if record.expires_at is not None and now >= record.expires_at:
            raise AuthenticationError("this API key has expired", details={"reason": "expired"})
        self._note_use(record.key_id)
        return Principal(
            key_id=record.key_id,
            tenant=record.tenant,
            scopes=record.scopes,
            rpm=record.rpm,
            daily_tokens=record.daily_tokens,
        )
