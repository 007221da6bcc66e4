"""The worker heartbeat thread against a real Redis: beats, counts slots in use, leaves on stop."""

from __future__ import annotations

import threading
import time

import redis

from services.admin.heartbeats import RedisHeartbeats, heartbeat_key
from services.catalog.registry import build_registry
from services.settings import load_settings
from workers.heartbeat import Heartbeat, SlotCounter, worker_info


def test_slot_counter_tracks_jobs_in_flight_across_threads():
    counter = SlotCounter()
    inside = threading.Barrier(4)
    release = threading.Event()

    def job():
        with counter.track():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=job) for _ in range(3)]
    for t in threads:
        t.start()
    inside.wait()
    assert counter.value == 3
    release.set()
    for t in threads:
        t.join()
    assert counter.value == 0


def test_heartbeat_writes_record_refreshes_it_and_deletes_it_on_stop(broker_url):
    settings = load_settings({"LOUPE_BROKER_URL": broker_url})
    info = worker_info(settings, ["inference"], slots=6)
    in_use = [2]
    heartbeat = Heartbeat(
        RedisHeartbeats.from_url(broker_url), info, interval=0.2, ttl=3,
        in_flight=lambda: in_use[0],
    )  # fmt: skip
    client = redis.Redis.from_url(broker_url)
    reader = RedisHeartbeats(client)
    key = heartbeat_key(info.host, info.pid)
    try:
        heartbeat.start()
        (listed,) = reader.live()
        assert (listed.slots, listed.slots_in_use, listed.model) == (
            6,
            2,
            build_registry(settings).default_model,
        )
        assert listed.engine == "transformers"
        assert 0 < client.ttl(key) <= 3

        in_use[0] = 5
        deadline = time.monotonic() + 10
        while reader.live()[0].slots_in_use != 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.live()[0].slots_in_use == 5
        assert reader.live()[0].last_seen > listed.last_seen
    finally:
        heartbeat.stop()
    assert not client.exists(key)
    client.close()


def test_worker_info_names_a_model_only_for_inference_workers():
    settings = load_settings({})
    light = worker_info(settings, ["webhooks", "maintenance"], slots=8)
    assert (light.queues, light.engine, light.model) == (("maintenance", "webhooks"), "", "")
    gpu = worker_info(settings, ["inference"], slots=4)
    assert (gpu.engine, gpu.model) == ("transformers", build_registry(settings).default_model)
