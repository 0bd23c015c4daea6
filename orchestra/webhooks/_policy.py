"""How deliveries are made: the retry schedule and the URL policy, from the settings.

Retries: attempt ``n`` failed → the next one after ``min(cap, base · 2^(n-1))`` seconds, with ±20 %
jitter (about 1 s, 2 s, 4 s … 5 min), at most ``max_attempts`` attempts; a 429 or 503 with
``Retry-After`` waits at least that long (still capped).

URLs: ``https`` to a public address, unless the operator allows private targets. The address is checked
at delivery time on the IP actually connected to (``resolve_target``), so neither DNS rebinding nor a
redirect (never followed) can reach a private address.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from orchestra.settings import Settings, settings

__all__ = [
    "DeliveryPolicy",
    "Resolver",
    "Target",
    "TargetBlockedError",
    "check_url",
    "is_public",
    "resolve_target",
    "retry_after_s",
]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) → the IP addresses it resolves to."""


class TargetBlockedError(Exception):
    """The URL may not be delivered to (scheme, or an address that is not public)."""


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_s: float = 10.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    max_attempts: int = 8
    lease_s: float = 60.0
    poll_s: float = 0.5
    allow_private: bool = False
    concurrency: int = 32
    jitter: float = 0.2

    @classmethod
    def from_settings(cls, env: Settings | None = None) -> DeliveryPolicy:
        s = env or settings()
        return cls(
            timeout_s=s.webhook_timeout_s,
            retry_base_s=s.webhook_retry_base_s,
            retry_cap_s=s.webhook_retry_cap_s,
            max_attempts=s.webhook_max_attempts,
            # a lease shorter than an attempt would hand a live attempt to a second dispatcher
            lease_s=max(s.webhook_lease_s, s.webhook_timeout_s + 1.0),
            poll_s=s.webhook_poll_s,
            allow_private=s.webhook_allow_private,
        )

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay after failed attempt ``attempt`` (1-based), jittered."""
        raw = self.retry_base_s * float(2 ** min(attempt - 1, 60))
        factor = 1.0 + float((rng or random).uniform(-self.jitter, self.jitter))
        return min(self.retry_cap_s, raw * factor)

    def retry_delay_s(
        self, attempt: int, retry_after: float | None, rng: random.Random | None = None
    ) -> float:
        """The backoff, or the receiver's ``Retry-After`` when longer; never beyond the cap."""
        delay = self.backoff_s(attempt, rng)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(self.retry_cap_s, delay)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds from now; None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_public(address: str) -> bool:
    """A globally routable unicast address (not loopback, private, link-local, CGNAT, reserved...)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, *, allow_private: bool) -> SplitResult:
    """The parsed URL when its form is deliverable (https, or http too with private targets allowed;
    a host; no credentials); ``TargetBlockedError`` otherwise. Literal IPs are checked here too."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError:
        raise TargetBlockedError("not a valid URL") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise TargetBlockedError("the URL must use https")
    if not parts.hostname:
        raise TargetBlockedError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise TargetBlockedError("the URL must not carry credentials")
    if not allow_private:
        try:
            literal = ipaddress.ip_address(parts.hostname)
        except ValueError:
            literal = None
        if literal is not None and not is_public(str(literal)):
            raise TargetBlockedError("the URL's address is not public")
        if parts.hostname.lower() == "localhost" or parts.hostname.lower().endswith(".localhost"):
            raise TargetBlockedError("the URL's address is not public")
    return parts


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: the URL with its host replaced by the checked IP, and the name the
    request still carries (``Host`` header and TLS SNI/certificate check)."""

    url: str
    host: str
    host_header: str
    ip: str


async def resolve_target(url: str, *, allow_private: bool, resolver: Resolver = system_resolver) -> Target:
    """Resolve the URL's host and pick an address the policy allows; ``TargetBlockedError`` when none."""
    parts = check_url(url, allow_private=allow_private)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
        addresses = [host]
    except ValueError:
        try:
            addresses = await resolver(host, port)
        except OSError:
            raise TargetBlockedError("the URL's host does not resolve") from None
    usable = [a for a in addresses if allow_private or is_public(a)]
    if not usable:
        raise TargetBlockedError("the URL's address is not public")
    ip = usable[0]
    netloc_ip = f"[{ip}]" if ":" in ip else ip
    netloc = f"{netloc_ip}:{parts.port}" if parts.port else netloc_ip
    target_url = parts._replace(netloc=netloc).geturl()
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    if ":" in host and parts.port is None:
        host_header = f"[{host}]"
    elif ":" in host:
        host_header = f"[{host}]:{parts.port}"
    return Target(url=target_url, host=host, host_header=host_header, ip=ip)
