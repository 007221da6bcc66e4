"""Tiny random models of the real architectures, built locally for the demo, tests and benchmarks.

No weights can be downloaded on our machines, so the real engine code runs on models of the real
architectures and file layouts, just very small and randomly initialised (the text they produce
is noise; token counts, batching and timing are real). The catalog
(``services/catalog/models.toml``) points at them by directory name under ``LOUPE_MODELS_DIR``;
whoever starts a worker on them builds them first, with :func:`build_local_models` or
``python -m infra.models build [--models-dir DIR] [NAME ...]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from types import MappingProxyType

from infra.models.tiny_mllama import build_tiny_mllama
from infra.models.tiny_vlm import build_tiny_vlm
from services.catalog.registry import build_registry
from services.settings import Settings

#: Directory name under the models dir → its builder (idempotent, race-safe, deterministic).
LOCAL_MODELS: Mapping[str, Callable[[Path], Path]] = MappingProxyType(
    {
        "tiny-mllama": build_tiny_mllama,  # Llama 3.2 Vision (Mllama), transformers engine
        "tiny-vlm": partial(build_tiny_vlm, size="tiny"),  # Idefics3, the vLLM CPU tier
        "bench-vlm": partial(build_tiny_vlm, size="bench"),  # Idefics3, ~50M, the vLLM bench
    }
)


def build_local_models(models_dir: Path, names: Iterable[str] | None = None) -> None:
    """Build each named local model (every one in :data:`LOCAL_MODELS` when ``names`` is None)
    as ``models_dir/<name>``; complete builds are kept as they are.

    An unknown name raises ``ValueError`` before anything is built.
    """
    chosen = list(LOCAL_MODELS if names is None else names)
    unknown = sorted(set(chosen) - set(LOCAL_MODELS))
    if unknown:
        raise ValueError(f"no local model named {unknown}; known: {sorted(LOCAL_MODELS)}")
    for name in chosen:
        LOCAL_MODELS[name](models_dir / name)


def build_models_for(settings: Settings, models: Iterable[str]) -> None:
    """Build the local weights that the named catalog models read under ``settings``.

    A model whose weights are ``<settings.models_dir>/<name>`` for a name in :data:`LOCAL_MODELS`
    gets that build; a model on other weights (a hub id, a real checkpoint) is left alone. A
    model the catalog does not serve raises the registry's ``InvalidInput``.
    """
    registry = build_registry(settings)
    weights = [Path(registry.get(model).weights_path) for model in models]
    local = [path.name for path in weights if _is_local(path, settings.models_dir)]
    build_local_models(settings.models_dir, local)


def _is_local(weights: Path, models_dir: Path) -> bool:
    return weights.parent == models_dir and weights.name in LOCAL_MODELS
