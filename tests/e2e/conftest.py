"""The real stack for end-to-end tests: a Celery worker subprocess (and gunicorn where needed).

Every process is started from the local stack's one definition (``infra.localstack.parts``),
attached: ``stop()`` ends it with SIGTERM (a clean shutdown), ``kill()`` with SIGKILL (a crash).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from infra.localstack.parts import (
    api_part,
    dispatcher_part,
    inference_worker_part,
    light_worker_part,
    process_env,
    proxy_part,
    start_part,
    start_parts,
)
from infra.localstack.servers import RedisServer, S3Server, ServerProcess
from infra.models import build_local_models
from services.auth.keys import Role
from services.clock import utcnow
from services.db import upgrade_to_head
from services.db.schema import usage_ledger
from services.settings import Settings, load_settings
from tests.conftest import make_bucket
from tests.support.roots import ApiUnderTest, build_test_api

REPO = Path(__file__).resolve().parents[2]


def make_env(
    redis_server: RedisServer, s3_server: S3Server, models_dir: Path, workdir: Path, redis_db: int
) -> dict[str, str]:
    """Settings for one isolated stack: its own SQLite file, Redis database and bucket."""
    build_local_models(models_dir, ["tiny-mllama"])  # before any worker starts
    env = {
        "LOUPE_DATABASE_URL": f"sqlite:///{workdir / 'loupe.db'}",
        "LOUPE_BROKER_URL": f"redis://127.0.0.1:{redis_server.port}/{redis_db}",
        "LOUPE_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "LOUPE_S3_BUCKET": make_bucket(s3_server, keep=True),
        "LOUPE_S3_ACCESS_KEY_ID": s3_server.access_key_id,
        "LOUPE_S3_SECRET_ACCESS_KEY": s3_server.secret_access_key,
        "LOUPE_MODELS_DIR": str(models_dir),
        "LOUPE_WORKER_CONCURRENCY": "4",
    }
    upgrade_to_head(env["LOUPE_DATABASE_URL"])
    return env


@pytest.fixture(scope="session")
def e2e_env(
    redis_server: RedisServer, s3_server: S3Server, models_dir: Path, tmp_path_factory: Any
) -> dict[str, str]:
    return make_env(redis_server, s3_server, models_dir, tmp_path_factory.mktemp("e2e"), 1)


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def ledger_rows(api: ApiUnderTest, job_id: str) -> list[Any]:
    """The usage-ledger rows of one job (one, when it was billed once)."""
    with api.db_engine.connect() as conn:
        query = select(usage_ledger).where(usage_ledger.c.job_id == job_id)
        return list(conn.execute(query).mappings().all())


def start_worker(
    env: dict[str, str],
    log: Path,
    name: str,
    *,
    app: str = "workers.celery_app",
    queues: str = "inference",
) -> ServerProcess:
    """An inference worker named ``name`` on ``queues``, running Celery app ``app``; once ready.

    The stack of ``env`` gets a dispatcher first (one per stack, kept for the session, as a
    deployment keeps one): without it no queued job reaches the broker."""
    ensure_dispatcher(env, log.parent)
    part = inference_worker_part(env, node=name, queues=queues, app=app)
    return start_part(part, _isolated(env), log, timeout=240)


# One dispatcher per stack (keyed by its database), stopped when the session ends.
_DISPATCHERS: dict[str, ServerProcess] = {}


def start_dispatcher(env: dict[str, str], log: Path, name: str = "dispatcher") -> ServerProcess:
    """A dispatcher (``python -m services.dispatch``) for ``env``'s stack, once it listens."""
    return start_part(dispatcher_part(env, name=name), _isolated(env), log, timeout=60)


def ensure_dispatcher(env: dict[str, str], logs: Path) -> ServerProcess:
    """The session's dispatcher of ``env``'s stack, started (log in ``logs``) if it has none."""
    url = env["LOUPE_DATABASE_URL"]
    running = _DISPATCHERS.get(url)
    if running is None or not running.alive():
        _DISPATCHERS[url] = start_dispatcher(env, logs / "dispatcher.log")
    return _DISPATCHERS[url]


@pytest.fixture(scope="session", autouse=True)
def _stop_dispatchers() -> Iterator[None]:
    yield
    for process in _DISPATCHERS.values():
        process.stop()
    _DISPATCHERS.clear()


def start_api(env: dict[str, str], log: Path, *, workers: int = 2) -> tuple[ServerProcess, str]:
    """gunicorn gthread with ``LOUPE_API_THREADS`` threads per worker (the app sizes its
    waiter cap from the same variable); (the process, its base URL) once ``/healthz`` is 200."""
    part = api_part(env, workers=workers)
    assert part.url is not None
    return start_part(part, _isolated(env), log, timeout=60), part.url


def start_fronted_api(
    env: dict[str, str], logs: Path, *, workers: int = 2
) -> tuple[list[ServerProcess], str, str]:
    """The production path: gunicorn and nginx in front of it (the stack's api and proxy parts,
    side by side); (both processes, the proxy's URL, gunicorn's URL) once ``/healthz`` answers
    through nginx. nginx's files go in ``logs / "proxy"``."""
    api = api_part(env, workers=workers)
    proxy = proxy_part(env, api, logs / "proxy")
    assert api.url is not None and proxy.url is not None
    parts = [(api, logs / "api.log"), (proxy, logs / "proxy.log")]
    return start_parts(parts, _isolated(env), timeout=60), proxy.url, api.url


def _isolated(env: dict[str, str]) -> dict[str, str]:
    """``env`` as a process's whole Loupe configuration: the shell's LOUPE_* do not leak in."""
    return process_env(env, inherit_loupe=False)


@pytest.fixture(scope="session")
def worker(e2e_env: dict[str, str], tmp_path_factory: Any) -> Iterator[ServerProcess]:
    proc = start_worker(e2e_env, tmp_path_factory.mktemp("logs") / "worker.log", "e2e")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    return load_settings(e2e_env)


@pytest.fixture(scope="session")
def e2e_api(e2e_settings: Settings) -> Iterator[ApiUnderTest]:
    c = build_test_api(e2e_settings)
    yield c
    c.close()


@pytest.fixture(scope="session")
def e2e_client(e2e_api: ApiUnderTest) -> Any:
    return e2e_api.client()


@pytest.fixture(scope="session")
def e2e_key(e2e_api: ApiUnderTest) -> str:
    return e2e_api.keys.create("e2e", Role.USER, utcnow())[1]


def start_webhook_worker(
    env: dict[str, str], log: Path, name: str, *, beat_schedule: Path | None = None
) -> ServerProcess:
    """A light worker (threads pool, no model loaded): on the ``webhooks`` queue only, or with
    ``beat_schedule`` also on ``maintenance`` with beat embedded, so the sweeps run (the webhook
    sweep publishes retries as they come due)."""
    queues = "webhooks" if beat_schedule is None else "webhooks,maintenance"
    part = light_worker_part(env, node=name, queues=queues, beat_schedule=beat_schedule)
    return start_part(part, _isolated(env), log, timeout=120)


# --- admin monitoring (tests/e2e/test_admin_*): its own Redis database, API, no worker at first.
ADMIN_REDIS_DB = 9
ADMIN_HEARTBEAT_TTL_SECONDS = 3


@pytest.fixture(scope="session")
def admin_env(
    redis_server: RedisServer, s3_server: S3Server, models_dir: Path, tmp_path_factory: Any
) -> dict[str, str]:
    """A stack whose workers beat every second with a short TTL, and an uncached /metrics."""
    workdir = tmp_path_factory.mktemp("admin")
    env = make_env(redis_server, s3_server, models_dir, workdir, ADMIN_REDIS_DB)
    return env | {
        "LOUPE_HEARTBEAT_SECONDS": "1",
        "LOUPE_HEARTBEAT_TTL_SECONDS": str(ADMIN_HEARTBEAT_TTL_SECONDS),
        "LOUPE_METRICS_CACHE_MS": "0",
        "LOUPE_METRICS_OPEN": "true",  # scraped as Prometheus would on a private network
    }


@pytest.fixture(scope="session")
def admin_api(admin_env: dict[str, str], tmp_path_factory: Any) -> Iterator[str]:
    """gunicorn (2 processes) serving the admin stack; yields its base URL."""
    proc, url = start_api(admin_env, tmp_path_factory.mktemp("logs") / "admin-api.log")
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def admin_keys(admin_env: dict[str, str]) -> tuple[str, str]:
    """(user key, admin key) of the admin stack."""
    api = build_test_api(load_settings(admin_env))
    try:
        user = api.keys.create("admin-e2e-user", Role.USER, utcnow())[1]
        admin = api.keys.create("admin-e2e-admin", Role.ADMIN, utcnow())[1]
    finally:
        api.close()
    return user, admin
