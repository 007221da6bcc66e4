"""What the Redis broker holds: the webhook delivery messages waiting in a queue or delivered and
not yet acknowledged (kombu's ``unacked`` hash, where countdown messages also wait)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis

from services.jobs.queue import UNACKED_KEY, priority_queue_names, unacked_record
from services.webhooks.queue import DELIVER_TASK


@dataclass(frozen=True)
class HeldDelivery:
    """One ``loupe.webhooks.deliver`` message: its arguments and its ETA (a countdown's)."""

    event_id: str
    attempt: int
    eta: str | None
    unacked: bool  # in the unacked hash (delivered to a worker), not in the queue's list


def held_deliveries(client: redis.Redis, queue: str) -> list[HeldDelivery]:
    """Every delivery message the broker holds for ``queue``, waiting or unacked."""
    waiting = [
        raw for name in priority_queue_names(queue).values() for raw in client.lrange(name, 0, -1)
    ]
    found = [_delivery(json.loads(raw), unacked=False) for raw in waiting]
    for raw in client.hvals(UNACKED_KEY):
        record = unacked_record(raw)
        if record is not None and record[1] == queue:
            found.append(_delivery(record[0], unacked=True))
    return [held for held in found if held is not None]


def _delivery(message: Any, *, unacked: bool) -> HeldDelivery | None:
    headers = message.get("headers") or {}
    if headers.get("task") != DELIVER_TASK:
        return None
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return HeldDelivery(str(args[0]), int(args[1]), headers.get("eta"), unacked)
