"""A job that fails on the real worker is retried over HTTP and succeeds on its next attempt."""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from services.clock import utcnow
from services.storage.images import ImageLimits, validate_image
from tests.conftest import auth
from tests.e2e.conftest import ledger_rows
from tests.support.images import make_image
from tests.support.jobs import new_job

pytestmark = pytest.mark.e2e
TERMINAL = {"succeeded", "failed", "canceled", "expired"}


def _wait(client: Any, key: str, job_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}", headers=auth(key)).json
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def test_e2e_a_job_failed_for_a_lost_image_succeeds_when_retried(
    worker, e2e_client, e2e_api, e2e_key
):
    # The object store lost the job's image before the worker read it (the job is inserted
    # with an image that was never stored): its run fails with image_missing.
    data = make_image(52, 44)
    image = validate_image(data, ImageLimits.from_settings(e2e_api.settings)).ref
    owner = e2e_api.keys.authenticate(e2e_key).id
    job_id = "job_retry_" + secrets.token_hex(6)
    e2e_api.jobs.insert(new_job(owner, job_id, images=(image,)), utcnow())
    e2e_api.nudge.nudge("inference")  # the stack's dispatcher hands it to the worker
    failed = _wait(e2e_client, e2e_key, job_id)
    assert (failed["status"], failed["error"]["code"], failed["attempts"]) == (
        "failed", "image_missing", 1,
    )  # fmt: skip

    e2e_api.blobs.put(image.key, data, image.content_type)  # restored, say from a backup
    retried = e2e_client.post(f"/v1/jobs/{job_id}/retry", headers=auth(e2e_key))
    assert retried.status_code == 202, retried.json
    assert retried.json["status"] == "queued" and retried.json["error"] is None

    done = _wait(e2e_client, e2e_key, job_id)
    assert done["status"] == "succeeded", done
    assert (done["attempts"], done["retried_from_status"]) == (2, "failed")
    assert done["output"]["text"] and done["usage"]["prompt_tokens"] > 0
    # The failed attempt never reached the model: only the second one is billed, once.
    assert [row["attempt"] for row in ledger_rows(e2e_api, job_id)] == [2]
