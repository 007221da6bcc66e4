"""Fixtures and probes for usage tests; jobs are built and driven by ``tests.support.jobs``."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from services.db import make_engine
from services.db.schema import usage_ledger


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def ledger_rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(usage_ledger)).mappings()]
