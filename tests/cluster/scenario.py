"""A three-node Ray cluster on this machine (ray.cluster_utils.Cluster), the app deployed on it, chats
under load while a worker node is removed. Run by test_multinode.py in its own process (one Ray per
process); prints one JSON line with what it saw."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import ray
import yaml
from ray import serve
from ray.cluster_utils import Cluster

import serve_app
from orchestra.cli._embedded import EmbeddedRedis, free_port
from tests.conftest import ROOT, fast_raw_config

KEY = "cluster-test-key-0001"


def _config_file(directory: Path) -> Path:
    raw = fast_raw_config(yaml.safe_load((ROOT / "configs" / "swarms.yaml").read_text()), 0.05, 2000)
    raw["runtime"]["namespace"] = "orchestra-cluster"
    # SPREAD alone is best effort (a loaded CI machine once put all 4 agents on one node): at 0.4 CPU
    # each, a 1-CPU node holds at most 2 of them, so they land on several nodes, and the 2 nodes left
    # after one is removed still hold all of them.
    raw["runtime"]["agent_num_cpus"] = 0.4
    path = directory / "swarms.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


async def _load(base_url: str, seconds: float, remove: Any) -> dict[str, int]:
    outcomes: dict[str, int] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    stop = time.monotonic() + seconds

    async def one(client: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < stop:
            body = {"message": f"task {i}", "swarm_type": "coding-debate", "optimization_mode": "balanced"}
            try:
                r = await client.post("/chat/v2/chat", json=body, headers=headers)
                code = str(r.status_code)
                if r.status_code != 200:
                    try:
                        envelope = r.json()
                    except ValueError:
                        raise AssertionError(
                            f"not in the envelope: {r.status_code} {dict(r.headers)} {r.content[:200]!r}"
                        ) from None
                    assert envelope["success"] is False and envelope["error"]["code"], envelope
                    code += ":" + envelope["error"]["code"]
            except httpx.TransportError as e:
                code = f"transport:{type(e).__name__}"
            outcomes[code] = outcomes.get(code, 0) + 1

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        workers = [asyncio.ensure_future(one(client, i)) for i in range(8)]
        await asyncio.sleep(seconds / 3)
        await asyncio.get_running_loop().run_in_executor(None, remove)
        await asyncio.gather(*workers)
    return outcomes


def main() -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    workers = [cluster.add_node(num_cpus=1, resources={f"worker{i}": 1}) for i in (1, 2)]
    redis = EmbeddedRedis()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "ORCHESTRA_REDIS_URL": redis.url,
            "ORCHESTRA_KEY_HASH_SECRET": secrets.token_urlsafe(48),
            "ORCHESTRA_CONFIG": str(_config_file(Path(tmp))),
            "ORCHESTRA_API_KEYS": f"{KEY}:chat",
            "ORCHESTRA_LLM_PROVIDER": "scripted",
            "ORCHESTRA_RATE_LIMIT_PER_MINUTE": "600000",
            "ORCHESTRA_RATE_LIMIT_BURST": "10000",
        }
        os.environ.update(env)
        try:
            ray.init(address=cluster.address, namespace="orchestra-cluster", log_to_driver=False)
            port = free_port()
            # One proxy, on the head: every simulated node shares this host's loopback, where proxies of
            # several nodes would share the port and the kernel would spread connections over them; on a
            # real cluster a node lost with its proxy drops the connections it held (clients retry).
            serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
            options = serve_app.deployment_options()
            # Two replicas of the mode, at most one per node (Serve packs them on one node otherwise).
            options["ModeBalanced"]["autoscaling_config"] = {"min_replicas": 2, "max_replicas": 2}
            options["ModeBalanced"]["max_replicas_per_node"] = 1
            # The ingress stays on the head: a request held by an ingress replica on a node that goes is
            # answered by the proxy as a plain-text 500 (Serve's, not in the envelope): a known gap.
            options["Ingress"]["ray_actor_options"] = {"num_cpus": 0, "resources": {"head": 0.01}}
            serve.run(serve_app.build_app(options, env=env), name="orchestra", route_prefix="/")
            base_url = f"http://127.0.0.1:{port}"
            warm = httpx.post(
                f"{base_url}/chat/v2/chat",
                json={"message": "warm", "swarm_type": "coding-debate", "optimization_mode": "balanced"},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=120,
            )
            assert warm.status_code == 200, warm.text
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
            agents = [
                ray.get_actor(n, namespace="orchestra-cluster") for n in names if n.startswith("agent-")
            ]
            agent_nodes = {info["node_id"] for info in ray.get([a.info.remote() for a in agents])}
            mode = serve.get_deployment_handle("ModeBalanced", app_name="orchestra")
            replica_nodes = {mode.probe.remote().result()["node_id"] for _ in range(20)}
            node_of_worker = workers[0].node_id
            outcomes = asyncio.run(_load(base_url, 24.0, lambda: cluster.remove_node(workers[0])))
            print(
                json.dumps(
                    {
                        "agents": len(agents),
                        "agent_nodes": len(agent_nodes),
                        "replica_nodes": len(replica_nodes),
                        "removed_had_agents": node_of_worker in agent_nodes,
                        "outcomes": outcomes,
                    }
                ),
                flush=True,
            )
        finally:
            serve.shutdown()
            ray.shutdown()
            cluster.shutdown()
            redis.stop()


if __name__ == "__main__":
    sys.exit(main())
