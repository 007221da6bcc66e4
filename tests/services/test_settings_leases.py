"""Lease settings: defaults, parsing, and the renewal guard."""

from __future__ import annotations

import pytest

from services.errors import ConfigurationError
from services.settings import load_settings


def test_settings_lease_defaults():
    s = load_settings({})
    assert (s.lease_seconds, s.lease_renew_seconds, s.lost_sweep_seconds) == (30, 5, 5)
    assert s.max_attempts == 3


def test_settings_lease_values_are_read():
    s = load_settings({
        "LOUPE_LEASE_SECONDS": "10", "LOUPE_LEASE_RENEW_SECONDS": "2",
        "LOUPE_LOST_SWEEP_SECONDS": "1", "LOUPE_MAX_ATTEMPTS": "5",
    })  # fmt: skip
    assert (s.lease_seconds, s.lease_renew_seconds, s.lost_sweep_seconds) == (10, 2, 1)
    assert s.max_attempts == 5


@pytest.mark.parametrize("env", [
    {"LOUPE_LEASE_SECONDS": "8", "LOUPE_LEASE_RENEW_SECONDS": "5"},  # renewed too seldom
    {"LOUPE_LEASE_SECONDS": "1"},
    {"LOUPE_MAX_ATTEMPTS": "0"},
    {"LOUPE_LOST_SWEEP_SECONDS": "0"},
])  # fmt: skip
def test_settings_lease_rejects_inconsistent_values(env):
    with pytest.raises(ConfigurationError):
        load_settings(env)
