"""The dev stack runs the API under gunicorn gthread, sized like the app's waiter cap."""

from __future__ import annotations

from infra.localstack.stack import API_THREADS, DEFAULT_COMMANDS
from services.settings import default_max_waiters, load_settings


def test_stack_api_runs_gthread_with_the_threads_the_app_is_told_about() -> None:
    api = list(DEFAULT_COMMANDS.api)
    assert api[api.index("--worker-class") + 1] == "gthread"
    assert api[api.index("--threads") + 1] == str(API_THREADS)
    settings = load_settings({"LOUPE_API_THREADS": str(API_THREADS)})
    assert settings.max_waiters_per_process == default_max_waiters(API_THREADS)
    assert 0 < settings.max_waiters_per_process < API_THREADS
