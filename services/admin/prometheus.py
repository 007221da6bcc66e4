"""Prometheus exposition of a monitoring :class:`~services.admin.monitor.Monitor` snapshot.

A custom collector computes every family at scrape time from one snapshot: gauges from Redis and
SQL as they are now, counters and histograms from SQL sums. Nothing is counted in process memory,
so every gunicorn process serves the same values (no multiprocess mode needed).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from services.admin.monitor import Monitor
from services.admin.types import Histogram, Snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Every family this module exposes; the infra configs (alerts, dashboards, KEDA) may use only these.
METRIC_NAMES = (
    "loupe_queue_depth",
    "loupe_queue_in_broker",
    "loupe_queue_oldest_age_seconds",
    "loupe_queue_unacked",
    "loupe_workers_online",
    "loupe_worker_slots",
    "loupe_worker_slots_in_use",
    "loupe_jobs_by_status",
    "loupe_jobs_running",
    "loupe_jobs_total",
    "loupe_jobs_worker_lost_total",
    "loupe_job_queue_wait_seconds",
    "loupe_job_run_seconds",
    "loupe_tokens_total",
    "loupe_cost_total",
    "loupe_webhook_deliveries_total",
)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [(repr(float(b)), float(n)) for b, n in zip(h.bounds, h.buckets, strict=True)] + [
        ("+Inf", float(h.count))
    ]


def metric_families(snap: Snapshot) -> Iterator[Metric]:
    """The families of one snapshot, in a stable order."""
    depth = GaugeMetricFamily(
        "loupe_queue_depth",
        "Jobs waiting: queued in SQL for job queues, messages for the others.",
        labels=["queue", "priority"],
    )
    in_broker = GaugeMetricFamily(
        "loupe_queue_in_broker",
        "Messages waiting in the broker (the dispatcher's buffer, for job queues).",
        labels=["queue", "priority"],
    )
    age = GaugeMetricFamily(
        "loupe_queue_oldest_age_seconds",
        "Age of the oldest queued job (0 when none is queued).",
        labels=["queue", "priority"],
    )
    unacked = GaugeMetricFamily(
        "loupe_queue_unacked", "Messages delivered, not yet acked.", labels=["queue"]
    )
    for q in snap.queues:
        for p in q.priorities:
            depth.add_metric([q.queue, p.priority.value], p.depth)
            in_broker.add_metric([q.queue, p.priority.value], p.in_broker)
            age.add_metric([q.queue, p.priority.value], p.oldest_age_seconds or 0.0)
        unacked.add_metric([q.queue], q.unacked)
    yield from (depth, in_broker, age, unacked)

    yield GaugeMetricFamily(
        "loupe_workers_online", "Worker processes with a live heartbeat.", value=len(snap.workers)
    )
    slots = GaugeMetricFamily(
        "loupe_worker_slots", "Concurrent job slots of live workers.", labels=["model"]
    )
    in_use = GaugeMetricFamily(
        "loupe_worker_slots_in_use", "Slots running a job now.", labels=["model"]
    )
    per_model: dict[str, tuple[int, int]] = {}
    for w in snap.workers:
        s, u = per_model.get(w.model, (0, 0))
        per_model[w.model] = (s + w.slots, u + w.slots_in_use)
    for model, (s, u) in sorted(per_model.items()):
        slots.add_metric([model], s)
        in_use.add_metric([model], u)
    yield from (slots, in_use)

    by_status = GaugeMetricFamily(
        "loupe_jobs_by_status", "Jobs in the job store by status.", labels=["status"]
    )
    for status, n in sorted(snap.jobs.by_status.items()):
        by_status.add_metric([status], n)
    running = GaugeMetricFamily("loupe_jobs_running", "Running jobs by model.", labels=["model"])
    for model, n in sorted(snap.jobs.running_by_model.items()):
        running.add_metric([model], n)
    yield from (by_status, running)

    jobs_total = CounterMetricFamily(
        "loupe_jobs", "Jobs that reached a final status.", labels=["model", "status"]
    )
    wait = HistogramMetricFamily(
        "loupe_job_queue_wait_seconds", "Time from submit to start.", labels=["model"]
    )
    run = HistogramMetricFamily(
        "loupe_job_run_seconds", "Time from start to final status.", labels=["model"]
    )
    tokens = CounterMetricFamily(
        "loupe_tokens", "Tokens of finished jobs.", labels=["model", "kind"]
    )
    cost = CounterMetricFamily(
        "loupe_cost", "Cost of finished jobs (price card at submit).", labels=["model", "currency"]
    )
    worker_lost = CounterMetricFamily(
        "loupe_jobs_worker_lost",
        "Jobs failed worker_lost: their worker was lost on every allowed attempt.",
        labels=["model"],
    )
    for model, t in sorted(snap.totals.items()):
        for status, n in sorted(t.jobs_by_status.items()):
            jobs_total.add_metric([model, status], n)
        worker_lost.add_metric([model], t.worker_lost)
        wait.add_metric([model], _buckets(t.queue_wait), t.queue_wait.total)
        run.add_metric([model], _buckets(t.run_time), t.run_time.total)
        tokens.add_metric([model, "prompt"], t.prompt_tokens)
        tokens.add_metric([model, "completion"], t.completion_tokens)
        for currency, amount in sorted(t.cost.items()):
            cost.add_metric([model, currency], float(amount))
    yield from (jobs_total, worker_lost, wait, run, tokens, cost)

    webhooks = CounterMetricFamily(
        "loupe_webhook_deliveries", "Webhook delivery attempts by outcome.", labels=["outcome"]
    )
    for outcome, n in sorted(snap.webhook_deliveries.items()):
        webhooks.add_metric([outcome], n)
    yield webhooks


class SnapshotCollector(Collector):
    """Collects from ``monitor`` at each scrape (its snapshot cache applies)."""

    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        return metric_families(self._monitor.snapshot())


def exposition(monitor: Monitor) -> bytes:
    """The Prometheus text format of ``monitor``'s current snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(monitor))
    return generate_latest(registry)
