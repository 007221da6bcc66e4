"""``POST /v1/chat/completions``: the OpenAI-compatible, synchronous front door.

The request is the body ``POST /v1/jobs`` accepts (the OpenAI chat-completions shape, parsed by
:func:`services.api.schemas.parse_json_job`). It becomes a normal job through
:meth:`JobService.submit` (same auth, validation, queue, accounting and admin view), and the
request waits for it up to ``min(LOUPE_CHAT_COMPLETIONS_TIMEOUT_SECONDS, LOUPE_MAX_WAIT_SECONDS)``.

Answers:

- succeeded: 200, a ``chat.completion`` (``id`` is ``chatcmpl-<job id>``; ``finish_reason`` is
  OpenAI's ``stop`` or ``length``; ``usage`` has the engine's token counts) plus a ``loupe``
  object with the job id, cost and metrics;
- failed: 422 when the job's input was at fault, 502 when the engine or worker failed;
  canceled: 409; expired (never started in time): 503; not finished in time: 504 with a
  ``Location: /v1/jobs/<id>`` header so the client can poll the job it already paid for.
  Every error body is ``{"error": {"code", "message", "type", "param", "job_id"}}`` (OpenAI's
  shape, Loupe's ``code``/``message``);
- job errors carry ``x-should-retry: false``: the official client would otherwise retry a 5xx or
  409 by submitting a *new* job, paying twice (except expiry, which charged nothing);
- ``stream: true`` is refused with 422 (the answer exists only once the job is done);
- no free waiter slot in this process: 503 before anything is created.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from services.api.auth import Authenticate, current_key
from services.api.body import json_body
from services.api.schemas import parse_json_job
from services.errors import BadRequest, InvalidInput, Unavailable, UnsupportedMediaType
from services.jobs.presenter import job_to_public, public_error_message
from services.jobs.service import JobService
from services.jobs.types import Job
from services.jobs.waiting import JobWaiter
from services.types import JobStatus

# Failure codes the worker records when the job's own input was at fault (else: engine fault).
INPUT_ERROR_CODES = frozenset(
    {"invalid_image", "invalid_prompt", "invalid_sampling_params", "context_length_exceeded"}
)


def blueprint(
    service: JobService,
    waiter: JobWaiter,
    default_model: str,
    timeout: int,
    authenticate: Authenticate,
) -> Blueprint:
    """``/v1/chat/completions`` over ``service``, waiting in ``waiter`` ``timeout`` s at most."""
    bp = Blueprint("openai_compat", __name__, url_prefix="/v1/chat")
    bp.before_request(authenticate)

    @bp.post("/completions")
    def create_chat_completion() -> Response:
        body = _json_body()
        if body.get("stream") is True:
            raise InvalidInput(
                "stream: true is not supported: Loupe answers once the job has finished. "
                "Leave stream unset, or submit to POST /v1/jobs and poll or use a webhook.",
                code="unsupported_parameter",
            )
        slot = waiter.acquire()
        if slot is None:
            raise Unavailable(
                "Too many requests are waiting on this API process; retry shortly, or submit "
                "to POST /v1/jobs and poll.",
                code="too_many_waiters",
            )
        with slot:
            owner_id = current_key().id
            job = service.submit(parse_json_job(body, owner_id, default_model))
            job = slot.wait(job.id, lambda: service.get(job.id, owner_id), timeout)
        if job.status is JobStatus.SUCCEEDED:
            return jsonify(chat_completion(job))
        return _job_error(job, timeout)

    return bp


def _json_body() -> dict[str, Any]:
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            "Send the chat-completions request as application/json.",
            code="unsupported_media_type",
        )
    body = json_body(request)
    if body is None:
        raise BadRequest("The body is not valid JSON.", code="invalid_json")
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object.", code="invalid_json")
    return body


def _unix(value: datetime) -> int:
    if value.tzinfo is None:  # stored as UTC; SQLite drops the zone
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def chat_completion(job: Job) -> dict[str, Any]:
    """A succeeded job in the OpenAI ``chat.completion`` response format."""
    public = job_to_public(job)
    prompt_tokens = job.prompt_tokens or 0
    completion_tokens = job.completion_tokens or 0
    return {
        "id": "chatcmpl-" + job.id,
        "object": "chat.completion",
        "created": _unix(job.created_at),
        "model": job.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": job.output_text or ""},
                "logprobs": None,
                # Our engines stop for a stop sequence/EOS ("stop") or the token budget ("length").
                "finish_reason": "length" if job.finish_reason == "length" else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
        "loupe": {
            "job_id": job.id,
            "status": job.status.value,
            "images": len(job.images),
            "cost": public["usage"]["cost"] if public["usage"] else None,
            "metrics": public["metrics"],
        },
    }


def _job_error(job: Job, waited: int) -> Response:
    """The OpenAI-style error for a job that did not succeed (yet)."""
    retry = False
    if not job.status.terminal:
        status, kind, code = 504, "timeout", "wait_timeout"
        message = (
            f"Job {job.id} did not finish within {waited} s (it is {job.status.value}); it keeps "
            f"running: poll GET /v1/jobs/{job.id}."
        )
    elif job.status is JobStatus.CANCELED:
        status, kind, code = 409, "invalid_request_error", job.error_code or "canceled"
        message = job.error_message or f"Job {job.id} was canceled."
    elif job.status is JobStatus.EXPIRED:
        status, kind, code = 503, "server_error", job.error_code or "expired"
        message = job.error_message or f"Job {job.id} expired before a worker started it."
        retry = True  # an expired job ran nothing and charged nothing
    else:
        code = job.error_code or "engine_error"
        status, kind = (
            (422, "invalid_request_error") if code in INPUT_ERROR_CODES else (502, "server_error")
        )
        message = public_error_message(code, job.error_message)
    response = jsonify(
        {"error": {"code": code, "message": message, "type": kind, "param": None, "job_id": job.id}}
    )
    response.status_code = status
    response.headers["Location"] = url_for("jobs.get_job", job_id=job.id)
    response.headers["x-should-retry"] = "true" if retry else "false"
    return response
