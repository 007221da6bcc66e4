"""Loupe settings: the only module that reads ``os.environ``.

Every other module receives a :class:`Settings` object. Values come from ``LOUPE_*``
environment variables; defaults run the local, embedded stack (SQLite, loopback Redis and S3).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.errors import ConfigurationError

_PREFIX = "LOUPE_"


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
    models_dir: Path = Path(".dev/models")
    llama_11b_path: str = "meta-llama/Llama-3.2-11B-Vision-Instruct"
    llama_90b_path: str = "meta-llama/Llama-3.2-90B-Vision-Instruct"
    served_models: tuple[str, ...] = ()
    default_model: str = "loupe-tiny-mllama"
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_request_bytes: int = 32 * 1024 * 1024
    allowed_image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
    job_timeout_seconds: int = 600
    max_job_timeout_seconds: int = 3600
    visibility_timeout_seconds: int = 7200
    worker_concurrency: int | None = None
    tensor_parallel_size: int = 8
    cancel_poll_ms: int = 250
    inference_queue: str = "inference"
    engine_device: str = "cpu"
    log_level: str = "INFO"


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


def _list(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = env.get(_PREFIX + name)
    if raw is None or raw.strip() == "":
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``LOUPE_*`` variables (``os.environ`` when not given)."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    settings = Settings(
        database_url=_str(env, "DATABASE_URL", defaults.database_url),
        broker_url=_str(env, "BROKER_URL", defaults.broker_url),
        s3_endpoint_url=_opt(env, "S3_ENDPOINT_URL"),
        s3_bucket=_str(env, "S3_BUCKET", defaults.s3_bucket),
        s3_region=_str(env, "S3_REGION", defaults.s3_region),
        s3_access_key_id=_opt(env, "S3_ACCESS_KEY_ID"),
        s3_secret_access_key=_opt(env, "S3_SECRET_ACCESS_KEY"),
        models_dir=Path(_str(env, "MODELS_DIR", str(defaults.models_dir))),
        llama_11b_path=_str(env, "LLAMA_11B_PATH", defaults.llama_11b_path),
        llama_90b_path=_str(env, "LLAMA_90B_PATH", defaults.llama_90b_path),
        served_models=_list(env, "SERVED_MODELS", defaults.served_models),
        default_model=_str(env, "DEFAULT_MODEL", defaults.default_model),
        max_image_bytes=_int(env, "MAX_IMAGE_BYTES", defaults.max_image_bytes, 1),
        max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", defaults.max_image_pixels, 1),
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
        tensor_parallel_size=_int(env, "TENSOR_PARALLEL_SIZE", defaults.tensor_parallel_size, 1),
        cancel_poll_ms=_int(env, "CANCEL_POLL_MS", defaults.cancel_poll_ms, 10),
        inference_queue=_str(env, "INFERENCE_QUEUE", defaults.inference_queue),
        engine_device=_str(env, "ENGINE_DEVICE", defaults.engine_device),
        log_level=_str(env, "LOG_LEVEL", defaults.log_level).upper(),
    )
    if settings.visibility_timeout_seconds <= settings.max_job_timeout_seconds:
        raise ConfigurationError(
            "LOUPE_VISIBILITY_TIMEOUT_SECONDS must exceed LOUPE_MAX_JOB_TIMEOUT_SECONDS, "
            "or the broker redelivers jobs that are still running"
        )
    return settings
