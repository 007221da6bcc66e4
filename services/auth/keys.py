"""API keys: generated once, shown once, stored as SHA-256 digests.

Keys carry 256 bits of randomness, so a fast hash is the right tool (as for GitHub tokens):
a slow password hash would only add latency to every request.

A key's id is what owns its jobs, files and quotas, so rotation gives the id a new secret
rather than making a new key. Revocation and expiry are read from SQL on every request, so
they take effect on the next one.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, RowMapping, and_, insert, or_, select, update

from services.clock import timestamp, utcnow
from services.db.schema import api_keys
from services.db.session import reading, writing
from services.errors import Conflict, InvalidInput, NotFound, Unauthenticated

KEY_PREFIX = "lp_"
LAST_USED_STEP = timedelta(minutes=1)
"""How stale ``last_used_at`` may get: a busy key writes it once a minute, not per request."""


class Role(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def new_key_material() -> tuple[str, str]:
    """(key id, plaintext key)."""
    return "key_" + secrets.token_hex(8), new_secret()


def new_secret() -> str:
    """A new plaintext key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyStore(Protocol):
    def create(
        self, name: str, role: Role, now: datetime, expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]: ...
    def authenticate(self, plaintext: str) -> ApiKey: ...
    def get(self, key_id: str) -> ApiKey: ...
    def list(self) -> list[ApiKey]: ...
    def revoke(self, key_id: str, now: datetime) -> ApiKey: ...
    def rotate(self, key_id: str) -> tuple[ApiKey, str]: ...


class SqlKeyStore:
    """Keys in the ``api_keys`` table; ``clock`` dates expiry checks and ``last_used_at``."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] | None = None) -> None:
        self._engine = engine
        self._clock = clock or utcnow

    def create(
        self, name: str, role: Role, now: datetime, expires_at: datetime | None = None
    ) -> tuple[ApiKey, str]:
        """Create a key (expiring at ``expires_at``, if given); returns it with its plaintext,
        which is never stored."""
        if not name.strip():
            raise InvalidInput("A key needs a name.", code="invalid_parameter")
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at must be in the future.", code="invalid_parameter")
        key_id, plaintext = new_key_material()
        key = ApiKey(id=key_id, name=name, role=role, created_at=now, expires_at=expires_at)
        with writing(self._engine) as conn:
            conn.execute(
                insert(api_keys).values(
                    id=key_id, name=name, key_hash=hash_key(plaintext), role=role.value,
                    created_at=now, expires_at=expires_at,
                )
            )  # fmt: skip
        return key, plaintext

    def authenticate(self, plaintext: str) -> ApiKey:
        """The live key whose secret is ``plaintext``, or 401: ``invalid_api_key`` for no key,
        ``api_key_revoked`` or ``api_key_expired`` for a key that was one."""
        if not plaintext.startswith(KEY_PREFIX):
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        with reading(self._engine) as conn:
            row = conn.execute(
                select(api_keys).where(api_keys.c.key_hash == hash_key(plaintext))
            ).mappings().first()  # fmt: skip
        if row is None:
            raise Unauthenticated("Invalid API key.", code="invalid_api_key")
        key = _key(row)
        now = self._clock()
        _refuse_dead(key, now)
        self._touch(key, now)
        return key

    def get(self, key_id: str) -> ApiKey:
        """The key ``key_id`` (revoked or expired too); 404 ``key_not_found`` if none."""
        with reading(self._engine) as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        if row is None:
            raise NotFound(f"No API key {key_id!r}.", code="key_not_found")
        return _key(row)

    def list(self) -> list[ApiKey]:
        """Every key, revoked and expired ones too, newest first."""
        query = select(api_keys).order_by(api_keys.c.created_at.desc(), api_keys.c.id.desc())
        with reading(self._engine) as conn:
            return [_key(row) for row in conn.execute(query).mappings()]

    def revoke(self, key_id: str, now: datetime) -> ApiKey:
        """Revoke ``key_id`` from its next request on; revoking again keeps the first time."""
        self.get(key_id)
        with writing(self._engine) as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return self.get(key_id)

    def rotate(self, key_id: str) -> tuple[ApiKey, str]:
        """Give ``key_id`` a new secret, returned once; the old one stops working at once.
        The id, and so its jobs, files and quotas, stay. A revoked key cannot be rotated (409)."""
        plaintext = new_secret()
        with writing(self._engine) as conn:
            changed = conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(key_hash=hash_key(plaintext))
            ).rowcount
        if not changed:
            self.get(key_id)  # 404 when there is no such key
            raise Conflict(f"API key {key_id!r} is revoked.", code="key_revoked")
        return self.get(key_id), plaintext

    def _touch(self, key: ApiKey, now: datetime) -> None:
        """Set ``last_used_at`` to ``now`` unless it is within :data:`LAST_USED_STEP` of it."""
        if key.last_used_at is not None and now - key.last_used_at < LAST_USED_STEP:
            return
        stale = or_(
            api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < now - LAST_USED_STEP
        )
        with writing(self._engine) as conn:
            conn.execute(
                update(api_keys)
                .where(and_(api_keys.c.id == key.id, stale))
                .values(last_used_at=now)
            )


def _refuse_dead(key: ApiKey, now: datetime) -> None:
    if key.revoked_at is not None:
        raise Unauthenticated("This API key has been revoked.", code="api_key_revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthenticated("This API key has expired.", code="api_key_expired")


def _key(row: RowMapping) -> ApiKey:
    return ApiKey(
        id=row["id"], name=row["name"], role=Role(row["role"]), created_at=row["created_at"],
        expires_at=row["expires_at"], last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )  # fmt: skip


def key_to_public(key: ApiKey, now: datetime) -> dict[str, Any]:
    """The key as admins see it (never its secret or hash); ``status`` is active, expired or
    revoked at ``now``."""
    return {
        "id": key.id, "object": "api_key", "name": key.name, "role": key.role.value,
        "status": _status(key, now), "created_at": timestamp(key.created_at),
        "expires_at": timestamp(key.expires_at), "last_used_at": timestamp(key.last_used_at),
        "revoked_at": timestamp(key.revoked_at),
    }  # fmt: skip


def _status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"
