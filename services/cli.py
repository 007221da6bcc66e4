"""Operator commands: ``python -m services.cli migrate | create-key | set-quota``."""

from __future__ import annotations

import json
from decimal import Decimal

import click

from services.auth.keys import Role, SqlKeyStore
from services.clock import utcnow
from services.db import make_engine, upgrade_to_head
from services.errors import NotFound
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


@main.command("create-key")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.USER.value)
def create_key(name: str, role: str) -> None:
    """Create an API key; the plaintext key is printed once, on the last line."""
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        key, plaintext = SqlKeyStore(engine).create(name, Role(role), utcnow())
    finally:
        engine.dispose()
    click.echo(f"created {key.role.value} key {key.id} ({key.name})", err=True)
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
@click.option("--rpm", help="Job submissions per minute ('none': no limit).")
@click.option("--clear", is_flag=True, help="Remove every limit of the key.")
def set_quota(
    key_id: str,
    monthly_spend: str | None,
    max_queued: str | None,
    max_running: str | None,
    rpm: str | None,
    clear: bool,
) -> None:
    """Set a key's quotas; options not given keep their value. Prints the quotas in force."""
    options = {
        "monthly_spend_usd": (Decimal, monthly_spend, "--monthly-spend"),
        "max_queued": (int, max_queued, "--max-queued"),
        "max_running": (int, max_running, "--max-running"),
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
