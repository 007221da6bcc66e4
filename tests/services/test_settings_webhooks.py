"""The LOUPE_WEBHOOK_* settings: defaults, parsing, and clear errors."""

from __future__ import annotations

import pytest

from services.errors import ConfigurationError
from services.settings import load_settings


def test_webhook_settings_defaults():
    settings = load_settings({})
    assert settings.webhook_queue == "webhooks"
    assert settings.webhook_concurrency == 8
    assert settings.webhook_allow_http is False
    assert settings.webhook_allowed_networks == ()
    assert settings.webhook_retry_schedule == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert settings.webhook_timeout_seconds == 10
    assert settings.webhook_secret_overlap_seconds == 86400
    assert settings.webhook_sweep_seconds == 5


def test_webhook_settings_parse():
    settings = load_settings(
        {
            "LOUPE_WEBHOOK_ALLOW_HTTP": "true",
            "LOUPE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128",
            "LOUPE_WEBHOOK_RETRY_SCHEDULE": "0,0.5,2",
            "LOUPE_WEBHOOK_QUEUE": "hooks",
            "LOUPE_WEBHOOK_SECRET_OVERLAP_SECONDS": "60",
            "LOUPE_WEBHOOK_SWEEP_SECONDS": "1",
        }
    )
    assert settings.webhook_allow_http is True
    assert settings.webhook_allowed_networks == ("127.0.0.0/8", "::1/128")
    assert settings.webhook_retry_schedule == (0, 0.5, 2)
    assert settings.webhook_queue == "hooks"
    assert settings.webhook_secret_overlap_seconds == 60
    assert settings.webhook_sweep_seconds == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEBHOOK_ALLOW_HTTP", "maybe"),
        ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/8"),  # host bits set: a typo, not a network
        ("WEBHOOK_ALLOWED_NETWORKS", "localhost"),
        ("WEBHOOK_RETRY_SCHEDULE", "0,5,soon"),
        ("WEBHOOK_RETRY_SCHEDULE", "0,-5"),
        ("WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("WEBHOOK_CONCURRENCY", "0"),
        ("WEBHOOK_SWEEP_SECONDS", "0"),
    ],
)
def test_webhook_settings_refuse_bad_values(name, value):
    with pytest.raises(ConfigurationError, match=f"LOUPE_{name}"):
        load_settings({f"LOUPE_{name}": value})


def test_image_url_settings_default_to_https_public_only_and_parse():
    defaults = load_settings({})
    assert defaults.image_url_allow_http is False
    assert defaults.image_url_allowed_networks == ()
    assert defaults.image_fetch_timeout_seconds == 10.0
    custom = load_settings({
        "LOUPE_IMAGE_URL_ALLOW_HTTP": "true",
        "LOUPE_IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128",
        "LOUPE_IMAGE_FETCH_TIMEOUT_SECONDS": "2.5",
    })  # fmt: skip
    assert custom.image_url_allow_http is True
    assert custom.image_url_allowed_networks == ("127.0.0.0/8", "::1/128")
    assert custom.image_fetch_timeout_seconds == 2.5
