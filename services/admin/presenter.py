"""The JSON shape of a monitoring snapshot (``GET /v1/admin/queues``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.admin.types import Percentiles, Snapshot, WindowStats, WorkerInfo
from services.clock import timestamp


def _pct(p: Percentiles) -> dict[str, float | None]:
    return {"p50": p.p50, "p95": p.p95}


def _window(w: WindowStats) -> dict[str, Any]:
    return {
        "minutes": w.minutes,
        "completed": w.completed,
        "per_minute": round(w.per_minute, 3),
        "by_status": w.by_status,
        "queue_wait_seconds": _pct(w.queue_wait),
        "run_seconds": _pct(w.run_time),
        "truncated": w.truncated,
    }


def _worker(w: WorkerInfo, now: datetime) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": list(w.queues),
        "engine": w.engine,
        "model": w.model,
        "slots": w.slots,
        "slots_in_use": w.slots_in_use,
        "started_at": timestamp(w.started_at),
        "last_seen": timestamp(w.last_seen),
        "seconds_since_heartbeat": round(max(0.0, (now - w.last_seen).total_seconds()), 3),
    }


def snapshot_to_public(snap: Snapshot) -> dict[str, Any]:
    """Queues, workers, job counts, throughput windows and recent failures."""
    now = snap.generated_at
    return {
        "object": "admin.queues",
        "generated_at": timestamp(now),
        "queues": [
            {
                "queue": q.queue,
                "depth": q.depth,
                "unacked": q.unacked,
                "oldest_age_seconds": q.oldest_age_seconds,
                "priorities": [
                    {
                        "priority": p.priority.value,
                        "list": p.list_name,
                        "depth": p.depth,
                        "in_broker": p.in_broker,
                        "oldest_age_seconds": p.oldest_age_seconds,
                    }
                    for p in q.priorities
                ],
            }
            for q in snap.queues
        ],
        "jobs": {
            "by_status": snap.jobs.by_status,
            "running_by_model": snap.jobs.running_by_model,
        },
        "workers": {
            "online": len(snap.workers),
            "slots": sum(w.slots for w in snap.workers),
            "slots_in_use": sum(w.slots_in_use for w in snap.workers),
            "items": [_worker(w, now) for w in snap.workers],
        },
        "throughput": {f"{w.minutes}m": _window(w) for w in snap.windows},
        "recent_failures": [
            {
                "id": f.job_id,
                "key_id": f.owner_id,
                "model": f.model,
                "error": {"code": f.error_code, "message": f.error_message},
                "completed_at": timestamp(f.completed_at),
            }
            for f in snap.recent_failures
        ],
    }
