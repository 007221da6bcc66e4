"""A model added to a deployment by its models file alone, run by a real Celery worker."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pytest

from services.auth.keys import Role
from services.clock import utcnow
from services.settings import load_settings
from services.types import PriceCard
from services.usage.pricing import price_job
from tests.conftest import auth
from tests.e2e.conftest import make_env, start_worker
from tests.e2e.test_jobs_end_to_end import assert_succeeded, wait_for
from tests.helpers import chat_body
from tests.support.images import make_image
from tests.support.roots import build_test_api

pytestmark = pytest.mark.e2e
MODEL = "acme-vision-small"
CARD = PriceCard(Decimal("1.25"), Decimal("2.5"), Decimal("0.01"))


def _models_file(directory: Path, weights: Path) -> Path:
    """A deployment's models file adding one model on ``weights`` (an absolute path)."""
    path = directory / "models.toml"
    path.write_text(
        f"""
[[models]]
name = "{MODEL}"
engine = "transformers"
path = "{weights}"
architecture = "MllamaForConditionalGeneration"
owned_by = "acme"
limits = {{ max_images = 1, max_output_tokens = 64, default_max_tokens = 8, context_length = 4096 }}
price = {{ input_per_million = "1.25", output_per_million = "2.5", per_image = "0.01" }}
engine_args = {{ max_num_seqs = 2 }}
""",
        encoding="utf-8",
    )
    return path


def test_e2e_a_model_added_by_the_models_file_runs_jobs(
    redis_server, s3_server, models_dir, tmp_path
):
    # The tiny model's files, copied where no catalog entry points: only the file names them.
    weights = tmp_path / "weights" / "acme"
    shutil.copytree(models_dir / "tiny-mllama", weights)
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=7) | {
        "LOUPE_MODELS_FILE": str(_models_file(tmp_path, weights)),
        "LOUPE_DEFAULT_MODEL": MODEL,  # the worker loads it before its first job
    }
    api = build_test_api(load_settings(env))
    worker = start_worker(env, tmp_path / "worker.log", "acme")  # loads it before "ready."
    try:
        client = api.client()
        key = api.keys.create("acme", Role.USER, utcnow())[1]
        listed = {m["id"]: m for m in client.get("/v1/models", headers=auth(key)).json["data"]}
        assert listed[MODEL]["owned_by"] == "acme"
        assert listed[MODEL]["pricing"] == CARD.to_json()
        body = chat_body(make_image(), model=MODEL, max_tokens=4)
        response = client.post("/v1/jobs", json=body, headers=auth(key))
        assert response.status_code == 202, response.json

        job = wait_for(lambda: client.get(response.headers["Location"], headers=auth(key)).json)
        assert_succeeded(job)
        assert job["model"] == MODEL
        usage = job["usage"]
        cost = price_job(CARD, usage["prompt_tokens"], usage["completion_tokens"], 1)
        assert job["usage"]["cost"] == cost.to_public()
    finally:
        worker.stop()
        api.close()


def test_e2e_a_worker_refuses_to_start_when_its_weights_are_missing(
    redis_server, s3_server, models_dir, tmp_path
):
    missing = tmp_path / "not-built"
    env = make_env(redis_server, s3_server, models_dir, tmp_path, redis_db=8) | {
        "LOUPE_MODELS_FILE": str(_models_file(tmp_path, missing)),
        "LOUPE_DEFAULT_MODEL": MODEL,
    }
    expected = rf"cannot load model {MODEL}: model {MODEL}: weights directory {missing} does not"
    with pytest.raises(RuntimeError, match=expected):
        start_worker(env, tmp_path / "worker.log", "unbuilt")
