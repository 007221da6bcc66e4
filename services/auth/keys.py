"""API keys: generated once, shown once, stored as SHA-256 digests.

Keys carry 256 bits of randomness, so a fast hash is the right tool (as for GitHub tokens):
a slow password hash would only add latency to every request.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import Engine, insert, select

from services.db.schema import api_keys
from services.db.session import reading, writing
from services.errors import InvalidInput, Unauthenticated

KEY_PREFIX = "lp_"


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: Role
    created_at: datetime


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def new_key_material() -> tuple[str, str]:
    """(key id, plaintext key)."""
    return "key_" + secrets.token_hex(8), KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore(Protocol):
    def create(self, name: str, role: Role, now: datetime) -> tuple[ApiKey, str]: ...
    def authenticate(self, plaintext: str) -> ApiKey: ...


class SqlKeyStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, name: str, role: Role, now: datetime) -> tuple[ApiKey, str]:
        """Create a key; returns it with its plaintext, which is never stored."""
        if not name.strip():
            raise InvalidInput("A key needs a name.")
        key_id, plaintext = new_key_material()
        with writing(self._engine) as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key_id,
                    name=name,
                    key_hash=hash_key(plaintext),
                    role=role.value,
                    created_at=now,
                )
            )
        return ApiKey(id=key_id, name=name, role=role, created_at=now), plaintext

    def authenticate(self, plaintext: str) -> ApiKey:
        if not plaintext.startswith(KEY_PREFIX):
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        with reading(self._engine) as conn:
            row = (
                conn.execute(
                    select(api_keys).where(
                        api_keys.c.key_hash == hash_key(plaintext),
                        api_keys.c.revoked_at.is_(None),
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        return ApiKey(
            id=row["id"], name=row["name"], role=Role(row["role"]), created_at=row["created_at"]
        )
