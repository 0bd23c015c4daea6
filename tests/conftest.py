"""Shared fixtures. Unit tests never start Ray; integration tests share one Ray for the session."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Read by Serve's HTTP proxy, which inherits this environment when a test starts Ray.
os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = "orchestra.serving._proxy:middlewares"
# Before any Ray starts, so the proxy has it too: a stalled body is answered 408 after 2 s (not 10).
os.environ.setdefault("ORCHESTRA_BODY_IDLE_S", "2")
# Tests must never reach a real provider because a developer has a key in the environment.
os.environ["ORCHESTRA_LLM_PROVIDER"] = "scripted"

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.redis_fixture"]


_ORDER = {"unit": 0, "providers": 1, "integration": 2}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fast, Ray-free tests first: a failure there shows before Ray starts."""
    items.sort(key=lambda item: _ORDER.get(_suite(Path(str(item.fspath))), 3))


def _suite(path: Path) -> str:
    """The folder right under tests/ (``unit`` for tests/unit/providers/test_retry.py)."""
    tests = ROOT / "tests"
    return path.relative_to(tests).parts[0] if path.is_relative_to(tests) else ""


@pytest.fixture(scope="session")
def raw_config() -> dict[str, Any]:
    """The shipped configs/swarms.yaml as a dict (copy before changing)."""
    return yaml.safe_load((ROOT / "configs" / "swarms.yaml").read_text())


def fast_raw_config(raw: dict[str, Any], latency_s: float = 0.0, tokens_per_s: float = 0.0) -> dict[str, Any]:
    cfg = copy.deepcopy(raw)
    cfg["providers"]["scripted"].update({"latency_s": latency_s, "tokens_per_s": tokens_per_s})
    return cfg
