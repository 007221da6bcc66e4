"""API key builders."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Engine

from services.auth.keys import KeyStore, Role, SqlKeyStore
from services.clock import utcnow


class IssuedKey(NamedTuple):
    """A key as its owner holds it: its id (the owner of its jobs) and its bearer token."""

    id: str
    token: str


def new_key(
    keys: KeyStore | Engine,
    name: str = "owner",
    role: Role = Role.USER,
    at: datetime | None = None,
) -> IssuedKey:
    """Create a key of ``role`` in ``keys`` (a key store, or a database's) at ``at`` (now)."""
    store = SqlKeyStore(keys) if isinstance(keys, Engine) else keys
    key, token = store.create(name, role, at or utcnow())
    return IssuedKey(key.id, token)
