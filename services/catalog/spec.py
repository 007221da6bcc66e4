"""One served model as the worker and the API see it: engine, weights, limits and price card."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from services.types import PriceCard

_SAMPLING = frozenset(
    {"temperature", "top_p", "top_k", "min_p", "stop", "seed", "presence_penalty",
     "frequency_penalty", "repetition_penalty", "ignore_eos"}
)  # fmt: skip
# What each engine honours. A request that needs anything else is refused at submit (422),
# never silently dropped by the worker.
ENGINE_FEATURES: dict[str, frozenset[str]] = {
    "transformers": _SAMPLING,
    "vllm": _SAMPLING | {"response_format.json_object", "response_format.json_schema"},
}
ENGINES = frozenset(ENGINE_FEATURES)


@dataclass(frozen=True)
class EngineArgs:
    """How a worker runs a model. ``max_num_seqs`` is both the engine's batch size and the
    worker's Celery thread count: one thread per sequence the engine can hold in flight."""

    max_num_seqs: int = 16
    max_model_len: int | None = None
    enforce_eager: bool = False
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.90
    limit_mm_per_prompt: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType({"image": 1})
    )
    dtype: str = "auto"

    def to_vllm(self) -> dict[str, Any]:
        """Keyword arguments for vLLM's ``AsyncEngineArgs``."""
        args: dict[str, Any] = {
            "max_num_seqs": self.max_num_seqs,
            "enforce_eager": self.enforce_eager,
            "tensor_parallel_size": self.tensor_parallel_size,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "limit_mm_per_prompt": dict(self.limit_mm_per_prompt),
            "dtype": self.dtype,
        }
        if self.max_model_len is not None:
            args["max_model_len"] = self.max_model_len
        return args


@dataclass(frozen=True)
class ModelSpec:
    """One served model. ``weights_path`` is a local directory when ``local_weights`` (a worker
    refuses to start without it), else a hub id the engine resolves itself (a GPU box's cache)."""

    name: str
    engine: str
    weights_path: str
    architecture: str
    max_images: int
    max_output_tokens: int
    default_max_tokens: int
    context_length: int
    price: PriceCard
    owned_by: str = "meta"
    # Llama 3.2 Vision's chat template refuses a system message in a prompt with an image.
    system_prompt_with_images: bool = False
    engine_args: EngineArgs = field(default_factory=EngineArgs)
    queue: str = "inference"  # the Celery queue its jobs go to (LOUPE_MODEL_QUEUES)
    local_weights: bool = True

    @property
    def features(self) -> frozenset[str]:
        return ENGINE_FEATURES[self.engine]

    def to_public(self) -> dict[str, Any]:
        """The model in the OpenAI list shape, with Loupe's limits and price card."""
        return {
            "id": self.name,
            "object": "model",
            "owned_by": self.owned_by,
            "architecture": self.architecture,
            "limits": {
                "max_images": self.max_images,
                "max_output_tokens": self.max_output_tokens,
                "context_length": self.context_length,
            },
            "pricing": self.price.to_json(),
            "supported_parameters": sorted(self.features),
        }
