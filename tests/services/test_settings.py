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


def test_settings_read_the_models_file_path():
    from pathlib import Path

    assert load_settings({}).models_file is None
    assert load_settings({"LOUPE_MODELS_FILE": "/etc/loupe/models.toml"}).models_file == Path(
        "/etc/loupe/models.toml"
    )


@pytest.mark.parametrize("name", ["LLAMA_11B_PATH", "LLAMA_90B_PATH", "TENSOR_PARALLEL_SIZE"])
def test_settings_refuse_the_removed_per_model_variables(name):
    with pytest.raises(ConfigurationError, match=f"LOUPE_{name} was removed: .*LOUPE_MODELS_FILE"):
        load_settings({f"LOUPE_{name}": "4"})


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


def test_settings_read_the_decode_limits():
    s = load_settings({"LOUPE_MAX_DECODE_PIXELS": "1000000", "LOUPE_MAX_IMAGE_FRAMES": "8"})
    assert (s.max_decode_pixels, s.max_image_frames) == (1_000_000, 8)
    assert load_settings({}).max_decode_pixels == 4096 * 4096
    with pytest.raises(ConfigurationError):
        load_settings({"LOUPE_MAX_IMAGE_FRAMES": "0"})


def test_settings_read_the_default_rate_limit():
    assert load_settings({}).default_requests_per_minute == 600
    assert (
        load_settings({"LOUPE_DEFAULT_REQUESTS_PER_MINUTE": "0"}).default_requests_per_minute == 0
    )
    with pytest.raises(ConfigurationError):
        load_settings({"LOUPE_DEFAULT_REQUESTS_PER_MINUTE": "-1"})


def test_settings_read_the_decode_budget():
    assert load_settings({}).decode_budget_pixels == 4096 * 4096
    assert load_settings({"LOUPE_MAX_DECODE_PIXELS": "1000"}).decode_budget_pixels == 1000
    s = load_settings({"LOUPE_DECODE_BUDGET_PIXELS": "50000000"})
    assert s.decode_budget_pixels == 50_000_000
    with pytest.raises(ConfigurationError):
        load_settings({"LOUPE_DECODE_BUDGET_PIXELS": "0"})
