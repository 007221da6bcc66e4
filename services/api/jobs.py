"""/v1/jobs: submit, poll, cancel and retry."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, Response, jsonify, request, url_for

from services.api.auth import Authenticate, current_key
from services.api.body import json_body
from services.api.schemas import (
    encode_cursor,
    parse_form_job,
    parse_idempotency_key,
    parse_json_job,
    parse_list_query,
)
from services.api.waiting import Waiting
from services.errors import BadRequest, UnsupportedMediaType
from services.jobs.presenter import job_to_public
from services.jobs.retry import JobRetrier
from services.jobs.service import JobService, SubmitCommand
from services.jobs.store import Cursor
from services.jobs.types import Job


def blueprint(
    service: JobService,
    retries: JobRetrier,
    waiting: Waiting,
    default_model: str,
    authenticate: Authenticate,
) -> Blueprint:
    """The job routes over ``service`` (and ``retries``); a job that names no model runs
    ``default_model``."""
    bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
    bp.before_request(authenticate)

    def public(job: Job) -> dict[str, object]:
        """The job JSON, with its place in line while it is queued."""
        return job_to_public(job, service.queue_info(job))

    @bp.post("")
    def create_job() -> tuple[Response, int, dict[str, str]]:
        key = parse_idempotency_key(request.headers.get("Idempotency-Key"))
        command = dataclasses.replace(_command_from_request(default_model), idempotency_key=key)
        submission = service.submit_or_replay(command)
        job, status, waited = waiting.apply_prefer_wait(submission.job)  # Prefer: wait=N
        headers = {"Location": url_for("jobs.get_job", job_id=job.id), **waited}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
            status = 200  # the original job, whatever its state
        return jsonify(public(job)), status, headers

    @bp.get("")
    def list_jobs() -> Response:
        where, limit, after = parse_list_query(request.args.to_dict(flat=False))
        page, has_more = service.list_jobs(current_key().id, where, limit, after)
        return jsonify(_page(page, has_more))

    @bp.get("/<job_id>")
    def get_job(job_id: str) -> Response:
        wait = waiting.requested_wait()  # ?wait=N long-poll
        job = service.get(job_id, current_key().id)
        if wait is not None:
            job, _ = waiting.wait_for_job(job, wait)
        return jsonify(public(job))

    @bp.post("/<job_id>/cancel")
    def cancel_job(job_id: str) -> Response:
        return jsonify(public(service.cancel(job_id, current_key().id)))

    @bp.post("/<job_id>/retry")
    def retry_job(job_id: str) -> tuple[Response, int, dict[str, str]]:
        """Queue a failed, expired or canceled job again: 202 and the job, as a submit."""
        job = retries.retry(job_id, current_key().id)
        return jsonify(public(job)), 202, {"Location": url_for("jobs.get_job", job_id=job.id)}

    return bp


def _command_from_request(default_model: str) -> SubmitCommand:
    owner = current_key().id
    mimetype = request.mimetype
    if mimetype == "application/json":
        body = json_body(request)
        if body is None:
            raise BadRequest("The body is not valid JSON.", code="invalid_json")
        return parse_json_job(body, owner, default_model)
    if mimetype == "multipart/form-data":
        form = {key: request.form.getlist(key) for key in request.form}
        files = {key: [f.read() for f in request.files.getlist(key)] for key in request.files}
        return parse_form_job(form, files, owner, default_model)
    raise UnsupportedMediaType(
        "Send application/json (chat-completions shape) or multipart/form-data.",
        code="unsupported_media_type",
    )


def _page(page: list[Job], has_more: bool) -> dict[str, object]:
    next_cursor = None
    if has_more:
        last = page[-1]
        next_cursor = encode_cursor(Cursor(created_at=last.created_at, job_id=last.id))
    return {
        "object": "list",
        "data": [job_to_public(job) for job in page],
        "has_more": has_more,
        "next_cursor": next_cursor,
    }
