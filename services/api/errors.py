"""The one place where errors become HTTP responses: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from services.errors import LoupeError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _http_code(exc: HTTPException) -> str:
    name = (exc.name or "error").lower().replace(" ", "_")
    return {"request_entity_too_large": "payload_too_large"}.get(name, name)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(LoupeError)
    def _loupe_error(exc: LoupeError) -> Response:
        if exc.http_status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        response = error_response(exc.http_status, exc.code, exc.message)
        if exc.http_status == 503:
            response.headers["Retry-After"] = "5"
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, _http_code(exc), exc.description or exc.name)
        # werkzeug's own headers (``Allow`` on a 405) are part of the answer: keep them.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Internal error; it has been logged.")
