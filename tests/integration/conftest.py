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
# The hashing secret of the session's Serve app (tests that build their own ApiKeys use it too).
KEY_HASH_SECRET = "integration-test-key-hash-secret-" + "0" * 16


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
    # A wide batch window, so chats sent a few ms apart while one is in flight surely share a call.
    raw["runtime"]["serve_batch_window_s"] = 0.05
    # A team that runs for about a second, for tests that leave a run midway.
    raw["teams"]["long-debate"] = {
        **copy.deepcopy(raw["teams"]["coding-debate"]),
        "description": "20 rounds within a 30 s deadline",
        "modes": {m: {"agents": {"coder": 2}, "rounds": 20, "deadline_s": 30} for m in orchestra.MODES},
    }
    return raw


@pytest.fixture(scope="session")
def orchestra_handle(ray_session: Any, raw_config: dict[str, Any]) -> Any:
    """The orchestrator of namespace ``orchestra-test`` with every team's agent actors started."""
    cfg = orchestra.load_config(integration_raw_config(raw_config))
    handle = orchestra.connect(config=cfg, namespace="orchestra-test")
    handle.warm_up()
    return handle


# Provider keys the app is given (the scripted provider is used all the same): they must never show.
PROVIDER_SECRETS = {
    "OPENAI_API_KEY": "sk-orchestra-test-provider-secret-0000000000000000",
    "ANTHROPIC_API_KEY": "sk-ant-orchestra-test-provider-secret-00000000000",
}

# The one origin the test app lets browsers call it from.
CORS_ORIGIN = "http://allowed.example:8080"


class ServeInfo:
    """The running Serve app of the test session and the keys it knows."""

    def __init__(self, base_url: str, ws_url: str) -> None:
        self.base_url = base_url
        self.ws_url = ws_url
        self.chat_key = "test-chat-key-0001"
        self.metrics_key = "test-metrics-key-0001"
        self.other_key = "test-other-tenant-key-0001"
        self.burst_key = "test-burst-key-0001"
        self.fuzz_key = "test-fuzz-key-00001"  # chat + metrics: every route answers it
        # one key per test that sends many requests, so no test eats another's rate-limit budget
        self.keys = [f"test-key-{i:02d}-abcdef" for i in range(130)]

    def key(self, i: int) -> str:
        return self.keys[i]

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.chat_key}"}


@pytest.fixture(scope="session")
def serve_app(
    ray_session: Any, redis_server: str, raw_config: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeInfo]:
    """The whole application on real Ray Serve over real HTTP, with a real redis-server (one per session)."""
    from ray import serve

    import serve_app as app_module
    from orchestra.cli._embedded import free_port

    config_path = tmp_path_factory.mktemp("serve") / "swarms.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(integration_raw_config(raw_config)))
    info = ServeInfo("", "")
    env = {
        "ORCHESTRA_REDIS_URL": redis_server,
        "ORCHESTRA_KEY_HASH_SECRET": KEY_HASH_SECRET,
        "ORCHESTRA_CONFIG": str(config_path),
        "ORCHESTRA_LLM_PROVIDER": "scripted",
        "ORCHESTRA_API_KEYS": ",".join(
            [
                f"{info.chat_key}:chat",
                f"{info.metrics_key}:chat+metrics",
                f"{info.other_key}:chat",
                f"{info.burst_key}:chat",
                f"{info.fuzz_key}:chat+metrics",
                *info.keys,
            ]
        ),
        "RAY_USAGE_STATS_ENABLED": "0",
        "ORCHESTRA_CORS_ORIGINS": CORS_ORIGIN,
        **PROVIDER_SECRETS,
        # Webhooks to the tests' local receivers, on a schedule scaled down from seconds to tenths.
        "ORCHESTRA_WEBHOOK_ALLOW_PRIVATE": "1",
        "ORCHESTRA_WEBHOOK_RETRY_BASE_S": "0.05",
        "ORCHESTRA_WEBHOOK_RETRY_CAP_S": "0.5",
        "ORCHESTRA_WEBHOOK_TIMEOUT_S": "2",
        "ORCHESTRA_WEBHOOK_LEASE_S": "3",
        "ORCHESTRA_WEBHOOK_POLL_S": "0.05",
    }
    os.environ.update(env)
    options = app_module.deployment_options()
    # Two ingress replicas: /metrics must show the same totals through either.
    options["Ingress"]["autoscaling_config"] = {"min_replicas": 2, "max_replicas": 2}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app_module.build_app(options, env=env), name="orchestra", route_prefix="/")
    info.base_url = f"http://127.0.0.1:{port}"
    info.ws_url = f"ws://127.0.0.1:{port}"
    yield info
    serve.shutdown()
