"""Admin monitoring over HTTP: ``GET /v1/admin/queues`` (admin key) and the ``/admin`` page.

The page is public HTML and JavaScript; the data it polls needs an admin key, which the page
keeps in the browser's sessionStorage and sends as a bearer token.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template

from services.admin.monitor import Monitor
from services.admin.presenter import snapshot_to_public
from services.api.auth import Authenticate, require_admin

# How often the dashboard polls /v1/admin/queues.
POLL_MS = 3000


def api_blueprint(monitor: Monitor, authenticate: Authenticate) -> Blueprint:
    bp = Blueprint("admin_api", __name__, url_prefix="/v1/admin")
    bp.before_request(authenticate)
    bp.before_request(require_admin)

    @bp.get("/queues")
    def queues() -> Response:
        return jsonify(snapshot_to_public(monitor.snapshot()))

    return bp


def page_blueprint() -> Blueprint:
    bp = Blueprint(
        "admin_page",
        __name__,
        url_prefix="/admin",
        template_folder="templates",
        static_folder="static/admin",
        static_url_path="/static",
    )

    @bp.get("")
    def dashboard() -> str:
        return render_template("admin.html", poll_ms=POLL_MS)

    return bp
