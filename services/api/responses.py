"""Response bodies as pydantic models: the OpenAPI document's response schemas.

The presenters build plain dicts; these models state what those dicts hold, and the tests
validate real responses against the document made from them (and schemathesis' response-schema
check does too), so a presenter that drifts from its model fails a test. Objects are closed
(``additionalProperties: false``): a field added to a presenter must be added here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Timestamp = str  # ISO 8601 in UTC with a Z (services.clock.timestamp)
Money = str  # a plain decimal string: "0.39", "0"


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(_Closed):
    code: str = Field(description="A stable, machine-readable code, e.g. invalid_parameter.")
    message: str


class Error(_Closed):
    """Every error Loupe answers: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class ChatErrorDetail(_Closed):
    code: str
    message: str
    type: Literal["invalid_request_error", "server_error", "timeout"]
    param: None
    job_id: str


class ChatError(_Closed):
    """A chat completion whose job did not succeed (OpenAI's error shape, Loupe's code)."""

    error: ChatErrorDetail


class Cost(_Closed):
    input: Money
    output: Money
    images: Money
    total: Money
    currency: str


class JobOutput(_Closed):
    text: str | None
    finish_reason: str | None


class JobUsage(_Closed):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    images: int
    cost: Cost


class JobMetrics(_Closed):
    queue_seconds: float | None
    run_seconds: float | None
    tokens_per_second: float | None


class JobEstimate(_Closed):
    max: Money
    currency: str
    prompt_tokens_max: int | None
    max_tokens: int | None
    images: int


class Job(_Closed):
    """A job as polling, webhooks and the list show it."""

    id: str
    object: Literal["job"]
    status: Literal["queued", "running", "succeeded", "failed", "canceled", "expired"]
    model: str
    priority: str
    created_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    output: JobOutput | None
    usage: JobUsage | None
    metrics: JobMetrics
    error: ErrorDetail | None
    attempts: int = Field(description="Times a worker has started the job.")
    retried_from_status: Literal["failed", "canceled", "expired"] | None = Field(
        description="The status the job's latest retry (POST /v1/jobs/{job_id}/retry) started "
        "from; null if it was never retried."
    )
    cancel_requested: bool
    expires_at: Timestamp | None
    queue_position: int | None
    estimated_start_seconds: float | None
    data_removed: bool
    metadata: dict[str, str]
    webhook: str | None
    webhook_events_filter: list[str]
    estimated_cost: JobEstimate | None


class JobPage(_Closed):
    object: Literal["list"]
    data: list[Job]
    has_more: bool
    next_cursor: str | None


class File(_Closed):
    id: str
    object: Literal["file"]
    filename: str | None
    bytes: int
    content_type: str
    width: int
    height: int
    sha256: str
    created_at: Timestamp
    expires_at: Timestamp | None


class FilePage(_Closed):
    object: Literal["list"]
    data: list[File]
    has_more: bool
    last_id: str | None


class FileDeleted(_Closed):
    id: str
    object: Literal["file"]
    deleted: Literal[True]


class ModelLimits(_Closed):
    max_images: int
    max_output_tokens: int
    context_length: int


class Model(_Closed):
    id: str
    object: Literal["model"]
    owned_by: str
    architecture: str
    limits: ModelLimits
    pricing: dict[str, Any]
    supported_parameters: list[str]


class ModelList(_Closed):
    object: Literal["list"]
    data: list[Model]


class Usage(_Closed):
    """Usage over UTC days, grouped by day or model (per key on the admin report)."""

    object: Literal["usage"]
    from_: str = Field(alias="from")
    to: str
    group_by: Literal["day", "model"]
    totals: dict[str, Any]
    data: list[dict[str, Any]]


class QuotaLimits(_Closed):
    monthly_spend_usd: Money | None
    max_queued: int | None
    max_running: int | None
    max_concurrency: int | None
    requests_per_minute: int | None


class QuotaCurrent(_Closed):
    period_start: str
    spent_usd: Money
    reserved_usd: Money
    available_usd: Money | None
    queued: int
    running: int
    requests_this_minute: int


class Quota(_Closed):
    object: Literal["quota"]
    limits: QuotaLimits
    current: QuotaCurrent


class ApiKey(_Closed):
    """A key as admins see it: never its secret or hash."""

    id: str
    object: Literal["api_key"]
    name: str
    role: Literal["user", "admin"]
    status: Literal["active", "expired", "revoked"]
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class ApiKeyWithSecret(ApiKey):
    """A new or rotated key with its secret, sent this once (``Cache-Control: no-store``)."""

    key: str


class ApiKeyWithQuota(ApiKey):
    quota: QuotaLimits


class ApiKeyList(_Closed):
    object: Literal["list"]
    data: list[ApiKey]


class KeyQuota(QuotaLimits):
    key_id: str


class WebhookSecret(_Closed):
    object: Literal["webhook_secret"]
    secret: str
    created_at: Timestamp | None
    previous_secret: str | None
    previous_secret_expires_at: Timestamp | None


class DeliveryAttempt(_Closed):
    attempt: int
    attempted_at: Timestamp | None
    completed_at: Timestamp | None
    http_status: int | None
    latency_ms: int | None
    error: str | None
    response_body: str | None


class WebhookEvent(_Closed):
    id: str
    object: Literal["webhook_event"]
    type: str
    url: str
    status: str
    created_at: Timestamp | None
    next_attempt_at: Timestamp | None
    finished_at: Timestamp | None
    attempts: list[DeliveryAttempt]


class WebhookEventList(_Closed):
    object: Literal["list"]
    data: list[WebhookEvent]


class AdminQueues(_Closed):
    """The monitoring snapshot (``services.admin.presenter.snapshot_to_public``)."""

    object: Literal["admin.queues"]
    generated_at: Timestamp
    queues: list[dict[str, Any]]
    jobs: dict[str, Any]
    workers: dict[str, Any]
    throughput: dict[str, Any]
    recent_failures: list[dict[str, Any]]


class ChatCompletion(_Closed):
    """A succeeded job as OpenAI's ``chat.completion``, plus Loupe's ``loupe`` object."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, int]
    system_fingerprint: None
    loupe: dict[str, Any]


class Health(_Closed):
    status: Literal["ok", "ready"]
