"""Operator commands: ``python -m services.cli migrate | create-key``."""

from __future__ import annotations

import click

from services.auth.keys import Role, SqlKeyStore
from services.container import utcnow
from services.db import make_engine, upgrade_to_head
from services.settings import load_settings


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


if __name__ == "__main__":
    main()
