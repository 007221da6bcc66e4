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

from services.jobs.models import Message, SamplingParams


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
