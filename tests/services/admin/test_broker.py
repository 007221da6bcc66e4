"""RedisBrokerStats against a real redis-server, with messages a real Celery producer wrote."""

from __future__ import annotations

import json

import redis

from services.admin.broker import UNACKED_KEY, RedisBrokerStats
from services.jobs.queue import CeleryTaskQueue
from services.settings import load_settings
from services.types import Priority


def test_broker_depths_count_each_priority_list_of_each_queue(broker_url):
    producer = CeleryTaskQueue(load_settings({"LOUPE_BROKER_URL": broker_url}))
    try:
        for i in range(3):
            producer.enqueue_inference(f"job_h{i}", Priority.HIGH)
        for i in range(2):
            producer.enqueue_inference(f"job_l{i}", Priority.LOW)
        producer.enqueue_inference("job_n0")
    finally:
        producer.close()
    client = redis.Redis.from_url(broker_url)
    client.lpush("webhooks", "x", "y")
    stats = RedisBrokerStats(client)

    depths, unacked = stats.depths(["inference", "webhooks"])

    assert depths["inference"] == {
        Priority.HIGH: ("inference", 3),
        Priority.NORMAL: ("inference:5", 1),
        Priority.LOW: ("inference:9", 2),
    }
    assert depths["webhooks"][Priority.HIGH] == ("webhooks", 2)
    assert unacked == {"inference": 0, "webhooks": 0}
    client.close()


def test_broker_unacked_counts_by_routing_key_and_skips_junk(broker_url):
    client = redis.Redis.from_url(broker_url)
    client.hset(UNACKED_KEY, "t1", json.dumps([{"body": "..."}, "", "inference"]))
    client.hset(UNACKED_KEY, "t2", json.dumps([{"body": "..."}, "", "inference"]))
    client.hset(UNACKED_KEY, "t3", json.dumps([{"body": "..."}, "", "webhooks"]))
    client.hset(UNACKED_KEY, "t4", b"not json")

    _, unacked = RedisBrokerStats(client).depths(["inference"])

    assert unacked == {"inference": 2}
    client.close()
