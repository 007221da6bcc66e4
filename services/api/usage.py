"""/v1/usage and /v1/quota (the calling key), /v1/admin/usage (every key; admin keys only)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from services.api.auth import Authenticate, current_key, require_admin
from services.clock import utcnow
from services.usage import reports
from services.usage.ledger import SqlUsageLedger
from services.usage.quotas import QuotaEnforcer


def blueprint(
    ledger: SqlUsageLedger, quotas: QuotaEnforcer, authenticate: Authenticate
) -> Blueprint:
    bp = Blueprint("usage", __name__)

    @bp.get("/v1/usage")
    def key_usage() -> Response:
        """The calling key's usage: ``?from=&to=&group_by=day|model&format=json|csv``."""
        authenticate()
        return _answer(ledger, current_key().id, "usage")

    @bp.get("/v1/admin/usage")
    def admin_usage() -> Response:
        """Every key's usage, per key (admin keys only; 403 for user keys)."""
        authenticate()
        require_admin()
        return _answer(ledger, None, "usage-all-keys")

    @bp.get("/v1/quota")
    def key_quota() -> Response:
        """The calling key's limits (null = unlimited) and where it stands against each."""
        authenticate()
        return jsonify(quotas.standing(current_key().id).to_public())

    return bp


def _answer(ledger: SqlUsageLedger, owner_id: str | None, filename: str) -> Response:
    query = reports.parse_query(request.args.to_dict(), utcnow().date())
    groups = ledger.report(query.start, query.end, query.group_by, owner_id)
    per_key = owner_id is None
    if query.format == "csv":
        body = reports.to_csv(query, groups, per_key=per_key)
        name = f"{filename}-{query.start.isoformat()}-{query.end.isoformat()}.csv"
        return Response(
            body,
            mimetype="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return jsonify(reports.report_to_public(query, groups, per_key=per_key))
