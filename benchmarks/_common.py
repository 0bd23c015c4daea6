"""Shared helpers: machine facts, percentiles, progress, local Ray."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

__all__ = ["Progress", "machine", "percentile", "start_ray", "summarize_latencies", "timer"]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "commit": commit,
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize_latencies(values: list[float]) -> dict[str, float]:
    return {
        "p50_s": percentile(values, 50),
        "p90_s": percentile(values, 90),
        "p99_s": percentile(values, 99),
        "mean_s": statistics.fmean(values) if values else float("nan"),
    }


@contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t: ...`` then ``t[0]`` is the elapsed seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


class Progress:
    """A progress bar over the benchmark's steps (tqdm when installed, plain lines otherwise)."""

    def __init__(self, total: int, description: str = "bench", enabled: bool = True) -> None:
        self._bar: Any = None
        self._enabled = enabled
        self._done = 0
        self._total = total
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc=description, unit="step", file=sys.stderr)
            except ImportError:
                pass

    def step(self, label: str) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.set_postfix_str(label[:60])
            self._bar.update(1)
        elif self._enabled:
            print(f"[{self._done}/{self._total}] {label}", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def wrap(self, items: Iterable[Any], label: str) -> Iterator[Any]:
        for item in items:
            yield item
            self.step(f"{label} {item}")


def start_ray(address: str | None = None) -> Any:
    """A local Ray sized for this machine (or the one in RAY_ADDRESS; ``"local"``: always a new one)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH", "orchestra.serving._proxy:middlewares")
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    return ray
