"""The S3 adapter's client: bounded by the LOUPE_S3_* settings, pooled for every thread."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from infra.localstack.servers import LOOPBACK
from services.errors import Unavailable
from services.settings import load_settings
from services.storage.blobs import S3BlobStore, client_config


def test_the_client_is_bounded_by_the_s3_settings():
    settings = load_settings({
        "LOUPE_S3_CONNECT_TIMEOUT_SECONDS": "1.5", "LOUPE_S3_READ_TIMEOUT_SECONDS": "4",
        "LOUPE_S3_MAX_ATTEMPTS": "2",
    })  # fmt: skip
    config = client_config(settings)
    assert (config.connect_timeout, config.read_timeout) == (1.5, 4)
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}


def test_a_readiness_probe_makes_one_attempt_bounded_by_its_timeout():
    config = client_config(load_settings({}), probe_timeout=1.0)
    assert (config.connect_timeout, config.read_timeout) == (1.0, 1.0)
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}


@pytest.mark.parametrize(
    ("env", "connections"),
    [
        ({}, 32),  # the API's default threads
        ({"LOUPE_API_THREADS": "4"}, 10),
        ({"LOUPE_API_THREADS": "64"}, 64),
        ({"LOUPE_API_THREADS": "4", "LOUPE_WORKER_CONCURRENCY": "40"}, 40),
    ],
)
def test_the_pool_holds_a_connection_for_each_thread(env, connections):
    assert client_config(load_settings(env)).max_pool_connections == connections


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An address whose kernel accepts connections that nothing ever reads or answers, as a
    stopped server's would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        yield f"http://{LOOPBACK}:{listener.getsockname()[1]}"


def test_a_store_that_never_answers_is_unavailable(silent_endpoint):
    settings = load_settings({
        "LOUPE_S3_ENDPOINT_URL": silent_endpoint, "LOUPE_S3_ACCESS_KEY_ID": "key",
        "LOUPE_S3_SECRET_ACCESS_KEY": "secret", "LOUPE_S3_READ_TIMEOUT_SECONDS": "0.2",
        "LOUPE_S3_MAX_ATTEMPTS": "2",
    })  # fmt: skip
    store = S3BlobStore.from_settings(settings)
    try:
        for call in (lambda: store.put("k", b"x" * 1000, "image/png"), lambda: store.get("k")):
            with pytest.raises(Unavailable) as caught:
                call()
            assert caught.value.code == "storage_unavailable"
    finally:
        store.close()
