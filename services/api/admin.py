"""Admin monitoring over HTTP: ``GET /v1/admin/queues`` and ``POST /v1/admin/jobs/{id}/retry``
(admin key), and the ``/admin`` page.

The page is public HTML and JavaScript; the data it polls needs an admin key, which the page
keeps in the browser's sessionStorage and sends as a bearer token.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, render_template, url_for

from services.admin.monitor import Monitor
from services.admin.presenter import snapshot_to_public
from services.api.auth import Authenticate, require_admin
from services.jobs.presenter import job_to_public
from services.jobs.retry import JobRetrier

# How often the dashboard polls /v1/admin/queues.
POLL_MS = 3000
# Where the dashboard's script puts a job id in the retry URL.
JOB_ID_SLOT = "JOB_ID"


def api_blueprint(monitor: Monitor, retries: JobRetrier, authenticate: Authenticate) -> Blueprint:
    bp = Blueprint("admin_api", __name__, url_prefix="/v1/admin")
    bp.before_request(authenticate)
    bp.before_request(require_admin)

    @bp.get("/queues")
    def queues() -> Response:
        return jsonify(snapshot_to_public(monitor.snapshot()))

    @bp.post("/jobs/<job_id>/retry")
    def retry_job(job_id: str) -> tuple[Response, int]:
        """Queue any key's failed, expired or canceled job again (the dashboard's retry)."""
        return jsonify(job_to_public(retries.retry_as_admin(job_id))), 202

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
        # The page fills in a failed job's id (the route refuses ids with odd characters).
        retry_url = url_for("admin_api.retry_job", job_id=JOB_ID_SLOT)
        return render_template("admin.html", poll_ms=POLL_MS, retry_url=retry_url)

    return bp
