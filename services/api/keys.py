"""Key management for admins: ``/v1/admin/keys`` to create, list, show, revoke and rotate API
keys and to set their quotas (``loupe create-key``, ``revoke-key``, ``set-quota`` do the same
from a shell). Answers that carry a key's secret are sent once and never cached."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from services.api.auth import Authenticate, require_admin
from services.api.body import json_body
from services.api.key_schemas import CreateKeyRequest, QuotaChange, parse_body
from services.auth.keys import ApiKey, KeyStore, key_to_public
from services.clock import utcnow
from services.usage.quotas import SqlQuotaStore


def blueprint(keys: KeyStore, quotas: SqlQuotaStore, authenticate: Authenticate) -> Blueprint:
    """The key routes over ``keys`` and ``quotas``; every one needs an admin key."""
    bp = Blueprint("keys", __name__, url_prefix="/v1/admin/keys")
    bp.before_request(authenticate)
    bp.before_request(require_admin)

    @bp.post("")
    def create_key() -> tuple[Response, int, dict[str, str]]:
        body = parse_body(CreateKeyRequest, json_body(request))
        key, secret = keys.create(body.name, body.role, utcnow(), body.expires_at)
        location = url_for("keys.get_key", key_id=key.id)
        return _with_secret(key, secret), 201, {"Location": location}

    @bp.get("")
    def list_keys() -> Response:
        """Every key, newest first, revoked and expired ones too (``status`` tells)."""
        now = utcnow()
        return jsonify({"object": "list", "data": [key_to_public(k, now) for k in keys.list()]})

    @bp.get("/<key_id>")
    def get_key(key_id: str) -> Response:
        key = keys.get(key_id)
        return jsonify({**key_to_public(key, utcnow()), "quota": quotas.get(key.id).to_public()})

    @bp.post("/<key_id>/revoke")
    def revoke_key(key_id: str) -> Response:
        return jsonify(key_to_public(keys.revoke(key_id, utcnow()), utcnow()))

    @bp.post("/<key_id>/rotate")
    def rotate_key(key_id: str) -> Response:
        return _with_secret(*keys.rotate(key_id))

    @bp.patch("/<key_id>/quota")
    def set_quota(key_id: str) -> Response:
        change = parse_body(QuotaChange, json_body(request))
        quota = quotas.update(key_id, utcnow(), **change.changes())
        return jsonify({"key_id": key_id, **quota.to_public()})

    return bp


def _with_secret(key: ApiKey, secret: str) -> Response:
    """The key and, once, its secret (``key``); never stored by any cache on the way."""
    body: dict[str, Any] = {**key_to_public(key, utcnow()), "key": secret}
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response
