"""``WebhookDispatcher``: the Ray host of ``orchestra.webhooks.Dispatcher`` (and a session sweeper).

One named, detached actor per application (``orchestra-webhooks`` in the Serve namespace), created by
the ingress replicas with ``get_if_exists`` and restartable without limit (``max_restarts=-1``): killed,
Ray starts it again, and its ``__init__`` starts the loop again by itself — no caller has to remember
to. Its loop runs in a thread of its own (with its own event loop), so the actor's methods (``pid``,
``info``) answer while deliveries are in flight. The queue is in Redis: deliveries leased by a dead
incarnation come due again when their lease runs out. Its counts reach ``/metrics`` through the metrics
aggregator, like a replica's.

It also sweeps idle sessions (``session.ended`` for each, exactly once across every sweeper), so idle
sessions end on time even while no mode replica has started coordinating.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from typing import Any

import ray

from orchestra import load_config
from orchestra.serving._metrics import Metrics, MetricsPusher
from orchestra.stores.redis import RedisSessionStore, RedisWebhookStore, redis_client
from orchestra.webhooks import DeliveryPolicy, Dispatcher, EventPublisher, sweep_sessions

from ._env import apply_secrets, split_env

__all__ = ["DISPATCHER_NAME", "WebhookDispatcher", "start_dispatcher"]

log = logging.getLogger("orchestra.actors")

DISPATCHER_NAME = "orchestra-webhooks"


@ray.remote(num_cpus=0, max_restarts=-1)
class WebhookDispatcher:
    def __init__(self, metrics_actor: Any, secrets: dict[str, str] | None = None) -> None:
        apply_secrets(secrets)  # e.g. a Redis URL with a password (see actors/_env.py)
        self._metrics_actor = metrics_actor
        self._metrics = Metrics()
        self._policy = DeliveryPolicy.from_settings()
        self._thread = threading.Thread(target=self._main, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception:  # e.g. no ORCHESTRA_REDIS_URL: say so, the actor stays up for probes
            log.exception("the webhook dispatcher stopped")

    async def _push(self, source: str, snapshot: Any) -> None:
        await self._metrics_actor.update.remote(source, snapshot)

    async def _serve(self) -> None:
        redis = redis_client()
        store = RedisWebhookStore(redis)
        dispatcher = Dispatcher(store, self._policy, on_outcome=self._metrics.webhook_delivery)
        pusher = MetricsPusher(self._metrics, self._push, f"webhooks:{uuid.uuid4().hex[:8]}", interval_s=1.0)
        pusher.start()
        config = load_config()
        sessions = RedisSessionStore(redis, config.runtime.session_ttl_s)
        await asyncio.gather(dispatcher.run(), self._sweep(sessions, EventPublisher(store), config))

    async def _sweep(self, sessions: RedisSessionStore, events: EventPublisher, config: Any) -> None:
        interval = min(60.0, max(1.0, config.runtime.session_ttl_s / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await sweep_sessions(sessions, events)
            except Exception as e:  # the store is down: the next sweep tries again
                log.warning("session sweep failed: %r", e)

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "running": self._thread.is_alive()}


def start_dispatcher(metrics_actor: Any, env: dict[str, str], namespace: str) -> Any:
    """The application's dispatcher: created when none runs, else the running one."""
    shareable, secrets = split_env(env)  # secrets never in a runtime_env: Ray logs those
    return WebhookDispatcher.options(  # type: ignore[attr-defined]
        name=DISPATCHER_NAME,
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        runtime_env={"env_vars": shareable},
    ).remote(metrics_actor, secrets)


def stop_dispatcher(namespace: str) -> bool:
    """Kill it (detached: it would outlive the application); False when none runs."""
    try:
        ray.kill(ray.get_actor(DISPATCHER_NAME, namespace=namespace), no_restart=True)
    except ValueError:
        return False
    return True
