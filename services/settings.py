"""Loupe settings: the only module that reads ``os.environ``.

Every other module receives a :class:`Settings` object. Values come from ``LOUPE_*``
environment variables; defaults run the local, embedded stack (SQLite, loopback Redis and S3).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from services.errors import ConfigurationError

_PREFIX = "LOUPE_"


@dataclass(frozen=True)
class PriceOverride:
    """A deployment's prices for one model (USD); ``None`` keeps the registry's value."""

    model: str
    input_per_million: Decimal | None = None
    output_per_million: Decimal | None = None
    per_image: Decimal | None = None


@dataclass(frozen=True)
class Settings:
    """Immutable configuration for the API, the workers and the tools."""

    database_url: str = "sqlite:///.dev/loupe.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint_url: str | None = None
    s3_bucket: str = "loupe-images"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    # Every S3 call of a process: seconds to connect (and to wait on a stalled upload), seconds
    # one read may wait for bytes, attempts in all. A store that stops answering fails a call
    # after about attempts x (read timeout + 1 s): a PUT first waits 1 s for "100 Continue".
    # The API must answer a submit within 5 s, so its defaults make one attempt; these bound
    # waits between bytes, never a whole transfer, so large objects still go through.
    s3_connect_timeout_seconds: float = 2.0
    s3_read_timeout_seconds: float = 3.0
    s3_max_attempts: int = 1
    models_dir: Path = Path(".dev/models")
    # A TOML file merged into the shipped model catalog (services/catalog/loader.py).
    models_file: Path | None = None
    served_models: tuple[str, ...] = ()
    # None: the catalog's default_model (services/catalog/models.toml or LOUPE_MODELS_FILE).
    default_model: str | None = None
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # The most pixels one image is ever decoded to (API validation and worker): about 8 bytes
    # each at the worker's peak. Larger JPEGs decode at 1/2..1/8 scale; other formats are refused.
    max_decode_pixels: int = 4096 * 4096
    # The most pixels one API process decodes at once, all its requests together (about 4 bytes
    # each): by default one image at max_decode_pixels, or several smaller ones.
    decode_budget_pixels: int = 4096 * 4096
    max_image_frames: int = 100  # animated GIF/PNG/WebP; the model sees the first frame
    max_request_bytes: int = 32 * 1024 * 1024
    allowed_image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
    job_timeout_seconds: int = 600
    max_job_timeout_seconds: int = 3600
    visibility_timeout_seconds: int = 7200
    worker_concurrency: int | None = None
    cancel_poll_ms: int = 250
    # A running job's lease: its worker renews it every ``lease_renew_seconds``; one that lapses
    # (the worker died or lost the database) is handed out again by the lost-job sweep, which
    # runs every ``lost_sweep_seconds``. Recovery from a dead worker takes about lease + sweep.
    lease_seconds: int = 30
    lease_renew_seconds: int = 5
    lost_sweep_seconds: int = 5
    # Attempts that may end without a result (lease lapsed) before the job ends ``worker_lost``.
    max_attempts: int = 3
    # The dispatcher (services/dispatch): it keeps each broker queue topped up to the free slots
    # of the workers consuming it plus ``dispatch_margin`` messages, wakes when nudged (a submit,
    # a finished job) or every ``dispatch_interval_ms``, and holds its leadership lease for
    # ``dispatcher_lease_seconds`` (a standby takes over about that long after it dies).
    dispatch_margin: int = 4
    dispatch_interval_ms: int = 1000
    dispatcher_lease_seconds: int = 6
    inference_queue: str = "inference"
    # (model, queue) pairs: a model's jobs go to its own Celery queue, so GPU pools that serve
    # different models (11B on one card, 90B across eight) each consume only their own jobs.
    # Models not named here use ``inference_queue``.
    model_queues: tuple[tuple[str, str], ...] = ()
    engine_device: str = "cpu"
    log_level: str = "INFO"
    # Time a job may wait in the queue before it ends ``expired`` (None: forever).
    default_ttl_seconds: int | None = None
    max_ttl_seconds: int = 7 * 24 * 3600
    idempotency_window_seconds: int = 24 * 3600
    # How long a finished job's inputs (images, prompt) and output are kept (0: forever).
    retention_seconds: int = 30 * 24 * 3600
    retention_sweep_seconds: int = 3600
    expiry_sweep_seconds: int = 15
    maintenance_queue: str = "maintenance"
    # Usage accounting and quotas (services/usage).
    price_overrides: tuple[PriceOverride, ...] = ()
    charge_failed_jobs: bool = True
    # Submissions per minute of a key with no limit of its own (0: such keys are unlimited).
    default_requests_per_minute: int = 600
    # Webhooks (services/webhooks, workers/webhooks.py).
    webhook_queue: str = "webhooks"
    webhook_concurrency: int = 8
    webhook_allow_http: bool = False
    # Remote images (https image_url parts): fetched at submit behind the same SSRF guard.
    image_url_allow_http: bool = False
    image_url_allowed_networks: tuple[str, ...] = ()
    image_fetch_timeout_seconds: float = 10.0
    # CIDRs exempt from the SSRF guard (local development and tests only).
    webhook_allowed_networks: tuple[str, ...] = ()
    # Seconds before each attempt: the Standard Webhooks example schedule (about 27 h in all).
    webhook_retry_schedule: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    webhook_timeout_seconds: float = 10.0
    webhook_secret_overlap_seconds: int = 86400
    # How often beat's sweep publishes the webhook attempts that have come due: retries live in
    # SQL, so this is how late a retry may go out after its time.
    webhook_sweep_seconds: int = 5
    # Admin monitoring (services/admin, workers/heartbeat.py).
    heartbeat_seconds: int = 5
    heartbeat_ttl_seconds: int = 15
    metrics_token: str | None = None
    # /metrics with no token: an admin API key is needed unless this opens it to anyone.
    metrics_open: bool = False
    metrics_cache_ms: int = 1000
    # Waiting (long-poll, ``Prefer: wait``, /v1/chat/completions); see services/jobs/waiting.py.
    redis_url: str = "redis://127.0.0.1:6379/0"  # job-change pub/sub; defaults to broker_url
    max_wait_seconds: int = 60
    api_threads: int = 32  # gunicorn gthread threads per API process
    max_waiters_per_process: int = 24  # default: api_threads minus a reserve for plain requests
    chat_completions_timeout_seconds: int = 60

    @property
    def job_queues(self) -> frozenset[str]:
        """Every Celery queue that carries jobs: the inference queue and the per-model ones."""
        return frozenset({self.inference_queue, *(queue for _, queue in self.model_queues)})


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{_PREFIX}{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigurationError(f"{_PREFIX}{name} must be >= {minimum}, got {value}")
    return value


def _opt_int(env: Mapping[str, str], name: str, minimum: int) -> int | None:
    raw = env.get(_PREFIX + name)
    return None if raw is None or raw == "" else _int(env, name, minimum, minimum)


def _str(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(_PREFIX + name)
    return default if raw is None or raw == "" else raw


def _opt(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(_PREFIX + name)
    return None if raw is None or raw == "" else raw


def _opt_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = _opt(env, name)
    return None if raw is None else Path(raw)


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(_PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _model_queues(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``LOUPE_MODEL_QUEUES``: ``model=queue,model=queue``."""
    pairs: dict[str, str] = {}
    for part in _list(env, "MODEL_QUEUES", ()):
        model, sep, queue = (x.strip() for x in part.partition("="))
        if not sep or not model or not _QUEUE_NAME.match(queue):
            raise ConfigurationError(
                f"{_PREFIX}MODEL_QUEUES: {part!r} is not model=queue (a queue name is letters, "
                "digits, '.', '_' and '-'; ':' separates kombu's priority lists)"
            )
        if model in pairs:
            raise ConfigurationError(f"{_PREFIX}MODEL_QUEUES names {model!r} twice")
        pairs[model] = queue
    return tuple(pairs.items())


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(_PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{_PREFIX}{name} must be true or false, got {raw!r}")


_PRICE_FIELDS = ("input_per_million", "output_per_million", "per_image")


def _price_overrides(env: Mapping[str, str]) -> tuple[PriceOverride, ...]:
    """``LOUPE_PRICE_OVERRIDES``: JSON ``{"model": {"input_per_million": "0.35", ...}}``, inline
    or the path of a file holding it. Prices are decimal strings (numbers are accepted but a
    float like 0.1 is parsed from its JSON text, never through binary floating point)."""
    name = _PREFIX + "PRICE_OVERRIDES"
    raw = (env.get(name) or "").strip()
    if not raw:
        return ()
    if not raw.startswith("{"):
        try:
            raw = Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"{name}: cannot read {raw!r}: {exc}") from exc
    try:
        data = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{name} must be a JSON object of model name to prices")
    overrides = []
    for model, card in data.items():
        if not isinstance(card, dict) or not card or set(card) - set(_PRICE_FIELDS):
            raise ConfigurationError(
                f"{name}: {model!r} must map to an object with some of {', '.join(_PRICE_FIELDS)}"
            )
        prices: dict[str, Decimal] = {}
        for field_name, value in card.items():
            try:
                price = Decimal(value) if isinstance(value, str | Decimal) else None
            except InvalidOperation:
                price = None
            if price is None or not price.is_finite() or price < 0:
                raise ConfigurationError(
                    f"{name}: {model}.{field_name} must be a non-negative decimal, got {value!r}"
                )
            prices[field_name] = price
        overrides.append(PriceOverride(model=model, **prices))
    return tuple(overrides)


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{_PREFIX}{name} must be a number, got {raw!r}") from exc
    if not value > 0:
        raise ConfigurationError(f"{_PREFIX}{name} must be > 0, got {value}")
    return value


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """Comma-separated non-negative seconds, at least one."""
    parts = _list(env, name, ())
    if not parts:
        return default
    try:
        values = tuple(float(part) for part in parts)
    except ValueError as exc:
        raise ConfigurationError(f"{_PREFIX}{name} must be comma-separated seconds") from exc
    if any(value < 0 for value in values):
        raise ConfigurationError(f"{_PREFIX}{name} must not contain negative delays")
    return values


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated CIDRs, normalised (``127.0.0.1/8`` is refused: host bits set)."""
    networks = []
    for part in _list(env, name, ()):
        try:
            networks.append(str(ipaddress.ip_network(part)))
        except ValueError as exc:
            raise ConfigurationError(f"{_PREFIX}{name}: {exc}") from exc
    return tuple(networks)


# Settings that described one model, before the model catalog held weights and engine args. A
# deployment that still sets one is refused rather than silently given the catalog's value.
_REMOVED = ("LLAMA_11B_PATH", "LLAMA_90B_PATH", "TENSOR_PARALLEL_SIZE")


def _refuse_removed(env: Mapping[str, str]) -> None:
    for name in _REMOVED:
        if env.get(_PREFIX + name):
            raise ConfigurationError(
                f"{_PREFIX}{name} was removed: a model's weights (path or hub_id) and engine "
                f"args live in the model catalog; set them in {_PREFIX}MODELS_FILE "
                "(README, Models)"
            )


def default_max_waiters(api_threads: int) -> int:
    """Waiters one API process may hold: its threads minus a reserve (a quarter, at least 2)
    kept free for plain requests, so long-polls never starve the API."""
    return max(0, api_threads - max(2, api_threads // 4))


def _s3_limits(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    return {
        "s3_connect_timeout_seconds": _float(
            env, "S3_CONNECT_TIMEOUT_SECONDS", defaults.s3_connect_timeout_seconds
        ),
        "s3_read_timeout_seconds": _float(
            env, "S3_READ_TIMEOUT_SECONDS", defaults.s3_read_timeout_seconds
        ),
        "s3_max_attempts": _int(env, "S3_MAX_ATTEMPTS", defaults.s3_max_attempts, 1),
    }


def _waiting_settings(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    broker_url = _str(env, "BROKER_URL", defaults.broker_url)
    api_threads = _int(env, "API_THREADS", defaults.api_threads, 1)
    return {
        "redis_url": _str(env, "REDIS_URL", broker_url),
        "max_wait_seconds": _int(env, "MAX_WAIT_SECONDS", defaults.max_wait_seconds, 1),
        "api_threads": api_threads,
        "max_waiters_per_process": _int(
            env, "MAX_WAITERS_PER_PROCESS", default_max_waiters(api_threads), 0
        ),
        "chat_completions_timeout_seconds": _int(
            env, "CHAT_COMPLETIONS_TIMEOUT_SECONDS", defaults.chat_completions_timeout_seconds, 1
        ),
    }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``LOUPE_*`` variables (``os.environ`` when not given)."""
    env = os.environ if environ is None else environ
    _refuse_removed(env)
    defaults = Settings()
    settings = Settings(
        database_url=_str(env, "DATABASE_URL", defaults.database_url),
        broker_url=_str(env, "BROKER_URL", defaults.broker_url),
        s3_endpoint_url=_opt(env, "S3_ENDPOINT_URL"),
        s3_bucket=_str(env, "S3_BUCKET", defaults.s3_bucket),
        s3_region=_str(env, "S3_REGION", defaults.s3_region),
        s3_access_key_id=_opt(env, "S3_ACCESS_KEY_ID"),
        s3_secret_access_key=_opt(env, "S3_SECRET_ACCESS_KEY"),
        **_s3_limits(env, defaults),
        models_dir=Path(_str(env, "MODELS_DIR", str(defaults.models_dir))),
        models_file=_opt_path(env, "MODELS_FILE"),
        served_models=_list(env, "SERVED_MODELS", defaults.served_models),
        default_model=_opt(env, "DEFAULT_MODEL"),
        max_image_bytes=_int(env, "MAX_IMAGE_BYTES", defaults.max_image_bytes, 1),
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels, 1),
        max_decode_pixels=_int(env, "MAX_DECODE_PIXELS", defaults.max_decode_pixels, 1),
        decode_budget_pixels=_int(
            env,
            "DECODE_BUDGET_PIXELS",
            _int(env, "MAX_DECODE_PIXELS", defaults.max_decode_pixels, 1),
            1,
        ),
        max_image_frames=_int(env, "MAX_IMAGE_FRAMES", defaults.max_image_frames, 1),
        max_request_bytes=_int(env, "MAX_REQUEST_BYTES", defaults.max_request_bytes, 1),
        allowed_image_formats=tuple(
            f.upper() for f in _list(env, "ALLOWED_IMAGE_FORMATS", defaults.allowed_image_formats)
        ),
        job_timeout_seconds=_int(env, "JOB_TIMEOUT_SECONDS", defaults.job_timeout_seconds, 1),
        max_job_timeout_seconds=_int(
            env, "MAX_JOB_TIMEOUT_SECONDS", defaults.max_job_timeout_seconds, 1
        ),
        visibility_timeout_seconds=_int(
            env, "VISIBILITY_TIMEOUT_SECONDS", defaults.visibility_timeout_seconds, 1
        ),
        worker_concurrency=_opt_int(env, "WORKER_CONCURRENCY", 1),
        cancel_poll_ms=_int(env, "CANCEL_POLL_MS", defaults.cancel_poll_ms, 10),
        lease_seconds=_int(env, "LEASE_SECONDS", defaults.lease_seconds, 2),
        lease_renew_seconds=_int(env, "LEASE_RENEW_SECONDS", defaults.lease_renew_seconds, 1),
        lost_sweep_seconds=_int(env, "LOST_SWEEP_SECONDS", defaults.lost_sweep_seconds, 1),
        max_attempts=_int(env, "MAX_ATTEMPTS", defaults.max_attempts, 1),
        dispatch_margin=_int(env, "DISPATCH_MARGIN", defaults.dispatch_margin, 1),
        dispatch_interval_ms=_int(env, "DISPATCH_INTERVAL_MS", defaults.dispatch_interval_ms, 10),
        dispatcher_lease_seconds=_int(
            env, "DISPATCHER_LEASE_SECONDS", defaults.dispatcher_lease_seconds, 2
        ),
        inference_queue=_str(env, "INFERENCE_QUEUE", defaults.inference_queue),
        model_queues=_model_queues(env),
        engine_device=_str(env, "ENGINE_DEVICE", defaults.engine_device),
        log_level=_str(env, "LOG_LEVEL", defaults.log_level).upper(),
        default_ttl_seconds=_opt_int(env, "DEFAULT_TTL_SECONDS", 1),
        max_ttl_seconds=_int(env, "MAX_TTL_SECONDS", defaults.max_ttl_seconds, 1),
        idempotency_window_seconds=_int(
            env, "IDEMPOTENCY_WINDOW_SECONDS", defaults.idempotency_window_seconds, 1
        ),
        retention_seconds=_int(env, "RETENTION_SECONDS", defaults.retention_seconds, 0),
        retention_sweep_seconds=_int(
            env, "RETENTION_SWEEP_SECONDS", defaults.retention_sweep_seconds, 1
        ),
        expiry_sweep_seconds=_int(env, "EXPIRY_SWEEP_SECONDS", defaults.expiry_sweep_seconds, 1),
        maintenance_queue=_str(env, "MAINTENANCE_QUEUE", defaults.maintenance_queue),
        price_overrides=_price_overrides(env),
        charge_failed_jobs=_bool(env, "CHARGE_FAILED_JOBS", defaults.charge_failed_jobs),
        default_requests_per_minute=_int(
            env, "DEFAULT_REQUESTS_PER_MINUTE", defaults.default_requests_per_minute, 0
        ),
        webhook_queue=_str(env, "WEBHOOK_QUEUE", defaults.webhook_queue),
        webhook_concurrency=_int(env, "WEBHOOK_CONCURRENCY", defaults.webhook_concurrency, 1),
        webhook_allow_http=_bool(env, "WEBHOOK_ALLOW_HTTP", defaults.webhook_allow_http),
        image_url_allow_http=_bool(env, "IMAGE_URL_ALLOW_HTTP", defaults.image_url_allow_http),
        image_url_allowed_networks=_networks(env, "IMAGE_URL_ALLOWED_NETWORKS"),
        image_fetch_timeout_seconds=_float(
            env, "IMAGE_FETCH_TIMEOUT_SECONDS", defaults.image_fetch_timeout_seconds
        ),
        webhook_allowed_networks=_networks(env, "WEBHOOK_ALLOWED_NETWORKS"),
        webhook_retry_schedule=_schedule(
            env, "WEBHOOK_RETRY_SCHEDULE", defaults.webhook_retry_schedule
        ),
        webhook_timeout_seconds=_float(
            env, "WEBHOOK_TIMEOUT_SECONDS", defaults.webhook_timeout_seconds
        ),
        webhook_secret_overlap_seconds=_int(
            env, "WEBHOOK_SECRET_OVERLAP_SECONDS", defaults.webhook_secret_overlap_seconds
        ),
        webhook_sweep_seconds=_int(env, "WEBHOOK_SWEEP_SECONDS", defaults.webhook_sweep_seconds, 1),
        heartbeat_seconds=_int(env, "HEARTBEAT_SECONDS", defaults.heartbeat_seconds, 1),
        heartbeat_ttl_seconds=_int(env, "HEARTBEAT_TTL_SECONDS", defaults.heartbeat_ttl_seconds, 2),
        metrics_token=_opt(env, "METRICS_TOKEN"),
        metrics_open=_bool(env, "METRICS_OPEN", defaults.metrics_open),
        metrics_cache_ms=_int(env, "METRICS_CACHE_MS", defaults.metrics_cache_ms, 0),
        **_waiting_settings(env, defaults),
    )
    if settings.heartbeat_ttl_seconds <= settings.heartbeat_seconds:
        raise ConfigurationError(
            "LOUPE_HEARTBEAT_TTL_SECONDS must exceed LOUPE_HEARTBEAT_SECONDS, "
            "or live workers blink out of the admin view between heartbeats"
        )
    if settings.lease_renew_seconds * 2 > settings.lease_seconds:
        raise ConfigurationError(
            "LOUPE_LEASE_RENEW_SECONDS must be at most half of LOUPE_LEASE_SECONDS, "
            "or one slow renewal lets a live worker's lease lapse"
        )
    side_queues = {settings.webhook_queue, settings.maintenance_queue}
    if side_queues & {queue for _, queue in settings.model_queues}:
        raise ConfigurationError(
            "LOUPE_MODEL_QUEUES may not route jobs to the webhooks or maintenance queue"
        )
    if settings.visibility_timeout_seconds <= settings.max_job_timeout_seconds:
        raise ConfigurationError(
            "LOUPE_VISIBILITY_TIMEOUT_SECONDS must exceed LOUPE_MAX_JOB_TIMEOUT_SECONDS, "
            "or the broker redelivers jobs that are still running"
        )
    return settings
