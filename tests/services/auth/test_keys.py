from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from services.auth.keys import Role, SqlKeyStore, hash_key
from services.db import make_engine
from services.db.schema import api_keys
from services.errors import Unauthenticated

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def db(database_url):
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def test_keys_are_stored_hashed_and_authenticate(db):
    keys = SqlKeyStore(db)
    key, plaintext = keys.create("alice", Role.ADMIN, NOW)
    with db.connect() as conn:
        stored = conn.execute(select(api_keys.c.key_hash)).scalar_one()
    assert stored == hash_key(plaintext)
    assert plaintext not in stored
    assert keys.authenticate(plaintext) == key
    assert key.role is Role.ADMIN


def test_keys_reject_unknown(db):
    keys = SqlKeyStore(db)
    keys.create("alice", Role.USER, NOW)
    with pytest.raises(Unauthenticated):
        keys.authenticate("lp_not-a-key")
