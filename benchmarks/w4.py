"""W4 ``ws-stream``: streaming over ``WS /chat/ws/{client_id}/{session_id}`` (../shared/spec/benchmarks.md).

One and many WebSocket connections, each sending chat frames one after another; every answer is one long
turn of the one-agent ``bench-solo`` team (see ``benchmarks.w3``): the scripted model waits ``latency_s``
(its own time to first token), then streams ``completion_tokens`` words at ``tokens_per_s``. The agent
coalesces tokens into one stream frame per ``runtime.stream_coalesce_s`` (the first token goes out at once).

Per chat, measured at the client:
- tokens/s: whitespace words of the received ``token`` strings ÷ (last token frame - first token frame);
  also the stricter rate without the first frame's words (they were produced before the first frame);
- added time to first token: (first token frame - chat frame sent) - ``latency_s``.

Every connection's first chat is a warm-up (not counted); the whole stack runs as in W3 (auth, Redis,
rate limit set high, one replica per deployment). In the same run, a bare FastAPI WebSocket deployment
behind the same Serve proxy (its own app on ``/bare``) emulates the same stream (sleep ``latency_s``,
then the same words in frames every ``stream_coalesce_s`` at ``tokens_per_s``): its figures are Serve's
own floor for this workload, reported beside ours.
"""

# No `from __future__ import annotations`: FastAPI must see real types on the bare WebSocket route.

import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._common import Progress, machine, percentile
from .w3 import BENCH_TEAM, Served, bench_config, load_average

__all__ = ["plot_w4", "run_w4", "steps_w4", "w4_instance_config", "w4_prepare"]

TARGET_TOKENS_PER_S = 5000.0
TARGET_ADDED_TTFT_MS = 10.0
LATENCY_S = 0.05
TOKENS_PER_S = 50_000.0
COMPLETION_TOKENS = 2000
STREAM_COALESCE_S = 0.01  # the shipped default of runtime.stream_coalesce_s


# turns per connection stay under the per-connection WS limit (capacity 10, 100/min), warm-up included
@dataclass(frozen=True)
class Plan:
    connections: tuple[int, ...]
    turns: int  # measured chats per connection, after one warm-up chat


QUICK = Plan(connections=(1, 4, 16), turns=5)
FULL = Plan(connections=(1, 4, 16, 64), turns=8)


def steps_w4(quick: bool) -> int:
    """Progress steps ``run_w4`` takes: start-up, then four per connection count (2 settings x 2 apps)."""
    return 1 + 4 * len((QUICK if quick else FULL).connections)


def _bare_app() -> Any:
    """A bare FastAPI WebSocket ingress streaming like the scripted model, as its own Serve app.

    Built inside a function so Ray pickles the class by value: replicas need not import ``benchmarks``.
    """
    from fastapi import FastAPI, WebSocket, WebSocketDisconnect
    from ray import serve

    app = FastAPI()
    latency_s, rate, total, window = LATENCY_S, TOKENS_PER_S, COMPLETION_TOKENS, STREAM_COALESCE_S

    @serve.deployment(
        name="BareWs", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0}
    )
    @serve.ingress(app)
    class BareWs:
        @app.websocket("/chat/ws/{client_id}/{session_id}")
        async def ws(self, ws: WebSocket, client_id: str, session_id: str) -> None:
            await ws.accept()
            await ws.send_json({"type": "control", "data": {"action": "connected"}})
            try:
                while True:
                    frame = json.loads(await ws.receive_text())
                    rid = frame["data"]["request_id"]
                    await asyncio.sleep(latency_s)
                    started, sent = time.monotonic(), 0
                    while sent < total:  # the first word at once, then what the rate allows per window
                        due = min(total, max(sent + 1, int((time.monotonic() - started) * rate) + 1))
                        token = "word " * (due - sent)
                        data = {"request_id": rid, "event": "token", "token": token}
                        await ws.send_json({"type": "stream", "data": data})
                        sent = due
                        if sent < total:
                            await asyncio.sleep(window)
                    await ws.send_json({"type": "chat", "data": {"request_id": rid}})
            except WebSocketDisconnect:
                return

    return BareWs.bind()  # type: ignore[attr-defined]


def _frame(type_: str, data: dict[str, Any]) -> str:
    return json.dumps({"type": type_, "data": data, "timestamp": "2026-01-01T00:00:00Z"})


async def _chat(ws: Any, request_id: str, message: str) -> dict[str, Any]:
    """Send one chat frame and read until its answer; timings in perf_counter seconds."""
    sent = time.perf_counter()
    await ws.send(
        _frame(
            "chat",
            {
                "message": message,
                "swarm_type": BENCH_TEAM,
                "optimization_mode": "lite",
                "request_id": request_id,
            },
        )
    )
    first = last = 0.0
    words = first_words = frames = 0
    while True:
        frame = json.loads(await ws.recv())
        data = frame.get("data", {})
        if frame["type"] == "stream" and data.get("event") == "token":
            now = time.perf_counter()
            n = len(data["token"].split())
            if frames == 0:
                first, first_words = now, n
            last = now
            words += n
            frames += 1
        elif frame["type"] == "chat" and data.get("request_id") == request_id:
            break
        elif frame["type"] == "control" and data.get("action") == "error":
            raise RuntimeError(f"chat {request_id} failed: {data.get('error')}")
    span = last - first
    return {
        "ttft_s": first - sent,
        "added_ttft_ms": (first - sent - LATENCY_S) * 1000,
        "words": words,
        "frames": frames,
        "span_s": span,
        "total_s": time.perf_counter() - sent,
        "tokens_per_s": words / span if span > 0 else float("inf"),
        "tokens_per_s_after_first": (words - first_words) / span if span > 0 else float("inf"),
        # bounded by the model (its own is words / (latency_s + words / tokens_per_s)): frames that
        # queue and then arrive bunched make the first-to-last rate above exceed the model's rate
        "tokens_per_s_e2e": words / (last - sent) if last > sent else 0.0,
    }


async def _connection(
    served: Served, prefix: str, index: int, turns: int, ready: asyncio.Barrier
) -> list[dict[str, Any]]:
    from websockets.asyncio.client import connect

    session = f"w4-{uuid.uuid4().hex[:12]}"
    url = f"{served.ws_url}{prefix}/chat/ws/bench-{index}/{session}"
    out = []
    async with connect(url, additional_headers=served.auth(), max_size=None) as ws:
        hello = json.loads(await ws.recv())
        if hello.get("data", {}).get("action") != "connected":
            raise RuntimeError(f"unexpected first frame {hello}")
        # request ids name runs: unique across connections
        await _chat(ws, f"{session}-warm-up", "Write a long essay on actors")
        await ready.wait()  # every connection streams at once
        for t in range(turns):
            out.append(await _chat(ws, f"{session}-t{t}", f"Write a long essay on actors, part {t}"))
    return out


async def _measure(served: Served, prefix: str, connections: int, turns: int) -> dict[str, Any]:
    ready = asyncio.Barrier(connections)
    started = time.perf_counter()
    per_conn = await asyncio.gather(
        *(_connection(served, prefix, i, turns, ready) for i in range(connections))
    )
    wall = time.perf_counter() - started
    chats = [c for conn in per_conn for c in conn]
    rates = [c["tokens_per_s"] for c in chats]
    strict = [c["tokens_per_s_after_first"] for c in chats]
    ttft = [c["added_ttft_ms"] for c in chats]
    return {
        "connections": connections,
        "chats": len(chats),
        "tokens_per_s_p50": statistics.median(rates),
        "tokens_per_s_p10": percentile(rates, 10),
        "tokens_per_s_p90": percentile(rates, 90),
        "tokens_per_s_after_first_p50": statistics.median(strict),
        "tokens_per_s_e2e_p50": statistics.median(c["tokens_per_s_e2e"] for c in chats),
        "added_ttft_ms_p50": statistics.median(ttft),
        "added_ttft_ms_p90": percentile(ttft, 90),
        "added_ttft_ms_max": max(ttft),
        "frames_per_chat_p50": statistics.median(c["frames"] for c in chats),
        "words_per_chat": statistics.median(c["words"] for c in chats),
        "chat_total_s_p50": statistics.median(c["total_s"] for c in chats),
        "wall_s": wall,
        "chats_raw": chats,
    }


def w4_instance_config() -> tuple[dict[str, Any], dict[str, str]]:
    """The swarms config and replica env of a W4 instance (the streaming scripted model)."""
    raw = bench_config(
        f"bench-w4-{uuid.uuid4().hex[:8]}",
        latency_s=LATENCY_S,
        tokens_per_s=TOKENS_PER_S,
        completion_tokens=COMPLETION_TOKENS,
        stream_coalesce_s=STREAM_COALESCE_S,
    )
    # the env overrides beat the YAML: pin them so a caller's ORCHESTRA_SCRIPTED_* cannot leak in
    return raw, {
        "ORCHESTRA_SCRIPTED_LATENCY_S": str(LATENCY_S),
        "ORCHESTRA_SCRIPTED_TOKENS_PER_S": str(TOKENS_PER_S),
    }


def w4_prepare(served: Served) -> dict[str, Any]:
    """In the instance: deploy the bare WebSocket app beside ours."""
    from ray import serve

    serve.run(_bare_app(), name="bare", route_prefix="/bare")
    return {}


APPS = ("orchestra", "bare")


def run_w4(quick: bool, progress: Progress | None = None) -> dict[str, Any]:
    """Stream long answers over 1..N WebSocket connections on one Ray instance per request-path setting."""
    from ._instance import SETTINGS, start_instances

    plan = QUICK if quick else FULL
    started = time.perf_counter()
    load_before = load_average()
    rows = []
    instances = start_instances("w4", list(SETTINGS))
    try:
        if progress:
            progress.step("w4 instances up: " + ", ".join(i.setting for i in instances))
        targets = [(inst, app) for inst in instances for app in APPS]
        for ni, n in enumerate(plan.connections):
            row: dict[str, Any] = {"connections": n, "rows": {}}
            for inst, app in targets if ni % 2 == 0 else targets[::-1]:
                served = Served(port=inst.info["port"], key=inst.info["key"], env={}, config={})
                m = asyncio.run(_measure(served, "" if app == "orchestra" else "/bare", n, plan.turns))
                if app == "bare":
                    m.pop("chats_raw")
                row["rows"][f"{inst.setting}/{app}"] = m
                if progress:
                    rate, ttft = m["tokens_per_s_p50"], m["added_ttft_ms_p50"]
                    progress.step(f"w4 {inst.setting}/{app} {n} conn: {rate:.0f} tok/s, +{ttft:.1f} ms TTFT")
            ours = row["rows"]["haproxy/orchestra"]
            row["tokens_per_s_met"] = ours["tokens_per_s_p50"] >= TARGET_TOKENS_PER_S
            row["added_ttft_met"] = ours["added_ttft_ms_p50"] <= TARGET_ADDED_TTFT_MS
            rows.append(row)
        env = {i.setting: i.info["env"] for i in instances}
    finally:
        for inst in instances:
            inst.stop()
    tokens_met = all(r["tokens_per_s_met"] for r in rows)
    ttft_met = all(r["added_ttft_met"] for r in rows)
    return {
        "workload": "W4 ws-stream",
        "quick": quick,
        "machine": machine(),
        "load_average": {"before": load_before, "after": load_average()},
        "generator": {
            "name": "websockets",
            "detail": "asyncio client in the driver, one task per connection",
        },
        "config": {
            "endpoint": "WS /chat/ws/{client_id}/{session_id}",
            "swarm_type": BENCH_TEAM,
            "team": "one-agent pipeline: the answer is one long turn",
            "optimization_mode": "lite",
            "scripted_latency_s": LATENCY_S,
            "scripted_tokens_per_s": TOKENS_PER_S,
            "completion_tokens": COMPLETION_TOKENS,
            "stream_coalesce_s": STREAM_COALESCE_S,
            "connections": list(plan.connections),
            "turns_per_connection": plan.turns,
            "warm_up": "one chat per connection, not counted",
            "token_count": "whitespace words of the token strings",
            "tokens_per_s": "words / (last token frame - first token frame), per chat; median over chats",
            "tokens_per_s_e2e": "words / (last token frame - chat frame sent): includes TTFT, never bunched",
            "model_e2e_tokens_per_s": COMPLETION_TOKENS / (LATENCY_S + COMPLETION_TOKENS / TOKENS_PER_S),
            "added_ttft": "(first token frame - chat frame sent) - scripted latency_s, per chat; median",
            "replicas": "1 per deployment, num_cpus=0",
            "bare": "FastAPI WebSocket on /bare (own Serve app, num_cpus=0) emulating the same stream",
            "settings": "one Ray instance per setting (benchmarks._instance): default = Serve's proxy, "
            "haproxy = HAProxy + direct ingress as orchestra serve runs it; both running, alternating order",
            "env": env,
        },
        "rows": rows,
        "targets": {
            "tokens_per_s_min": TARGET_TOKENS_PER_S,
            "added_ttft_ms_max": TARGET_ADDED_TTFT_MS,
            "judged_on": "haproxy/orchestra (orchestra serve's default), median per connection count; "
            "met only if every connection count meets it",
            "tokens_per_s_met": tokens_met,
            "added_ttft_met": ttft_met,
            "met": tokens_met and ttft_met,
        },
        "elapsed_s": time.perf_counter() - started,
    }


_STYLE = {
    "haproxy/orchestra": ("o-", "AI Orchestra, HAProxy (orchestra serve)"),
    "default/orchestra": ("s--", "AI Orchestra, Serve proxy"),
    "haproxy/bare": ("^:", "bare Serve WS, HAProxy"),
    "default/bare": ("v:", "bare Serve WS, Serve proxy"),
}


def plot_w4(result: dict[str, Any], outdir: Path) -> list[Path]:
    """Tokens/s per connection and added TTFT against the number of connections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    n = [r["connections"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, (style, label) in _STYLE.items():
        ax1.plot(n, [r["rows"][name]["tokens_per_s_p50"] for r in rows], style, label=label)
        ax2.plot(n, [r["rows"][name]["added_ttft_ms_p50"] for r in rows], style, label=label)
    ax1.axhline(TARGET_TOKENS_PER_S, color="red", linestyle=":", label=f"target {TARGET_TOKENS_PER_S:.0f}")
    ax1.axhline(TOKENS_PER_S, color="grey", linestyle=":", label=f"model rate {TOKENS_PER_S:.0f}")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xticks(n, [str(x) for x in n])
    ax1.set_xlabel("WebSocket connections streaming at once")
    ax1.set_ylabel("tokens/s per connection (median)")
    ax1.set_title("W4 ws-stream: tokens/s per connection")
    ax1.legend(fontsize=7)
    ax2.axhline(
        TARGET_ADDED_TTFT_MS, color="red", linestyle=":", label=f"target {TARGET_ADDED_TTFT_MS:.0f} ms"
    )
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(n, [str(x) for x in n])
    ax2.set_xlabel("WebSocket connections streaming at once")
    ax2.set_ylabel("ms (median)")
    ax2.set_title(f"added time to first token (over the model's {LATENCY_S * 1000:.0f} ms)")
    ax2.set_ylim(bottom=0)
    ax2.legend(fontsize=7)
    cfg = result["config"]
    fig.suptitle(
        f"{cfg['completion_tokens']} tokens at {cfg['scripted_tokens_per_s']:.0f}/s, "
        f"stream_coalesce_s={cfg['stream_coalesce_s']}; {'quick' if result['quick'] else 'full'} mode",
        fontsize=9,
        y=0.03,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = outdir / "w4_ws_stream.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


if __name__ == "__main__":  # a quick look without the benchmarks CLI
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    res = run_w4(quick=True)
    (out / "w4_ws_stream.json").write_text(json.dumps(res, indent=1))
    for r in res["rows"]:
        print(json.dumps({k: v for k, v in r.items() if k != "chats_raw"}))
    print(json.dumps(res["targets"]))
    print(plot_w4(res, out))
