"""Connections for the SQL stores: the one place their vendor errors become Loupe's.

Every store opens its connections here, so "database down, locked, timed out or lost" is
translated once (``services.db.errors``) rather than at each of its queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from services.db.errors import translate_db_errors


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for queries; nothing it does is committed. Database failures raise
    ``Unavailable``; other errors (an ``IntegrityError``…) pass through unchanged."""
    with translate_db_errors(), engine.connect() as conn:
        yield conn


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction, committed when the block ends and rolled back if it raises. Errors as in
    :func:`reading`, the commit's own included."""
    with translate_db_errors(), engine.begin() as conn:
        yield conn
