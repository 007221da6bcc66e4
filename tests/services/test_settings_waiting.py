"""Settings of waiting: Redis URL for notifications, wait limits, gthread threads, waiter cap."""

from __future__ import annotations

import pytest

from services.errors import ConfigurationError
from services.settings import Settings, load_settings


def test_waiting_settings_defaults():
    s = load_settings({})
    assert s.redis_url == s.broker_url == Settings().redis_url
    assert (s.max_wait_seconds, s.chat_completions_timeout_seconds) == (60, 60)
    assert (s.api_threads, s.max_waiters_per_process) == (32, 24)
    assert load_settings({}) == Settings()


def test_redis_url_defaults_to_the_broker_url_and_can_differ():
    broker = "redis://10.0.0.1:6379/2"
    assert load_settings({"LOUPE_BROKER_URL": broker}).redis_url == broker
    other = load_settings({"LOUPE_BROKER_URL": broker, "LOUPE_REDIS_URL": "redis://r:1/0"})
    assert (other.broker_url, other.redis_url) == (broker, "redis://r:1/0")


@pytest.mark.parametrize(
    ("threads", "waiters"), [("1", 0), ("2", 0), ("4", 2), ("8", 6), ("32", 24), ("64", 48)]
)
def test_waiter_cap_keeps_threads_free_for_plain_requests(threads, waiters):
    assert load_settings({"LOUPE_API_THREADS": threads}).max_waiters_per_process == waiters
    explicit = load_settings({"LOUPE_API_THREADS": threads, "LOUPE_MAX_WAITERS_PER_PROCESS": "3"})
    assert explicit.max_waiters_per_process == 3


@pytest.mark.parametrize(
    "env",
    [
        {"LOUPE_MAX_WAIT_SECONDS": "0"},
        {"LOUPE_API_THREADS": "0"},
        {"LOUPE_MAX_WAITERS_PER_PROCESS": "-1"},
        {"LOUPE_CHAT_COMPLETIONS_TIMEOUT_SECONDS": "soon"},
    ],
)
def test_waiting_settings_reject_bad_values(env):
    with pytest.raises(ConfigurationError):
        load_settings(env)
