from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from services.auth.keys import Role, SqlKeyStore, hash_key
from services.db import make_engine
from services.db.schema import api_keys
from services.errors import Conflict, InvalidInput, NotFound, Unauthenticated

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


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_a_revoked_key_is_refused_on_its_next_use(db):
    keys = SqlKeyStore(db)
    key, plaintext = keys.create("alice", Role.USER, NOW)
    keys.revoke(key.id, NOW)
    with pytest.raises(Unauthenticated) as refused:
        keys.authenticate(plaintext)
    assert refused.value.code == "api_key_revoked"
    assert keys.revoke(key.id, NOW + timedelta(hours=1)).revoked_at == NOW  # first time kept


def test_a_key_works_until_it_expires(db):
    clock = Clock(NOW)
    keys = SqlKeyStore(db, clock)
    _, plaintext = keys.create("ci", Role.USER, NOW, expires_at=NOW + timedelta(days=1))
    assert keys.authenticate(plaintext).expires_at == NOW + timedelta(days=1)
    clock.now = NOW + timedelta(days=1)
    with pytest.raises(Unauthenticated) as refused:
        keys.authenticate(plaintext)
    assert refused.value.code == "api_key_expired"


def test_expiry_must_be_in_the_future(db):
    with pytest.raises(InvalidInput):
        SqlKeyStore(db).create("ci", Role.USER, NOW, expires_at=NOW)


def test_last_used_at_is_written_at_most_once_a_minute(db):
    clock = Clock(NOW)
    keys = SqlKeyStore(db, clock)
    key, plaintext = keys.create("alice", Role.USER, NOW)
    assert keys.get(key.id).last_used_at is None
    keys.authenticate(plaintext)
    clock.now = NOW + timedelta(seconds=59)
    keys.authenticate(plaintext)
    assert keys.get(key.id).last_used_at == NOW
    clock.now = NOW + timedelta(seconds=61)
    keys.authenticate(plaintext)
    assert keys.get(key.id).last_used_at == NOW + timedelta(seconds=61)


def test_rotation_keeps_the_id_and_retires_the_old_secret(db):
    keys = SqlKeyStore(db)
    key, old = keys.create("alice", Role.ADMIN, NOW)
    rotated, new = keys.rotate(key.id)
    assert (rotated.id, rotated.role) == (key.id, Role.ADMIN)
    assert keys.authenticate(new).id == key.id
    with pytest.raises(Unauthenticated):
        keys.authenticate(old)


def test_a_revoked_or_unknown_key_cannot_be_rotated(db):
    keys = SqlKeyStore(db)
    key, _ = keys.create("alice", Role.USER, NOW)
    keys.revoke(key.id, NOW)
    with pytest.raises(Conflict):
        keys.rotate(key.id)
    with pytest.raises(NotFound):
        keys.rotate("key_nope")


def test_list_shows_every_key_newest_first(db):
    keys = SqlKeyStore(db)
    old, _ = keys.create("old", Role.USER, NOW)
    new, _ = keys.create("new", Role.USER, NOW + timedelta(seconds=1))
    keys.revoke(old.id, NOW)
    assert [k.id for k in keys.list()] == [new.id, old.id]
    assert keys.list()[1].revoked_at == NOW
