"""LOUPE_MODEL_QUEUES: per-model Celery queues, from settings to the broker, the queue position,
the admin view and the dispatcher (real SQLite, S3 and Redis)."""

from __future__ import annotations

import json

import pytest
import redis

from services.auth.keys import Role
from services.catalog.registry import build_registry
from services.errors import ConfigurationError
from services.settings import Settings, load_settings
from tests.conftest import auth
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.keys import new_key
from tests.support.models import LLAMA_11B, LLAMA_90B, TINY_MODEL


def test_model_queues_parse_and_refuse_bad_values():
    settings = load_settings({"LOUPE_MODEL_QUEUES": f"{LLAMA_90B}=gpu-90b, {LLAMA_11B}=gpu.11b"})
    assert settings.model_queues == ((LLAMA_90B, "gpu-90b"), (LLAMA_11B, "gpu.11b"))
    for bad in (f"{LLAMA_90B}", f"{LLAMA_90B}=gpu:9", f"{LLAMA_90B}=a,{LLAMA_90B}=b",
                f"{LLAMA_90B}=webhooks", "=x"):  # fmt: skip
        with pytest.raises(ConfigurationError):
            load_settings({"LOUPE_MODEL_QUEUES": bad})


def test_registry_routes_models_to_their_queues():
    routes = ((LLAMA_90B, "gpu-90b"),)
    registry = build_registry(Settings(model_queues=routes))
    assert registry.queue_for(LLAMA_90B) == "gpu-90b"
    assert registry.queue_for(TINY_MODEL) == "inference"
    assert registry.queue_for("not-a-model") == "inference"
    assert registry.queues() == ("inference", "gpu-90b")
    assert registry.models_on("gpu-90b") == (LLAMA_90B,)
    # A worker that serves only some models shares the deployment's mapping.
    worker = build_registry(Settings(model_queues=routes, served_models=(LLAMA_90B,)))
    assert worker.queues() == ("inference", "gpu-90b") and worker.queue_for(LLAMA_90B) == "gpu-90b"
    # ... and one that does not serve a routed model still routes it (the light worker's sweep).
    light = build_registry(Settings(model_queues=routes, served_models=(TINY_MODEL,)))
    assert light.queues() == ("inference", "gpu-90b") and light.queue_for(LLAMA_90B) == "gpu-90b"
    assert light.models_on("gpu-90b") == (LLAMA_90B,)
    with pytest.raises(ConfigurationError, match="unknown models"):
        build_registry(Settings(model_queues=(("nope", "q"),)))


@pytest.fixture
def settings(settings_for):
    return settings_for(
        model_queues=f"{LLAMA_90B}=gpu-90b",
        metrics_cache_ms=0,
    )


def _ids_in(client: redis.Redis, list_name: str) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(list_name, 0, -1)]


def test_jobs_go_to_their_models_queue_and_queue_position_counts_that_queue(
    client, api, settings, user_key
):
    def submit(model, **extra):
        body = chat_body(make_image(), model=model, **extra)
        return client.post("/v1/jobs", json=body, headers=auth(user_key)).json

    tiny = [submit(TINY_MODEL)["id"] for _ in range(3)]
    big = submit(LLAMA_90B)
    big_low = submit(LLAMA_90B, priority="low")
    assert api.dispatch() == 5  # no worker yet: the margin (4) per queue
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        assert _ids_in(broker, "inference:5") == tiny[::-1]  # kombu LPUSHes, workers BRPOP
        assert _ids_in(broker, "gpu-90b:5") == [big["id"]]
        assert _ids_in(broker, "gpu-90b:9") == [big_low["id"]]
    finally:
        broker.close()
    # Three tiny jobs wait on the other queue: they are not ahead of the 90B ones.
    assert big["queue_position"] == 0 and big_low["queue_position"] == 1
    assert submit(TINY_MODEL)["queue_position"] == 3

    view = client.get("/v1/admin/queues", headers=auth(_admin_key(api))).json
    by_name = {q["queue"]: q for q in view["queues"]}
    assert list(by_name) == ["inference", "gpu-90b", "webhooks", "maintenance"]
    assert by_name["inference"]["depth"] == 4 and by_name["gpu-90b"]["depth"] == 2  # in SQL
    assert sum(p["in_broker"] for p in by_name["inference"]["priorities"]) == 3
    assert by_name["gpu-90b"]["oldest_age_seconds"] is not None
    metrics = client.get("/metrics", headers=auth(_admin_key(api))).get_data(as_text=True)
    assert 'loupe_queue_depth{priority="low",queue="gpu-90b"} 1.0' in metrics


def test_the_dispatcher_publishes_on_the_jobs_own_queue(client, api, settings, user_key):
    body = chat_body(make_image(), model=LLAMA_90B)
    job_id = client.post("/v1/jobs", json=body, headers=auth(user_key)).json["id"]
    assert api.dispatch() == 1
    broker = redis.Redis.from_url(settings.broker_url)
    try:
        assert _ids_in(broker, "gpu-90b:5") == [job_id] and broker.llen("inference:5") == 0
    finally:
        broker.close()


def _admin_key(api) -> str:
    return new_key(api.keys, "admin", Role.ADMIN).token
