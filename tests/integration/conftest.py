"""One real local Ray for the whole test session, shared by every integration test."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from typing import Any

import pytest

import orchestra

from ..conftest import fast_raw_config

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    import ray

    if not ray.is_initialized():
        # 2 cores here: every actor is created with num_cpus=0 (configs), so the count is not a limit.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def integration_raw_config(raw_config: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(fast_raw_config(raw_config, latency_s=0.02, tokens_per_s=3000))
    # A team that cannot finish within its deadline, for the timeout test.
    raw["teams"]["slow-debate"] = {
        **copy.deepcopy(raw["teams"]["coding-debate"]),
        "description": "20 rounds against a 0.25 s deadline",
        "modes": {m: {"agents": {"coder": 2}, "rounds": 20, "deadline_s": 0.25} for m in orchestra.MODES},
    }
    return raw


@pytest.fixture(scope="session")
def orchestra_handle(ray_session: Any, raw_config: dict[str, Any]) -> Any:
    """The orchestrator of namespace ``orchestra-test`` with every team's agent actors started."""
    cfg = orchestra.load_config(integration_raw_config(raw_config))
    handle = orchestra.connect(config=cfg, namespace="orchestra-test")
    handle.warm_up()
    return handle
