"""Cost of a job from the price card snapshotted at submit time (exact Decimal arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from services.jobs.models import PriceCard

_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.0000000001")


@dataclass(frozen=True)
class Cost:
    input: Decimal
    output: Decimal
    images: Decimal
    currency: str

    @property
    def total(self) -> Decimal:
        return self.input + self.output + self.images

    def to_json(self) -> dict[str, str]:
        return {
            "input": _fmt(self.input),
            "output": _fmt(self.output),
            "images": _fmt(self.images),
            "total": _fmt(self.total),
            "currency": self.currency,
        }


def _fmt(value: Decimal) -> str:
    return format(value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN).normalize(), "f")


def price_job(price: PriceCard, prompt_tokens: int, completion_tokens: int, images: int) -> Cost:
    return Cost(
        input=price.input_per_million * prompt_tokens / _MILLION,
        output=price.output_per_million * completion_tokens / _MILLION,
        images=price.per_image * images,
        currency=price.currency,
    )
