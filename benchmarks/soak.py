"""Soak: minutes of mixed REST + WebSocket load on ``orchestra serve``'s request path; memory must stay flat.

One Ray instance as ``orchestra serve`` runs it (HAProxy + direct ingress, loopback, embedded Redis; see
``benchmarks._instance``), the ``bench-solo`` team with a 10 ms scripted model. Load from the driver, all
the time new sessions: ``REST_WORKERS`` closed-loop ``POST /chat/v2/chat`` clients (no session id: every
chat opens a session) and ``WS_WORKERS`` clients that open a WebSocket on a new session, send two chats,
close, and start over. After a warm-up the RSS of every process of the instance (Ray's actors, the
HAProxy manager and HAProxy, raylet, GCS, redis-server, ...) is sampled every ``SAMPLE_S``; errors (any
non-200, any WebSocket failure) are counted.

Flat means: the serving processes' total RSS grows by at most ``FLAT_TOTAL_PCT`` % from the first sample
to the last, and no one process by more than ``FLAT_PROCESS_MB`` MB. redis-server is reported apart: it
holds every session the soak made (data, not a leak), so it grows with them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from ._common import Progress, machine
from .w3 import BENCH_TEAM, bench_config, load_average

__all__ = ["plot_soak", "run_soak", "soak_instance_config", "soak_prepare"]

REST_WORKERS = 4
WS_WORKERS = 2
WARMUP_S = 30.0
SAMPLE_S = 15.0
FLAT_TOTAL_PCT = 5.0
FLAT_PROCESS_MB = 25.0
LATENCY_S = 0.01


def soak_instance_config() -> tuple[dict[str, Any], dict[str, str]]:
    raw = bench_config(f"bench-soak-{uuid.uuid4().hex[:8]}", latency_s=LATENCY_S, tokens_per_s=0.0)
    return raw, {"ORCHESTRA_SCRIPTED_LATENCY_S": str(LATENCY_S), "ORCHESTRA_SCRIPTED_TOKENS_PER_S": "0"}


def soak_prepare(served: Any) -> dict[str, Any]:
    return {}


def _rss_by_process(root: int) -> dict[str, float]:
    """``name[pid]`` -> RSS MB for the process tree under ``root`` (/proc)."""
    from .w3 import _cpu_snapshot

    out: dict[str, float] = {}
    for pid, (name, _) in _cpu_snapshot(root).items():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out[f"{name}[{pid}]"] = int(line.split()[1]) / 1024
    return out


class _Counts:
    def __init__(self) -> None:
        self.rest_ok = self.rest_errors = self.ws_chats = self.ws_errors = self.sessions = 0
        self.error_samples: list[str] = []

    def error(self, kind: str, detail: str) -> None:
        if kind == "rest":
            self.rest_errors += 1
        else:
            self.ws_errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail[:200]}")


async def _rest_worker(base: str, key: str, stop: float, counts: _Counts) -> None:
    import httpx

    body = {"message": "Summarise the actor model", "optimization_mode": "lite", "swarm_type": BENCH_TEAM}
    async with httpx.AsyncClient(timeout=30.0, headers={"Authorization": f"Bearer {key}"}) as client:
        while time.monotonic() < stop:
            try:
                r = await client.post(f"{base}/chat/v2/chat", json=body)
            except httpx.HTTPError as e:
                counts.error("rest", repr(e))
                continue
            if r.status_code == 200:
                counts.rest_ok += 1
                counts.sessions += 1
            else:
                counts.error("rest", f"{r.status_code} {r.text}")


async def _ws_worker(ws_base: str, key: str, index: int, stop: float, counts: _Counts) -> None:
    from websockets.asyncio.client import connect

    while time.monotonic() < stop:
        session = f"soak-{uuid.uuid4().hex[:12]}"
        try:
            async with connect(
                f"{ws_base}/chat/ws/soak-{index}/{session}",
                additional_headers={"Authorization": f"Bearer {key}"},
                max_size=None,
            ) as ws:
                json.loads(await ws.recv())  # connected
                counts.sessions += 1
                for turn in range(2):
                    rid = f"{session}-{turn}"
                    data = {"message": "Write a line", "swarm_type": BENCH_TEAM, "optimization_mode": "lite"}
                    await ws.send(json.dumps({"type": "chat", "data": {**data, "request_id": rid}}))
                    while True:
                        frame = json.loads(await ws.recv())
                        d = frame.get("data", {})
                        if frame["type"] == "chat" and d.get("request_id") == rid:
                            counts.ws_chats += 1
                            break
                        if frame["type"] == "control" and d.get("action") == "error":
                            counts.error("ws", json.dumps(d))
                            break
        except Exception as e:  # any failure of the connection counts, then a new one starts
            counts.error("ws", repr(e))
            await asyncio.sleep(0.5)


async def _load(info: dict[str, Any], seconds: float, counts: _Counts) -> None:
    base, ws_base = f"http://127.0.0.1:{info['port']}", f"ws://127.0.0.1:{info['port']}"
    stop = time.monotonic() + seconds
    await asyncio.gather(
        *(_rest_worker(base, info["key"], stop, counts) for _ in range(REST_WORKERS)),
        *(_ws_worker(ws_base, info["key"], i, stop, counts) for i in range(WS_WORKERS)),
    )


def run_soak(minutes: float, progress: Progress | None = None) -> dict[str, Any]:
    import threading

    from ._instance import start_instances

    started = time.perf_counter()
    load_before = load_average()
    measured_s = max(SAMPLE_S * 2, minutes * 60 - WARMUP_S)
    counts = _Counts()
    samples: list[dict[str, Any]] = []
    (inst,) = start_instances("soak", ["haproxy"])
    try:
        if progress:
            progress.step("soak instance up")
        total_s = WARMUP_S + measured_s
        loader = threading.Thread(target=asyncio.run, args=(_load(inst.info, total_s, counts),), daemon=True)
        t0 = time.monotonic()
        loader.start()
        time.sleep(WARMUP_S)
        while True:
            elapsed = time.monotonic() - t0
            samples.append(
                {
                    "t_s": round(elapsed, 1),
                    "rss_mb": _rss_by_process(inst.pid),
                    "rest_ok": counts.rest_ok,
                    "ws_chats": counts.ws_chats,
                    "errors": counts.rest_errors + counts.ws_errors,
                }
            )
            if progress:
                total = sum(samples[-1]["rss_mb"].values())
                progress.step(f"soak t={elapsed:.0f}s RSS {total:.0f} MB, {counts.rest_ok} REST ok")
            if elapsed >= total_s - 1:
                break
            time.sleep(min(SAMPLE_S, max(0.0, total_s - (time.monotonic() - t0))))
        loader.join(60)
    finally:
        inst.stop()
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    per_process = {
        name: {
            "start_mb": round(first[name], 1),
            "end_mb": round(last[name], 1),
            "delta_mb": round(last[name] - first[name], 1),
        }
        for name in sorted(first)
        if name in last
    }
    serving = {k: v for k, v in per_process.items() if not k.startswith("redis-server")}
    start_total = sum(v["start_mb"] for v in serving.values())
    end_total = sum(v["end_mb"] for v in serving.values())
    growth_pct = (end_total - start_total) / start_total * 100 if start_total else float("nan")
    worst = max(serving.items(), key=lambda kv: kv[1]["delta_mb"]) if serving else ("", {"delta_mb": 0.0})
    errors = counts.rest_errors + counts.ws_errors
    flat = growth_pct <= FLAT_TOTAL_PCT and worst[1]["delta_mb"] <= FLAT_PROCESS_MB
    duration = samples[-1]["t_s"] - samples[0]["t_s"]
    chats = (samples[-1]["rest_ok"] + samples[-1]["ws_chats"]) - (
        samples[0]["rest_ok"] + samples[0]["ws_chats"]
    )
    return {
        "workload": "soak",
        "machine": machine(),
        "load_average": {"before": load_before, "after": load_average()},
        "config": {
            "setting": "haproxy (orchestra serve's default request path), loopback",
            "rest_workers": REST_WORKERS,
            "ws_workers": WS_WORKERS,
            "ws": "new session per connection, 2 chats, close, again",
            "rest": "POST /chat/v2/chat without session id (a new session every chat)",
            "scripted_latency_s": LATENCY_S,
            "warmup_s": WARMUP_S,
            "measured_s": round(duration, 1),
            "sample_s": SAMPLE_S,
            "flat": f"serving processes' total RSS +{FLAT_TOTAL_PCT}% at most, "
            f"no process +{FLAT_PROCESS_MB} MB; redis-server apart (it stores the sessions)",
        },
        "chats": {
            "rest_ok": counts.rest_ok,
            "ws_chats": counts.ws_chats,
            "sessions": counts.sessions,
            "chats_per_s_measured": round(chats / duration, 1) if duration else 0.0,
        },
        "errors": {"rest": counts.rest_errors, "ws": counts.ws_errors, "samples": counts.error_samples},
        "rss": {
            "per_process": per_process,
            "serving_start_mb": round(start_total, 1),
            "serving_end_mb": round(end_total, 1),
            "serving_growth_pct": round(growth_pct, 2),
            "largest_process_growth": {"process": worst[0], "delta_mb": worst[1]["delta_mb"]},
            "redis_server": {k: v for k, v in per_process.items() if k.startswith("redis-server")},
        },
        "samples": samples,
        "targets": {
            "serving_growth_pct_max": FLAT_TOTAL_PCT,
            "process_growth_mb_max": FLAT_PROCESS_MB,
            "serving_growth_pct": round(growth_pct, 2),
            "largest_process_growth_mb": worst[1]["delta_mb"],
            "errors": errors,
            "flat_met": flat,
            "errors_met": errors == 0,
            "met": flat and errors == 0,
        },
        "elapsed_s": time.perf_counter() - started,
    }


def plot_soak(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Total RSS of the serving processes and redis-server over the soak, and chats served."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    samples = result["samples"]
    t = [s["t_s"] for s in samples]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    first = samples[0]["rss_mb"]
    serving = [sum(v for k, v in s["rss_mb"].items() if not k.startswith("redis-server")) for s in samples]
    ax1.plot(t, [v - serving[0] for v in serving], "o-", color="black", label="all serving processes")
    growers = sorted(result["rss"]["per_process"].items(), key=lambda kv: -kv[1]["delta_mb"])[:5]
    for name, _ in growers:
        ax1.plot(t, [s["rss_mb"].get(name, float("nan")) - first[name] for s in samples], ".--", label=name)
    ax1.axhline(
        FLAT_PROCESS_MB, color="red", linestyle=":", label=f"per-process limit +{FLAT_PROCESS_MB:.0f} MB"
    )
    ax1.set_xlabel("s since load started")
    ax1.set_ylabel("RSS growth since the first sample (MB)")
    ax1.set_title(
        f"soak: serving RSS {result['rss']['serving_start_mb']:.0f} MB, "
        f"{result['rss']['serving_growth_pct']:+.1f} %; largest growers"
    )
    ax1.legend(fontsize=7)
    ax2.plot(t, [s["rest_ok"] + s["ws_chats"] for s in samples], "o-", label="chats answered")
    ax2.plot(t, [s["errors"] for s in samples], "x-", color="red", label="errors")
    ax2.set_xlabel("s since load started")
    ax2.set_title(f"{result['chats']['chats_per_s_measured']} chats/s; {result['targets']['errors']} errors")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = outdir / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def summary_line(result: dict[str, Any]) -> str:
    r, t = result["rss"], result["targets"]
    return (
        f"soak {result['config']['measured_s']:.0f} s: {result['chats']['chats_per_s_measured']} chats/s, "
        f"{t['errors']} errors; serving RSS {r['serving_start_mb']:.0f} -> {r['serving_end_mb']:.0f} MB "
        f"({r['serving_growth_pct']:+.1f} %), largest +{t['largest_process_growth_mb']} MB "
        f"({r['largest_process_growth']['process']}); flat: {t['flat_met']}"
    )
