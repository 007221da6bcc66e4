"""The registry: the catalog under a deployment's settings (models file, queues, prices, served)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.catalog.registry import build_registry
from services.errors import ConfigurationError, InvalidInput
from services.settings import load_settings
from tests.support.models import LLAMA_11B, LLAMA_90B, TINY_MODEL

ADDED = """
[[models]]
name = "acme-vision"
engine = "vllm"
hub_id = "acme/vision"
architecture = "Idefics3ForConditionalGeneration"
owned_by = "acme"
limits = { max_images = 1, max_output_tokens = 64, default_max_tokens = 8, context_length = 512 }
price = { input_per_million = "1", output_per_million = "2", per_image = "0" }
engine_args = { max_num_seqs = 6 }
"""


def test_worker_concurrency_follows_the_models_max_num_seqs():
    for model, seqs in [(LLAMA_11B, 16), (LLAMA_90B, 32)]:
        settings = load_settings({"LOUPE_DEFAULT_MODEL": model})
        assert build_registry(settings).worker_concurrency(settings) == seqs
    settings = load_settings({"LOUPE_DEFAULT_MODEL": LLAMA_90B, "LOUPE_WORKER_CONCURRENCY": "3"})
    assert build_registry(settings).worker_concurrency(settings) == 3


def test_registry_ships_the_vllm_settings_for_llama_vision(tmp_path):
    # A node of 80 GB cards runs 90B on 4 GPUs: one key in the deployment's models file.
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        f'[[models]]\nname = "{LLAMA_90B}"\nengine_args.tensor_parallel_size = 4\n'
    )

    registry = build_registry(load_settings({"LOUPE_MODELS_FILE": str(models_file)}))

    small = registry.get(LLAMA_11B).engine_args.to_vllm()
    assert small["enforce_eager"] is True
    assert small["max_num_seqs"] == 16
    assert small["limit_mm_per_prompt"] == {"image": 1}
    big = registry.get(LLAMA_90B).engine_args.to_vllm()
    assert (big["max_num_seqs"], big["tensor_parallel_size"], big["max_model_len"]) == (32, 4, 8192)
    assert build_registry(load_settings({})).get(LLAMA_90B).engine_args.tensor_parallel_size == 8


def test_a_model_added_by_the_models_file_is_served_routed_and_priced(tmp_path):
    models_file = tmp_path / "models.toml"
    models_file.write_text(ADDED)
    env = {
        "LOUPE_MODELS_FILE": str(models_file),
        "LOUPE_SERVED_MODELS": f"acme-vision,{TINY_MODEL}",
        "LOUPE_DEFAULT_MODEL": "acme-vision",
        "LOUPE_MODEL_QUEUES": "acme-vision=gpu-acme",
        "LOUPE_PRICE_OVERRIDES": '{"acme-vision": {"per_image": "0.5"}}',
    }
    settings = load_settings(env)

    registry = build_registry(settings)

    assert [spec.name for spec in registry] == [TINY_MODEL, "acme-vision"]
    added = registry.get("acme-vision")
    assert (added.queue, added.weights_path, added.local_weights) == (
        "gpu-acme",
        "acme/vision",
        False,
    )
    assert (added.price.input_per_million, added.price.per_image) == (Decimal("1"), Decimal("0.5"))
    assert registry.worker_concurrency(settings) == 6
    assert added.to_public()["pricing"]["per_image"] == "0.5"


def test_without_the_models_file_its_model_is_unknown():
    registry = build_registry(load_settings({}))
    assert "acme-vision" not in registry
    with pytest.raises(InvalidInput):
        registry.get("acme-vision")
    with pytest.raises(ConfigurationError, match="LOUPE_SERVED_MODELS names unknown models"):
        build_registry(load_settings({"LOUPE_SERVED_MODELS": "acme-vision"}))


def test_the_default_model_comes_from_the_catalog_unless_the_deployment_names_one():
    assert build_registry(load_settings({})).default_model == TINY_MODEL
    assert build_registry(load_settings({"LOUPE_DEFAULT_MODEL": LLAMA_90B})).default_model == (
        LLAMA_90B
    )
