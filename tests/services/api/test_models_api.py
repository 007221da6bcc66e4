"""/v1/models lists what this deployment can serve: the models LOUPE_SERVED_MODELS names, or,
where it names none, the models a live worker runs (never the whole catalog)."""

from __future__ import annotations

import pytest

from services.admin.heartbeats import RedisHeartbeats
from services.admin.types import WorkerInfo
from services.clock import utcnow
from tests.conftest import auth
from tests.support.keys import new_key
from tests.support.models import LLAMA_11B, LLAMA_90B, TINY_MODEL
from tests.support.roots import build_test_api


def listed(api) -> list[str]:
    response = api.client().get("/v1/models", headers=auth(new_key(api.keys).token))
    assert response.status_code == 200
    return [model["id"] for model in response.json["data"]]


def beat(broker_url: str, model: str) -> None:
    now = utcnow()
    beats = RedisHeartbeats.from_url(broker_url)
    beats.beat(
        WorkerInfo("gpu-1", 4242, ("inference",), "transformers", model, 4, 0, now, now),
        ttl_seconds=30,
    )
    beats.close()


@pytest.fixture
def undeclared(settings_for):
    api = build_test_api(settings_for())
    yield api
    api.close()


def test_named_models_are_listed_with_or_without_workers(settings_for):
    api = build_test_api(settings_for(served_models=f"{TINY_MODEL},{LLAMA_11B}"))
    try:
        assert sorted(listed(api)) == sorted([TINY_MODEL, LLAMA_11B])
    finally:
        api.close()


def test_without_named_models_nothing_is_listed_while_no_worker_runs(undeclared):
    assert listed(undeclared) == []


def test_without_named_models_the_models_live_workers_run_are_listed(undeclared, broker_url):
    beat(broker_url, TINY_MODEL)
    assert listed(undeclared) == [TINY_MODEL]
    assert LLAMA_90B not in listed(undeclared)
