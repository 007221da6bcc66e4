"""Webhook endpoints: the key's signing secret, rotation, a job's delivery log, redelivery."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from services.api.auth import Authenticate, current_key
from services.clock import timestamp
from services.webhooks.service import EventLog, WebhookService
from services.webhooks.types import DeliveryAttempt, WebhookSecret


def _secret_to_public(secret: WebhookSecret) -> dict[str, Any]:
    return {
        "object": "webhook_secret",
        "secret": secret.secret,
        "created_at": timestamp(secret.created_at),
        # Still signing (second signature) until previous_secret_expires_at.
        "previous_secret": secret.previous_secret,
        "previous_secret_expires_at": timestamp(secret.previous_expires_at),
    }


def _attempt_to_public(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "attempt": attempt.attempt,
        "attempted_at": timestamp(attempt.attempted_at),
        "completed_at": timestamp(attempt.completed_at),
        "http_status": attempt.http_status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "response_body": attempt.response_body,
    }


def _event_to_public(log: EventLog) -> dict[str, Any]:
    event = log.event
    return {
        "id": event.id,
        "object": "webhook_event",
        "type": event.type.value,
        "url": event.url,
        "status": event.state.value,
        "created_at": timestamp(event.created_at),
        "next_attempt_at": timestamp(event.next_attempt_at),
        "finished_at": timestamp(event.finished_at),
        "attempts": [_attempt_to_public(a) for a in log.attempts],
    }


def blueprint(service: WebhookService, authenticate: Authenticate) -> Blueprint:
    """The key's signing secret and a job's delivery log, over ``service``."""
    bp = Blueprint("webhooks", __name__, url_prefix="/v1")
    bp.before_request(authenticate)

    @bp.get("/webhook-secret")
    def get_secret() -> Response:
        return jsonify(_secret_to_public(service.secret(current_key().id)))

    @bp.post("/webhook-secret/rotate")
    def rotate_secret() -> Response:
        return jsonify(_secret_to_public(service.rotate(current_key().id)))

    @bp.get("/jobs/<job_id>/webhook-deliveries")
    def list_deliveries(job_id: str) -> Response:
        logs = service.deliveries(job_id, current_key().id)
        return jsonify({"object": "list", "data": [_event_to_public(log) for log in logs]})

    @bp.post("/jobs/<job_id>/webhook-deliveries/redeliver")
    def redeliver(job_id: str) -> tuple[Response, int]:
        return jsonify(_event_to_public(service.redeliver(job_id, current_key().id))), 202

    return bp
