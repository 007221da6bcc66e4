"""/v1/jobs: submit and poll."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request, url_for

from services.api.auth import authenticate_request, container, current_key
from services.api.schemas import parse_form_job, parse_json_job
from services.errors import BadRequest, UnsupportedMediaType
from services.jobs.presenter import job_to_public
from services.jobs.service import SubmitCommand

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
bp.before_request(authenticate_request)


def _command_from_request() -> SubmitCommand:
    owner = current_key().id
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = request.get_json(silent=True)
        if body is None:
            raise BadRequest("The body is not valid JSON.", code="invalid_json")
        return parse_json_job(body, owner)
    if mimetype == "multipart/form-data":
        form = {key: request.form.getlist(key) for key in request.form}
        files = {key: [f.read() for f in request.files.getlist(key)] for key in request.files}
        return parse_form_job(form, files, owner, container().settings.default_model)
    raise UnsupportedMediaType(
        "Send application/json (chat-completions shape) or multipart/form-data.",
        code="unsupported_media_type",
    )


@bp.post("")
def create_job() -> tuple[Response, int, dict[str, str]]:
    job = container().job_service.submit(_command_from_request())
    location = url_for("jobs.get_job", job_id=job.id)
    return jsonify(job_to_public(job)), 202, {"Location": location}


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    job = container().job_service.get(job_id, current_key().id)
    return jsonify(job_to_public(job))


@bp.post("/<job_id>/cancel")
def cancel_job(job_id: str) -> Response:
    job = container().job_service.cancel(job_id, current_key().id)
    return jsonify(job_to_public(job))
