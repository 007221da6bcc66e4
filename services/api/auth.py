"""Bearer-key authentication for the v1 API."""

from __future__ import annotations

from flask import current_app, g, request

from services.auth.keys import ApiKey, Role
from services.container import Container
from services.errors import Forbidden, Unauthenticated


def container() -> Container:
    c: Container = current_app.extensions["loupe"]
    return c


def authenticate_request() -> None:
    """``before_request`` hook: sets ``g.api_key`` or raises 401."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
        )
    g.api_key = container().keys.authenticate(token.strip())


def current_key() -> ApiKey:
    key: ApiKey = g.api_key
    return key


def require_admin() -> None:
    """Raise :class:`Forbidden` unless the request's key is an admin key (after authentication)."""
    if current_key().role is not Role.ADMIN:
        raise Forbidden("This endpoint needs an admin key.", code="admin_required")
