"""Operator commands: ``python -m services.cli migrate | create-key | list-keys | revoke-key |
rotate-key | set-quota``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

import click

from services.auth.keys import Role, SqlKeyStore, key_to_public
from services.clock import utcnow
from services.db import make_engine, upgrade_to_head
from services.errors import LoupeError, NotFound
from services.settings import load_settings
from services.usage.pricing import quantize
from services.usage.quotas import SqlQuotaStore


@click.group()
def main() -> None:
    """Loupe administration."""


@main.command()
def migrate() -> None:
    """Apply database migrations (idempotent)."""
    settings = load_settings()
    upgrade_to_head(settings.database_url)
    click.echo("database is at the newest schema")


T = TypeVar("T")


@contextmanager
def _keys() -> Iterator[SqlKeyStore]:
    """The key store of the configured database; Loupe's errors become CLI errors (exit 1)."""
    engine = make_engine(load_settings().database_url)
    try:
        yield SqlKeyStore(engine)
    except LoupeError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()


def _with_keys(action: Callable[[SqlKeyStore], T]) -> T:
    with _keys() as keys:
        return action(keys)


@main.command("create-key")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.USER.value)
@click.option(
    "--expires-at",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="When the key stops working (UTC), e.g. 2027-01-01; default: never.",
)
def create_key(name: str, role: str, expires_at: datetime | None) -> None:
    """Create an API key; the plaintext key is printed once, on the last line."""
    expiry = None if expires_at is None else expires_at.replace(tzinfo=UTC)
    key, plaintext = _with_keys(lambda keys: keys.create(name, Role(role), utcnow(), expiry))
    click.echo(f"created {key.role.value} key {key.id} ({key.name})", err=True)
    click.echo(plaintext)


@main.command("list-keys")
def list_keys() -> None:
    """Print every key (never a secret) as one JSON object a line, newest first."""
    now = utcnow()
    for key in _with_keys(lambda keys: keys.list()):
        click.echo(json.dumps(key_to_public(key, now)))


@main.command("revoke-key")
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke a key: its next request is refused. Prints the key."""
    key = _with_keys(lambda keys: keys.revoke(key_id, utcnow()))
    click.echo(json.dumps(key_to_public(key, utcnow())))


@main.command("rotate-key")
@click.argument("key_id")
def rotate_key(key_id: str) -> None:
    """Give a key a new secret (printed once, on the last line); the old one stops working.
    The key keeps its id, jobs, files and quotas."""
    key, plaintext = _with_keys(lambda keys: keys.rotate(key_id))
    click.echo(f"rotated {key.role.value} key {key.id} ({key.name})", err=True)
    click.echo(plaintext)


def _limit(kind: type[int] | type[Decimal], raw: str | None, name: str) -> object:
    """Parse a quota option: a non-negative number, or ``none`` for unlimited."""
    if raw is None or raw.strip().lower() in ("none", "unlimited"):
        return None
    try:
        value = kind(raw)
    except (ValueError, ArithmeticError):
        raise click.BadParameter(f"{raw!r} is not a valid number", param_hint=name) from None
    if (isinstance(value, Decimal) and not value.is_finite()) or value < 0:
        raise click.BadParameter(f"{raw!r} must be >= 0", param_hint=name)
    if isinstance(value, Decimal) and value != quantize(value):
        raise click.BadParameter(f"{raw!r} has more than 10 decimal places", param_hint=name)
    return value


@main.command("set-quota")
@click.argument("key_id")
@click.option("--monthly-spend", help="USD cap per UTC month, e.g. 10.00 ('none': no cap).")
@click.option("--max-queued", help="Most jobs queued at once ('none': no limit).")
@click.option("--max-running", help="Most jobs running at once ('none': no limit).")
@click.option(
    "--max-concurrency", help="Most jobs handed out or running at once ('none': no limit)."
)
@click.option("--rpm", help="Job submissions per minute ('none': no limit).")
@click.option("--clear", is_flag=True, help="Remove every limit of the key.")
def set_quota(
    key_id: str,
    monthly_spend: str | None,
    max_queued: str | None,
    max_running: str | None,
    max_concurrency: str | None,
    rpm: str | None,
    clear: bool,
) -> None:
    """Set a key's quotas; options not given keep their value. Prints the quotas in force."""
    options = {
        "monthly_spend_usd": (Decimal, monthly_spend, "--monthly-spend"),
        "max_queued": (int, max_queued, "--max-queued"),
        "max_running": (int, max_running, "--max-running"),
        "max_concurrency": (int, max_concurrency, "--max-concurrency"),
        "requests_per_minute": (int, rpm, "--rpm"),
    }
    changes = {
        field: _limit(kind, raw, name)
        for field, (kind, raw, name) in options.items()
        if raw is not None
    }
    if not changes and not clear:
        raise click.UsageError("give at least one limit, or --clear")
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        store = SqlQuotaStore(engine)
        if clear:
            store.clear(key_id)
        quota = store.update(key_id, utcnow(), **changes) if changes else store.get(key_id)
    except NotFound as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(json.dumps({"key_id": key_id, **quota.to_public()}))


if __name__ == "__main__":
    main()
