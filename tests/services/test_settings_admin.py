"""Admin monitoring settings: defaults, parsing, and the heartbeat TTL guard."""

from __future__ import annotations

import pytest

from services.errors import ConfigurationError
from services.settings import load_settings


def test_settings_admin_defaults():
    s = load_settings({})
    assert (s.heartbeat_seconds, s.heartbeat_ttl_seconds) == (5, 15)
    assert s.metrics_token is None
    assert s.metrics_cache_ms == 1000


def test_settings_admin_values_are_read():
    s = load_settings({
        "LOUPE_HEARTBEAT_SECONDS": "1", "LOUPE_HEARTBEAT_TTL_SECONDS": "3",
        "LOUPE_METRICS_TOKEN": "tok", "LOUPE_METRICS_CACHE_MS": "0",
    })  # fmt: skip
    assert (s.heartbeat_seconds, s.heartbeat_ttl_seconds, s.metrics_token) == (1, 3, "tok")
    assert s.metrics_cache_ms == 0


@pytest.mark.parametrize("env", [
    {"LOUPE_HEARTBEAT_SECONDS": "5", "LOUPE_HEARTBEAT_TTL_SECONDS": "5"},
    {"LOUPE_HEARTBEAT_SECONDS": "0"},
    {"LOUPE_METRICS_CACHE_MS": "soon"},
])  # fmt: skip
def test_settings_admin_rejects_inconsistent_values(env):
    with pytest.raises(ConfigurationError):
        load_settings(env)
