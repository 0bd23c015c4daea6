"""W1 ``debate-3x2``: swarm throughput against the plain-asyncio floor and autogen-core.

Team: 3 debaters x 2 rounds (parallel within a round, each seeing the previous round's proposals), then a
judge: 7 LLM calls per session, critical path 3. LLM: the scripted provider with a fixed latency LAT per
call and ~50 completion tokens. Load: C sessions in flight (closed loop), total_factor*C sessions after a
warm-up of C. Ideal sessions/s = C / (3*LAT); efficiency = measured / ideal.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ._common import Progress, percentile, start_ray

__all__ = ["AUTOGEN_VENV", "plot_w1", "run_w1"]

ROOT = Path(__file__).resolve().parent.parent
AUTOGEN_VENV = ROOT / ".venv-autogen"
WORDS = 50


def _config(lat: float) -> Any:
    import orchestra

    raw = yaml.safe_load((ROOT / "configs" / "swarms.yaml").read_text())
    raw["providers"]["scripted"].update(latency_s=lat, tokens_per_s=0, completion_tokens=WORDS)
    team = copy.deepcopy(raw["teams"]["coding-debate"])
    team["description"] = "W1: 3 debaters x 2 rounds + judge"
    team["modes"] = {m: {"agents": {"coder": 3}, "rounds": 2} for m in orchestra.MODES}
    raw["teams"]["w1-debate"] = team
    return orchestra.load_config(raw)


async def _closed_loop(c: int, total: int, session: Any) -> tuple[float, list[float]]:
    await asyncio.gather(*(session(-i - 1) for i in range(c)))  # warm-up: actors, caches, connections
    todo = iter(range(total))
    latencies: list[float] = []

    async def worker() -> None:
        for i in todo:
            t = time.perf_counter()
            await session(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    return time.perf_counter() - start, latencies


def _orchestra(lat: float, c: int, total: int) -> tuple[float, list[float]]:
    import orchestra

    start_ray()
    # Env overrides would win over the config's timing; this benchmark sets the timing itself.
    for var in ("ORCHESTRA_SCRIPTED_LATENCY_S", "ORCHESTRA_SCRIPTED_TOKENS_PER_S"):
        os.environ.pop(var, None)
    handle = orchestra.connect(config=_config(lat), namespace=f"bench-w1-{lat:g}")
    handle.warm_up(["w1-debate"])

    async def session(i: int) -> None:
        await handle.achat(f"W1 task {i}", swarm_type="w1-debate", optimization_mode="balanced")

    try:
        return asyncio.run(_closed_loop(c, total, session))
    finally:
        handle.shutdown()


def _asyncio(lat: float, c: int, total: int) -> tuple[float, list[float]]:
    """The floor: the same workload as bare coroutines in one process, no runtime at all."""

    async def call(name: str, round_: int, inputs: Sequence[str]) -> str:
        await asyncio.sleep(lat)
        return f"{name} round {round_}: " + " ".join(f"w{i}" for i in range(WORDS))

    async def session(i: int) -> None:
        latest: list[str] = []
        for round_ in (1, 2):
            latest = list(await asyncio.gather(*(call(f"coder-{d}", round_, latest) for d in (1, 2, 3))))
        await call("judge", 3, latest)

    return asyncio.run(_closed_loop(c, total, session))


def ensure_autogen_venv() -> Path | None:
    """A separate venv with autogen-core (its protobuf pin conflicts with Ray's). None if it can't be made."""
    python = AUTOGEN_VENV / "bin" / "python"
    if python.exists():
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(AUTOGEN_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "autogen-core>=0.4,<0.8"], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"autogen-core baseline unavailable: {e}", file=sys.stderr)
        return None
    return python


def _autogen(lat: float, c: int, total: int) -> tuple[float, list[float]] | None:
    python = ensure_autogen_venv()
    if python is None:
        return None
    factor = max(1, total // c)
    out = subprocess.run(
        [
            str(python),
            str(Path(__file__).with_name("_autogen_w1.py")),
            str(lat),
            str(c),
            str(factor),
            str(WORDS),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return float(data["elapsed_s"]), [float(x) for x in data["latencies"]]


IMPLS = {"orchestra": _orchestra, "asyncio": _asyncio, "autogen": _autogen}


def run_w1(
    lats: Sequence[float] = (0.1, 1.0),
    cs: Sequence[int] = (16, 64, 256),
    impls: Sequence[str] = ("orchestra", "asyncio", "autogen"),
    total_factor: int = 10,
    progress: Progress | None = None,
    skip: Sequence[tuple[float, int]] = (),
) -> dict[str, Any]:
    """The grid lats x cs (minus ``skip`` points) for each implementation; see the module docstring."""
    points: list[dict[str, Any]] = []
    for lat in lats:
        for c in cs:
            if (lat, c) in skip:
                continue
            for impl in impls:
                total = total_factor * c
                measured = IMPLS[impl](lat, c, total)
                if progress is not None:
                    progress.step(f"W1 {impl} LAT={lat:g} C={c}")
                if measured is None:
                    continue
                elapsed, latencies = measured
                ideal = c / (3 * lat)
                rate = total / elapsed
                points.append(
                    {
                        "impl": impl,
                        "lat": lat,
                        "c": c,
                        "sessions": total,
                        "elapsed_s": round(elapsed, 4),
                        "sessions_per_s": round(rate, 2),
                        "ideal_per_s": round(ideal, 2),
                        "efficiency": round(rate / ideal, 4),
                        "p50_s": round(percentile(latencies, 50), 4),
                        "p99_s": round(percentile(latencies, 99), 4),
                    }
                )
    ratios = []
    for lat in lats:
        for c in cs:
            ours = _find(points, "orchestra", lat, c)
            if ours is None:
                continue
            entry: dict[str, Any] = {"lat": lat, "c": c, "efficiency": ours["efficiency"]}
            for base in ("asyncio", "autogen"):
                other = _find(points, base, lat, c)
                if other is not None:
                    entry[f"vs_{base}"] = round(ours["sessions_per_s"] / other["sessions_per_s"], 3)
            ratios.append(entry)
    targets = []
    slow = next((r for r in ratios if r["lat"] == 1.0 and r["c"] == 256), None)
    if slow is not None:
        targets.append(
            {
                "target": "LAT=1 C=256 efficiency >= 0.97",
                "value": slow["efficiency"],
                "met": slow["efficiency"] >= 0.97,
            }
        )
    fast = next((r for r in ratios if r["lat"] == 0.1 and r["c"] == 256 and "vs_autogen" in r), None)
    if fast is not None:
        targets.append(
            {
                "target": "LAT=0.1 C=256 sessions/s >= autogen-core",
                "value": fast["vs_autogen"],
                "met": fast["vs_autogen"] >= 1.0,
            }
        )
    return {"workload": "W1", "points": points, "ratios": ratios, "targets": targets}


def _find(points: list[dict[str, Any]], impl: str, lat: float, c: int) -> dict[str, Any] | None:
    return next((p for p in points if p["impl"] == impl and p["lat"] == lat and p["c"] == c), None)


def plot_w1(result: dict[str, Any], outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    points = result["points"]
    lats = sorted({p["lat"] for p in points})
    fig, axes = plt.subplots(2, len(lats), figsize=(5.5 * len(lats), 8), squeeze=False)
    for col, lat in enumerate(lats):
        ax_rate, ax_eff = axes[0][col], axes[1][col]
        for impl in sorted({p["impl"] for p in points}):
            series = sorted(
                (p for p in points if p["impl"] == impl and p["lat"] == lat), key=lambda p: p["c"]
            )
            if not series:
                continue
            cs = [p["c"] for p in series]
            ax_rate.plot(cs, [p["sessions_per_s"] for p in series], marker="o", label=impl)
            ax_eff.plot(cs, [p["efficiency"] for p in series], marker="o", label=impl)
        cs_all = sorted({p["c"] for p in points if p["lat"] == lat})
        ax_rate.plot(cs_all, [c / (3 * lat) for c in cs_all], "k--", label="ideal C/(3·LAT)")
        for ax in (ax_rate, ax_eff):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("sessions in flight (C)")
            ax.grid(alpha=0.3)
            ax.legend()
        ax_rate.set_title(f"W1 debate-3x2, LAT={lat:g}s: throughput")
        ax_rate.set_ylabel("sessions/s")
        ax_eff.set_title(f"W1 LAT={lat:g}s: efficiency (measured/ideal)")
        ax_eff.set_ylabel("efficiency")
        ax_eff.axhline(1.0, color="k", lw=0.5)
    fig.tight_layout()
    path = outdir / "w1_throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels, p50, p99 = [], [], []
    for p in sorted(points, key=lambda p: (p["lat"], p["c"], p["impl"])):
        labels.append(f"{p['impl']}\nL{p['lat']:g} C{p['c']}")
        p50.append(p["p50_s"])
        p99.append(p["p99_s"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax.set_xticks(list(xs), labels, fontsize=6, rotation=90)
    ax.set_ylabel("session latency (s)")
    ax.set_title("W1 session latency percentiles")
    ax.legend()
    fig.tight_layout()
    path2 = outdir / "w1_latency.png"
    fig.savefig(path2, dpi=110)
    plt.close(fig)
    return [path, path2]
