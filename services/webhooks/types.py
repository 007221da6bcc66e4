"""Webhook domain types: event types, delivery states, secrets, events and attempts."""

from __future__ import annotations

import base64
import enum
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
EVENT_ID_PREFIX = "msg_"
RESPONSE_BODY_LIMIT = 1024  # bytes of the receiver's answer kept in the delivery log


class EventType(enum.StrEnum):
    """``type`` of a webhook payload; ``filter_name`` is its ``webhook_events_filter`` entry."""

    STARTED = "job.started"
    COMPLETED = "job.completed"

    @property
    def filter_name(self) -> str:
        return "start" if self is EventType.STARTED else "completed"

    @property
    def rank(self) -> int:
        """Order of the events of one job: a higher rank is never delivered before a lower."""
        return 0 if self is EventType.STARTED else 1


class EventState(enum.StrEnum):
    PENDING = "pending"  # attempts left (or waiting for an earlier event of the same job)
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # retries exhausted, or the receiver answered 410 Gone


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def new_event_id() -> str:
    return EVENT_ID_PREFIX + secrets.token_hex(12)


@dataclass(frozen=True)
class WebhookSecret:
    owner_id: str
    secret: str
    created_at: datetime
    previous_secret: str | None = None
    previous_expires_at: datetime | None = None

    def signing_secrets(self, now: datetime) -> tuple[str, ...]:
        """The secrets that sign a delivery now: the current one, plus the previous one
        until its overlap window ends (both signatures are sent, space-separated)."""
        if (
            self.previous_secret is not None
            and self.previous_expires_at is not None
            and now < self.previous_expires_at
        ):
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True)
class NewWebhookEvent:
    id: str
    job_id: str
    owner_id: str
    type: EventType
    url: str
    payload: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class WebhookEvent:
    id: str
    job_id: str
    owner_id: str
    type: EventType
    url: str
    payload: dict[str, Any]
    created_at: datetime
    state: EventState
    run_first_attempt: int = 1
    next_attempt_at: datetime | None = None  # when the next attempt is due (pending only)
    finished_at: datetime | None = None
    dispatched_until: datetime | None = None  # an attempt is out until then (see dispatch.py)


@dataclass(frozen=True)
class DeliveryAttempt:
    event_id: str
    attempt: int
    attempted_at: datetime
    completed_at: datetime | None = None
    http_status: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    response_body: str | None = None


@dataclass(frozen=True)
class NextStep:
    """What follows an attempt: a final ``state``, or (``PENDING``) the next attempt at ``due``."""

    state: EventState
    due: datetime | None = None

    @property
    def final(self) -> bool:
        return self.state is not EventState.PENDING


@dataclass(frozen=True)
class AttemptResult:
    """What one POST produced: a status (any answer), or an error (no answer at all)."""

    http_status: int | None
    latency_ms: int
    error: str | None = None
    response_body: str | None = None
    retry_after_seconds: float | None = None

    @property
    def delivered(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300
