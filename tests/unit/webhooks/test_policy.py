"""The retry schedule and the URL policy."""

from __future__ import annotations

import random

import pytest

from orchestra.settings import Settings
from orchestra.webhooks import DeliveryPolicy, TargetBlockedError, check_url, is_public, retry_after_s
from orchestra.webhooks._policy import resolve_target


def test_the_schedule_doubles_from_the_base_with_jitter_up_to_the_cap() -> None:
    policy = DeliveryPolicy.from_settings(Settings())
    assert (policy.timeout_s, policy.max_attempts, policy.retry_cap_s) == (10.0, 8, 300.0)
    rng = random.Random(7)
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (7, 64)]:
        delays = [policy.backoff_s(attempt, rng) for _ in range(200)]
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays)
        assert len(set(delays)) > 100  # jittered, not one value
    assert all(policy.backoff_s(n, rng) <= 300 for n in range(9, 40))
    assert policy.backoff_s(30, rng) == 300


def test_retry_after_is_honoured_when_longer_but_never_past_the_cap() -> None:
    policy = DeliveryPolicy(retry_base_s=1.0, retry_cap_s=300.0)
    rng = random.Random(1)
    assert policy.retry_delay_s(1, 30.0, rng) == 30.0
    assert policy.retry_delay_s(1, 3600.0, rng) == 300.0
    assert 0.8 <= policy.retry_delay_s(1, 0.1, rng) <= 1.2  # shorter: the backoff stands
    assert retry_after_s("12") == 12.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_settings_scale_the_schedule_and_the_lease_outlives_an_attempt() -> None:
    env = Settings(
        webhook_retry_base_s=0.01, webhook_timeout_s=2, webhook_lease_s=0.5, webhook_max_attempts=3
    )
    policy = DeliveryPolicy.from_settings(env)
    assert policy.retry_base_s == 0.01 and policy.max_attempts == 3
    assert policy.lease_s == 3.0  # never shorter than the timeout plus a second


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
     "::1", "fe80::1", "fc00::1", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_private_loopback_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_global_addresses_are_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    "url",
    ["http://example.com/h", "ftp://example.com/h", "https://user:pw@example.com/h", "https:///h",
     "https://127.0.0.1/h", "https://[::1]:8443/h", "https://10.0.0.5/h", "https://example.com:notaport/h"],
)  # fmt: skip
def test_urls_that_are_refused_without_private_targets(url: str) -> None:
    with pytest.raises(TargetBlockedError):
        check_url(url, allow_private=False)


def test_private_targets_allowed_take_http_and_loopback() -> None:
    check_url("http://127.0.0.1:9000/h", allow_private=True)
    check_url("https://example.com/h", allow_private=False)


async def test_the_target_is_the_checked_ip_with_the_name_kept_for_host_and_sni() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return {"hooks.example.com": ["10.0.0.1", "93.184.216.34"]}[host]

    target = await resolve_target(
        "https://hooks.example.com:8443/a?b=1", allow_private=False, resolver=resolver
    )
    assert target.ip == "93.184.216.34"  # the private address is skipped
    assert target.url == "https://93.184.216.34:8443/a?b=1"
    assert (target.host, target.host_header) == ("hooks.example.com", "hooks.example.com:8443")

    async def rebinding(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with pytest.raises(TargetBlockedError):
        await resolve_target("https://innocent.example.com/h", allow_private=False, resolver=rebinding)
    v6 = await resolve_target("http://[::1]:81/h", allow_private=True, resolver=rebinding)
    assert v6.url == "http://[::1]:81/h" and v6.host_header == "[::1]:81"
