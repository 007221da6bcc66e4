"""Value types shared by Loupe's packages: job status and priority, messages, sampling
parameters, stored images and price cards.

A leaf: it imports nothing of Loupe's, so any package may use it without an import cycle.

Names: ``to_json``/``from_json`` are a value's stored form (a round trip through SQL JSON);
what a client sees is built by ``to_public`` methods and ``*_to_public`` presenters.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.EXPIRED}
)

# The error code of a job failed because it lost its worker LOUPE_MAX_ATTEMPTS times.
WORKER_LOST = "worker_lost"


class Priority(enum.StrEnum):
    """Queue priority. Celery on Redis keeps one list per priority step; 0 is served first."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def broker_priority(self) -> int:
        return BROKER_PRIORITIES[self]


BROKER_PRIORITIES = {Priority.HIGH: 0, Priority.NORMAL: 5, Priority.LOW: 9}
# kombu's Redis transport rounds a message's priority to these steps, one list each:
# ``inference`` (0), ``inference:5``, ``inference:9``.
BROKER_PRIORITY_STEPS = sorted(BROKER_PRIORITIES.values())


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI-style sampling options; ``None`` means the model's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False
    # OpenAI ``response_format`` ({"type": "json_object"} or {"type": "json_schema", ...});
    # None means free text.
    response_format: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if v is not None and k not in ("stop",)
        }
        data["stop"] = list(self.stop)
        return data

    def features(self) -> frozenset[str]:
        """The engine features this request needs, as named in ``ENGINE_FEATURES``."""
        used = {
            name
            for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                         "frequency_penalty", "repetition_penalty")
            if getattr(self, name) is not None
        }  # fmt: skip
        if self.stop:
            used.add("stop")
        if self.ignore_eos:
            used.add("ignore_eos")
        if self.response_format is not None:
            used.add("response_format." + str(self.response_format.get("type")))
        return frozenset(used)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SamplingParams:
        values = dict(data)
        values["stop"] = tuple(values.get("stop") or ())
        return cls(**values)


@dataclass(frozen=True)
class ContentPart:
    """One part of a message: text, or a reference to the n-th image of the job."""

    type: str  # "text" | "image"
    text: str = ""
    image_index: int = -1

    def to_json(self) -> dict[str, Any]:
        if self.type == "text":
            return {"type": "text", "text": self.text}
        return {"type": "image", "image_index": self.image_index}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ContentPart:
        if data["type"] == "text":
            return cls(type="text", text=str(data["text"]))
        return cls(type="image", image_index=int(data["image_index"]))


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: tuple[ContentPart, ...]

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "content": [p.to_json() for p in self.content]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Message:
        return cls(
            role=str(data["role"]),
            content=tuple(ContentPart.from_json(p) for p in data["content"]),
        )


@dataclass(frozen=True)
class ImageRef:
    """An image stored in the object store under its SHA-256."""

    sha256: str
    content_type: str
    size_bytes: int
    width: int
    height: int

    @property
    def key(self) -> str:
        return f"images/{self.sha256[:2]}/{self.sha256}"

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRef:
        return cls(**data)


@dataclass(frozen=True)
class PriceCard:
    """USD prices, snapshotted onto each job at submit time."""

    input_per_million: Decimal = Decimal("0")
    output_per_million: Decimal = Decimal("0")
    per_image: Decimal = Decimal("0")
    currency: str = "USD"

    def to_json(self) -> dict[str, str]:
        return {
            "input_per_million": str(self.input_per_million),
            "output_per_million": str(self.output_per_million),
            "per_image": str(self.per_image),
            "currency": self.currency,
        }

    @classmethod
    def from_json(cls, data: dict[str, str]) -> PriceCard:
        return cls(
            input_per_million=Decimal(data["input_per_million"]),
            output_per_million=Decimal(data["output_per_million"]),
            per_image=Decimal(data["per_image"]),
            currency=data.get("currency", "USD"),
        )
