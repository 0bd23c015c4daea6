"""A cancel that arrives before its run (the client left while the chat was on its way) still stops it."""

from __future__ import annotations

import pytest

import orchestra
from orchestra.errors import RunCancelledError
from tests.unit.conftest import make_engine


async def test_a_run_cancelled_before_it_arrived_is_refused_and_another_tenants_is_not(
    fast_config: orchestra.OrchestraConfig,
) -> None:
    engine, _ = make_engine(fast_config)
    assert await engine.cancel("alice", "r-early") is False  # not running here (yet)
    with pytest.raises(RunCancelledError):
        await engine.run(orchestra.RunRequest(message="hi", tenant="alice", run_id="r-early"))
    # the same id of another tenant, and the same run sent again, are not affected
    await engine.cancel("alice", "r-2")
    result = await engine.run(orchestra.RunRequest(message="hi", tenant="bob", run_id="r-2"))
    assert result.response
    again = await engine.run(orchestra.RunRequest(message="hi", tenant="alice", run_id="r-early"))
    assert again.response
