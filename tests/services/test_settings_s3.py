"""Settings of the S3 client: timeouts and attempts, which bound how long a call may hang."""

from __future__ import annotations

import pytest

from services.errors import ConfigurationError
from services.settings import Settings, load_settings


def test_s3_limits_default_to_one_short_attempt():
    s = load_settings({})
    assert (s.s3_connect_timeout_seconds, s.s3_read_timeout_seconds, s.s3_max_attempts) == (2, 3, 1)
    assert load_settings({}) == Settings()


def test_s3_limits_are_read():
    s = load_settings({
        "LOUPE_S3_CONNECT_TIMEOUT_SECONDS": "0.5", "LOUPE_S3_READ_TIMEOUT_SECONDS": "30",
        "LOUPE_S3_MAX_ATTEMPTS": "4",
    })  # fmt: skip
    assert (s.s3_connect_timeout_seconds, s.s3_read_timeout_seconds, s.s3_max_attempts) == (
        0.5, 30, 4,
    )  # fmt: skip


@pytest.mark.parametrize("env", [
    {"LOUPE_S3_CONNECT_TIMEOUT_SECONDS": "0"},
    {"LOUPE_S3_READ_TIMEOUT_SECONDS": "-1"},
    {"LOUPE_S3_READ_TIMEOUT_SECONDS": "soon"},
    {"LOUPE_S3_MAX_ATTEMPTS": "0"},
    {"LOUPE_S3_MAX_ATTEMPTS": "1.5"},
])  # fmt: skip
def test_s3_limits_reject_bad_values(env):
    with pytest.raises(ConfigurationError):
        load_settings(env)
