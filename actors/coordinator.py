"""``Coordinator``: one process's share of the coordination — an ``Engine`` over the shared stores and the
shared agent actors.

Each mode deployment replica hosts one (so adding a replica adds coordination capacity for its mode, and
the orchestrator hop is off the HTTP/WS data path); the named ``Orchestrator`` actor hosts one for
notebooks and scripts (``orchestra.connect()``). All of them run the same code over the same state:
sessions and memory in the store (Redis when ``ORCHESTRA_REDIS_URL`` is set), agent actors found by name.

Agent actors are named ``agent-<team>-<instance>`` in the runtime's namespace, detached (no replica owns
them, so scaling one mode down never kills another mode's agents) and restartable (``max_restarts``): a
turn lost with its actor's process is sent again to the restarted actor. ``shutdown_agents`` removes them
when the application stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import ray

from orchestra import ChatResult, OrchestraConfig, OrchestraError, RunRequest, settings
from orchestra.engine import Engine
from orchestra.providers import make_provider
from orchestra.stores.redis import (
    RedisMemoryStore,
    RedisRunStore,
    RedisSessionStore,
    RedisTranscriptStore,
    RedisWebhookStore,
    listen_cancels,
    redis_client,
)
from orchestra.webhooks import EventPublisher

from ._env import split_env
from .agent import AgentActor
from .runtime import RayRuntime

__all__ = ["AGENT_PREFIX", "Coordinator", "agent_actor_name", "shutdown_agents"]

log = logging.getLogger("orchestra.actors")

AGENT_PREFIX = "agent-"


def agent_actor_name(team: str, instance: str) -> str:
    return f"{AGENT_PREFIX}{team}-{instance}"


def _engine(config: OrchestraConfig, runtime: RayRuntime) -> tuple[Engine, Any]:
    """The engine over sessions, memory, transcripts and the webhook queue in Redis (shared by every
    process, kept across restarts) when ORCHESTRA_REDIS_URL is set, else in this process (no webhooks);
    and the Redis client (or None)."""
    url = settings().redis_url
    rt = config.runtime
    provider = config.resolved_provider()
    # Names this process in the run records: which coordinator runs (or ran) a run.
    coordinator_id = f"{ray.get_runtime_context().get_node_id()[:12]}:{os.getpid()}"
    if not url:
        return Engine(config, runtime, provider, coordinator_id=coordinator_id), None
    redis = redis_client(url)
    engine = Engine(
        config,
        runtime,
        provider,
        sessions=RedisSessionStore(redis, rt.session_ttl_s),
        memory=RedisMemoryStore(redis),
        transcripts=RedisTranscriptStore(redis, rt.transcript_ttl_s),
        events=EventPublisher(RedisWebhookStore(redis)),
        runs=RedisRunStore(redis, rt.run_ttl_s, max_events=rt.run_events_max),
        coordinator_id=coordinator_id,
    )
    return engine, redis


class Coordinator:
    def __init__(self, config: OrchestraConfig, namespace: str, env: dict[str, str]) -> None:
        self.config = config
        self._namespace = namespace
        self._env = env
        self._shareable, self._secrets = split_env(env)  # secrets never in a runtime_env: Ray logs those
        self.provider_label = make_provider(config).name  # fails here, at start-up, on a bad provider
        self.runtime = RayRuntime(config, self._make_agent)
        self.engine, self._redis = _engine(config, self.runtime)
        self._background: list[asyncio.Task[None]] = []

    def _make_agent(self, team: str, instance: str, agent_name: str) -> Any:
        rt = self.config.runtime
        return AgentActor.options(  # type: ignore[attr-defined]
            name=agent_actor_name(team, instance),
            namespace=self._namespace,
            get_if_exists=True,
            lifetime="detached",
            max_restarts=-1,
            scheduling_strategy="SPREAD",  # over the cluster's nodes, not packed on the first
            num_cpus=rt.agent_num_cpus,
            max_concurrency=rt.agent_max_concurrency,
            runtime_env={"env_vars": self._shareable},
        ).remote(self.config, team, instance, agent_name, self._secrets)

    def start(self) -> None:
        """Start the session sweeper and the cancel listener (needs the running loop; idempotent)."""
        if self._background:
            return
        self._background.append(asyncio.ensure_future(self._sweep()))
        if self._redis is not None:
            self._background.append(asyncio.ensure_future(listen_cancels(self._redis, self.engine.cancel)))

    async def _sweep(self) -> None:
        interval = min(60.0, max(1.0, self.config.runtime.session_ttl_s / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.engine.expire_sessions()  # and session.ended for each, exactly once
            except OrchestraError as e:  # the store is down: the next sweep tries again
                log.warning("session sweep failed: %r", e)

    async def run_many(
        self, requests: list[RunRequest], *, resume: bool = False
    ) -> AsyncIterator[list[tuple[str, ChatResult | OrchestraError]]]:
        """Run many chats; yield (run_id, result or error) in batches as they finish.

        One call and a few yields instead of one call per chat: on a busy coordinator the Ray per-call
        cost, not the swarm, is what limits throughput (benchmarks W1/W2). Errors travel as values, so
        one bad chat cannot fail its batch; closing the iterator early cancels the unfinished.
        ``resume``: these runs' coordinator died; they resume from their checkpoints (``Engine.run``).
        """
        self.start()
        done: asyncio.Queue[tuple[str, ChatResult | OrchestraError]] = asyncio.Queue()

        async def one(request: RunRequest) -> None:
            try:
                outcome: ChatResult | OrchestraError = await self.engine.run(request, resume=resume)
            except OrchestraError as e:
                outcome = e
            done.put_nowait((request.run_id, outcome))

        tasks = [asyncio.ensure_future(one(r)) for r in requests]
        remaining = len(tasks)
        try:
            while remaining:
                batch = [await done.get()]
                await asyncio.sleep(0)  # let chats finishing in this same tick join the batch
                while not done.empty():
                    batch.append(done.get_nowait())
                remaining -= len(batch)
                yield batch
        finally:
            for task in tasks:
                task.cancel()

    async def warm_up(self, teams: list[str] | None = None) -> int:
        """Create the agent actors of ``teams`` (all by default) now rather than on first use."""
        actors = []
        for team in teams or list(self.config.teams):
            cfg = self.config.teams[team]
            for agent in dict.fromkeys([*cfg.flow_agents(), *([cfg.judge] if cfg.judge else [])]):
                for instance in cfg.max_instances(agent):
                    actors.append(self.runtime.actor(team, instance))
        await asyncio.gather(*(a.info.remote() for a in actors))
        return len(actors)

    async def agents(self) -> list[dict[str, Any]]:
        infos = await asyncio.gather(
            *(a.info.remote() for a in self.runtime.actors.values()), return_exceptions=True
        )
        return [i for i in infos if isinstance(i, dict)]

    def info(self) -> dict[str, Any]:
        """This process's share (the store's own state, such as the session count, is not in it)."""
        return {
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "provider": self.provider_label,
            "running": len(self.engine.running()),
            "agents": len(self.runtime.actors),
        }


def shutdown_agents(namespace: str) -> int:
    """Kill the application's agent actors (detached: they outlive the processes that used them)."""
    killed = 0
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == namespace and entry["name"].startswith(AGENT_PREFIX):
            try:
                ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
                killed += 1
            except ValueError:  # gone meanwhile
                pass
    return killed
