"""Deployment-wide Prometheus metrics (spec §8): per-process recording, cross-replica aggregation.

Every Ray Serve replica is its own process with its own registry, yet ``GET /metrics`` through any replica
must show the totals of the whole deployment. So:

- each process records into a :class:`Metrics` (a private ``CollectorRegistry``);
- a :class:`MetricsPusher` sends its cumulative :class:`MetricsSnapshot` every ``interval_s`` to one
  aggregator (the Ray wiring makes ``push`` a call to a named actor);
- the :class:`MetricsAggregator` keeps the latest snapshot per source and :meth:`~MetricsAggregator.render`
  returns the sum in Prometheus text format; any replica answers ``/metrics`` by asking it for those bytes.

Aggregation rules
-----------------
- Snapshots are **cumulative** (absolute values, not deltas), so a re-sent, duplicated or lost push never
  double counts or loses an increment: the next push carries the full value again.
- Counters and histograms (``_bucket``/``_count``/``_sum``) are summed over sources per label set.
  Gauges are summed over *live* sources only.
- ``_created`` samples are dropped, in snapshots and in the output: they are per-process start timestamps,
  meaningless once summed, and the text format would expose them as extra ``*_created`` gauge families.
- Totals never go backwards. Each source keeps a *base* of folded values besides its latest snapshot:

  * every :class:`Metrics` has a random ``epoch``; a snapshot with a new epoch for a known source (the
    replica restarted with a fresh registry) folds the source's previous cumulative values into its base;
  * within one epoch, a series (a counter label set, or a whole histogram child) whose value went down or
    vanished is treated as reset: its previous values are folded into the base (``_sum`` alone may fall,
    with negative observations, so it never triggers a reset).

  Known limit: increments made after a source's last successful push die with the process (the pusher's
  ``stop()`` flushes one final push for graceful shutdowns).
- Delivery may be late, duplicated or reordered (a push that timed out can still arrive after its
  successor): each snapshot carries ``seq``, increasing per epoch, and one not newer than the stored one
  is ignored, as is any snapshot of an epoch already folded away.
- :meth:`~MetricsAggregator.forget` (a replica is gone) drops the source's gauges and keeps its counters
  and histograms counted; if the same process (same epoch) reports again it is simply live again, without
  double counting. Dead sources beyond ``max_dead_sources`` are compacted, oldest first, into one
  ``retired`` base and their epochs retired: were such a process still alive after all, its later reports
  are ignored (under- rather than double-counting; it takes a silence longer than the prune age followed
  by ``max_dead_sources`` other deaths). Memory: one entry per live or recently dead source, one epoch id
  per retired process.
- Label sets appear once used: before any activity every required family is present with its ``# HELP``
  and ``# TYPE`` lines (the aggregator seeds the schema of a fresh :class:`Metrics`), but a labelled family
  has no samples, so its label names show up with the first increment. Unlabelled series
  (``rate_limited_total``, ``websocket_connections``) are always present, 0 at first.
- The output also carries ``metrics_sources``: the number of live sources, to check that all replicas
  report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    generate_latest,
)

__all__ = [
    "CONTENT_TYPE",
    "HTTP_DURATION_BUCKETS",
    "FamilySnapshot",
    "Metrics",
    "MetricsAggregator",
    "MetricsPusher",
    "MetricsSnapshot",
    "SampleSnapshot",
    "TurnLike",
]

log = logging.getLogger("orchestra.metrics")

#: Content type of :meth:`MetricsAggregator.render` (``generate_latest`` writes text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Prometheus' defaults plus the long tail: a synchronous chat can take a whole swarm deadline (≤ 300 s).
HTTP_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

_Labels = tuple[tuple[str, str], ...]
# (family name, sample name, labels sorted by name): one time series.
_Key = tuple[str, str, _Labels]
_CUMULATIVE_TYPES = frozenset({"counter", "histogram", "summary"})
# Labels that split one histogram/summary child into several samples.
_SUBSERIES_LABELS = frozenset({"le", "quantile"})


class SampleSnapshot(NamedTuple):
    name: str
    labels: _Labels  # sorted by label name
    value: float


class FamilySnapshot(NamedTuple):
    name: str  # family name as prometheus_client reports it (counters without ``_total``)
    type: str
    help: str
    samples: tuple[SampleSnapshot, ...]


class MetricsSnapshot(NamedTuple):
    """Every sample (but ``_created``) of one process's registry: plain tuples, cheap to pickle."""

    epoch: str  # random per Metrics instance: a new epoch means a fresh registry (restart)
    seq: int  # increases with every snapshot of one epoch: late or duplicated deliveries are recognised
    families: tuple[FamilySnapshot, ...]


class TurnLike(Protocol):
    """What :meth:`Metrics.agent_turns` reads of a step (e.g. ``ProcessingStep``, ``TurnResult``)."""

    @property
    def role(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...


class Metrics:
    """This process's series (spec §8), in a private registry, with one method per thing that happened."""

    def __init__(self) -> None:
        self.epoch = uuid.uuid4().hex
        self._seq = itertools.count(1)
        self.registry = CollectorRegistry()
        r = self.registry
        self._http_requests = Counter(
            "http_requests_total",
            "HTTP requests by method, route template and status code.",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self._http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency in seconds by method and route template.",
            ["method", "endpoint"],
            buckets=HTTP_DURATION_BUCKETS,
            registry=r,
        )
        self._ws = Gauge("websocket_connections", "Open WebSocket connections.", registry=r)
        self._swarm_runs = Counter(
            "swarm_runs_total",
            "Finished swarm runs by team, optimization mode and outcome.",
            ["swarm_type", "optimization_mode", "outcome"],
            registry=r,
        )
        self._agent_turns = Counter(
            "agent_turns_total", "Agent turns by team and role.", ["swarm_type", "role"], registry=r
        )
        self._llm_tokens = Counter(
            "llm_tokens_total",
            "LLM tokens by provider, model and kind (prompt|completion).",
            ["provider", "model", "kind"],
            registry=r,
        )
        self._rate_limited = Counter("rate_limited_total", "Requests rejected by rate limiting.", registry=r)
        self._key_tokens = Counter(
            "api_key_tokens_total",
            "LLM tokens used by the finished runs of each API key, by key id (never the key itself).",
            ["key_id"],
            registry=r,
        )
        self._webhooks = Counter(
            "webhook_deliveries_total",
            "Webhook delivery attempts by event and outcome.",
            ["event", "outcome"],
            registry=r,
        )

    def observe_http(self, method: str, endpoint_template: str, status: int | str, duration_s: float) -> None:
        """One finished request; ``endpoint_template`` is the route (``/api/v1/runs/{run_id}``), never the
        concrete path, to keep label cardinality bounded."""
        method = method.upper()
        self._http_requests.labels(method, endpoint_template, str(status)).inc()
        self._http_duration.labels(method, endpoint_template).observe(max(0.0, duration_s))

    def ws_opened(self) -> None:
        self._ws.inc()

    def ws_closed(self) -> None:
        self._ws.dec()

    def swarm_run(self, swarm_type: str, mode: str, outcome: str) -> None:
        self._swarm_runs.labels(swarm_type, mode, outcome).inc()

    def agent_turns(self, swarm_type: str, steps: Iterable[TurnLike], provider: str) -> None:
        """Count each step as one turn of its role and add its tokens to ``llm_tokens_total``."""
        for step in steps:
            self._agent_turns.labels(swarm_type, step.role).inc()
            self.llm_tokens(provider, step.model, step.prompt_tokens, step.completion_tokens)

    def llm_tokens(self, provider: str, model: str, prompt_tokens: int, completion_tokens: int) -> None:
        self._llm_tokens.labels(provider, model, "prompt").inc(max(0, prompt_tokens))
        self._llm_tokens.labels(provider, model, "completion").inc(max(0, completion_tokens))

    def rate_limited(self) -> None:
        self._rate_limited.inc()

    def key_tokens(self, key_id: str, tokens: int) -> None:
        self._key_tokens.labels(key_id).inc(max(0, tokens))

    def webhook_delivery(self, event: str, outcome: str) -> None:
        self._webhooks.labels(event, outcome).inc()

    def snapshot(self) -> MetricsSnapshot:
        families = []
        for metric in self.registry.collect():
            created = metric.name + "_created"
            samples = tuple(
                SampleSnapshot(s.name, tuple(sorted(s.labels.items())), float(s.value))
                for s in metric.samples
                if s.name != created
            )
            families.append(FamilySnapshot(metric.name, metric.type, metric.documentation, samples))
        return MetricsSnapshot(self.epoch, next(self._seq), tuple(families))


def _group(key: _Key) -> tuple[str, _Labels]:
    """The unit that resets together: a counter series, or a histogram child (all its le-buckets)."""
    family, _, labels = key
    return family, tuple(kv for kv in labels if kv[0] not in _SUBSERIES_LABELS)


def _is_sum(key: _Key) -> bool:
    return key[1] == key[0] + "_sum"


def _add(into: dict[_Key, float], values: dict[_Key, float]) -> None:
    for key, value in values.items():
        into[key] = into.get(key, 0.0) + value


@dataclass
class _Source:
    epoch: str
    seq: int
    last_seen: float
    cumulative: dict[_Key, float] = field(default_factory=dict)  # latest snapshot, this epoch
    gauges: dict[_Key, float] = field(default_factory=dict)
    base: dict[_Key, float] = field(default_factory=dict)  # folded from earlier epochs / resets
    alive: bool = True


class MetricsAggregator:
    """Latest snapshot per source → summed exposition (rules in the module docstring). Thread-safe."""

    def __init__(self, *, max_dead_sources: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_dead = max_dead_sources
        self._clock = clock
        self._lock = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._retired: dict[_Key, float] = {}  # compacted dead sources
        # Epochs already folded away (restarted or compacted processes): their late snapshots are ignored.
        self._retired_epochs: set[str] = set()
        self._families: dict[str, tuple[str, str]] = {}  # name → (type, help), first-seen order
        # Seed the schema so every required family has HELP/TYPE (and unlabelled series a 0) from the start.
        schema = Metrics().snapshot()
        self._zeros: dict[_Key, float] = {}
        self._learn(schema)
        for fam in schema.families:
            for s in fam.samples:
                self._zeros[(fam.name, s.name, s.labels)] = 0.0

    def _learn(self, snapshot: MetricsSnapshot) -> None:
        for fam in snapshot.families:
            self._families[fam.name] = (fam.type, fam.help)

    def update(self, source_id: str, snapshot: MetricsSnapshot) -> None:
        """Store ``source_id``'s latest cumulative snapshot.

        Idempotent and order-proof: a snapshot not newer than the stored one (same epoch, seq not higher), or
        of a retired epoch, is ignored — a timed-out push may still be delivered after its successor.
        """
        if not isinstance(snapshot, MetricsSnapshot):
            raise TypeError(f"expected MetricsSnapshot, got {type(snapshot).__name__}")
        cumulative: dict[_Key, float] = {}
        gauges: dict[_Key, float] = {}
        for fam in snapshot.families:
            target = cumulative if fam.type in _CUMULATIVE_TYPES else gauges
            for s in fam.samples:
                target[(fam.name, s.name, s.labels)] = s.value
        with self._lock:
            self._learn(snapshot)
            now = self._clock()
            src = self._sources.get(source_id)
            if snapshot.epoch in self._retired_epochs:
                log.debug("ignoring metrics of retired epoch %s from %s", snapshot.epoch, source_id)
                return
            if src is None:
                src = self._sources[source_id] = _Source(snapshot.epoch, snapshot.seq, now)
            elif src.epoch != snapshot.epoch:
                _add(src.base, src.cumulative)  # restarted with a fresh registry
                self._retired_epochs.add(src.epoch)
            elif snapshot.seq <= src.seq:
                return  # duplicate or late
            else:
                self._fold_resets(src, cumulative)
            src.epoch, src.seq = snapshot.epoch, snapshot.seq
            src.cumulative = cumulative
            src.gauges = gauges
            src.alive = True
            src.last_seen = now

    @staticmethod
    def _fold_resets(src: _Source, new: dict[_Key, float]) -> None:
        # Same epoch yet a series went down or vanished: a reset we were not told about; keep what it had.
        reset: set[tuple[str, _Labels]] = set()
        for key, old in src.cumulative.items():
            value = new.get(key)
            if value is None or (value < old and not _is_sum(key)):
                reset.add(_group(key))
        if reset:
            _add(src.base, {k: v for k, v in src.cumulative.items() if _group(k) in reset})

    def forget(self, source_id: str) -> None:
        """The source is gone: drop its gauges, keep its counters/histograms counted."""
        with self._lock:
            self._forget(source_id)

    def prune(self, max_age_s: float) -> list[str]:
        """Forget every live source silent for more than ``max_age_s`` (a replica that died unannounced)."""
        with self._lock:
            cutoff = self._clock() - max_age_s
            stale = [sid for sid, s in self._sources.items() if s.alive and s.last_seen < cutoff]
            for sid in stale:
                self._forget(sid)
            return stale

    def _forget(self, source_id: str) -> None:
        src = self._sources.get(source_id)
        if src is None or not src.alive:
            return
        src.alive = False
        src.gauges = {}
        self._compact()

    def _compact(self) -> None:
        dead = sorted((s.last_seen, sid) for sid, s in self._sources.items() if not s.alive)
        for _, sid in dead[: max(0, len(dead) - self._max_dead)]:
            src = self._sources.pop(sid)
            self._retired_epochs.add(src.epoch)
            _add(self._retired, src.base)
            _add(self._retired, src.cumulative)

    @property
    def sources(self) -> list[str]:
        """Live sources."""
        with self._lock:
            return [sid for sid, s in self._sources.items() if s.alive]

    def totals(self) -> dict[_Key, float]:
        """Every summed sample, keyed by (family, sample name, sorted labels)."""
        with self._lock:
            return self._totals()

    def _totals(self) -> dict[_Key, float]:
        totals = dict(self._zeros)
        _add(totals, self._retired)
        for src in self._sources.values():
            _add(totals, src.base)
            _add(totals, src.cumulative)
            if src.alive:
                _add(totals, src.gauges)
        return totals

    def collect(self) -> Iterable[Metric]:
        """The prometheus_client ``Collector`` protocol: summed metric families."""
        with self._lock:
            totals = self._totals()
            families = dict(self._families)
            live = sum(1 for s in self._sources.values() if s.alive)
        by_family: dict[str, list[tuple[_Key, float]]] = {}
        for key, value in totals.items():
            by_family.setdefault(key[0], []).append((key, value))
        out = []
        for name, (typ, doc) in families.items():
            metric = Metric(name, doc, typ)
            for (_, sample, labels), value in sorted(by_family.get(name, []), key=lambda kv: _order(kv[0])):
                metric.add_sample(sample, dict(labels), value)
            out.append(metric)
        sources = Metric("metrics_sources", "Processes (replicas) currently reporting metrics.", "gauge")
        sources.add_sample("metrics_sources", {}, float(live))
        out.append(sources)
        return out

    def render(self) -> bytes:
        """Prometheus text exposition (:data:`CONTENT_TYPE`) of the sums over all sources."""
        return generate_latest(self)


_SUFFIX_ORDER = {"_bucket": 0, "_count": 1, "_sum": 2}


def _order(key: _Key) -> tuple[_Labels, int, float, str]:
    """Per child: buckets ascending by ``le``, then ``_count``, ``_sum`` (prometheus_client's order)."""
    family, sample, labels = key
    _, group_labels = _group(key)
    le = dict(labels).get("le")
    bound = math.inf if le is None else float(le)
    return group_labels, _SUFFIX_ORDER.get(sample[len(family) :], 0), bound, sample


class MetricsPusher:
    """Pushes ``metrics.snapshot()`` to ``push(source_id, snapshot)`` every ``interval_s``.

    Skips unchanged snapshots but still pushes at least every ``max_silence_s`` so the aggregator can tell
    an idle replica from a dead one (see :meth:`MetricsAggregator.prune`). A failing or hanging push is
    logged and retried next tick; the task never dies of it.
    """

    def __init__(
        self,
        metrics: Metrics,
        push: Callable[[str, MetricsSnapshot], Awaitable[object]],
        source_id: str,
        interval_s: float = 1.0,
        *,
        max_silence_s: float = 10.0,
        push_timeout_s: float = 5.0,
    ) -> None:
        self._metrics = metrics
        self._push = push
        self.source_id = source_id
        self._interval = interval_s
        self._max_silence = max_silence_s
        self._timeout = push_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._last: MetricsSnapshot | None = None
        self._last_at = -math.inf
        self._failing = False
        self.pushes = 0  # successful pushes
        self.failures = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background task on the running loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"metrics-pusher:{self.source_id}"
            )

    async def stop(self, *, flush: bool = True) -> None:
        """Stop the task; with ``flush`` push once more so the last increments are not lost."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if flush:
            await self.push_now(force=True)

    async def push_now(self, *, force: bool = False) -> bool:
        """Push if changed (or ``force``, or silent too long); False only when the push failed."""
        snapshot = self._metrics.snapshot()
        now = time.monotonic()
        unchanged = self._last is not None and snapshot.families == self._last.families
        if not force and unchanged and now - self._last_at < self._max_silence:
            return True
        try:
            await asyncio.wait_for(self._push(self.source_id, snapshot), self._timeout)
        except Exception:
            # _last stays the last *delivered* snapshot, so the next tick retries.
            self.failures += 1
            # Loud once per failure streak, quiet while the aggregator stays unreachable.
            level = logging.DEBUG if self._failing else logging.WARNING
            log.log(level, "metrics push from %s failed", self.source_id, exc_info=True)
            self._failing = True
            return False
        if self._failing:
            log.info("metrics push from %s recovered", self.source_id)
            self._failing = False
        self._last, self._last_at = snapshot, now
        self.pushes += 1
        return True

    async def _run(self) -> None:
        while True:
            await self.push_now()
            await asyncio.sleep(self._interval)
