"""Every route of the API, as :class:`~services.api.openapi.Operation` rows: the source of
``/v1/openapi.json``.

Request bodies and query models are the ones the routes parse with (``services.api.schemas``);
response bodies are ``services.api.responses``. A test compares this table with the app's URL
map, so a route added without a row (or a row without a route) fails the suite.
"""

from __future__ import annotations

from typing import Any

from services.api import responses as r
from services.api.files import PURPOSES
from services.api.key_schemas import CreateKeyRequest, QuotaChange
from services.api.openapi import (
    JSON,
    REF,
    Access,
    Answer,
    Body,
    Operation,
    Param,
    build_document,
    path_id,
    query_params,
)
from services.api.schemas import ChatJobRequest, ListJobsQuery, form_job_schema

VERSION = "1.0.0"
#: The files of the swagger-ui-py package that /docs loads.
SWAGGER_UI_ASSETS = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png")
_JOB_ID = path_id("job_id")
_FILE_ID = path_id("file_id")
_KEY_ID = path_id("key_id")
_BY_ID = {"job_id": "$response.body#/id"}
_GET_JOB = {"operationId": "getJob", "parameters": _BY_ID}
_CANCEL_JOB = {"operationId": "cancelJob", "parameters": _BY_ID}
_RETRY_JOB = {"operationId": "retryJob", "parameters": _BY_ID}
_JOB_LINKS = {
    "GetJob": _GET_JOB,
    "CancelJob": _CANCEL_JOB,
    "ListWebhookDeliveries": {"operationId": "listWebhookDeliveries", "parameters": _BY_ID},
    "RedeliverWebhook": {"operationId": "redeliverWebhook", "parameters": _BY_ID},
}

_QUOTA_429 = Answer(
    429, "A rate, queued-jobs or concurrency limit of the key.", headers=("Retry-After",)
)
_SPEND_402 = Answer(402, "The key's monthly spend cap would be passed.")
_NOT_RETRYABLE_409 = Answer(
    409,
    "The job is queued, running or succeeded (job_not_finished, job_not_retryable), its data "
    "was removed (job_data_removed), or its model is no longer served (model_not_served).",
)
_BUSY_503 = Answer(503, "The service cannot take the request now.", headers=("Retry-After",))
_TEXT = "text/plain"

_IDEMPOTENCY_KEY = Param(
    "Idempotency-Key", "header",
    {"type": "string", "pattern": "^[!-~]{1,255}$"},
    "A repeated submit with the same key returns the first job (200) instead of a new one.",
)  # fmt: skip
_PREFER = Param(
    "Prefer", "header", {"type": "string"},
    "wait=N (RFC 7240): answer once the job has finished or after N seconds; unparseable "
    "preferences are ignored.",
)  # fmt: skip
_WAIT = Param(
    "wait", "query", {"type": "number", "exclusiveMinimum": 0},
    "Long-poll up to this many seconds (at most LOUPE_MAX_WAIT_SECONDS) for a terminal state.",
)  # fmt: skip
_DAY = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}
_USAGE_QUERY = (
    Param("from", "query", _DAY, "First UTC day (inclusive); a date-time names its date."),
    Param("to", "query", _DAY, "Last UTC day (inclusive); a date-time names its date."),
    Param("group_by", "query", {"enum": ["day", "model"]}),
    Param("format", "query", {"enum": ["json", "csv"]}),
)


def _usage(description: str) -> Answer:
    return Answer(200, description, r.Usage, headers=("Content-Disposition",), also=("text/csv",))


def _jobs() -> list[Operation]:
    list_query = query_params(ListJobsQuery)
    submit_body: dict[str, Body] = {
        JSON: ChatJobRequest,
        "multipart/form-data": form_job_schema(REF),
    }
    return [
        Operation(
            "POST", "/v1/jobs", "createJob", "Submit a job", "jobs", Access.KEY,
            (
                Answer(202, "Queued.", r.Job, headers=("Location",), links=_JOB_LINKS),
                Answer(200, "Finished within Prefer: wait, or an Idempotency-Key replay.", r.Job,
                       headers=("Location", "Idempotent-Replayed", "Preference-Applied"),
                       links=_JOB_LINKS),
                _SPEND_402,
                Answer(404, "A file_id names no file of this key."),
                Answer(409, "The Idempotency-Key was used for a different request."),
                _QUOTA_429,
                _BUSY_503,
            ),
            body=submit_body,
            params=(_IDEMPOTENCY_KEY, _PREFER),
        ),
        Operation(
            "GET", "/v1/jobs", "listJobs", "List the key's jobs, newest first", "jobs", Access.KEY,
            (Answer(200, "A page of jobs.", r.JobPage),),
            params=list_query,
        ),
        Operation(
            "GET", "/v1/jobs/{job_id}", "getJob", "Get a job", "jobs", Access.KEY,
            (Answer(200, "The job.", r.Job, links={"CancelJob": _CANCEL_JOB}),),
            params=(_JOB_ID, _WAIT),
        ),
        Operation(
            "POST", "/v1/jobs/{job_id}/cancel", "cancelJob", "Cancel a job", "jobs", Access.KEY,
            (
                Answer(200, "The job, canceled or with cancel_requested.", r.Job,
                       links={"RetryJob": _RETRY_JOB}),
                Answer(409, "The job changed state meanwhile; retry."),
            ),
            params=(_JOB_ID,),
        ),
        Operation(
            "POST", "/v1/jobs/{job_id}/retry", "retryJob",
            "Queue a failed, expired or canceled job again", "jobs", Access.KEY,
            (
                Answer(202, "Queued again under the same id; its next run is a new attempt.",
                       r.Job, headers=("Location",),
                       links={"GetJob": _GET_JOB, "CancelJob": _CANCEL_JOB}),
                _SPEND_402,
                _NOT_RETRYABLE_409,
                _QUOTA_429,
                _BUSY_503,
            ),
            params=(_JOB_ID,),
        ),
    ]  # fmt: skip


def _files() -> list[Operation]:
    upload = {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary"},
            "purpose": {"enum": list(PURPOSES), "default": PURPOSES[0]},
        },
        "required": ["file"],
        "additionalProperties": False,
    }
    return [
        Operation(
            "POST", "/v1/files", "uploadFile", "Upload an image", "files", Access.KEY,
            (Answer(201, "Stored.", r.File, headers=("Location",)), _QUOTA_429),
            body={"multipart/form-data": upload},
        ),
        Operation(
            "GET", "/v1/files", "listFiles", "List the key's files", "files", Access.KEY,
            (
                Answer(200, "A page of files.", r.FilePage),
                Answer(404, "after names no file of this key."),
            ),
            params=(
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}),
                Param("after", "query", {"type": "string", "minLength": 1}),
            ),
        ),
        Operation(
            "GET", "/v1/files/{file_id}", "getFile", "Get a file", "files", Access.KEY,
            (Answer(200, "The file.", r.File),), params=(_FILE_ID,),
        ),
        Operation(
            "GET", "/v1/files/{file_id}/content", "getFileContent", "A file's image bytes",
            "files", Access.KEY,
            (Answer(200, "The image as uploaded.", {"type": "string"}, "image/*"),),
            params=(_FILE_ID,),
        ),
        Operation(
            "DELETE", "/v1/files/{file_id}", "deleteFile", "Delete a file", "files", Access.KEY,
            (Answer(200, "Deleted.", r.FileDeleted),), params=(_FILE_ID,),
        ),
    ]  # fmt: skip


def _account() -> list[Operation]:
    return [
        Operation(
            "GET", "/v1/models", "listModels", "Models this deployment serves", "models",
            Access.KEY, (Answer(200, "The models.", r.ModelList),),
        ),
        Operation(
            "GET", "/v1/usage", "getUsage", "The key's usage", "usage", Access.KEY,
            (_usage("Usage (JSON, or CSV with format=csv)."),),
            params=_USAGE_QUERY,
        ),
        Operation(
            "GET", "/v1/quota", "getQuota", "The key's limits and standing", "usage", Access.KEY,
            (Answer(200, "Limits and standing.", r.Quota),),
        ),
        Operation(
            "GET", "/v1/webhook-secret", "getWebhookSecret", "The key's webhook signing secret",
            "webhooks", Access.KEY, (Answer(200, "The secret.", r.WebhookSecret),),
        ),
        Operation(
            "POST", "/v1/webhook-secret/rotate", "rotateWebhookSecret",
            "A new signing secret; the old one signs too for a while", "webhooks", Access.KEY,
            (Answer(200, "The new secret.", r.WebhookSecret),),
        ),
        Operation(
            "GET", "/v1/jobs/{job_id}/webhook-deliveries", "listWebhookDeliveries",
            "A job's webhook deliveries", "webhooks", Access.KEY,
            (Answer(200, "Events and their attempts.", r.WebhookEventList),), params=(_JOB_ID,),
        ),
        Operation(
            "POST", "/v1/jobs/{job_id}/webhook-deliveries/redeliver", "redeliverWebhook",
            "Send the job's last event again", "webhooks", Access.KEY,
            (
                Answer(202, "Scheduled.", r.WebhookEvent),
                Answer(409, "The job has no webhook event to send again."),
            ),
            params=(_JOB_ID,),
        ),
    ]  # fmt: skip


def _admin_and_ops() -> list[Operation]:
    return [
        Operation(
            "GET", "/v1/admin/usage", "getAdminUsage", "Every key's usage", "admin", Access.ADMIN,
            (_usage("Usage per key (JSON, or CSV with format=csv)."),),
            params=_USAGE_QUERY,
        ),
        Operation(
            "GET", "/v1/admin/queues", "getAdminQueues", "Queues, workers, throughput, failures",
            "admin", Access.ADMIN, (Answer(200, "The snapshot.", r.AdminQueues),),
        ),
        Operation(
            "POST", "/v1/admin/jobs/{job_id}/retry", "adminRetryJob",
            "Queue any key's failed, expired or canceled job again", "admin", Access.ADMIN,
            (
                Answer(202, "Queued again under the same id.", r.Job),
                Answer(402, "The owner's monthly spend cap would be passed."),
                Answer(404, "No such job."),
                _NOT_RETRYABLE_409,
                Answer(429, "The owner's queued-jobs limit.", headers=("Retry-After",)),
                _BUSY_503,
            ),
            params=(_JOB_ID,),
        ),
        Operation(
            "GET", "/admin", "adminDashboard", "The admin dashboard (HTML)", "admin",
            Access.PUBLIC, (Answer(200, "The page.", None, "text/html"),),
        ),
        Operation(
            "GET", "/metrics", "getMetrics", "Prometheus metrics", "operations", Access.METRICS,
            (Answer(200, "Prometheus text format.", None, _TEXT),),
        ),
        Operation(
            "GET", "/healthz", "healthz", "Liveness", "operations", Access.PUBLIC,
            (Answer(200, "The process answers.", r.Health),),
        ),
        Operation(
            "GET", "/readyz", "readyz", "Readiness", "operations", Access.PUBLIC,
            (Answer(200, "SQL, Redis and S3 answer.", r.Health), _BUSY_503),
        ),
        Operation(
            "GET", "/v1/openapi.json", "getOpenApi", "This document", "operations",
            Access.PUBLIC, (Answer(200, "OpenAPI 3.1.", {"type": "object"}),),
        ),
        Operation(
            "GET", "/docs/swagger-ui/{name}", "docsAsset", "The reference page's Swagger UI files",
            "operations", Access.PUBLIC,
            (Answer(200, "The file.", None, "text/css", also=("text/javascript", "image/png")),),
            params=(Param("name", "path", {"enum": list(SWAGGER_UI_ASSETS)}, required=True),),
        ),
        Operation(
            "GET", "/docs", "docs", "The API reference (HTML)", "operations", Access.PUBLIC,
            (Answer(200, "The page.", None, "text/html"),),
        ),
    ]  # fmt: skip


def _keys() -> list[Operation]:
    return [
        Operation(
            "POST", "/v1/admin/keys", "createKey", "Create an API key", "keys", Access.ADMIN,
            (Answer(201, "The key, with its secret (shown once).", r.ApiKeyWithSecret,
                    headers=("Location",)),),
            body={JSON: CreateKeyRequest},
        ),
        Operation(
            "GET", "/v1/admin/keys", "listKeys", "Every API key", "keys", Access.ADMIN,
            (Answer(200, "The keys, newest first.", r.ApiKeyList),),
        ),
        Operation(
            "GET", "/v1/admin/keys/{key_id}", "getKey", "An API key and its quota", "keys",
            Access.ADMIN, (Answer(200, "The key.", r.ApiKeyWithQuota),), params=(_KEY_ID,),
        ),
        Operation(
            "POST", "/v1/admin/keys/{key_id}/revoke", "revokeKey", "Revoke an API key", "keys",
            Access.ADMIN, (Answer(200, "The revoked key.", r.ApiKey),), params=(_KEY_ID,),
        ),
        Operation(
            "POST", "/v1/admin/keys/{key_id}/rotate", "rotateKey",
            "A new secret for an API key; the old one stops working", "keys", Access.ADMIN,
            (
                Answer(200, "The key, with its new secret (shown once).", r.ApiKeyWithSecret),
                Answer(409, "The key is revoked."),
            ),
            params=(_KEY_ID,),
        ),
        Operation(
            "PATCH", "/v1/admin/keys/{key_id}/quota", "setKeyQuota", "Change a key's limits",
            "keys", Access.ADMIN, (Answer(200, "The key's limits.", r.KeyQuota),),
            body={JSON: QuotaChange}, params=(_KEY_ID,),
        ),
    ]  # fmt: skip


def _chat() -> list[Operation]:
    chat_error = (r.ChatError, r.Error)
    job_headers = ("Location", "x-should-retry")
    return [
        Operation(
            "POST", "/v1/chat/completions", "createChatCompletion",
            "OpenAI-compatible chat completion (waits for the job)", "openai", Access.KEY,
            (
                Answer(200, "The job succeeded.", r.ChatCompletion),
                _SPEND_402,
                Answer(404, "A file_id names no file of this key."),
                Answer(409, "The job was canceled.", r.ChatError, headers=job_headers),
                Answer(422, "Invalid input, or the job failed for its input.", chat_error),
                _QUOTA_429,
                Answer(502, "The engine or worker failed.", r.ChatError, headers=job_headers),
                Answer(503, "Busy, or the job expired before it ran.", chat_error,
                       headers=("Retry-After",)),
                Answer(504, "Not finished in time; poll the Location.", r.ChatError,
                       headers=job_headers),
            ),
            body={JSON: ChatJobRequest},
        ),
    ]  # fmt: skip


def operations() -> list[Operation]:
    """Every route the API serves (static files aside)."""
    return [*_jobs(), *_files(), *_account(), *_admin_and_ops(), *_keys(), *_chat()]


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API."""
    return build_document(operations(), VERSION)
