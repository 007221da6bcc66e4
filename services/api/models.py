"""/v1/models: the models this deployment can serve, in the OpenAI list shape, with limits and
price cards.

A deployment that names its models (``LOUPE_SERVED_MODELS``, as compose and Kubernetes do)
serves exactly those, whether or not a worker is up right now (a pool scaled to zero still
takes jobs). One that does not name them would otherwise list the whole catalog, including
models nothing here can run; there the only evidence of what runs is a worker, so the list
is the catalog's models that a live worker's heartbeat reports loading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from flask import Blueprint, Response, jsonify

from services.admin.types import WorkerInfo
from services.api.auth import Authenticate
from services.catalog.registry import ModelRegistry
from services.catalog.spec import ModelSpec

LiveWorkers = Callable[[], Iterable[WorkerInfo]]


def blueprint(
    registry: ModelRegistry, live_workers: LiveWorkers | None, authenticate: Authenticate
) -> Blueprint:
    """The model list of ``registry``; narrowed to the models ``live_workers`` run, unless
    that is None (the deployment named its models)."""
    bp = Blueprint("models", __name__, url_prefix="/v1/models")
    bp.before_request(authenticate)
    served = _all(registry) if live_workers is None else _running(registry, live_workers)

    @bp.get("")
    def list_models() -> Response:
        return jsonify({"object": "list", "data": [s.to_public() for s in served()]})

    return bp


def _all(registry: ModelRegistry) -> Callable[[], list[ModelSpec]]:
    return lambda: list(registry)


def _running(registry: ModelRegistry, live_workers: LiveWorkers) -> Callable[[], list[ModelSpec]]:
    def running() -> list[ModelSpec]:
        loaded = {worker.model for worker in live_workers()}
        return [spec for spec in registry if spec.name in loaded]

    return running
