"""W2 ``layers``: where the time goes. A no-op agent turn (zero-latency scripted model, one short answer)
measured one call at a time at each layer: direct call, one Ray actor hop, the orchestrator path, a Serve
deployment-handle call, and full HTTP. Per-turn overhead = layer time minus the direct call.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path
from typing import Any

import yaml

from ._common import Progress, percentile, start_ray

__all__ = ["plot_w2", "run_w2"]

ROOT = Path(__file__).resolve().parent.parent


def _raw_config() -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "configs" / "swarms.yaml").read_text())
    raw["providers"]["scripted"].update(latency_s=0.0, tokens_per_s=0.0, completion_tokens=8)
    raw["teams"]["w2-solo"] = {
        "description": "W2: one agent, one turn",
        "pattern": "pipeline",
        "flow": {"stages": ["solo"]},
        "agents": {"solo": {"role": "writer", "system_prompt": "Answer."}},
        "modes": {"lite": {}, "balanced": {}, "quality": {}},
    }
    return raw


async def _time(n: int, call: Any) -> list[float]:
    for _ in range(max(5, n // 10)):  # warm-up
        await call()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t)
    return out


def run_w2(quick: bool = True, progress: Progress | None = None) -> dict[str, Any]:
    import httpx
    from ray import serve

    import orchestra
    import serve_app
    from actors import AgentActor
    from orchestra.cli._embedded import EmbeddedRedis, free_port

    n = 100 if quick else 1000
    raw = _raw_config()
    cfg = orchestra.load_config(raw)
    for var in ("ORCHESTRA_SCRIPTED_LATENCY_S", "ORCHESTRA_SCRIPTED_TOKENS_PER_S"):
        os.environ.pop(var, None)
    request = orchestra.engine.TurnRequest(
        run_id="w2",
        team="w2-solo",
        agent="solo",
        role="writer",
        round=1,
        task="noop",
        instruction="Answer.",
        model=cfg.model_for("scripted", "w2-solo", "lite", "solo"),
    )
    layers: dict[str, list[float]] = {}

    # 1. direct call: the agent and its provider in this process
    agent = orchestra.engine.Agent(
        "solo", cfg.teams["w2-solo"].agents["solo"], orchestra.providers.make_provider(cfg)
    )
    layers["direct"] = asyncio.run(_time(n, lambda: agent.run_turn(request)))
    if progress:
        progress.step("W2 direct")

    ray = start_ray()
    actor = AgentActor.options(num_cpus=0).remote(cfg, "w2-solo", "solo", "solo")  # type: ignore[attr-defined]
    ray.get(actor.info.remote())
    batch = orchestra.engine.TURNS.requests([request])
    layers["ray_actor_hop"] = asyncio.run(_time(n, lambda: actor.handle.remote(batch, ["w2"])))
    ray.kill(actor)
    if progress:
        progress.step("W2 actor hop")

    handle = orchestra.connect(config=cfg, namespace="bench-w2")
    handle.warm_up(["w2-solo"])

    async def via_orchestrator() -> None:
        await handle.achat("noop", swarm_type="w2-solo", optimization_mode="lite", session_id="w2")

    layers["orchestrator"] = asyncio.run(_time(n, via_orchestrator))
    if progress:
        progress.step("W2 orchestrator")

    # 4./5. through Serve: the mode deployment's handle, then full HTTP with auth + rate limit + Redis
    redis = EmbeddedRedis()
    config_path = Path(os.environ.get("TMPDIR", "/tmp")) / "orchestra-w2-swarms.yaml"
    raw["runtime"]["namespace"] = "bench-w2"
    config_path.write_text(yaml.safe_dump(raw))
    key = "bench-w2-key-000000"
    env = {
        "ORCHESTRA_REDIS_URL": redis.url,
        "ORCHESTRA_KEY_HASH_SECRET": secrets.token_urlsafe(48),
        "ORCHESTRA_CONFIG": str(config_path),
        "ORCHESTRA_API_KEYS": f"{key}:chat",
        "ORCHESTRA_LLM_PROVIDER": "scripted",
        "ORCHESTRA_RATE_LIMIT_PER_MINUTE": "60000000",
        "ORCHESTRA_RATE_LIMIT_BURST": "1000000",
    }
    port = free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(serve_app.build_app(env=env), name="orchestra-w2", route_prefix="/")
        mode = serve.get_deployment_handle("ModeLite", app_name="orchestra-w2").options(stream=True)
        run = orchestra.RunRequest(
            message="noop", swarm_type="w2-solo", optimization_mode="lite", session_id="w2-serve"
        )

        async def via_serve_handle() -> None:
            async for group in mode.chat_many.remote(
                [run.model_copy(update={"run_id": os.urandom(8).hex()})]
            ):
                for _, result in group:
                    assert not isinstance(result, Exception), result

        layers["serve_handle"] = asyncio.run(_time(n, via_serve_handle))
        if progress:
            progress.step("W2 serve handle")

        async def http_layer() -> list[float]:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                body = {
                    "message": "noop",
                    "swarm_type": "w2-solo",
                    "optimization_mode": "lite",
                    "session_id": "w2-http",
                }
                headers = {"Authorization": f"Bearer {key}"}

                async def call() -> None:
                    r = await client.post("/chat/v2/chat", json=body, headers=headers)
                    assert r.status_code == 200, r.text

                return await _time(n, call)

        layers["http"] = asyncio.run(http_layer())
        if progress:
            progress.step("W2 http")
    finally:
        serve.shutdown()
        handle.shutdown()
        redis.stop()

    direct = percentile(layers["direct"], 50)
    rows = []
    for name, values in layers.items():
        p50 = percentile(values, 50)
        rows.append(
            {
                "layer": name,
                "calls": len(values),
                "p50_us": round(p50 * 1e6, 1),
                "p99_us": round(percentile(values, 99) * 1e6, 1),
                "mean_us": round(sum(values) / len(values) * 1e6, 1),
                "overhead_p50_us": round((p50 - direct) * 1e6, 1),
            }
        )
    return {"workload": "W2", "calls_per_layer": n, "layers": rows}


def plot_w2(result: dict[str, Any], outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    rows = result["layers"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = [r["layer"] for r in rows]
    ax.bar(names, [r["p50_us"] for r in rows], label="p50")
    ax.scatter(names, [r["p99_us"] for r in rows], color="k", marker="_", s=400, label="p99", zorder=3)
    for i, r in enumerate(rows):
        ax.annotate(f"{r['p50_us']:.0f} µs", (i, r["p50_us"]), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("time per no-op turn (µs, log)")
    ax.set_title("W2: per-turn time at each layer")
    ax.legend()
    fig.tight_layout()
    path = outdir / "w2_layers.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
