"""Webhook persistence: the ``WebhookStore`` Protocol and its SQL adapter.

Idempotence lives in unique keys: one event per (job, event type), and one attempt row per
(event, attempt number), inserted BEFORE the POST, so a duplicated task message cannot post twice.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, and_, case, func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from services.db.schema import webhook_attempts, webhook_events, webhook_secrets
from services.db.session import reading, writing
from services.errors import NotFound
from services.webhooks.types import (
    AttemptResult,
    DeliveryAttempt,
    EventState,
    EventType,
    NewWebhookEvent,
    WebhookEvent,
    WebhookSecret,
)


class WebhookStore(Protocol):
    def get_secret(self, owner_id: str) -> WebhookSecret | None: ...
    def create_secret(self, owner_id: str, secret: str, now: datetime) -> WebhookSecret: ...
    def rotate_secret(
        self, owner_id: str, secret: str, now: datetime, overlap_until: datetime
    ) -> WebhookSecret: ...
    def insert_event(self, event: NewWebhookEvent) -> bool: ...
    def get_event(self, event_id: str) -> WebhookEvent: ...
    def find_event(self, job_id: str, type: EventType) -> WebhookEvent | None: ...
    def events_for_job(self, job_id: str) -> list[WebhookEvent]: ...
    def attempts_for(self, event_ids: list[str]) -> dict[str, list[DeliveryAttempt]]: ...
    def last_attempt_number(self, event_id: str) -> int: ...
    def claim_attempt(
        self, event_id: str, attempt: int, now: datetime, stale_before: datetime
    ) -> bool: ...
    def complete_attempt(
        self, event_id: str, attempt: int, now: datetime, result: AttemptResult
    ) -> None: ...
    def schedule_next(self, event_id: str, next_attempt_at: datetime) -> None: ...
    def finish_event(self, event_id: str, state: EventState, now: datetime) -> bool: ...
    def restart_event(self, event_id: str, first_attempt: int, now: datetime) -> None: ...
    def attempt_outcomes(self) -> dict[str, int]: ...
    def overdue_pending(self, before: datetime, limit: int) -> list[str]: ...


class SqlWebhookStore:
    """``WebhookStore`` over SQLAlchemy Core; works on SQLite and PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    # ------------------------------------------------------------------ secrets

    def get_secret(self, owner_id: str) -> WebhookSecret | None:
        with reading(self._engine) as conn:
            return _secret(conn, owner_id)

    def create_secret(self, owner_id: str, secret: str, now: datetime) -> WebhookSecret:
        """Insert ``secret`` unless the key has one already; returns the stored one."""
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    insert(webhook_secrets).values(owner_id=owner_id, secret=secret, created_at=now)
                )
        except IntegrityError:
            pass  # created concurrently (API and worker): the first one wins
        stored = self.get_secret(owner_id)
        assert stored is not None
        return stored

    def rotate_secret(
        self, owner_id: str, secret: str, now: datetime, overlap_until: datetime
    ) -> WebhookSecret:
        with writing(self._engine) as conn:
            conn.execute(
                update(webhook_secrets)
                .where(webhook_secrets.c.owner_id == owner_id)
                .values(
                    previous_secret=webhook_secrets.c.secret,
                    previous_expires_at=overlap_until,
                    secret=secret,
                    created_at=now,
                )
            )
            stored = _secret(conn, owner_id)
        assert stored is not None
        return stored

    # ------------------------------------------------------------------ events

    def insert_event(self, event: NewWebhookEvent) -> bool:
        """Insert a pending event; False if the job already has an event of this type."""
        try:
            with writing(self._engine) as conn:
                conn.execute(insert(webhook_events).values(**_event_values(event)))
        except IntegrityError:
            return False
        return True

    def get_event(self, event_id: str) -> WebhookEvent:
        with reading(self._engine) as conn:
            row = (
                conn.execute(select(webhook_events).where(webhook_events.c.id == event_id))
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(f"No webhook event {event_id!r}.", code="webhook_event_not_found")
        return _event(row)

    def find_event(self, job_id: str, type: EventType) -> WebhookEvent | None:
        with reading(self._engine) as conn:
            row = (
                conn.execute(
                    select(webhook_events).where(
                        webhook_events.c.job_id == job_id,
                        webhook_events.c.event_type == type.value,
                    )
                )
                .mappings()
                .first()
            )
        return None if row is None else _event(row)

    def events_for_job(self, job_id: str) -> list[WebhookEvent]:
        """The job's events in delivery order (start before completed)."""
        with reading(self._engine) as conn:
            rows = (
                conn.execute(select(webhook_events).where(webhook_events.c.job_id == job_id))
                .mappings()
                .all()
            )
        return sorted((_event(row) for row in rows), key=lambda e: e.type.rank)

    def attempts_for(self, event_ids: list[str]) -> dict[str, list[DeliveryAttempt]]:
        found: dict[str, list[DeliveryAttempt]] = {event_id: [] for event_id in event_ids}
        if not event_ids:
            return found
        with reading(self._engine) as conn:
            rows = (
                conn.execute(
                    select(webhook_attempts)
                    .where(webhook_attempts.c.event_id.in_(event_ids))
                    .order_by(webhook_attempts.c.event_id, webhook_attempts.c.attempt)
                )
                .mappings()
                .all()
            )
        for row in rows:
            found[row["event_id"]].append(DeliveryAttempt(**dict(row)))
        return found

    def last_attempt_number(self, event_id: str) -> int:
        """The highest attempt number claimed so far (0 if none)."""
        with reading(self._engine) as conn:
            value = conn.execute(
                select(func.max(webhook_attempts.c.attempt)).where(
                    webhook_attempts.c.event_id == event_id
                )
            ).scalar_one()
        return int(value or 0)

    # ------------------------------------------------------------------ attempts

    def claim_attempt(
        self, event_id: str, attempt: int, now: datetime, stale_before: datetime
    ) -> bool:
        """Claim attempt ``attempt`` (insert its row); False if another task has it.

        An attempt claimed before ``stale_before`` and never completed belongs to a worker that
        died mid-POST; it is taken over (the broker redelivered that worker's message).
        """
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    insert(webhook_attempts).values(
                        event_id=event_id, attempt=attempt, attempted_at=now
                    )
                )
            return True
        except IntegrityError:
            pass
        with writing(self._engine) as conn:
            result = conn.execute(
                update(webhook_attempts)
                .where(
                    webhook_attempts.c.event_id == event_id,
                    webhook_attempts.c.attempt == attempt,
                    webhook_attempts.c.completed_at.is_(None),
                    webhook_attempts.c.attempted_at < stale_before,
                )
                .values(attempted_at=now)
            )
        return result.rowcount == 1

    def complete_attempt(
        self, event_id: str, attempt: int, now: datetime, result: AttemptResult
    ) -> None:
        with writing(self._engine) as conn:
            conn.execute(
                update(webhook_attempts)
                .where(
                    webhook_attempts.c.event_id == event_id,
                    webhook_attempts.c.attempt == attempt,
                )
                .values(
                    completed_at=now,
                    http_status=result.http_status,
                    latency_ms=result.latency_ms,
                    error=result.error,
                    response_body=result.response_body,
                )
            )

    def schedule_next(self, event_id: str, next_attempt_at: datetime) -> None:
        self._update_pending(event_id, next_attempt_at=next_attempt_at)

    def finish_event(self, event_id: str, state: EventState, now: datetime) -> bool:
        """pending → delivered | failed; False if it was not pending."""
        return self._update_pending(
            event_id, state=state.value, finished_at=now, next_attempt_at=None
        )

    def restart_event(self, event_id: str, first_attempt: int, now: datetime) -> None:
        """Put an event back to pending for a redelivery starting at ``first_attempt``."""
        with writing(self._engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id == event_id)
                .values(
                    state=EventState.PENDING.value,
                    run_first_attempt=first_attempt,
                    next_attempt_at=now,
                    finished_at=None,
                )
            )

    def overdue_pending(self, before: datetime, limit: int) -> list[str]:
        """Pending events whose next attempt was due before ``before`` (oldest first)."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(webhook_events.c.id)
                .where(
                    webhook_events.c.state == EventState.PENDING.value,
                    webhook_events.c.next_attempt_at < before,
                )
                .order_by(webhook_events.c.next_attempt_at)
                .limit(limit)
            )
            return [row[0] for row in rows]

    def attempt_outcomes(self) -> dict[str, int]:
        """Delivery attempts so far by outcome: ``success`` (2xx), ``failure`` (another status or
        no answer) and ``in_flight`` (not completed yet). Counters for ``/metrics``."""
        outcome = case(
            (webhook_attempts.c.completed_at.is_(None), "in_flight"),
            (webhook_attempts.c.http_status.between(200, 299), "success"),
            else_="failure",
        )
        with reading(self._engine) as conn:
            rows = conn.execute(select(outcome, func.count()).group_by(outcome)).all()
        return {str(name): int(count) for name, count in rows}

    def _update_pending(self, event_id: str, **values: Any) -> bool:
        with writing(self._engine) as conn:
            result = conn.execute(
                update(webhook_events)
                .where(
                    and_(
                        webhook_events.c.id == event_id,
                        webhook_events.c.state == EventState.PENDING.value,
                    )
                )
                .values(**values)
            )
        return result.rowcount == 1


def _secret(conn: Connection, owner_id: str) -> WebhookSecret | None:
    row = (
        conn.execute(select(webhook_secrets).where(webhook_secrets.c.owner_id == owner_id))
        .mappings()
        .first()
    )
    return None if row is None else WebhookSecret(**dict(row))


# Event fields and webhook_events columns share names, except ``type`` (column ``event_type``).
_EVENT_FIELDS = tuple(f.name for f in fields(WebhookEvent) if f.name != "type")
_NEW_EVENT_FIELDS = tuple(f.name for f in fields(NewWebhookEvent) if f.name != "type")


def _event_values(event: NewWebhookEvent) -> dict[str, Any]:
    """A new event's row: pending, its run starting at attempt 1."""
    values = {name: getattr(event, name) for name in _NEW_EVENT_FIELDS}
    pending = {"state": EventState.PENDING.value, "run_first_attempt": 1}
    return values | pending | {"event_type": event.type.value}


def _event(row: RowMapping) -> WebhookEvent:
    values = {name: row[name] for name in _EVENT_FIELDS}
    typed = {"state": EventState(row["state"]), "payload": dict(row["payload"])}
    return WebhookEvent(**values | typed, type=EventType(row["event_type"]))
