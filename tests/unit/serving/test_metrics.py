from __future__ import annotations

import asyncio
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from orchestra.engine._messages import ProcessingStep
from orchestra.serving._metrics import Metrics, MetricsAggregator, MetricsPusher, MetricsSnapshot

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

REQUIRED = {
    # family as the parser names it → (type, label names of its main samples)
    "http_requests": ("counter", {"method", "endpoint", "status"}),
    "websocket_connections": ("gauge", set()),
    "http_request_duration_seconds": ("histogram", {"method", "endpoint"}),
    "swarm_runs": ("counter", {"swarm_type", "optimization_mode", "outcome"}),
    "agent_turns": ("counter", {"swarm_type", "role"}),
    "llm_tokens": ("counter", {"provider", "model", "kind"}),
    "rate_limited": ("counter", set()),
    "webhook_deliveries": ("counter", {"event", "outcome"}),
}


def parse(agg: MetricsAggregator) -> tuple[dict[str, str], Samples]:
    """Render and parse back: (family → type, (sample name, labels) → value)."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for fam in text_string_to_metric_families(agg.render().decode()):
        types[fam.name] = fam.type
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return types, samples


def val(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def step(role: str, model: str, prompt: int, completion: int) -> ProcessingStep:
    return ProcessingStep(
        agent=f"{role}-1",
        role=role,
        round=1,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_s=0.1,
    )


def test_two_replicas_are_summed() -> None:
    a, b = Metrics(), Metrics()
    a.observe_http("get", "/health", 200, 0.01)
    a.observe_http("GET", "/health", 200, 0.02)
    b.observe_http("GET", "/health", 200, 0.03)
    b.observe_http("POST", "/api/v1/chat", 429, 0.001)
    a.swarm_run("coding-team", "lite", "completed")
    b.swarm_run("coding-team", "lite", "completed")
    b.swarm_run("research-team", "quality", "failed")
    a.agent_turns("coding-team", [step("planner", "m1", 10, 5), step("coder", "m1", 20, 7)], "scripted")
    b.agent_turns("coding-team", [step("coder", "m1", 1, 2), step("reviewer", "m2", 3, 4)], "scripted")
    a.rate_limited()
    b.rate_limited()
    b.rate_limited()
    a.webhook_delivery("run.completed", "delivered")
    b.webhook_delivery("run.completed", "delivered")
    b.webhook_delivery("run.failed", "failed")
    a.ws_opened()
    b.ws_opened()
    b.ws_opened()

    agg = MetricsAggregator()
    agg.update("replica-a", a.snapshot())
    agg.update("replica-b", b.snapshot())
    types, s = parse(agg)

    assert val(s, "http_requests_total", method="GET", endpoint="/health", status="200") == 3
    assert val(s, "http_requests_total", method="POST", endpoint="/api/v1/chat", status="429") == 1
    assert (
        val(s, "swarm_runs_total", swarm_type="coding-team", optimization_mode="lite", outcome="completed")
        == 2
    )
    assert (
        val(s, "swarm_runs_total", swarm_type="research-team", optimization_mode="quality", outcome="failed")
        == 1
    )
    assert val(s, "agent_turns_total", swarm_type="coding-team", role="coder") == 2
    assert val(s, "agent_turns_total", swarm_type="coding-team", role="planner") == 1
    assert val(s, "agent_turns_total", swarm_type="coding-team", role="reviewer") == 1
    assert val(s, "llm_tokens_total", provider="scripted", model="m1", kind="prompt") == 31
    assert val(s, "llm_tokens_total", provider="scripted", model="m1", kind="completion") == 14
    assert val(s, "llm_tokens_total", provider="scripted", model="m2", kind="prompt") == 3
    assert val(s, "rate_limited_total") == 3
    assert val(s, "webhook_deliveries_total", event="run.completed", outcome="delivered") == 2
    assert val(s, "webhook_deliveries_total", event="run.failed", outcome="failed") == 1
    assert val(s, "websocket_connections") == 3
    assert val(s, "metrics_sources") == 2
    # Label names of every required family, now that each was used.
    for family, (typ, labels) in REQUIRED.items():
        assert types[family] == typ
        main = {"counter": family + "_total", "gauge": family, "histogram": family + "_count"}[typ]
        names = [set(dict(k[1])) for k in s if k[0] == main]
        assert names and all(n == labels for n in names), (family, names)
    # _created is dropped: no per-process timestamps summed into nonsense.
    assert not any(name.endswith("_created") for name in types)
    assert not any(k[0].endswith("_created") for k in s)


def test_every_family_has_help_and_type_before_any_activity() -> None:
    agg = MetricsAggregator()
    text = agg.render().decode()
    for family, (typ, _) in REQUIRED.items():
        exposed = family + "_total" if typ == "counter" else family
        assert f"# HELP {exposed} " in text
        assert f"# TYPE {exposed} {typ}\n" in text
    types, s = parse(agg)
    assert {f: types[f] for f in REQUIRED} == {f: t for f, (t, _) in REQUIRED.items()}
    # Unlabelled series exist from the start; labelled ones appear once used.
    assert s[("rate_limited_total", frozenset())] == 0
    assert s[("websocket_connections", frozenset())] == 0
    assert val(s, "metrics_sources") == 0
    # A source that did nothing yet changes nothing.
    agg.update("idle", Metrics().snapshot())
    assert parse(agg)[1] == {**s, ("metrics_sources", frozenset()): 1.0}


def test_histograms_are_summed_bucket_by_bucket() -> None:
    a, b = Metrics(), Metrics()
    for d in (0.004, 0.2, 0.7):
        a.observe_http("GET", "/x", 200, d)
    for d in (0.2, 400.0):
        b.observe_http("GET", "/x", 200, d)
    agg = MetricsAggregator()
    agg.update("a", a.snapshot())
    agg.update("b", b.snapshot())
    _, s = parse(agg)
    name, labels = "http_request_duration_seconds", {"method": "GET", "endpoint": "/x"}
    assert val(s, name + "_count", **labels) == 5
    assert val(s, name + "_sum", **labels) == pytest.approx(401.104)
    buckets = {dict(k[1])["le"]: v for k, v in s.items() if k[0] == name + "_bucket"}
    assert buckets["0.005"] == 1
    assert buckets["0.1"] == 1
    assert buckets["0.25"] == 3
    assert buckets["1.0"] == 4
    assert buckets["300.0"] == 4
    assert buckets["+Inf"] == 5
    # Exposition keeps prometheus_client's order: buckets ascending, then _count, _sum.
    lines = [ln for ln in agg.render().decode().splitlines() if ln.startswith(name)]
    les = [float(ln.split('le="')[1].split('"')[0]) for ln in lines if "_bucket" in ln]
    assert les == sorted(les)
    assert lines[-2].startswith(name + "_count") and lines[-1].startswith(name + "_sum")


def test_gauges_go_up_and_down_across_sources_and_forget_drops_them() -> None:
    a, b = Metrics(), Metrics()
    agg = MetricsAggregator()
    a.ws_opened()
    a.ws_opened()
    b.ws_opened()
    agg.update("a", a.snapshot())
    agg.update("b", b.snapshot())
    assert val(parse(agg)[1], "websocket_connections") == 3
    a.ws_closed()
    b.ws_closed()
    agg.update("a", a.snapshot())
    agg.update("b", b.snapshot())
    assert val(parse(agg)[1], "websocket_connections") == 1
    b.ws_opened()
    agg.update("b", b.snapshot())
    agg.forget("a")  # its open connection died with it
    assert val(parse(agg)[1], "websocket_connections") == 1
    assert agg.sources == ["b"]


def test_restart_with_fresh_registry_never_decreases_totals() -> None:
    agg = MetricsAggregator()
    old = Metrics()
    for _ in range(5):
        old.rate_limited()
        old.observe_http("GET", "/x", 200, 0.1)
    old.ws_opened()
    agg.update("r", old.snapshot())
    new = Metrics()  # same replica id, new process
    new.rate_limited()
    agg.update("r", new.snapshot())
    _, s = parse(agg)
    assert val(s, "rate_limited_total") == 6
    assert val(s, "http_requests_total", method="GET", endpoint="/x", status="200") == 5
    assert val(s, "http_request_duration_seconds_count", method="GET", endpoint="/x") == 5
    assert val(s, "websocket_connections") == 0  # gauges are the new process's only
    # The new process overtaking the old value is still counted on top (the epoch says it restarted).
    for _ in range(10):
        new.rate_limited()
    agg.update("r", new.snapshot())
    assert val(parse(agg)[1], "rate_limited_total") == 16


def test_same_epoch_decrease_is_treated_as_reset() -> None:
    agg = MetricsAggregator()
    old = Metrics()
    for _ in range(4):
        old.rate_limited()
        old.observe_http("GET", "/x", 200, 1.0)
    old.webhook_delivery("e", "ok")
    agg.update("r", old.snapshot())
    fresh = Metrics()
    fresh.rate_limited()
    fresh.observe_http("GET", "/x", 200, 1.0)
    # A reset without a new epoch: only the drop tells. The vanished webhook series is kept too.
    agg.update("r", fresh.snapshot()._replace(epoch=old.epoch, seq=99))
    _, s = parse(agg)
    assert val(s, "rate_limited_total") == 5
    assert val(s, "http_request_duration_seconds_count", method="GET", endpoint="/x") == 5
    assert val(s, "http_request_duration_seconds_sum", method="GET", endpoint="/x") == 5.0
    assert val(s, "webhook_deliveries_total", event="e", outcome="ok") == 1


def test_forget_keeps_counters_and_a_returning_source_is_not_double_counted() -> None:
    agg = MetricsAggregator()
    m = Metrics()
    m.swarm_run("coding-team", "lite", "completed")
    m.ws_opened()
    agg.update("r", m.snapshot())
    agg.forget("r")
    agg.forget("r")  # idempotent
    agg.forget("never-seen")
    _, s = parse(agg)
    assert (
        val(s, "swarm_runs_total", swarm_type="coding-team", optimization_mode="lite", outcome="completed")
        == 1
    )
    assert val(s, "websocket_connections") == 0
    assert val(s, "metrics_sources") == 0
    # Declared dead too early: the same process reports again → live, counted once.
    m.swarm_run("coding-team", "lite", "completed")
    agg.update("r", m.snapshot())
    _, s = parse(agg)
    assert (
        val(s, "swarm_runs_total", swarm_type="coding-team", optimization_mode="lite", outcome="completed")
        == 2
    )
    assert val(s, "websocket_connections") == 1


def test_reupdate_is_idempotent() -> None:
    agg = MetricsAggregator()
    m = Metrics()
    m.observe_http("GET", "/x", 500, 0.2)
    m.rate_limited()
    snap = m.snapshot()
    agg.update("r", snap)
    first = agg.render()
    for _ in range(3):
        agg.update("r", snap)
        agg.update("r", pickle.loads(pickle.dumps(snap)))  # what crossing a process boundary does
    assert agg.render() == first


def test_late_duplicated_and_reordered_deliveries_are_ignored() -> None:
    agg = MetricsAggregator()
    old = Metrics()
    old.rate_limited()
    s1 = old.snapshot()
    old.rate_limited()
    s2 = old.snapshot()
    agg.update("r", s2)
    agg.update("r", s1)  # a timed-out push arriving after its successor: no fake reset
    assert val(parse(agg)[1], "rate_limited_total") == 2
    new = Metrics()  # restart
    agg.update("r", new.snapshot())
    agg.update("r", s2)  # late snapshot of the retired process: not a second restart
    agg.update("r", s1)
    assert val(parse(agg)[1], "rate_limited_total") == 2
    new.rate_limited()
    agg.update("r", new.snapshot())
    assert val(parse(agg)[1], "rate_limited_total") == 3


def test_prune_and_compaction_of_dead_sources() -> None:
    now = [0.0]
    agg = MetricsAggregator(max_dead_sources=2, clock=lambda: now[0])
    procs = []
    for i in range(5):
        m = Metrics()
        for _ in range(i + 1):
            m.rate_limited()
        m.ws_opened()
        agg.update(f"r{i}", m.snapshot())
        procs.append(m)
        now[0] += 10
    # r0..r2 silent for > 25 s
    assert sorted(agg.prune(25.0)) == ["r0", "r1", "r2"]
    assert agg.prune(25.0) == []
    _, s = parse(agg)
    assert val(s, "rate_limited_total") == 15  # nothing lost, though r0 was compacted
    assert val(s, "websocket_connections") == 2
    assert sorted(agg.sources) == ["r3", "r4"]
    # r1 (dead, not compacted) comes back: live again, counted once.
    agg.update("r1", procs[1].snapshot())
    assert val(parse(agg)[1], "websocket_connections") == 3
    # r0 was compacted: its epoch is retired, so a late report is ignored rather than counted twice.
    agg.update("r0", procs[0].snapshot())
    _, s = parse(agg)
    assert val(s, "rate_limited_total") == 15
    assert "r0" not in agg.sources


def test_update_rejects_other_types_and_snapshot_is_plain_data() -> None:
    m = Metrics()
    m.agent_turns("t", [step("coder", "m", 1, 1)], "scripted")
    snap = m.snapshot()
    assert isinstance(snap, MetricsSnapshot)
    assert pickle.loads(pickle.dumps(snap)) == snap
    again = m.snapshot()  # unchanged registry → same families (lets the pusher skip), newer seq
    assert again.families == snap.families and again.seq > snap.seq
    with pytest.raises(TypeError):
        MetricsAggregator().update("r", {"families": []})  # type: ignore[arg-type]


# --- pusher ---------------------------------------------------------------------------------------------


async def test_pusher_pushes_periodically_and_flushes_on_stop() -> None:
    m = Metrics()
    agg = MetricsAggregator()
    calls: list[MetricsSnapshot] = []

    async def push(source_id: str, snap: MetricsSnapshot) -> None:
        calls.append(snap)
        agg.update(source_id, snap)

    pusher = MetricsPusher(m, push, "replica-1", interval_s=0.01, max_silence_s=0.05)
    pusher.start()
    pusher.start()  # idempotent
    assert pusher.running
    m.rate_limited()
    await asyncio.sleep(0.1)
    assert val(parse(agg)[1], "rate_limited_total") == 1
    m.rate_limited()
    await asyncio.sleep(0.1)
    assert val(parse(agg)[1], "rate_limited_total") == 2
    # Unchanged snapshots are skipped between heartbeats, yet heartbeats keep coming.
    assert 3 <= len(calls) < 15
    m.rate_limited()
    await pusher.stop()  # final flush delivers the last increment
    assert not pusher.running
    assert val(parse(agg)[1], "rate_limited_total") == 3
    n = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == n


async def test_pusher_survives_failing_and_hanging_pushes() -> None:
    m = Metrics()
    agg = MetricsAggregator()
    attempts = 0

    async def flaky(source_id: str, snap: MetricsSnapshot) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ConnectionError("aggregator down")
        if attempts == 4:
            await asyncio.sleep(10)  # hangs: the timeout must cut it
        agg.update(source_id, snap)

    pusher = MetricsPusher(m, flaky, "r", interval_s=0.01, push_timeout_s=0.05)
    m.rate_limited()
    pusher.start()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if pusher.pushes:
            break
    assert pusher.running
    assert pusher.failures == 4 and pusher.pushes >= 1
    assert val(parse(agg)[1], "rate_limited_total") == 1
    await pusher.stop(flush=False)


async def test_stop_flush_failure_does_not_raise() -> None:
    async def broken(source_id: str, snap: MetricsSnapshot) -> None:
        raise RuntimeError("no aggregator")

    pusher = MetricsPusher(Metrics(), broken, "r", interval_s=10)
    await pusher.stop()  # never started: just the (failing) flush
    assert pusher.failures == 1 and not await pusher.push_now()


# --- property -------------------------------------------------------------------------------------------

SERIES = [("GET", "/a", 200), ("POST", "/b", 500), ("GET", "/a", 404)]
N_SOURCES = 3

op = st.one_of(
    st.tuples(
        st.just("inc"), st.integers(0, N_SOURCES - 1), st.integers(0, len(SERIES) - 1), st.integers(1, 3)
    ),
    st.tuples(st.just("push"), st.integers(0, N_SOURCES - 1)),
    st.tuples(st.just("restart"), st.integers(0, N_SOURCES - 1)),
    st.tuples(st.just("die"), st.integers(0, N_SOURCES - 1)),
    st.tuples(st.just("forget"), st.integers(0, N_SOURCES - 1)),
    st.tuples(st.just("replay"), st.integers(0, N_SOURCES - 1), st.integers(0, 100)),
)


def http_totals(agg: MetricsAggregator) -> tuple[list[float], dict[tuple[str, str], float]]:
    _, s = parse(agg)
    requests = [val(s, "http_requests_total", method=m, endpoint=e, status=str(c)) for m, e, c in SERIES]
    counts = {
        (m, e): val(s, "http_request_duration_seconds_count", method=m, endpoint=e) for m, e, _ in SERIES
    }
    return requests, counts


def expected_counts(per_series: list[int]) -> dict[tuple[str, str], float]:
    counts: dict[tuple[str, str], float] = {}
    for (m, e, _), n in zip(SERIES, per_series, strict=True):
        counts[(m, e)] = counts.get((m, e), 0) + n
    return counts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=40), st.integers(0, N_SOURCES))
def test_rendered_totals_equal_pushed_increments(ops: list[tuple[str, int, int, int]], max_dead: int) -> None:
    """Increments split across sources with random pushes, restarts, deaths and forgets: at every step the
    rendered totals equal every increment that reached the aggregator; a final push delivers the rest."""
    agg = MetricsAggregator(max_dead_sources=max_dead)
    procs = [Metrics() for _ in range(N_SOURCES)]
    local = [[0] * len(SERIES) for _ in range(N_SOURCES)]  # this process's counts
    pushed = [[0] * len(SERIES) for _ in range(N_SOURCES)]  # its counts as of its last push
    gone = [0] * len(SERIES)  # what replaced processes had pushed
    sent: list[tuple[int, MetricsSnapshot]] = []  # every snapshot pushed so far, to deliver again late

    for kind, i, *rest in ops:
        if kind == "inc":
            j, amount = rest
            method, endpoint, status = SERIES[j]
            for _ in range(amount):
                procs[i].observe_http(method, endpoint, status, 0.01)
            local[i][j] += amount
        elif kind == "push":
            snap = procs[i].snapshot()
            agg.update(f"s{i}", snap)
            sent.append((i, snap))
            pushed[i] = list(local[i])
        elif kind == "replay":  # a late or duplicated delivery changes nothing
            if sent:
                src, snap = sent[rest[0] % len(sent)]
                agg.update(f"s{src}", snap)
        elif kind == "forget" and max_dead >= N_SOURCES:
            # Declared dead though alive (never compacted with this many slots): it may report again.
            agg.forget(f"s{i}")
        else:  # restart / die: unpushed increments are lost with the process; a fresh one takes its id
            if kind != "restart":
                agg.forget(f"s{i}")
            gone = [g + p for g, p in zip(gone, pushed[i], strict=True)]
            procs[i], local[i], pushed[i] = Metrics(), [0] * len(SERIES), [0] * len(SERIES)
        want = [g + sum(p[j] for p in pushed) for j, g in enumerate(gone)]
        assert http_totals(agg) == (want, expected_counts(want))

    for i in range(N_SOURCES):
        agg.update(f"s{i}", procs[i].snapshot())
    want = [g + sum(loc[j] for loc in local) for j, g in enumerate(gone)]
    assert http_totals(agg) == (want, expected_counts(want))
