"""Request bodies and probes of the real parts (SQL, S3, the broker) shared by the tests;
image, job and key builders live in ``tests.support``."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import boto3
import redis
from sqlalchemy import Engine, func, select

from services.db.schema import jobs
from tests.support.images import data_url


def chat_body(image: bytes | None = None, prompt: str = "Describe the image.", **extra: Any):
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    if image is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": data_url(image)}})
    body: dict[str, Any] = {
        "model": "loupe-tiny-mllama",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
    }
    body.update(extra)
    return body


def count_jobs(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one())


def count_objects(s3: Any, bucket: str) -> int:
    return len(object_keys(s3, bucket))


def object_keys(s3: Any, bucket: str) -> set[str]:
    """Every key in ``bucket`` (up to the 1000 of one listing: tests store a handful)."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=s3.secret_access_key,
    )
    try:
        listing = client.list_objects_v2(Bucket=bucket)
        return {item["Key"] for item in listing.get("Contents", [])}
    finally:
        client.close()


def queue_length(broker_url: str, queue: str = "inference") -> int:
    client = redis.Redis.from_url(broker_url)
    try:
        return int(sum(client.llen(k) for k in client.keys(f"{queue}*") if b"unacked" not in k))
    finally:
        client.close()


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_growth(
    work: Callable[[], object],
    threads: int,
    expected: type[Exception] | tuple[type[Exception], ...] = (),
) -> int:
    """The highest resident set size seen, minus the one before, while ``threads`` threads run
    ``work`` at once (sampled from /proc/self/statm every millisecond; ``expected``: exceptions
    ``work`` may raise)."""
    baseline, peak, done = rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        with contextlib.suppress(expected):
            work()

    sampler = threading.Thread(target=sample)
    sampler.start()
    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    done.set()
    sampler.join()
    return max(peak[0], rss()) - baseline
