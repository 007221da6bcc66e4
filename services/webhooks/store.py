"""Webhook persistence: the ``WebhookStore`` Protocol and its SQL adapter.

Idempotence lives in unique keys: one event per (job, event type), and one attempt row per
(event, attempt number), inserted BEFORE the POST, so a duplicated task message cannot post twice.
The retry schedule lives on the event row (``next_attempt_at``, ``dispatched_until``); the rules
are in ``services/webhooks/dispatch.py``.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Engine, and_, case, func, insert, or_, select, update
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
    NextStep,
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
    def last_attempt(self, event_id: str) -> DeliveryAttempt | None: ...
    def due_events(self, now: datetime, limit: int) -> list[str]: ...
    def take_due(self, event_id: str, now: datetime, until: datetime) -> bool: ...
    def hold(self, event_id: str, until: datetime | None) -> None: ...
    def schedule_next(self, event_id: str, due: datetime) -> None: ...
    def restart_event(self, event_id: str, first_attempt: int, now: datetime) -> None: ...
    def claim_attempt(
        self,
        event_id: str,
        attempt: int,
        now: datetime,
        stale_cutoff: datetime,
        held_until: datetime,
    ) -> bool: ...
    def complete_attempt(
        self,
        event_id: str,
        attempt: int,
        claimed_at: datetime,
        now: datetime,
        result: AttemptResult,
        then: NextStep,
    ) -> bool: ...
    def attempt_outcomes(self) -> dict[str, int]: ...


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

    def last_attempt(self, event_id: str) -> DeliveryAttempt | None:
        """The event's highest-numbered attempt, completed or not."""
        return max(self.attempts_for([event_id])[event_id], key=lambda a: a.attempt, default=None)

    # ------------------------------------------------------------------ schedule

    def due_events(self, now: datetime, limit: int) -> list[str]:
        """Pending events whose next attempt is due by ``now`` and not out (oldest due first)."""
        with reading(self._engine) as conn:
            rows = conn.execute(
                select(webhook_events.c.id)
                .where(_due(now))
                .order_by(webhook_events.c.next_attempt_at)
                .limit(limit)
            )
            return [row[0] for row in rows]

    def take_due(self, event_id: str, now: datetime, until: datetime) -> bool:
        """Compare-and-set: mark the due event's next attempt out until ``until``; False if it
        is not due, or another publisher took it first."""
        with writing(self._engine) as conn:
            result = conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id == event_id, _due(now))
                .values(dispatched_until=until)
            )
        return result.rowcount == 1

    def hold(self, event_id: str, until: datetime | None) -> None:
        """Leave the pending event alone until ``until`` (None: publish it whenever it is due)."""
        self._update_pending(event_id, dispatched_until=until)

    def schedule_next(self, event_id: str, due: datetime) -> None:
        """The pending event's next attempt is due at ``due``; nothing of it is out."""
        self._update_pending(event_id, next_attempt_at=due, dispatched_until=None)

    def restart_event(self, event_id: str, first_attempt: int, now: datetime) -> None:
        """Put an event back to pending, due now, for a redelivery starting at
        ``first_attempt``."""
        with writing(self._engine) as conn:
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id == event_id)
                .values(
                    state=EventState.PENDING.value,
                    run_first_attempt=first_attempt,
                    next_attempt_at=now,
                    dispatched_until=None,
                    finished_at=None,
                )
            )

    # ------------------------------------------------------------------ attempts

    def claim_attempt(
        self,
        event_id: str,
        attempt: int,
        now: datetime,
        stale_cutoff: datetime,
        held_until: datetime,
    ) -> bool:
        """Claim attempt ``attempt`` (insert its row); False if another task has it.

        An attempt claimed at or before ``stale_cutoff`` and never completed belongs to a worker
        that died mid-POST; it is taken over. A claim also holds the event until ``held_until``
        (when this claim turns stale), so the sweep publishes nothing of it while the POST runs.
        """
        try:
            with writing(self._engine) as conn:
                conn.execute(
                    insert(webhook_attempts).values(
                        event_id=event_id, attempt=attempt, attempted_at=now
                    )
                )
                _hold_pending(conn, event_id, held_until)
            return True
        except IntegrityError:
            pass
        with writing(self._engine) as conn:
            taken = conn.execute(
                update(webhook_attempts)
                .where(
                    _attempt_row(event_id, attempt),
                    webhook_attempts.c.completed_at.is_(None),
                    webhook_attempts.c.attempted_at <= stale_cutoff,
                )
                .values(attempted_at=now)
            )
            if taken.rowcount != 1:
                return False
            _hold_pending(conn, event_id, held_until)
        return True

    def complete_attempt(
        self,
        event_id: str,
        attempt: int,
        claimed_at: datetime,
        now: datetime,
        result: AttemptResult,
        then: NextStep,
    ) -> bool:
        """Record the attempt's result and the event's next step in one transaction. False,
        and nothing written, if the claim made at ``claimed_at`` was taken over as stale."""
        outcome = {name: getattr(result, name) for name in _RESULT_COLUMNS}
        with writing(self._engine) as conn:
            recorded = conn.execute(
                update(webhook_attempts)
                .where(
                    _attempt_row(event_id, attempt),
                    webhook_attempts.c.attempted_at == claimed_at,
                    webhook_attempts.c.completed_at.is_(None),
                )
                .values(completed_at=now, **outcome)
            )
            if recorded.rowcount != 1:
                return False
            conn.execute(
                update(webhook_events)
                .where(webhook_events.c.id == event_id, _pending())
                .values(_next_step_values(then, now))
            )
        return True

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
                .where(webhook_events.c.id == event_id, _pending())
                .values(**values)
            )
        return result.rowcount == 1


def _pending() -> ColumnElement[bool]:
    return webhook_events.c.state == EventState.PENDING.value


def _due(now: datetime) -> ColumnElement[bool]:
    """Pending, its next attempt due by ``now``, and nothing of it out."""
    out_until = webhook_events.c.dispatched_until
    return and_(
        _pending(),
        webhook_events.c.next_attempt_at <= now,
        or_(out_until.is_(None), out_until <= now),
    )


def _attempt_row(event_id: str, attempt: int) -> ColumnElement[bool]:
    return and_(webhook_attempts.c.event_id == event_id, webhook_attempts.c.attempt == attempt)


def _hold_pending(conn: Connection, event_id: str, until: datetime) -> None:
    conn.execute(
        update(webhook_events)
        .where(webhook_events.c.id == event_id, _pending())
        .values(dispatched_until=until)
    )


_RESULT_COLUMNS = ("http_status", "latency_ms", "error", "response_body")


def _next_step_values(then: NextStep, now: datetime) -> dict[str, Any]:
    """The event's columns after an attempt: finished, or due again at ``then.due``."""
    if then.final:
        return {
            "state": then.state.value,
            "next_attempt_at": None,
            "dispatched_until": None,
            "finished_at": now,
        }
    return {"next_attempt_at": then.due, "dispatched_until": None}


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
