import pytest

from services.errors import ConfigurationError
from services.settings import load_settings


def test_settings_read_loupe_variables():
    s = load_settings(
        {"LOUPE_DATABASE_URL": "sqlite:///x.db", "LOUPE_MAX_IMAGE_BYTES": "10",
         "LOUPE_ALLOWED_IMAGE_FORMATS": "png, jpeg", "OTHER": "ignored"}
    )  # fmt: skip
    assert s.database_url == "sqlite:///x.db"
    assert s.max_image_bytes == 10
    assert s.allowed_image_formats == ("PNG", "JPEG")


@pytest.mark.parametrize(
    "env",
    [
        {"LOUPE_MAX_IMAGE_BYTES": "lots"},
        {"LOUPE_MAX_IMAGE_BYTES": "0"},
        {"LOUPE_VISIBILITY_TIMEOUT_SECONDS": "10"},
        {"LOUPE_SERVED_MODELS": "nope"},
    ],
)
def test_settings_reject_bad_values(env):
    from services.catalog.registry import build_registry

    with pytest.raises(ConfigurationError):
        build_registry(load_settings(env))


def test_worker_concurrency_follows_the_models_max_num_seqs():
    from services.catalog.registry import LLAMA_11B, LLAMA_90B, build_registry

    for model, seqs in [(LLAMA_11B, 16), (LLAMA_90B, 32)]:
        settings = load_settings({"LOUPE_DEFAULT_MODEL": model})
        assert build_registry(settings).worker_concurrency(settings) == seqs
    settings = load_settings({"LOUPE_DEFAULT_MODEL": LLAMA_90B, "LOUPE_WORKER_CONCURRENCY": "3"})
    assert build_registry(settings).worker_concurrency(settings) == 3


def test_registry_ships_the_vllm_settings_for_llama_vision():
    from services.catalog.registry import LLAMA_11B, LLAMA_90B, build_registry

    registry = build_registry(load_settings({"LOUPE_TENSOR_PARALLEL_SIZE": "4"}))
    small = registry.get(LLAMA_11B).engine_args.to_vllm()
    assert small["enforce_eager"] is True
    assert small["max_num_seqs"] == 16
    assert small["limit_mm_per_prompt"] == {"image": 1}
    big = registry.get(LLAMA_90B).engine_args.to_vllm()
    assert (big["max_num_seqs"], big["tensor_parallel_size"], big["max_model_len"]) == (32, 4, 8192)


def test_settings_price_overrides_inline_or_file(tmp_path):
    from decimal import Decimal

    text = '{"llama-3.2-90b-vision-instruct": {"input_per_million": "0.5", "per_image": 0.001}}'
    inline = load_settings({"LOUPE_PRICE_OVERRIDES": text}).price_overrides
    path = tmp_path / "prices.json"
    path.write_text(text)
    from_file = load_settings({"LOUPE_PRICE_OVERRIDES": str(path)}).price_overrides
    assert inline == from_file
    (override,) = inline
    assert override.input_per_million == Decimal("0.5")
    assert override.per_image == Decimal("0.001")  # parsed from the JSON text, not a float
    assert override.output_per_million is None


@pytest.mark.parametrize(
    "env",
    [
        {"LOUPE_PRICE_OVERRIDES": "{not json"},
        {"LOUPE_PRICE_OVERRIDES": '["x"]'},
        {"LOUPE_PRICE_OVERRIDES": '{"loupe-tiny-mllama": {"input_per_million": "-1"}}'},
        {"LOUPE_PRICE_OVERRIDES": '{"loupe-tiny-mllama": {"input_per_million": "abc"}}'},
        {"LOUPE_PRICE_OVERRIDES": '{"loupe-tiny-mllama": {"input_per_million": "NaN"}}'},
        {"LOUPE_PRICE_OVERRIDES": '{"loupe-tiny-mllama": {"per_token": "1"}}'},
        {"LOUPE_PRICE_OVERRIDES": '{"loupe-tiny-mllama": {"per_image": true}}'},
        {"LOUPE_PRICE_OVERRIDES": '{"no-such-model": {"per_image": "1"}}'},
        {"LOUPE_PRICE_OVERRIDES": "/nonexistent/prices.json"},
        {"LOUPE_CHARGE_FAILED_JOBS": "maybe"},
    ],
)
def test_settings_reject_bad_usage_values(env):
    from services.catalog.registry import build_registry

    with pytest.raises(ConfigurationError):
        build_registry(load_settings(env))


def test_settings_usage_defaults():
    s = load_settings({"LOUPE_BROKER_URL": "redis://h:1/0"})
    assert s.charge_failed_jobs is True and s.price_overrides == ()
    assert s.redis_url == "redis://h:1/0"
    s = load_settings({"LOUPE_REDIS_URL": "redis://q:2/3", "LOUPE_CHARGE_FAILED_JOBS": "false"})
    assert s.redis_url == "redis://q:2/3" and s.charge_failed_jobs is False
