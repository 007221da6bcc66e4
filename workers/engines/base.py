"""The engine contract every inference backend implements.

An engine is built once per worker process and shared by all task threads of that process:
``generate`` must be safe to call from many threads at once, and engines that can batch
(vLLM, the batched transformers engine) batch the concurrent calls together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from services.errors import EngineError
from services.types import Message, SamplingParams


@dataclass(frozen=True)
class GenerationRequest:
    """One job's prompt for the engine. ``request_id`` is the job id."""

    request_id: str
    messages: Sequence[Message]
    images: Sequence[Image.Image]
    params: SamplingParams


@dataclass(frozen=True)
class GenerationResult:
    """What the engine produced, with the engine's own token counts."""

    text: str
    finish_reason: str  # "stop" (EOS or a stop string) | "length" | "abort"
    prompt_tokens: int
    completion_tokens: int


class Engine(Protocol):
    """A loaded model that turns requests into results."""

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Run one request to completion. Raises ``EngineError`` for input the model rejects."""
        ...

    def abort(self, request_id: str) -> None:
        """Stop a running request early; its ``generate`` returns with finish_reason "abort"."""
        ...

    def close(self) -> None:
        """Release the model and any threads."""
        ...


def validate_sampling(params: SamplingParams) -> None:
    """Reject values no sampler can use: every engine's last guard (the API validates first).

    Raises ``EngineError`` with code ``invalid_sampling_params``.
    """
    problems: list[str] = []
    if params.max_tokens is not None and params.max_tokens < 1:
        problems.append("max_tokens must be at least 1")
    if params.temperature is not None and params.temperature < 0:
        problems.append("temperature must be >= 0")
    if params.top_p is not None and not 0 < params.top_p <= 1:
        problems.append("top_p must be in (0, 1]")
    if params.top_k is not None and params.top_k < -1:
        problems.append("top_k must be -1, 0 (both: disabled) or at least 1")
    if params.min_p is not None and not 0 <= params.min_p <= 1:
        problems.append("min_p must be in [0, 1]")
    if params.repetition_penalty is not None and params.repetition_penalty <= 0:
        problems.append("repetition_penalty must be > 0")
    if any(not stop for stop in params.stop):
        problems.append("stop strings must not be empty")
    if problems:
        raise EngineError("; ".join(problems), code="invalid_sampling_params")
