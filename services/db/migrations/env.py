"""Alembic environment: migrations run online against ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context

from services.db.engine import make_engine
from services.db.schema import metadata

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:  # a migration that refuses (0011's downgrade) must not leave the pool open
        engine.dispose()


run_migrations_online()
