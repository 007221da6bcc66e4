"""/v1/models: the served models in the OpenAI list shape, with limits and price cards."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.auth import Authenticate
from services.catalog.registry import ModelRegistry


def blueprint(registry: ModelRegistry, authenticate: Authenticate) -> Blueprint:
    bp = Blueprint("models", __name__, url_prefix="/v1/models")
    bp.before_request(authenticate)

    @bp.get("")
    def list_models() -> Response:
        return jsonify({"object": "list", "data": [s.to_public() for s in registry]})

    return bp
