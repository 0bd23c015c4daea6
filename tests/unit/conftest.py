from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest

import orchestra
import orchestra.engine
import orchestra.providers
from orchestra.providers import CompletionRequest, ScriptedProvider, ScriptedSettings, StreamItem

from ..conftest import fast_raw_config


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


UNIT_KEY_HASH_SECRET = "unit-test-key-hash-secret-" + "0" * 16


@pytest.fixture(autouse=True)
def _key_hash_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API key hashing secret every ``ApiKeys`` built without one reads (as on a configured server)."""
    monkeypatch.setenv("ORCHESTRA_KEY_HASH_SECRET", UNIT_KEY_HASH_SECRET)


@pytest.fixture(autouse=True)
def _no_ray() -> None:
    """Unit tests must stay Ray-free: fail loudly if one started Ray."""
    import sys

    before = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    yield
    ray = sys.modules.get("ray")
    assert before or ray is None or not ray.is_initialized(), "a unit test started Ray"


class SpyProvider:
    """A real scripted provider that also keeps every request it answered (to assert on prompts)."""

    def __init__(self, settings: ScriptedSettings) -> None:
        self.inner = ScriptedProvider(settings)
        self.requests: list[CompletionRequest] = []

    @property
    def name(self) -> str:
        return "scripted"

    async def complete(self, request: CompletionRequest) -> orchestra.providers.Completion:
        self.requests.append(request)
        return await self.inner.complete(request)

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[StreamItem, None]:
        self.requests.append(request)
        async for item in self.inner.stream(request):
            yield item

    async def aclose(self) -> None:
        return None


@pytest.fixture
def fast_config(raw_config: dict[str, Any]) -> orchestra.OrchestraConfig:
    return orchestra.load_config(fast_raw_config(raw_config))


def make_engine(
    config: orchestra.OrchestraConfig, settings: ScriptedSettings | None = None
) -> tuple[orchestra.engine.Engine, SpyProvider]:
    spy = SpyProvider(settings or ScriptedSettings(latency_s=0.0, tokens_per_s=0.0))
    return orchestra.engine.Engine(config, orchestra.engine.LocalRuntime(config, spy), "scripted"), spy
