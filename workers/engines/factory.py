"""Engines per model, loaded once per worker process and shared by its task threads."""

from __future__ import annotations

import threading
from pathlib import Path

from services.catalog.spec import ModelSpec
from services.errors import ConfigurationError
from services.settings import Settings
from workers.engines.base import Engine


def load_engine(spec: ModelSpec, settings: Settings) -> Engine:
    """Build the engine a model's catalog entry names (``spec.engine``), on its weights.

    ConfigurationError when local weights are missing (a worker never builds a model: whoever
    starts it puts the weights in place), when the vllm engine cannot be imported here or does
    not serve the architecture, or when the engine is unknown.
    """
    if spec.engine == "transformers":
        return _transformers_engine(spec, settings)
    if spec.engine == "vllm":
        return _vllm_engine(spec)
    raise ConfigurationError(f"model {spec.name}: unknown engine {spec.engine!r}")


def _check_weights(spec: ModelSpec) -> None:
    if spec.local_weights and not Path(spec.weights_path).is_dir():
        raise ConfigurationError(
            f"model {spec.name}: weights directory {spec.weights_path} does not exist (set "
            "LOUPE_MODELS_DIR, or the model's path in LOUPE_MODELS_FILE; the local tiny models "
            "are built by `python -m infra.models build`)"
        )


def _transformers_engine(spec: ModelSpec, settings: Settings) -> Engine:
    _check_weights(spec)
    from workers.engines.transformers_engine import TransformersEngine  # heavy: torch

    return TransformersEngine(
        spec.weights_path,
        device=settings.engine_device,
        max_context=spec.context_length,
        max_batch_size=spec.engine_args.max_num_seqs,
    )


def _vllm_engine(spec: ModelSpec) -> Engine:
    from workers.engines.vllm_engine import VllmEngine, check_model_support, vllm_import_error

    missing = vllm_import_error()
    if missing is not None:
        raise ConfigurationError(
            f"model {spec.name} needs the vllm engine, but vllm cannot be imported here "
            f"({missing}); run this model on a vLLM worker image (infra/docker/)"
        )
    check_model_support(spec.architecture)
    _check_weights(spec)
    return VllmEngine(spec.weights_path, engine_args=spec.engine_args.to_vllm())


class EnginePool:
    """Lazily loads one engine per model; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec) -> Engine:
        engine = self._engines.get(spec.name)
        if engine is not None:
            return engine
        with self._lock:
            if spec.name not in self._engines:
                self._engines[spec.name] = load_engine(spec, self._settings)
            return self._engines[spec.name]

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
