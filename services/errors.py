"""The one exception tree of Loupe.

Vendor errors (boto3, SQLAlchemy, Redis, torch) are translated into these at the adapter that
talks to the vendor. The HTTP mapping lives in one place: ``services/api/errors.py``.
"""

from __future__ import annotations


class LoupeError(Exception):
    """Base of every error Loupe raises on purpose."""

    code = "internal_error"
    http_status = 500
    # Seconds after which retrying may succeed (sent as ``Retry-After``); None: no advice.
    retry_after: int | None = None

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after


class ConfigurationError(LoupeError):
    """Settings or the model registry are inconsistent; raised at start-up."""

    code = "configuration_error"


class InvalidInput(LoupeError):
    """The request is well-formed HTTP but its content is not acceptable (422)."""

    code = "invalid_request"
    http_status = 422


class BadRequest(InvalidInput):
    """The request body cannot be parsed at all (400)."""

    code = "bad_request"
    http_status = 400


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"
    http_status = 415


class Unauthenticated(LoupeError):
    code = "unauthenticated"
    http_status = 401


class Forbidden(LoupeError):
    code = "forbidden"
    http_status = 403


class NotFound(LoupeError):
    code = "not_found"
    http_status = 404


class Conflict(LoupeError):
    code = "conflict"
    http_status = 409


class QuotaExceeded(LoupeError):
    code = "quota_exceeded"
    http_status = 429


class PaymentRequired(LoupeError):
    """The key's spend cap would be exceeded (402); raising the cap or a new month lifts it."""

    code = "spend_limit_reached"
    http_status = 402


class Unavailable(LoupeError):
    """A dependency (database, broker, object store) is down or timed out: retry later (503)."""

    code = "unavailable"
    http_status = 503


class EngineError(LoupeError):
    """The model failed on this job's input; the job fails, it is not retried."""

    code = "engine_error"
