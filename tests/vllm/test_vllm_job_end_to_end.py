"""Jobs through the whole system on the vLLM engine: API → Redis → Celery worker → vLLM."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from infra.localstack.servers import ServerProcess
from infra.models import build_local_models
from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import make_env, start_worker
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import ApiUnderTest, build_test_api
from workers.engines.vllm_engine import vllm_import_error

if (_missing := vllm_import_error()) is not None:
    pytest.skip(f"vLLM tier: {_missing}; run make test-vllm", allow_module_level=True)

pytestmark = pytest.mark.e2e
MODEL = "loupe-tiny-vlm"


@pytest.fixture(scope="module")
def stack(
    redis_server: Any, s3_server: Any, models_dir: Any, tmp_path_factory: Any
) -> Iterator[tuple[ServerProcess, ApiUnderTest]]:
    workdir = tmp_path_factory.mktemp("vllm-e2e")
    env = make_env(redis_server, s3_server, models_dir, workdir, redis_db=3)
    build_local_models(models_dir, ["tiny-vlm"])  # the worker's default model below
    env |= {"LOUPE_DEFAULT_MODEL": MODEL, "LOUPE_WORKER_CONCURRENCY": "8"}
    worker = start_worker(env, workdir / "worker.log", "vllm")
    api = build_test_api(load_settings(env))
    yield worker, api
    api.close()
    worker.stop()


def _finish(client: Any, key: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
        if body["status"] not in {"queued", "running"}:
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish")


def test_vllm_jobs_end_to_end(stack: tuple[ServerProcess, ApiUnderTest]) -> None:
    worker, api = stack
    client = api.client()
    key = api.keys.create("v", Role.USER, utcnow())[1]
    ids = [
        client.post(
            "/v1/jobs",
            json=chat_body(
                make_image(), model=MODEL, max_tokens=12, ignore_eos=True, temperature=0
            ),
            headers=auth(key),
        ).json["id"]
        for _ in range(6)
    ]
    bodies = [_finish(client, key, job_id) for job_id in ids]
    for body in bodies:
        assert body["status"] == "succeeded", body
        assert body["usage"]["completion_tokens"] == 12
        assert body["usage"]["prompt_tokens"] > 0
        assert body["usage"]["images"] == 1
        assert body["output"]["finish_reason"] == "length"
    # Same prompt, greedy: every job (batched together by vLLM) gives the same text.
    assert len({b["output"]["text"] for b in bodies}) == 1
    assert "vllm" in worker.log_text().lower()


def test_vllm_structured_output_job(stack: tuple[ServerProcess, ApiUnderTest]) -> None:
    _, api = stack
    client = api.client()
    key = api.keys.create("s", Role.USER, utcnow())[1]
    schema = {
        "type": "object",
        "properties": {"colour": {"enum": ["red", "blue"]}},
        "required": ["colour"],
        "additionalProperties": False,
    }
    body = chat_body(
        make_image(),
        model=MODEL,
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
    )
    response = client.post("/v1/jobs", json=body, headers=auth(key))
    assert response.status_code == 202, response.json
    done = _finish(client, key, response.json["id"])
    assert done["status"] == "succeeded", done
    assert json.loads(done["output"]["text"])["colour"] in {"red", "blue"}
