"""The engine's bounds: a PostgreSQL that never answers, or a pool with no connection free,
is ``Unavailable`` (a 503 in the API) after seconds, never a thread held for minutes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy import text
from sqlalchemy.pool import QueuePool

from infra.localstack.servers import LOOPBACK
from services.db import make_engine
from services.db.session import reading
from services.errors import Unavailable
from tests.conftest import _fresh_postgres_database


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port whose kernel accepts connections that nothing ever answers, as a stopped
    database server's would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("query", ["", "?connect_timeout=2"])
def test_a_postgres_that_never_answers_is_unavailable(silent_port, query):
    engine = make_engine(f"postgresql://loupe@{LOOPBACK}:{silent_port}/loupe{query}")
    try:
        with pytest.raises(Unavailable, match="timeout"), reading(engine) as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_no_pooled_connection_free_in_time_is_unavailable():
    for url in _fresh_postgres_database():
        engine = make_engine(url)
        with ExitStack() as held:
            pool = engine.pool
            assert isinstance(pool, QueuePool)
            for _ in range(pool.size() + pool._max_overflow):
                held.enter_context(engine.connect())
            with pytest.raises(Unavailable, match="no connection free"), reading(engine):
                pass
        engine.dispose()
