"""The real stack for end-to-end tests: a Celery worker subprocess (and gunicorn where needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from infra.localstack.servers import RedisServer, S3Server, free_port
from services.api.app import create_app
from services.auth.keys import Role
from services.clock import utcnow
from services.container import Container, build_container
from services.db import upgrade_to_head
from services.db.schema import usage_ledger
from services.settings import Settings, load_settings
from tests.conftest import make_bucket
from workers.engines.tiny_mllama import build_tiny_mllama

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def spawn(argv: list[str], env: dict[str, str], log: Path) -> Proc:
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(process, log)


def make_env(
    redis_server: RedisServer, s3_server: S3Server, models_dir: Path, workdir: Path, redis_db: int
) -> dict[str, str]:
    """Settings for one isolated stack: its own SQLite file, Redis database and bucket."""
    build_tiny_mllama(models_dir / "tiny-mllama")  # once, before any worker starts
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


def ledger_rows(container: Container, job_id: str) -> list[Any]:
    """The usage-ledger rows of one job (one, when it was billed once)."""
    assert container.db_engine is not None
    with container.db_engine.connect() as conn:
        query = select(usage_ledger).where(usage_ledger.c.job_id == job_id)
        return list(conn.execute(query).mappings().all())


def process_env(env: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    extra = {
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO),
        "OTEL_SDK_DISABLED": "true",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB; vLLM's CPU default (4) slows start-up
    }
    return keep | env | extra


def start_worker(
    env: dict[str, str],
    log: Path,
    name: str,
    *,
    app: str = "workers.celery_app",
    queues: str = "inference",
) -> Proc:
    argv = [
        str(BIN / "celery"), "-A", app, "worker", "-Q", queues,
        "--pool", "threads", "--concurrency", env["LOUPE_WORKER_CONCURRENCY"],
        "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
        "--loglevel", "INFO", "-n", f"{name}@%h",
    ]  # fmt: skip
    return _wait_ready(spawn(argv, process_env(env), log), "worker", timeout=240)


def _wait_ready(proc: Proc, what: str, timeout: float) -> Proc:
    """Wait for a Celery worker's "ready." line; stop it and raise if it dies or never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if " ready." in proc.log_text():
            return proc
        if proc.process.poll() is not None:
            proc.stop()
            raise RuntimeError(f"{what} exited early:\n{proc.log_text()[-4000:]}")
        time.sleep(0.2)
    proc.stop(signal.SIGKILL)
    raise RuntimeError(f"{what} did not start:\n{proc.log_text()[-4000:]}")


def start_api(env: dict[str, str], log: Path, *, workers: int = 2) -> tuple[Proc, str]:
    """gunicorn gthread with ``LOUPE_API_THREADS`` threads per worker (the app sizes its
    waiter cap from the same variable)."""
    port = free_port()
    argv = [
        str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--worker-class", "gthread", "--threads", env.get("LOUPE_API_THREADS", "32"),
        "services.api.wsgi:app",
    ]  # fmt: skip
    proc = spawn(argv, process_env(env), log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass  # not listening yet, or slow on a loaded machine
        if proc.process.poll() is not None:
            proc.stop()
            raise RuntimeError(f"api exited early:\n{proc.log_text()[-4000:]}")
        time.sleep(0.2)
    proc.stop(signal.SIGKILL)
    raise RuntimeError(f"api did not start:\n{proc.log_text()[-4000:]}")


@pytest.fixture(scope="session")
def worker(e2e_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Proc]:
    proc = start_worker(e2e_env, tmp_path_factory.mktemp("logs") / "worker.log", "e2e")
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def e2e_settings(e2e_env: dict[str, str]) -> Settings:
    return load_settings(e2e_env)


@pytest.fixture(scope="session")
def e2e_container(e2e_settings: Settings) -> Iterator[Container]:
    c = build_container(e2e_settings)
    yield c
    c.close()


@pytest.fixture(scope="session")
def e2e_client(e2e_container: Container) -> Any:
    return create_app(container=e2e_container).test_client()


@pytest.fixture(scope="session")
def e2e_key(e2e_container: Container) -> str:
    return e2e_container.keys.create("e2e", Role.USER, utcnow())[1]


def start_webhook_worker(env: dict[str, str], log: Path, name: str) -> Proc:
    """A Celery worker on the ``webhooks`` queue only (threads pool, no model loaded)."""
    argv = [
        str(BIN / "celery"), "-A", "workers.celery_app", "worker", "-Q", "webhooks",
        "--pool", "threads", "--concurrency", env.get("LOUPE_WEBHOOK_CONCURRENCY", "8"),
        "--without-gossip", "--without-mingle", "--loglevel", "INFO", "-n", f"{name}@%h",
    ]  # fmt: skip
    return _wait_ready(spawn(argv, process_env(env), log), "webhook worker", timeout=120)


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
    container = build_container(load_settings(admin_env))
    try:
        user = container.keys.create("admin-e2e-user", Role.USER, utcnow())[1]
        admin = container.keys.create("admin-e2e-admin", Role.ADMIN, utcnow())[1]
    finally:
        container.close()
    return user, admin
