"""The object store frozen (SIGSTOP) under the live API: submits answer 503 in time, add no job.

The API runs as deployed (gunicorn, one process of two threads) on a SeaweedFS of this test's
own, never the session's one other tests share. Frozen, the store's kernel still accepts
connections and buffers requests, so only the S3 client's timeouts end a call: each submit, JSON
and multipart side by side on the two threads, must answer 503 ``storage_unavailable`` within
5 s and leave no job row. What the store makes of the requests it buffered once it runs again is
its own business, but an object is whole or absent (never partial). Then a submit succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from infra.localstack.servers import RedisServer, S3Server, start_seaweed
from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.conftest import S3_ACCESS_KEY, auth
from tests.e2e.conftest import make_env, start_api, wait_until
from tests.helpers import chat_body, count_jobs
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e

ANSWER_WITHIN_S = 5.0
"""The promise: a submit to a store that stopped answering ends within this (README)."""


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    """A SeaweedFS for this test alone: stopping it disturbs no other test."""
    server = start_seaweed(
        tmp_path / "seaweed",
        bucket="loupe-outage",
        access_key_id=S3_ACCESS_KEY,
        secret_access_key=secrets.token_hex(16),
    )
    yield server
    os.killpg(server.process.pgid, signal.SIGCONT)  # a stopped group would ignore SIGTERM
    server.stop()


@contextlib.contextmanager
def frozen(server: S3Server) -> Iterator[None]:
    """Every process of ``server`` stopped (SIGSTOP) within the block, resumed after it."""
    os.killpg(server.process.pgid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(server.process.pgid, signal.SIGCONT)


def submit_json(url: str, key: str, image: bytes) -> requests.Response:
    body = chat_body(image, max_tokens=4)
    return requests.post(url + "/v1/jobs", json=body, headers=auth(key), timeout=30)


def submit_multipart(url: str, key: str, image: bytes) -> requests.Response:
    files = {"image": ("cat.png", image, "image/png")}
    data = {"prompt": "What is in this picture?", "max_tokens": "4"}
    return requests.post(url + "/v1/jobs", files=files, data=data, headers=auth(key), timeout=30)


def timed(send: Callable[..., requests.Response], *args: object) -> tuple[requests.Response, float]:
    """``send(*args)`` and the seconds it took to answer."""
    started = time.monotonic()
    response = send(*args)
    return response, time.monotonic() - started


def stored(server: S3Server, bucket: str) -> dict[str, bytes]:
    """Every object in ``bucket``: key -> bytes."""
    client = server.client()
    try:
        listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
        keys = [item["Key"] for item in listing]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}
    finally:
        client.close()


def image_key(image: bytes) -> str:
    digest = hashlib.sha256(image).hexdigest()
    return f"images/{digest[:2]}/{digest}"


def test_e2e_a_frozen_object_store_answers_503_in_time_and_adds_no_job(
    redis_server: RedisServer, own_s3: S3Server, models_dir: Path, tmp_path: Path
) -> None:
    env = make_env(redis_server, own_s3, models_dir, tmp_path, redis_db=10) | {
        "LOUPE_API_THREADS": "2",
        "LOUPE_SERVED_MODELS": "loupe-tiny-mllama",  # no worker runs: submits only
    }
    redis.Redis.from_url(env["LOUPE_BROKER_URL"]).flushdb()
    api = build_test_api(load_settings(env))
    process, url = start_api(env, tmp_path / "api.log", workers=1)
    try:
        key = api.keys.create("outage", Role.USER, utcnow())[1]
        warm = make_image(60, 40)
        assert submit_json(url, key, warm).status_code == 202  # pooled connections exist
        jobs_before = count_jobs(api.db_engine)
        json_image, form_image = make_image(61, 40), make_image(62, 40)
        with frozen(own_s3), ThreadPoolExecutor(2) as pool:
            answers = [
                pool.submit(timed, submit_json, url, key, json_image),
                pool.submit(timed, submit_multipart, url, key, form_image),
            ]
            results = [answer.result() for answer in answers]
            jobs_while_frozen = count_jobs(api.db_engine)
        print(f"submits to the frozen store answered in {[round(s, 2) for _, s in results]} s")
        for response, seconds in results:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "storage_unavailable"
            assert response.headers["Retry-After"]
            assert seconds < ANSWER_WITHIN_S, seconds
        assert jobs_while_frozen == jobs_before
        accepted = wait_until(
            lambda: (r := submit_json(url, key, make_image(63, 40))).status_code == 202 and r,
            30, "a submit to succeed once the store runs again", 0.5,
        )  # fmt: skip
        assert accepted.json()["status"] == "queued"
        assert count_jobs(api.db_engine) == jobs_before + 1
        objects = stored(own_s3, env["LOUPE_S3_BUCKET"])
        for image in (json_image, form_image):
            assert objects.get(image_key(image), image) == image  # whole, or absent
    finally:
        process.stop()
        api.close()
