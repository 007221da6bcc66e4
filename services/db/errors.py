"""Translate SQLAlchemy errors into Loupe's error tree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.errors import Unavailable


@contextmanager
def translate_db_errors() -> Iterator[None]:
    """Database down, locked or timed out, or no pooled connection free in time →
    ``Unavailable`` (retryable)."""
    try:
        yield
    except OperationalError as exc:
        raise Unavailable(f"database unavailable: {exc.orig}") from exc
    except PoolTimeout as exc:
        raise Unavailable("database unavailable: no connection free in time") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("database connection lost") from exc
        raise
