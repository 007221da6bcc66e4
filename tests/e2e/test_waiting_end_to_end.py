"""Waiting through the real stack: gunicorn (gthread) + Redis pub/sub + a real Celery worker.

- ``GET /v1/jobs/{id}?wait=N`` answers within 0.5 s of the job's ``completed_at``;
- ``Prefer: wait=N`` answers 200 with the finished job;
- the official ``openai`` client gets a chat completion with usage for an image prompt;
- twenty waiting clients leave plain requests fast, and beyond the per-process cap a ``?wait``
  answers at once; ``/v1/chat/completions`` past its timeout is a 504 naming the job.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from infra.localstack.servers import RedisServer, S3Server, ServerProcess
from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from tests.conftest import auth
from tests.e2e.conftest import make_env, start_api
from tests.helpers import chat_body
from tests.support.images import data_url, make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_url(worker: ServerProcess, e2e_env: dict[str, str], tmp_path_factory: Any) -> Iterator[str]:
    api, url = start_api(e2e_env, tmp_path_factory.mktemp("api") / "api.log")
    yield url
    api.stop()


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _submit(url: str, key: str, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(url + "/v1/jobs", json=body, headers={**auth(key), **headers}, timeout=90)


def test_e2e_long_poll_returns_within_half_a_second_of_completion(api_url, e2e_key):
    latencies = []
    for _ in range(3):
        job_id = _submit(
            api_url, e2e_key, chat_body(make_image(), max_tokens=48, ignore_eos=True)
        ).json()["id"]
        asked_at = datetime.now(UTC)
        result: dict[str, Any] = {}

        def long_poll(job_id: str = job_id, result: dict[str, Any] = result) -> None:
            response = requests.get(
                f"{api_url}/v1/jobs/{job_id}?wait=30", headers=auth(e2e_key), timeout=60
            )
            result["received_at"] = datetime.now(UTC)
            result["response"] = response

        thread = threading.Thread(target=long_poll)
        thread.start()
        thread.join(timeout=90)
        response = result["response"]
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "succeeded", body
        completed_at = _ts(body["completed_at"])
        assert asked_at < completed_at, "the job finished before the long-poll began"
        latencies.append((result["received_at"] - completed_at).total_seconds())
    print(f"long-poll latency after completed_at (s): {[round(x, 3) for x in latencies]}")
    assert max(latencies) < 0.5, latencies


def test_e2e_prefer_wait_returns_the_finished_job(api_url, e2e_key):
    response = _submit(api_url, e2e_key, chat_body(make_image(), max_tokens=4), Prefer="wait=60")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["usage"]["completion_tokens"] > 0
    assert response.headers["Preference-Applied"] == "wait=60"
    assert response.headers["Location"] == f"/v1/jobs/{response.json()['id']}"


def test_e2e_openai_client_chat_completion_with_an_image(api_url, e2e_key):
    client = openai.OpenAI(base_url=api_url + "/v1", api_key=e2e_key, timeout=90)
    try:
        completion = client.chat.completions.create(
            model="loupe-tiny-mllama",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": data_url(make_image())}},
                    ],
                }
            ],
            max_tokens=8,
        )
        models = client.models.list()
    finally:
        client.close()
    assert completion.object == "chat.completion"
    assert completion.model == "loupe-tiny-mllama"
    (choice,) = completion.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert "loupe-tiny-mllama" in {m.id for m in models.data}
    # Still a normal job, through the queue and the accounting:
    job_id = completion.model_extra["loupe"]["job_id"]  # type: ignore[index]
    job = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth(e2e_key), timeout=30).json()
    assert job["status"] == "succeeded"
    assert job["usage"]["completion_tokens"] == usage.completion_tokens
    assert job["output"]["text"] == choice.message.content


@pytest.fixture
def idle_stack(
    redis_server: RedisServer, s3_server: S3Server, models_dir: Path, tmp_path: Path
) -> tuple[dict[str, str], str]:
    """An environment whose jobs stay queued (no worker consumes its Redis database)."""
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=3)
    api = build_test_api(load_settings(env))
    try:
        key = api.keys.create("idle", Role.USER, utcnow())[1]
    finally:
        api.close()
    return env, key


def _wait_in_parallel(url: str, key: str, job_ids: list[str], wait: int) -> list[Any]:
    results: list[Any] = [None] * len(job_ids)

    def one(i: int) -> None:
        started = time.monotonic()
        response = requests.get(
            f"{url}/v1/jobs/{job_ids[i]}?wait={wait}", headers=auth(key), timeout=wait + 60
        )
        results[i] = (response.status_code, response.json()["status"], time.monotonic() - started)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(job_ids))]
    for thread in threads:
        thread.start()
    time.sleep(1.5)  # let them all arrive and block
    started = time.monotonic()
    assert requests.get(url + "/healthz", timeout=10).status_code == 200
    plain = requests.get(f"{url}/v1/jobs/{job_ids[0]}", headers=auth(key), timeout=10)
    elapsed = time.monotonic() - started
    assert plain.status_code == 200
    results.append(elapsed)
    for thread in threads:
        thread.join(timeout=wait + 90)
    return results


def test_e2e_twenty_waiters_leave_plain_requests_fast(idle_stack, tmp_path):
    env, key = idle_stack
    api, url = start_api(env, tmp_path / "api.log")  # 2 processes x 32 threads, 24 waiters each
    try:
        job_ids = [
            _submit(url, key, chat_body(make_image(), max_tokens=4)).json()["id"] for _ in range(20)
        ]
        *waits, plain_seconds = _wait_in_parallel(url, key, job_ids, wait=5)
    finally:
        api.stop()
    print(f"healthz + plain GET beside 20 waiters: {plain_seconds:.3f} s")
    assert plain_seconds < 1.0
    assert all(code == 200 and status == "queued" for code, status, _ in waits)
    assert all(4.5 <= seconds < 30 for _, _, seconds in waits), waits


def test_e2e_waiters_beyond_the_cap_answer_at_once(idle_stack, tmp_path):
    env, key = idle_stack
    # One process with 8 threads: at most 6 wait, 2 threads always serve plain requests.
    env = env | {"LOUPE_API_THREADS": "8", "LOUPE_CHAT_COMPLETIONS_TIMEOUT_SECONDS": "1"}
    api, url = start_api(env, tmp_path / "api.log", workers=1)
    try:
        job_ids = [
            _submit(url, key, chat_body(make_image(), max_tokens=4)).json()["id"] for _ in range(20)
        ]
        *waits, plain_seconds = _wait_in_parallel(url, key, job_ids, wait=5)

        client = openai.OpenAI(base_url=url + "/v1", api_key=key, timeout=60)
        try:
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(
                    model="loupe-tiny-mllama",
                    messages=[{"role": "user", "content": "Hello?"}],
                    max_tokens=4,
                )
        finally:
            client.close()
    finally:
        api.stop()
    assert plain_seconds < 1.0
    waited = [seconds for _, _, seconds in waits if seconds >= 4.5]
    at_once = [seconds for _, _, seconds in waits if seconds < 2]
    assert (len(waited), len(at_once)) == (6, 14), waits
    assert all(code == 200 and status == "queued" for code, status, _ in waits)
    timeout = raised.value.response
    assert timeout.status_code == 504
    job_id = timeout.json()["error"]["job_id"]
    assert timeout.headers["Location"] == f"/v1/jobs/{job_id}"
