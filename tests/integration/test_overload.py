"""Noisy neighbours: one key bursting far over its limit must not cost another key anything but time."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from .conftest import ServeInfo


async def test_a_key_bursting_500_requests_leaves_another_keys_requests_unharmed(
    serve_app: ServeInfo,
) -> None:
    noisy, quiet = serve_app.auth(serve_app.key(92)), serve_app.auth(serve_app.key(93))
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
    async with httpx.AsyncClient(base_url=serve_app.base_url, timeout=120, limits=limits) as client:
        burst = [client.get("/chat/v2/sessions/none", headers=noisy) for _ in range(500)]
        others = [
            client.post(
                "/chat/v2/chat",
                json={"message": f"quiet {i}", "optimization_mode": "lite", "session_id": f"quiet-{i}"},
                headers=quiet,
            )
            for i in range(10)
        ]
        started = time.monotonic()
        responses = await asyncio.gather(*burst, *others)
        elapsed = time.monotonic() - started
    burst_statuses = Counter(r.status_code for r in responses[:500])
    quiet_responses = responses[500:]
    # The burst is answered as its bucket allows (404: the session does not exist) or refused with 429 ...
    assert set(burst_statuses) <= {200, 404, 429}, burst_statuses
    # ... all but what the bucket held (50) and refilled meanwhile (one per 60 ms)
    assert burst_statuses[404] <= 50 + elapsed / 0.06 + 2 and burst_statuses[429] >= 1, burst_statuses
    for r in responses[:500]:
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "RATE_LIMIT_ERROR" and int(r.headers["Retry-After"]) >= 1
    # ... and the other key's chats all succeed.
    assert [r.status_code for r in quiet_responses] == [200] * 10, [r.text for r in quiet_responses]
