"""/v1/models: the served models in the OpenAI list shape, with limits and price cards."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from services.api.auth import authenticate_request, container

bp = Blueprint("models", __name__, url_prefix="/v1/models")
bp.before_request(authenticate_request)


@bp.get("")
def list_models() -> Response:
    return jsonify({"object": "list", "data": [s.to_public() for s in container().registry]})
