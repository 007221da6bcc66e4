"""/healthz and /readyz. /readyz probes SQL, Redis and S3 for real: each test below stops (or
silences) one of them and expects a fast 503 that names it."""

from __future__ import annotations

import contextlib
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from infra.localstack import servers
from tests.conftest import make_settings
from tests.support.roots import build_test_api

FAST_S = 3.0
"""Longer than the probes' 1.5 s deadline, far shorter than any default client timeout."""


def _readyz(client) -> tuple[int, dict[str, object], float]:
    started = time.monotonic()
    response = client.get("/readyz")
    return response.status_code, response.json, time.monotonic() - started


def _assert_not_ready(client, name: str, code: str) -> None:
    status, body, seconds = _readyz(client)
    assert status == 503, body
    assert body["error"]["code"] == code
    assert name in body["error"]["message"]
    assert seconds < FAST_S


@contextlib.contextmanager
def _silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def test_healthz_answers_without_probing(client):
    assert client.get("/healthz").json == {"status": "ok"}


def test_readyz_is_ready_when_sql_redis_and_s3_answer(client):
    status, body, seconds = _readyz(client)
    assert (status, body) == (200, {"status": "ready"})
    assert seconds < FAST_S


def test_readyz_names_s3_when_seaweedfs_is_stopped(tmp_path, sqlite_url, broker_url, models_dir):
    with servers.seaweed_server(
        tmp_path / "seaweed", bucket="ready", access_key_id="ready",
        secret_access_key=secrets.token_hex(16),
    ) as s3:  # fmt: skip
        settings = make_settings(
            database_url=sqlite_url, broker_url=broker_url, s3=s3, bucket=s3.bucket,
            models_dir=models_dir,
        )  # fmt: skip
        api = build_test_api(settings)
        try:
            client = api.client()
            assert _readyz(client)[0] == 200
            s3.stop()
            _assert_not_ready(client, "S3", "s3_unavailable")
        finally:
            api.close()


def test_readyz_names_redis_when_redis_is_stopped(tmp_path, settings_for):
    with servers.redis_server(tmp_path / "redis") as redis:
        api = build_test_api(settings_for(broker_url=redis.url))
        try:
            client = api.client()
            assert _readyz(client)[0] == 200
            redis.stop()
            _assert_not_ready(client, "Redis", "redis_unavailable")
        finally:
            api.close()


def test_readyz_names_sql_when_the_database_cannot_be_opened(tmp_path, settings_for):
    api = build_test_api(settings_for(database_url=f"sqlite:///{tmp_path}"))  # a directory
    try:
        _assert_not_ready(api.client(), "SQL", "sql_unavailable")
    finally:
        api.close()


def test_readyz_names_sql_when_postgresql_refuses_connections(settings_for):
    pytest.importorskip("psycopg")
    api = build_test_api(settings_for(database_url="postgresql://loupe@127.0.0.1:1/loupe"))
    try:
        _assert_not_ready(api.client(), "SQL", "sql_unavailable")
    finally:
        api.close()


def test_readyz_does_not_wait_for_a_redis_that_never_answers(settings_for):
    with _silent_port() as port:
        api = build_test_api(settings_for(broker_url=f"redis://127.0.0.1:{port}/0"))
        try:
            _assert_not_ready(api.client(), "Redis", "redis_unavailable")
        finally:
            api.close()


def test_readyz_names_the_broker_when_it_is_another_redis(settings_for, redis_server):
    with _silent_port() as port:
        settings = settings_for(
            broker_url=f"redis://127.0.0.1:{port}/0",
            redis_url=f"redis://127.0.0.1:{redis_server.port}/3",
        )
        api = build_test_api(settings)
        try:
            _assert_not_ready(api.client(), "Redis broker", "redis_broker_unavailable")
        finally:
            api.close()
