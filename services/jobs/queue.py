"""Enqueueing jobs: the ``TaskQueue`` Protocol and its Celery adapter.

The API enqueues by task *name* (``send_task``), so ``services`` never imports ``workers``.
Celery is imported lazily: importing ``services`` must not pull in Celery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

import redis

from services.errors import Unavailable
from services.settings import Settings
from services.types import BROKER_PRIORITY_STEPS, Priority

INFERENCE_TASK = "loupe.inference.run"
# Separator kombu puts between a queue's name and its priority step: ``inference:9``.
PRIORITY_SEP = ":"


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Redis transport options shared by the API (producer) and the workers (consumer)."""
    return {
        # Must exceed the longest job or Redis redelivers a job still running.
        "visibility_timeout": settings.visibility_timeout_seconds,
        "priority_steps": BROKER_PRIORITY_STEPS,
        "sep": PRIORITY_SEP,
        "queue_order_strategy": "priority",
    }


def priority_queue_names(queue: str) -> dict[Priority, str]:
    """The Redis list that holds each priority's messages for ``queue``."""
    return {
        p: queue if p.broker_priority == 0 else f"{queue}{PRIORITY_SEP}{p.broker_priority}"
        for p in Priority
    }


# kombu's Redis transport moves a delivered message from its list to this hash (delivery tag →
# ``[message, exchange, routing_key]``) until the worker acks it; countdown retries wait there too.
UNACKED_KEY = "unacked"  # kombu's default ``unacked_key``
SCAN_CHUNK = 500


@dataclass(frozen=True)
class HeldMessages:
    """Job ids whose messages the broker holds for a queue."""

    waiting: frozenset[str]  # in the queue's priority lists, not yet delivered
    delivered: frozenset[str]  # delivered to a worker and not yet acknowledged

    @property
    def all(self) -> frozenset[str]:
        return self.waiting | self.delivered


class QueuedMessages(Protocol):
    def held(self, queue: str) -> HeldMessages: ...


class RedisQueuedMessages:
    """The job ids the broker holds for ``queue``: messages waiting in its priority lists, and
    those delivered and not yet acknowledged. A message's task id is its job id (see
    :meth:`CeleryTaskQueue.enqueue_inference`), read from the kombu envelope's headers."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    @classmethod
    def from_url(cls, url: str) -> RedisQueuedMessages:
        return cls(redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5))

    def held(self, queue: str) -> HeldMessages:
        try:
            waiting: set[str] = set()
            for list_name in priority_queue_names(queue).values():
                start = 0
                while chunk := self._redis.lrange(list_name, start, start + SCAN_CHUNK - 1):
                    waiting.update(_task_id(raw) for raw in chunk)
                    start += SCAN_CHUNK
            delivered = {_unacked_task_id(raw, queue) for raw in self._redis.hvals(UNACKED_KEY)}
        except redis.RedisError as exc:
            raise Unavailable(f"broker unavailable: {exc}") from exc
        return HeldMessages(frozenset(waiting - {""}), frozenset(delivered - {""}))

    def close(self) -> None:
        self._redis.close()


def _task_id(raw: bytes | str) -> str:
    try:
        return str(json.loads(raw)["headers"]["id"])
    except (ValueError, TypeError, KeyError):
        return ""  # not a Celery message: nothing of ours


def unacked_record(raw: bytes | str) -> tuple[Any, str] | None:
    """(message, routing key) of an ``unacked`` hash value; None if it is not kombu's record.
    Celery routes a queue's tasks with the queue's name as routing key."""
    try:
        message, _exchange, routing_key = json.loads(raw)
    except (ValueError, TypeError):
        return None
    return message, str(routing_key)


def _unacked_task_id(raw: bytes | str, queue: str) -> str:
    record = unacked_record(raw)
    if record is None or record[1] != queue:
        return ""
    try:
        return str(record[0]["headers"]["id"])
    except (TypeError, KeyError):
        return ""


class TaskQueue(Protocol):
    def enqueue_inference(
        self, job_id: str, priority: Priority = Priority.NORMAL, queue: str | None = None
    ) -> None:
        """Publish ``job_id``'s message on ``queue`` (default: the inference queue)."""
        ...


class CeleryProducer:
    """A producer-only Celery app: publishes tasks by name; broker errors become ``Unavailable``.

    Shared by every adapter that enqueues (jobs, webhook deliveries), so they connect, retry and
    fail the same way.
    """

    def __init__(self, settings: Settings, name: str = "loupe-producer") -> None:
        from celery import Celery  # lazy on purpose: see the module docstring

        self._app: Any = Celery(name, broker=settings.broker_url, set_as_current=False)
        self._app.conf.update(
            broker_transport_options=broker_transport_options(settings),
            broker_connection_retry_on_startup=True,
            broker_connection_timeout=5,
            task_serializer="json",
        )

    def send(self, task: str, args: list[Any], queue: str, **options: Any) -> None:
        try:
            self._app.send_task(
                task,
                args=args,
                queue=queue,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
                **options,
            )
        except Exception as exc:  # kombu raises many transport error types
            raise Unavailable(f"broker unavailable: {exc}") from exc

    def close(self) -> None:
        self._app.close()


class CeleryTaskQueue:
    """Publishes inference task messages to the Redis broker."""

    def __init__(self, settings: Settings) -> None:
        self._queue = settings.inference_queue
        self._producer = CeleryProducer(settings)

    def enqueue_inference(
        self, job_id: str, priority: Priority = Priority.NORMAL, queue: str | None = None
    ) -> None:
        # The task id is the job id, so the message and the job are easy to match in the broker.
        self._producer.send(
            INFERENCE_TASK,
            [job_id],
            queue or self._queue,
            task_id=job_id,
            priority=priority.broker_priority,
        )

    def close(self) -> None:
        self._producer.close()
