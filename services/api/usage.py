"""/v1/usage and /v1/quota (the calling key), /v1/admin/usage (every key; admin keys only)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from services.api.auth import authenticate_request, container, current_key, require_admin
from services.clock import utcnow
from services.usage import reports
from services.usage.ledger import SqlUsageLedger

bp = Blueprint("usage", __name__)


def _ledger() -> SqlUsageLedger:
    c = container()
    if c.usage is None:
        raise RuntimeError("the container has no usage ledger")
    return c.usage


def _answer(owner_id: str | None, filename: str) -> Response:
    query = reports.parse_query(request.args.to_dict(), utcnow().date())
    groups = _ledger().report(query.start, query.end, query.group_by, owner_id)
    per_key = owner_id is None
    if query.format == "csv":
        body = reports.to_csv(query, groups, per_key=per_key)
        name = f"{filename}-{query.start.isoformat()}-{query.end.isoformat()}.csv"
        return Response(
            body,
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return jsonify(reports.to_json(query, groups, per_key=per_key))


@bp.get("/v1/usage")
def key_usage() -> Response:
    """The calling key's usage: ``?from=&to=&group_by=day|model&format=json|csv``."""
    authenticate_request()
    return _answer(current_key().id, "usage")


@bp.get("/v1/admin/usage")
def admin_usage() -> Response:
    """Every key's usage, per key (admin keys only; 403 for user keys)."""
    authenticate_request()
    require_admin()
    return _answer(None, "usage-all-keys")


@bp.get("/v1/quota")
def key_quota() -> Response:
    """The calling key's limits (null = unlimited) and where it stands against each."""
    authenticate_request()
    enforcer = container().quota_enforcer
    if enforcer is None:
        raise RuntimeError("the container has no quota enforcer")
    return jsonify(enforcer.standing(current_key().id).to_json())
