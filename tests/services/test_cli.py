"""``loupe set-quota``: set, change, clear and show a key's quotas."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from services.cli import main
from services.db import make_engine
from services.usage.quotas import Quota, SqlQuotaStore
from tests.support.keys import new_key


@pytest.fixture
def cli(sqlite_url, monkeypatch):
    monkeypatch.setenv("LOUPE_DATABASE_URL", sqlite_url)
    engine = make_engine(sqlite_url)
    key = new_key(engine, "app")
    runner = CliRunner()
    yield lambda *args: runner.invoke(main, list(args)), key.id, SqlQuotaStore(engine)
    engine.dispose()


def test_cli_set_quota_sets_changes_and_clears(cli):
    run, key_id, store = cli
    result = run("set-quota", key_id, "--monthly-spend", "10.00", "--max-queued", "100",
                 "--max-running", "4", "--rpm", "60")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "key_id": key_id, "monthly_spend_usd": "10", "max_queued": 100, "max_running": 4,
        "requests_per_minute": 60,
    }  # fmt: skip
    assert run("set-quota", key_id, "--rpm", "none", "--max-queued", "5").exit_code == 0
    assert store.get(key_id).requests_per_minute is None
    assert store.get(key_id).max_queued == 5 and store.get(key_id).max_running == 4
    assert run("set-quota", key_id, "--clear").exit_code == 0
    assert store.get(key_id) == Quota()


@pytest.mark.parametrize(
    "args",
    [("--rpm", "-1"), ("--rpm", "lots"), ("--monthly-spend", "1e400x"), ("--monthly-spend", "NaN"),
     ("--monthly-spend", "0.000000000001"), ()],
)  # fmt: skip
def test_cli_set_quota_rejects_bad_values(cli, args):
    run, key_id, store = cli
    result = run("set-quota", key_id, *args)
    assert result.exit_code == 2, result.output
    assert store.get(key_id) == Quota()


def test_cli_set_quota_unknown_key_fails_clearly(cli):
    run, _, _ = cli
    result = run("set-quota", "key_nope", "--rpm", "1")
    assert result.exit_code == 1
    assert "No API key 'key_nope'" in result.output
