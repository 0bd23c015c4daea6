"""Shedding overload fairly: a replica at capacity refuses the key holding the most, not the newcomer."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import orchestra
from orchestra.errors import ServiceUnavailableError
from orchestra.serving._admission import Admission
from orchestra.serving._auth import ApiKeys
from orchestra.serving._gateway import Gateway
from orchestra.serving._metrics import Metrics
from orchestra.stores import InMemoryKeyStore, LocalTokenBucket
from tests.unit.conftest import make_engine

from .test_gateway import _app


def test_below_capacity_everyone_is_admitted_and_leaving_frees_the_slot() -> None:
    admission = Admission(3)
    for key in ("a", "a", "b"):
        admission.enter(key)
    assert admission.in_flight == 3
    admission.leave("a")
    admission.enter("c")
    assert admission.in_flight == 3
    for key in ("a", "b", "c"):
        admission.leave(key)
    assert admission.in_flight == 0
    admission.leave("never-entered")  # harmless
    assert admission.in_flight == 0


def test_at_capacity_the_key_holding_the_most_is_shed_and_a_quiet_key_still_gets_in() -> None:
    admission = Admission(4)
    for _ in range(4):
        admission.enter("noisy")
    with pytest.raises(ServiceUnavailableError) as shed:
        admission.enter("noisy")
    assert shed.value.http_status == 503 and shed.value.retry_after == 1
    admission.enter("quiet")  # under its fair share (4 // 2 keys = 2)
    admission.enter("quiet")
    with pytest.raises(ServiceUnavailableError):
        admission.enter("quiet")  # now it holds its share too
    for i in range(2):
        admission.enter(f"newcomer-{i}")  # each new key gets at least one, up to twice the capacity
    with pytest.raises(ServiceUnavailableError):
        admission.enter("newcomer-2")
    assert admission.in_flight == 8


async def test_the_gateway_sheds_the_flooding_key_and_frees_every_slot(
    fast_config: orchestra.OrchestraConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCHESTRA_MAX_INFLIGHT", "4")
    monkeypatch.setenv("ORCHESTRA_SCRIPTED_LATENCY_S", "0.3")  # chats that stay in flight a while
    engine, _ = make_engine(fast_config)
    keys = ApiKeys(InMemoryKeyStore())
    noisy, _ = await keys.create(tenant="noisy")
    quiet, _ = await keys.create(tenant="quiet")
    gw = Gateway(
        engine,
        keys=keys,
        limiter=LocalTokenBucket(capacity=1000, refill_per_s=1000),
        metrics=Metrics(),
        teams=list(fast_config.teams),
        probes={},
        version="test",
    )
    body: dict[str, Any] = {"message": "Write a haiku", "optimization_mode": "lite"}
    transport = httpx.ASGITransport(app=_app(gw))
    async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:

        def chat(key: str) -> Any:
            return client.post("/chat/v2/chat", json=body, headers={"Authorization": f"Bearer {key}"})

        flood = [asyncio.ensure_future(chat(noisy)) for _ in range(8)]
        await asyncio.sleep(0.05)  # the flood is in flight
        assert (await chat(quiet)).status_code == 200
        statuses = sorted(r.status_code for r in await asyncio.gather(*flood))
    assert statuses.count(200) >= 4 and set(statuses) <= {200, 503}
    assert statuses.count(503) >= 1
    assert gw.admission.in_flight == 0  # no slot leaked, whatever the outcome
