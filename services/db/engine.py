"""SQLAlchemy engine factory with the per-dialect settings Loupe relies on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

CONNECT_TIMEOUT_S = 3
"""Seconds PostgreSQL has to accept a connection and answer its handshake (libpq's
``connect_timeout``, whole seconds, at least 2): a database that is unreachable or not answering
fails the call (``Unavailable``, a 503 in the API) instead of holding the thread for minutes."""
POOL_TIMEOUT_S = 3.0
"""Seconds a caller waits for a pooled PostgreSQL connection when all are in use: connections
held by calls stuck on a database that stopped answering must not queue every other thread."""


def normalize_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """Create an engine. SQLite gets WAL and a busy timeout so the API and workers can share it."""
    url = normalize_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs["pool_pre_ping"] = True
    kwargs["pool_size"] = 10
    kwargs["max_overflow"] = 20
    kwargs["pool_timeout"] = POOL_TIMEOUT_S
    if "connect_timeout" not in parsed.query:  # the URL's own ``?connect_timeout=`` wins
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(url, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
