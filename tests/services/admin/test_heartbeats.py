"""Worker heartbeat records in a real Redis: written with a TTL, listed, expired, removed."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis

from services.admin.heartbeats import KEY_PREFIX, RedisHeartbeats, heartbeat_key
from services.admin.types import WorkerInfo

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def info(pid: int = 42, host: str = "gpu-1") -> WorkerInfo:
    return WorkerInfo(
        host=host, pid=pid, queues=("inference",), engine="vllm", model="m", slots=16,
        slots_in_use=3, started_at=T0, last_seen=T0,
    )  # fmt: skip


def test_heartbeats_beat_writes_hash_with_ttl_and_live_lists_it(broker_url):
    client = redis.Redis.from_url(broker_url)
    beats = RedisHeartbeats(client)

    beats.beat(info(), ttl_seconds=15)
    beats.beat(info(pid=7, host="gpu-0"), ttl_seconds=15)

    assert 0 < client.ttl(heartbeat_key("gpu-1", 42)) <= 15
    assert client.hget(heartbeat_key("gpu-1", 42), "slots") == b"16"
    assert beats.live() == [info(pid=7, host="gpu-0"), info()]
    client.close()


def test_heartbeats_expire_after_ttl_and_remove_deletes(broker_url):
    client = redis.Redis.from_url(broker_url)
    beats = RedisHeartbeats(client)
    beats.beat(info(pid=1), ttl_seconds=1)
    beats.beat(info(pid=2), ttl_seconds=30)
    beats.beat(info(pid=3), ttl_seconds=30)

    beats.remove("gpu-1", 3)
    deadline = time.monotonic() + 10
    while len(beats.live()) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)

    assert [w.pid for w in beats.live()] == [2]
    client.close()


def test_heartbeats_live_skips_malformed_records(broker_url):
    client = redis.Redis.from_url(broker_url)
    client.hset(KEY_PREFIX + "junk:1", mapping={"host": "junk"})
    assert RedisHeartbeats(client).live() == []
    client.close()
