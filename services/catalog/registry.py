"""Served models: the catalog (``loader``) under this deployment's settings, looked up by name."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal

from services.catalog.loader import load_catalog
from services.catalog.spec import ENGINES, ModelSpec
from services.errors import ConfigurationError, InvalidInput
from services.settings import Settings
from services.types import PriceCard


class ModelRegistry:
    """Lookup of served models by public name."""

    def __init__(
        self,
        specs: list[ModelSpec],
        default_model: str,
        default_queue: str = "inference",
        routes: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``default_model`` runs jobs that name none (it may be served elsewhere). ``routes``:
        the deployment's whole (model, queue) mapping, served here or not, so a process that
        serves a few models (a GPU pool, the light worker) still routes them all."""
        for spec in specs:
            if spec.engine not in ENGINES:
                raise ConfigurationError(f"model {spec.name}: unknown engine {spec.engine!r}")
        self._specs = {spec.name: spec for spec in specs}
        self.default_model = default_model
        self.default_queue = default_queue
        self._routes = dict(routes)

    def queue_for(self, model: str) -> str:
        """The Celery queue of ``model``'s jobs, whether or not this process serves it."""
        return self._routes.get(model, self.default_queue)

    def queues(self) -> tuple[str, ...]:
        """Every queue that carries jobs: the default one first, then per-model ones."""
        return tuple(dict.fromkeys([self.default_queue, *self._routes.values()]))

    def models_on(self, queue: str) -> tuple[str, ...]:
        """The models (served here or routed by the mapping) whose jobs ``queue`` carries."""
        names = dict.fromkeys([*self._specs, *self._routes])
        return tuple(name for name in names if self.queue_for(name) == queue)

    def worker_concurrency(self, settings: Settings) -> int:
        """Celery threads for a worker: LOUPE_WORKER_CONCURRENCY, else its model's max_num_seqs."""
        if settings.worker_concurrency is not None:
            return settings.worker_concurrency
        if self.default_model in self._specs:
            return self._specs[self.default_model].engine_args.max_num_seqs
        return 1

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise InvalidInput(
                f"Model {name!r} is not served here; GET /v1/models lists the served models.",
                code="model_not_found",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())


def build_registry(settings: Settings) -> ModelRegistry:
    """The models this deployment serves: the catalog (``LOUPE_MODELS_FILE`` merged in), with
    LOUPE_MODEL_QUEUES and LOUPE_PRICE_OVERRIDES applied, narrowed by LOUPE_SERVED_MODELS."""
    catalog = load_catalog(settings.models_dir, settings.models_file)
    specs = _apply_queues(catalog.models, settings)
    if settings.served_models:
        unknown = set(settings.served_models) - {s.name for s in specs}
        if unknown:
            raise ConfigurationError(f"LOUPE_SERVED_MODELS names unknown models: {sorted(unknown)}")
        specs = [s for s in specs if s.name in settings.served_models]
    return ModelRegistry(
        _apply_price_overrides(specs, settings),
        settings.default_model or catalog.default_model,
        settings.inference_queue,
        settings.model_queues,
    )


def _apply_queues(specs: list[ModelSpec], settings: Settings) -> list[ModelSpec]:
    """``LOUPE_MODEL_QUEUES``, checked against every known model (a worker that serves a few of
    them shares the deployment's mapping)."""
    routes = dict(settings.model_queues)
    unknown = set(routes) - {s.name for s in specs}
    if unknown:
        raise ConfigurationError(f"LOUPE_MODEL_QUEUES names unknown models: {sorted(unknown)}")
    return [replace(s, queue=routes.get(s.name, settings.inference_queue)) for s in specs]


def _apply_price_overrides(specs: list[ModelSpec], settings: Settings) -> list[ModelSpec]:
    """``LOUPE_PRICE_OVERRIDES``: this deployment's prices replace the registry's, per field.

    Jobs keep the card that was in force when they were submitted (it is copied onto the job),
    so changing prices never rewrites the cost of past or queued jobs.
    """
    known = {s.name for s in specs}
    unknown = {o.model for o in settings.price_overrides} - known
    if unknown:
        raise ConfigurationError(
            f"LOUPE_PRICE_OVERRIDES names models that are not served: {sorted(unknown)}"
        )
    overrides = {o.model: o for o in settings.price_overrides}
    result = []
    for spec in specs:
        o = overrides.get(spec.name)
        if o is not None:
            card = spec.price
            spec = replace(
                spec,
                price=PriceCard(
                    input_per_million=_or(o.input_per_million, card.input_per_million),
                    output_per_million=_or(o.output_per_million, card.output_per_million),
                    per_image=_or(o.per_image, card.per_image),
                    currency=card.currency,
                ),
            )
        result.append(spec)
    return result


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value
