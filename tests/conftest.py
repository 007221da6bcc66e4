"""Real parts for the suite: a private redis-server, SeaweedFS over HTTP, SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
import redis
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import create_engine, text

from infra.localstack.servers import RedisServer, S3Server, start_redis, start_seaweed
from infra.models import build_local_models
from services.auth.keys import Role
from services.clock import utcnow
from services.db import upgrade_to_head
from services.db.engine import normalize_url
from services.settings import Settings, load_settings
from tests.support.roots import ApiUnderTest, build_test_api

S3_ACCESS_KEY = "loupetest"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_seaweed(
        tmp_path_factory.mktemp("seaweed"),
        bucket="loupe-session",
        access_key_id=S3_ACCESS_KEY,
        secret_access_key=secrets.token_hex(16),
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LOUPE_MODELS_DIR for the session, holding the tiny model test workers load (built once,
    a few seconds): workers never build models, whoever starts them does."""
    path = tmp_path_factory.mktemp("models")
    build_local_models(path, ["tiny-mllama"])
    return path


@pytest.fixture(scope="session")
def tiny_mllama_path(models_dir: Path) -> Path:
    """The tiny random Llama 3.2 Vision (``loupe-tiny-mllama``'s weights)."""
    return models_dir / "tiny-mllama"


_TEST_BUCKETS: list[tuple[S3Server, str]] = []
"""Buckets :func:`make_bucket` made during the running test; dropped when it ends."""


def _s3_client(s3: S3Server) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )


def make_bucket(s3: S3Server, *, keep: bool = False) -> str:
    """A new empty bucket; unless ``keep`` (for module- and session-scoped stacks) it is deleted,
    objects and all, when the running test ends.

    Each SeaweedFS bucket is a collection with a volume of its own, so keeping every test's
    bucket would run the server out of volume slots in a long session.
    """
    name = "t-" + secrets.token_hex(6)
    client = _s3_client(s3)
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    if not keep:
        _TEST_BUCKETS.append((s3, name))
    return name


def _drop_bucket(s3: S3Server, name: str) -> None:
    if not s3.process.alive():
        return
    client = _s3_client(s3)
    # Best effort: a bucket left behind only costs a volume slot until the session ends.
    try:
        with contextlib.suppress(BotoCoreError, ClientError):
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys})
            client.delete_bucket(Bucket=name)
    finally:
        client.close()


@pytest.fixture(autouse=True)
def _drop_test_buckets() -> Iterator[None]:
    yield
    while _TEST_BUCKETS:
        _drop_bucket(*_TEST_BUCKETS.pop())


@pytest.fixture
def broker_url(redis_server: RedisServer) -> str:
    """Database 0 of the session Redis, emptied for each test (the e2e worker uses database 1)."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def _postgres_admin_url() -> str | None:
    url = os.environ.get("LOUPE_TEST_POSTGRES_URL")
    if url:
        return url
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return "postgresql://postgres@127.0.0.1:5432/postgres"
    except OSError:
        return None


def _fresh_postgres_database() -> Iterator[str]:
    admin_url = _postgres_admin_url()
    if admin_url is None:
        pytest.skip("no PostgreSQL: set LOUPE_TEST_POSTGRES_URL or run one on 127.0.0.1:5432")
    name = "loupe_test_" + secrets.token_hex(6)
    admin = create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(admin_url)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite, and PostgreSQL where one answers."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'loupe.db'}"
        upgrade_to_head(url)
        yield url
        return
    for url in _fresh_postgres_database():
        upgrade_to_head(url)
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'loupe.db'}"
    upgrade_to_head(url)
    return url


def make_settings(
    *, database_url: str, broker_url: str, s3: S3Server, bucket: str, models_dir: Path, **extra: Any
) -> Settings:
    env = {
        "LOUPE_DATABASE_URL": database_url,
        "LOUPE_BROKER_URL": broker_url,
        "LOUPE_S3_ENDPOINT_URL": s3.endpoint_url,
        "LOUPE_S3_BUCKET": bucket,
        "LOUPE_S3_ACCESS_KEY_ID": s3.access_key_id,
        "LOUPE_S3_SECRET_ACCESS_KEY": s3.secret_access_key,
        "LOUPE_MODELS_DIR": str(models_dir),
    }
    env.update({f"LOUPE_{k.upper()}": str(v) for k, v in extra.items()})
    return load_settings(env)


@pytest.fixture
def settings_for(
    sqlite_url: str, broker_url: str, s3_server: S3Server, models_dir: Path
) -> Callable[..., Settings]:
    """Settings on the suite's real parts (SQLite, Redis, a fresh bucket) plus ``LOUPE_*`` values
    given as keywords; ``database_url`` and ``broker_url`` may be given to replace the defaults.
    For modules and tests that need other settings than the ``settings`` fixture's."""

    def build(*, database_url: str = sqlite_url, broker_url: str = broker_url, **extra: Any):
        return make_settings(
            database_url=database_url, broker_url=broker_url, s3=s3_server,
            bucket=make_bucket(s3_server), models_dir=models_dir, **extra,
        )  # fmt: skip

    return build


@pytest.fixture
def settings(settings_for: Callable[..., Settings]) -> Settings:
    return settings_for(max_image_bytes=200_000, max_image_pixels=1_000_000)


@pytest.fixture
def api(settings: Settings) -> Iterator[ApiUnderTest]:
    """The API root of ``settings``, with handles on its stores (``tests/support/roots.py``)."""
    parts = build_test_api(settings)
    yield parts
    parts.close()


@pytest.fixture
def client(api: ApiUnderTest) -> Any:
    return api.client()


@pytest.fixture
def user_key(api: ApiUnderTest) -> str:
    return api.keys.create("alice", Role.USER, utcnow())[1]


@pytest.fixture
def other_key(api: ApiUnderTest) -> str:
    return api.keys.create("bob", Role.USER, utcnow())[1]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
