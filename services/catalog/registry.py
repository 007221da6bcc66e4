"""Served models: public name → engine, weights, limits, defaults and price card."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from services.errors import ConfigurationError, InvalidInput
from services.settings import Settings
from services.types import PriceCard

TINY_MODEL = "loupe-tiny-mllama"
# A tiny random Idefics3 (SmolVLM architecture): the vision model current vLLM serves on CPU
# without torchvision; it runs the vLLM engine in tests and benchmarks.
TINY_VLLM_MODEL = "loupe-tiny-vlm"
# The same architecture with a ~50M-parameter decoder, for the batching benchmark.
BENCH_VLLM_MODEL = "loupe-bench-vlm"
LLAMA_11B = "llama-3.2-11b-vision-instruct"
LLAMA_90B = "llama-3.2-90b-vision-instruct"
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
    """One served model. ``weights_path`` is a local directory (or hub id on a GPU box)."""

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


class ModelRegistry:
    """Lookup of served models by public name."""

    def __init__(
        self,
        specs: list[ModelSpec],
        default_queue: str = "inference",
        routes: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """``routes``: the deployment's whole (model, queue) mapping, served here or not, so a
        process that serves a few models (a GPU pool, the light worker) still routes them all."""
        for spec in specs:
            if spec.engine not in ENGINES:
                raise ConfigurationError(f"model {spec.name}: unknown engine {spec.engine!r}")
        self._specs = {spec.name: spec for spec in specs}
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
        if settings.default_model in self._specs:
            return self._specs[settings.default_model].engine_args.max_num_seqs
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


_LLAMA_VISION_PRICE = PriceCard(
    input_per_million=Decimal("0.35"),
    output_per_million=Decimal("0.40"),
    per_image=Decimal("0.0005058"),
)
_LLAMA_11B_PRICE = PriceCard(
    input_per_million=Decimal("0.18"),
    output_per_million=Decimal("0.18"),
    per_image=Decimal("0.0005058"),
)


def _tiny_vlm(name: str, weights: Path) -> ModelSpec:
    """A locally built random Idefics3 served by vLLM (the tiny test model or the bench model)."""
    return ModelSpec(
        name=name,
        engine="vllm",
        weights_path=str(weights),
        architecture="Idefics3ForConditionalGeneration",
        max_images=1,
        max_output_tokens=1024,
        default_max_tokens=32,
        context_length=2048,
        price=PriceCard(),
        owned_by="loupe",
        system_prompt_with_images=True,
        # float32: on CPU vLLM would downcast to bfloat16, and batched greedy output
        # should match serial greedy output exactly in the contract tests.
        engine_args=EngineArgs(
            max_num_seqs=32, max_model_len=2048, enforce_eager=True, dtype="float32"
        ),
    )


def build_registry(settings: Settings) -> ModelRegistry:
    """The models this deployment serves (all known ones unless LOUPE_SERVED_MODELS narrows it)."""
    specs = [
        ModelSpec(
            name=TINY_MODEL,
            engine="transformers",
            weights_path=str(settings.models_dir / "tiny-mllama"),
            architecture="MllamaForConditionalGeneration",
            max_images=1,
            max_output_tokens=2048,
            default_max_tokens=32,
            context_length=4096,
            price=PriceCard(),
            owned_by="loupe",
            engine_args=EngineArgs(max_num_seqs=16),
        ),
        _tiny_vlm(TINY_VLLM_MODEL, settings.models_dir / "tiny-vlm"),
        _tiny_vlm(BENCH_VLLM_MODEL, settings.models_dir / "bench-vlm"),
        ModelSpec(
            name=LLAMA_11B,
            engine="vllm",
            weights_path=settings.llama_11b_path,
            architecture="MllamaForConditionalGeneration",
            max_images=1,
            max_output_tokens=4096,
            default_max_tokens=512,
            context_length=8192,
            price=_LLAMA_11B_PRICE,
            # vLLM maintainers' settings for 11B: eager mode, 16 sequences, bounded context.
            engine_args=EngineArgs(
                max_num_seqs=16, max_model_len=8192, enforce_eager=True, dtype="bfloat16"
            ),
        ),
        ModelSpec(
            name=LLAMA_90B,
            engine="vllm",
            weights_path=settings.llama_90b_path,
            architecture="MllamaForConditionalGeneration",
            max_images=1,
            max_output_tokens=4096,
            default_max_tokens=512,
            context_length=8192,
            price=_LLAMA_VISION_PRICE,
            # 90B: tensor parallel across the node's GPUs (8, or 4 on 80 GB cards), 32 sequences.
            engine_args=EngineArgs(
                max_num_seqs=32,
                max_model_len=8192,
                tensor_parallel_size=settings.tensor_parallel_size,
                dtype="bfloat16",
            ),
        ),
    ]
    specs = _apply_queues(specs, settings)
    if settings.served_models:
        unknown = set(settings.served_models) - {s.name for s in specs}
        if unknown:
            raise ConfigurationError(f"LOUPE_SERVED_MODELS names unknown models: {sorted(unknown)}")
        specs = [s for s in specs if s.name in settings.served_models]
    return ModelRegistry(
        _apply_price_overrides(specs, settings), settings.inference_queue, settings.model_queues
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
