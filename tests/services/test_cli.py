"""The operator CLI: ``set-quota`` and the key commands (create, list, revoke, rotate)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from services.auth.keys import SqlKeyStore
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
                 "--max-running", "4", "--max-concurrency", "6", "--rpm", "60")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "key_id": key_id, "monthly_spend_usd": "10", "max_queued": 100, "max_running": 4,
        "max_concurrency": 6, "requests_per_minute": 60,
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


def test_cli_revoke_key_refuses_the_key_at_once(cli, sqlite_url):
    run, key_id, _ = cli
    engine = make_engine(sqlite_url)
    keys = SqlKeyStore(engine)
    try:
        result = run("revoke-key", key_id)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["status"] == "revoked"
        assert keys.get(key_id).revoked_at is not None
    finally:
        engine.dispose()
    assert run("revoke-key", "key_nope").exit_code == 1


def test_cli_rotate_key_prints_the_new_secret_last(cli, sqlite_url):
    run, key_id, _ = cli
    result = run("rotate-key", key_id)
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip().splitlines()[-1]
    engine = make_engine(sqlite_url)
    try:
        assert SqlKeyStore(engine).authenticate(secret).id == key_id
    finally:
        engine.dispose()


def test_cli_create_key_with_expiry_and_list_keys(cli):
    run, key_id, _ = cli
    created = run("create-key", "--name", "ci", "--expires-at", "2099-01-01")
    assert created.exit_code == 0, created.output
    listed = [json.loads(line) for line in run("list-keys").stdout.splitlines()]
    assert listed[0]["name"] == "ci" and listed[0]["expires_at"] == "2099-01-01T00:00:00Z"
    assert key_id in {key["id"] for key in listed}
    assert all("key" not in key for key in listed)
