"""Cost of a job from the price card snapshotted at submit time (exact Decimal arithmetic).

``price_job`` is the one price function: the job JSON, the usage ledger and the up-front
estimate all call it, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from services.types import PriceCard

_MILLION = Decimal(1_000_000)
# Every amount is rounded (half-even) to 1e-10 USD once, per component, so that the total is
# exactly the sum of its parts and the ledger (which stores this scale) holds the same numbers.
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

    @classmethod
    def zero(cls, currency: str = "USD") -> Cost:
        return cls(Decimal(0), Decimal(0), Decimal(0), currency)

    def to_public(self) -> dict[str, str]:
        return {
            "input": money_str(self.input),
            "output": money_str(self.output),
            "images": money_str(self.images),
            "total": money_str(self.total),
            "currency": self.currency,
        }


def quantize(value: Decimal) -> Decimal:
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_EVEN)


def money_str(value: Decimal) -> str:
    """A plain decimal string without exponent or trailing zeros: ``"0.39"``, ``"0"``."""
    return format(quantize(value).normalize(), "f")


def price_job(price: PriceCard, prompt_tokens: int, completion_tokens: int, images: int) -> Cost:
    return Cost(
        input=quantize(price.input_per_million * prompt_tokens / _MILLION),
        output=quantize(price.output_per_million * completion_tokens / _MILLION),
        images=quantize(price.per_image * images),
        currency=price.currency,
    )
