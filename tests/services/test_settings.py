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
    from services.models_registry import build_registry

    with pytest.raises(ConfigurationError):
        build_registry(load_settings(env))
