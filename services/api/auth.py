"""Bearer-key authentication for the v1 API."""

from __future__ import annotations

from collections.abc import Callable

from flask import g, request

from services.auth.keys import ApiKey, KeyStore, Role
from services.errors import Forbidden, Unauthenticated

Authenticate = Callable[[], None]
"""Sets ``g.api_key`` from the request's bearer key, or raises 401."""


def authenticator(keys: KeyStore) -> Authenticate:
    """The ``before_request`` hook that checks bearer keys against ``keys``."""

    def authenticate_request() -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        g.api_key = keys.authenticate(token.strip())

    return authenticate_request


def current_key() -> ApiKey:
    """The key :func:`authenticator`'s hook accepted for this request."""
    key: ApiKey = g.api_key
    return key


def require_admin() -> None:
    """Raise :class:`Forbidden` unless the request's key is an admin key (after authentication)."""
    if current_key().role is not Role.ADMIN:
        raise Forbidden("This endpoint needs an admin key.", code="admin_required")
