"""Job records: what is inserted (``NewJob``), what is stored (``Job``), a queued job's place."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.types import ImageRef, JobStatus, Message, PriceCard, Priority, SamplingParams


@dataclass(frozen=True)
class NewJob:
    """Everything needed to insert a queued job."""

    id: str
    owner_id: str
    model: str
    messages: tuple[Message, ...]
    images: tuple[ImageRef, ...]
    params: SamplingParams
    price: PriceCard
    timeout_seconds: int
    metadata: dict[str, str] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook_url: str | None = None
    # Which webhook events the job asked for: "start", "completed".
    webhook_events: tuple[str, ...] = ("completed",)
    # Up-front estimate (services/usage/estimate.py): prompt-token upper bound and max cost.
    estimated_prompt_tokens: int | None = None
    estimated_cost_max: Decimal | None = None


@dataclass(frozen=True)
class Job:
    """A job as stored."""

    id: str
    owner_id: str
    model: str
    status: JobStatus
    messages: tuple[Message, ...]
    images: tuple[ImageRef, ...]
    params: SamplingParams
    price: PriceCard
    timeout_seconds: int
    metadata: dict[str, str]
    created_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    output_text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0
    cancel_requested_at: datetime | None = None
    priority: Priority = Priority.NORMAL
    expires_at: datetime | None = None
    idempotency_key: str | None = None
    data_removed_at: datetime | None = None
    webhook_url: str | None = None
    webhook_events: tuple[str, ...] = ("completed",)
    # None until terminal; then whether the job has a usage-ledger row (is charged).
    billed: bool | None = None
    estimated_prompt_tokens: int | None = None
    estimated_cost_max: Decimal | None = None
    # Attempts that ended with their lease lapsed (the worker died); LOUPE_MAX_ATTEMPTS caps them.
    lost_attempts: int = 0
    # Time spent queued before the current (or last) run started, over every attempt.
    queue_seconds: float | None = None
    # The status of the latest retry (POST /v1/jobs/{id}/retry) started from; None: never retried.
    retried_from_status: JobStatus | None = None


@dataclass(frozen=True)
class QueueInfo:
    """Where a queued job stands: jobs ahead of it, and when it may start at recent throughput."""

    position: int
    estimated_start_seconds: float | None
